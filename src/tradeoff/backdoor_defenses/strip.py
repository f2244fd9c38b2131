"""STRIP (Gao et al., ACSAC 2019), an input-level detector: an input is superimposed on
``overlays`` clean images (pixel-wise sum, clipped to the image range, as the paper's
``addWeighted(x, 1, x_j, 1, 0)``) and the model's predictions on the blends are scored by their
mean Shannon entropy. A triggered input keeps its target class under any blend (low entropy); a
clean one does not. The overlays and the threshold come from the defender's held-out clean
training images (``data.holdout_per_class``), split in two: half are the overlays (at most ``pool_size`` of them, in memory), and the
threshold is the entropy below which ``frr`` (1% and 5%) of the other half is rejected. The test
set is only scored with it: the false-acceptance rate on its triggered images (those whose label is
not their target: those not of the target class, or with an all-to-all backdoor every image) and the
rejection rate of its clean images, and the AUROC of clean against triggered test images."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.common import auroc
from tradeoff.backdoor_defenses.defender import holdout_images
from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import SyntheticCut
from tradeoff.core.spec import option
from tradeoff.models.mode import model_mode
from tradeoff.records.handoff import TrainedRun

FALSE_REJECTION_RATES = (0.01, 0.05)


@dataclass
class StripOptions:
    needs_holdout: ClassVar[bool] = True  # trains or calibrates on data.holdout_per_class only
    metric_prefix: ClassVar[str] = "strip"
    overlays: int = option(100, doc="clean images each input is superimposed on (the paper's N)", min=1)
    batch_size: int = option(100, doc="inputs scored at a time (each as `overlays` blends)", min=1)
    pool_size: int = option(1000, doc="most held-out images kept in memory as overlays", min=1)
    seed: int = option(0, doc="seed of the holdout split and of the overlays drawn per input", min=0)


def blend(x: torch.Tensor, overlays: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) inputs and (B, N, C, H, W) overlays -> (B*N, C, H, W) clipped sums."""
    return (x.unsqueeze(1) + overlays).clamp(0, 1).flatten(0, 1)


def entropies(model, x: torch.Tensor, pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """The mean entropy (nats) of the model's softmax over ``n`` blends of each input with
    images drawn from ``pool``."""
    picks = torch.randint(len(pool), (len(x), n), generator=generator).to(pool.device)
    with torch.no_grad():
        p = torch.softmax(model(blend(x, pool[picks])).float(), dim=1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
    return entropy.view(len(x), n).mean(1)


def _split(holdout, opts: StripOptions, device) -> tuple[torch.Tensor, object]:
    """The overlay pool (in memory, at most ``pool_size`` images) and the calibration images
    (streamed): the two halves of a seeded permutation of the held-out images."""
    if len(holdout) < 4:
        raise TradeoffError(f"backdoor defence strip needs at least 4 held-out images, not {len(holdout)}.")
    order = torch.randperm(len(holdout), generator=torch.Generator().manual_seed(opts.seed))
    half = len(holdout) // 2
    pool = holdout.take(order[:min(half, opts.pool_size)].sort().values)
    return torch.cat([xb for xb, _ in pool.loader(256, device=device)]), holdout.take(order[half:].sort().values)


def _score(model, images, pool, opts: StripOptions, generator) -> torch.Tensor:
    """Entropies of every image of ``images`` (streamed in batches)."""
    out = [entropies(model, xb, pool, opts.overlays, generator).cpu()
           for xb, _ in images.loader(opts.batch_size, device=pool.device)]
    return torch.cat(out) if out else torch.zeros(0)


# on generated data: two overlays an input
@BACKDOOR_DEFENSES.register("strip", options=StripOptions, synthetic=SyntheticCut(options={"overlays": 2}))
def strip_defense(run: TrainedRun, opts: StripOptions, log, show_progress) -> dict:
    """Calibrate the entropy threshold on held-out clean images, score the test set with it."""
    pool, calibration = _split(holdout_images(run, "strip"), opts, run.device)
    generator = torch.Generator().manual_seed(opts.seed)
    start = time.perf_counter()
    with model_mode(run.model, False):
        held = _score(run.model, calibration, pool, opts, generator)

        def entropy_of(xb):
            return entropies(run.model, xb, pool, opts.overlays, generator)
        clean = run.evaluation.scores(entropy_of, opts.batch_size)
        triggered = run.evaluation.scores(entropy_of, opts.batch_size, triggered=True)
    seconds = time.perf_counter() - start
    out = {"strip_clean_data": f"{len(pool)} held-out overlays, {len(held)} held-out images for the threshold",
           "strip_seconds": round(seconds, 3)}
    for frr in FALSE_REJECTION_RATES:
        threshold = float(torch.quantile(held.double(), frr))
        name = f"{round(100 * frr)}pct"
        out[f"strip_threshold_{name}"] = threshold
        out[f"strip_far_{name}"] = float((triggered > threshold).double().mean()) if len(triggered) else None
        out[f"strip_test_frr_{name}"] = float((clean <= threshold).double().mean()) if len(clean) else None
    scores = torch.cat([clean, triggered])
    truth = torch.cat([torch.zeros(len(clean), dtype=torch.bool), torch.ones(len(triggered), dtype=torch.bool)])
    out["strip_auroc"] = auroc(-scores, truth, torch.ones_like(truth))
    log(f"strip: FAR {out['strip_far_1pct']} at 1% FRR, AUROC {out['strip_auroc']}")
    return out
