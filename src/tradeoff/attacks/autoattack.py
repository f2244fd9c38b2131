"""AutoAttack (Croce & Hein, ICML 2020) through the maintained ``pyautoattack`` package, the
optional extra ``tradeoff[autoattack]``: a second robustness metric beside the PGD one, at the
evaluation attack's norm and eps, on a seeded subset of the test set.

    pip install "tradeoff[autoattack]"
    tradeoff run SPEC --set eval.autoattack.images=1000 --set "eval.autoattack.attacks=[apgd-ce, apgd-t]"

The package is imported only when a spec asks for AutoAttack; a spec asking for it without the
package installed is one sentence before any training (:func:`check`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import AttackSpec, AutoAttackSpec

INSTALL = 'pip install "tradeoff[autoattack]"'

# The attacks each version of pyautoattack 0.2.0 runs, in its order (AutoAttack._set_version).
VERSION_ATTACKS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
PACKAGE_NORMS = {"linf": "Linf", "l2": "L2"}


def package():
    """The ``pyautoattack`` module, or one sentence saying how to install it."""
    try:
        import pyautoattack
    except ImportError:
        raise TradeoffError("eval.autoattack needs the pyautoattack package, which is not installed: "
                            f"{INSTALL}.") from None
    return pyautoattack


def attacks_of(a: AutoAttackSpec) -> tuple[str, ...]:
    """The attacks ``a`` runs: its ``attacks`` in the version's order, else all of the version's."""
    chosen = VERSION_ATTACKS[a.version]
    return tuple(name for name in chosen if name in a.attacks) if a.attacks else chosen


def check(a: AutoAttackSpec, attack: AttackSpec) -> None:
    """One sentence for an ``eval.autoattack`` that cannot run: an attack outside its version,
    a norm AutoAttack lacks here, or the package missing."""
    allowed = VERSION_ATTACKS[a.version]
    for name in a.attacks or ():
        if name not in allowed:
            raise TradeoffError(f"eval.autoattack.attacks: {name!r} is not an attack of version {a.version!r} "
                                f"({', '.join(allowed)}).")
    if a.attacks is not None and not a.attacks:
        raise TradeoffError("eval.autoattack.attacks is empty; leave it unset to run all of the version's attacks.")
    if attack.norm not in PACKAGE_NORMS:
        raise TradeoffError(f"eval.autoattack runs at the evaluation attack's norm, L-inf or L2, not {attack.norm!r}.")
    package()


@dataclass
class AutoAttackResult:
    robust: torch.Tensor  # bool per image: still classified correctly after every attack
    seconds: float


def run_autoattack(model, x: torch.Tensor, y: torch.Tensor, a: AutoAttackSpec, attack: AttackSpec, seed: int,
                   device, batch_size: int = 500) -> AutoAttackResult:
    """AutoAttack's version ``a.version`` (only ``attacks_of(a)``) on (x, y) at ``attack``'s norm
    and eps, seeded with ``seed``; the model is used as given (the caller puts it in eval mode).
    The global random state is left as it was found."""
    start = time.perf_counter()
    adversary = package().AutoAttack(model, norm=PACKAGE_NORMS[attack.norm], eps=attack.eps, version=a.version,
                                     seed=seed, device=device)
    adversary.attacks_to_run = list(attacks_of(a))  # the version's settings, a subset of its attacks
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        x_adv, _ = adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
        with torch.no_grad():
            robust = torch.cat([model(xb).argmax(1) == yb for xb, yb in
                                zip(x_adv.split(batch_size), y.to(device).split(batch_size))])
    return AutoAttackResult(robust.cpu(), time.perf_counter() - start)


def autoattack_metrics(model, test_set, a: AutoAttackSpec, attack: AttackSpec, seed: int, device,
                       batch_size: int = 500) -> dict:
    """``autoattack_robustness`` on a seeded subset of ``a.images`` test images, and what ran."""
    images = test_set.subset(a.images, seed)
    batches = list(images.loader(batch_size, device=device))
    x, y = torch.cat([xb for xb, _ in batches]), torch.cat([yb for _, yb in batches])
    result = run_autoattack(model, x, y, a, attack, seed, device, batch_size)
    return {
        "autoattack_robustness": result.robust.float().mean().item(),
        "autoattack_version": a.version,
        "autoattack_attacks": ", ".join(attacks_of(a)),
        "autoattack_images": len(y),
        "autoattack_norm": attack.norm,
        "autoattack_eps": attack.eps,
        "autoattack_seconds": round(result.seconds, 2),
    }
