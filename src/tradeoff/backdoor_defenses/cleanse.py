"""Neural Cleanse (Wang et al. 2019): reverse-engineer a trigger per label, flag outliers, unlearn.

For each label t: a mask m = tanh(a)/2 + 1/2 (one channel, broadcast over colours) and a pattern
p = tanh(b)/2 + 1/2 stamp x' = (1 - m) x + m p; minimise CE(f(x'), t) + lambda_t |m|_1 with Adam
(lr 0.1, betas 0.5/0.9). All labels of a pass are optimised in one batched computation: every
step stamps the same clean batch with each label's trigger and runs one forward/backward pass on
the (labels x batch) images; Adam is element-wise, so this equals separate runs per label.
lambda_t starts at ``init_cost`` and is multiplied by ``cost_up`` after ``patience`` epochs in a
row with attack success >= ``success_threshold``, divided by ``cost_down`` after ``patience`` below.
The reversed trigger of a label is the smallest-|m|_1 mask seen at the end of an epoch that
reached the threshold (the last one when none did).

Anomaly index of label t: |l1_t - median| / (1.4826 * MAD) over the labels' mask norms; a label is
flagged when its index exceeds ``anomaly_threshold`` and its norm is below the median. The paper
reversed only the target label and computed no index (``labels: target``).

Unlearning: a copy of the model fine-tuned with plain SGD on clean held-out images, a share of
each batch stamped with a reversed trigger (of a flagged label, or the target's in the paper's
mode) under its true label.

Clean data: with ``data.holdout_per_class: N`` (the original's protocol: the last 1,000 training
images of each CIFAR-10 class are never trained on), the defender reverse-engineers and unlearns
on those held-out images and the whole test set measures accuracy and backdoor success before and
after (``cleanse_*_before`` / ``_after``). Without it the defence refuses in one sentence, unless
the original's fallback is named explicitly (``clean_data: test-split``): the test set is split once
by a seeded permutation (seed = spec seed + 2), the first ``holdout_fraction`` is the defender's, the
rest measures. ``cleanse_der`` is the defence effectiveness rating of unlearning on those measurements;
with ``labels: all`` the flagged labels are also judged against the ground truth (the target is the
one backdoored label), see :func:`label_detection_metrics`. Both in-memory and streamed
(ImageFolder) data are read batch by batch.

All-to-all backdoors (``poison.target_mode: all-to-all``, image y sent to y + 1 mod C): Neural
Cleanse looks for a label that a small trigger sends *every* input to, and such a backdoor has
none; instead every label is the target of one source class, its predecessor. Only ``labels: all``
runs then (``labels: target`` and ``unlearn: target`` name one target class and are refused when
the spec is built). The per-label ground truth counts every label as backdoored, so any flagged
label is a true detection (``cleanse_false_flags`` 0, ``cleanse_false_positive_rate`` and
``cleanse_auroc`` None: there is no clean label), and the target's own numbers
(``cleanse_target_mask_l1``, ``_reversed_success``, ``_flagged``, ``cleanse_anomaly_index``) are
None. Before and after are measured with each image's own target, as the run's evaluation is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.common import detection_metrics
from tradeoff.backdoor_defenses.defender import check_holdout, describe_holdout, holdout_images
from tradeoff.backdoor_defenses.finetune import Tuning, fine_tune
from tradeoff.backdoor_defenses.measure import before_after_metrics
from tradeoff.core.errors import TradeoffError
from tradeoff.core.progress import progress_bar
from tradeoff.core.registry import SyntheticCut
from tradeoff.core.spec import option
from tradeoff.models.mode import model_mode
from tradeoff.poisoning import is_all_to_all
from tradeoff.records.handoff import TrainedRun

TEST_SPLIT_HINT = "or name the test set's split explicitly with clean_data: test-split"
MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of a normal distribution's std


@dataclass
class CleanseOptions:
    metric_prefix: ClassVar[str] = "cleanse"
    labels: Literal["all", "target"] = option("all", doc="reverse every label (MAD anomaly index) or the "
                                              "target only (the paper)")
    epochs: int = option(20, doc="reverse-engineering epochs", min=1)
    batch_size: int = option(100, doc="reverse-engineering batch", min=1)
    lr: float = option(0.1, doc="Adam learning rate of mask and pattern", above=0)
    init_cost: float = option(1e-3, doc="initial lambda of the mask's L1 norm", min=0)
    patience: int = option(5, doc="epochs before lambda is adapted", min=1)
    cost_up: float = option(2.0, doc="lambda factor after success", above=0)
    cost_down: float = option(2 ** 1.5, doc="lambda divisor after failure", above=0)
    success_threshold: float = option(0.99, doc="attack success that counts as reversed", above=0, max=1)
    labels_per_pass: int = option(10, doc="labels optimised together in one batched computation", min=1)
    clean_data: Literal["holdout", "test-split"] = option(
        "holdout", doc="the defender's clean images: the training holdout (data.holdout_per_class), or, "
        "named explicitly, a seeded share of the test set (measuring on the rest)")
    holdout_fraction: float = option(0.5, doc="with clean_data test-split: the share of the test set that is "
                                               "the defender's clean data", above=0, below=1)
    reverse_images: Optional[int] = option(None, doc="defender images used to reverse (default all)", min=1)
    anomaly_threshold: float = option(2.0, doc="flag labels whose anomaly index exceeds this")
    unlearn: Literal["auto", "flagged", "target", "none"] = option(
        "auto", doc="labels to unlearn; auto: the flagged ones (the target with labels: target)")
    unlearn_epochs: int = option(10, doc="fine-tuning epochs", min=0)
    unlearn_fraction: float = option(0.2, doc="share of each batch stamped with a reversed trigger", min=0, max=1)
    unlearn_lr: float = option(0.01, doc="SGD learning rate of unlearning", above=0)
    unlearn_batch_size: int = option(100, doc="unlearning batch", min=1)

    def check_spec(self, spec, where: str) -> None:
        """Defender images: the holdout unless the test split is named. An all-to-all backdoor has
        no one target class to reverse or unlearn."""
        if self.clean_data == "holdout":
            check_holdout(spec, where, or_else=TEST_SPLIT_HINT)
        if is_all_to_all(spec.poison):
            for name in ("labels", "unlearn"):
                if getattr(self, name) == "target":
                    raise TradeoffError(f"{where}.{name}: target names one target class, and an all-to-all "
                                        "backdoor (poison.target_mode) has none; use labels: all and unlearn: auto.")


@dataclass
class Reversed:
    masks: torch.Tensor  # (K, 1, H, W) in [0, 1]
    patterns: torch.Tensor  # (K, C, H, W) in [0, 1]
    l1: torch.Tensor  # (K,) |mask|_1
    success: torch.Tensor  # (K,) attack success of the kept trigger (epoch mean)
    reached: torch.Tensor  # (K,) bool: the success threshold was reached


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """x' = (1 - m) x + m p; broadcasts (K, 1, C, H, W) triggers over a (1, B, C, H, W) batch."""
    return (1 - mask) * x + mask * pattern


def _to_tanh_space(v: torch.Tensor) -> torch.Tensor:
    return torch.atanh((v - 0.5) * (2 - 1e-4))


def reverse_engineer(model, images, labels: list[int], opts: CleanseOptions, seed: int,
                     show_progress: bool = False) -> Reversed:
    """Reverse-engineer one trigger per label in ``labels`` from the clean image set ``images``
    (in memory or streamed; read batch by batch without augmentation).

    Each label's starting point is drawn from its own seeded generator and every pass sees the
    same batches, so the result does not depend on how labels are grouped into passes."""
    parts = [_reverse_pass(model, images.unaugmented(), labels[i:i + opts.labels_per_pass], opts, seed, show_progress)
             for i in range(0, len(labels), opts.labels_per_pass)]
    return Reversed(*(torch.cat(t) for t in zip(*(vars(p).values() for p in parts))))


def _initial_trigger(label: int, shape: tuple, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    c, h, w = shape
    g = torch.Generator().manual_seed(seed * 100003 + label)
    return _to_tanh_space(torch.rand(1, 1, h, w, generator=g)), _to_tanh_space(torch.rand(1, c, h, w, generator=g))


@dataclass
class _Search:
    """One pass's search state per label: the tanh-space mask and pattern, lambda and its
    counters, the best trigger kept so far."""

    a: torch.Tensor  # (K, 1, 1, H, W) mask in tanh space
    b: torch.Tensor  # (K, 1, C, H, W) pattern in tanh space
    cost: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    best_l1: torch.Tensor
    best_mask: torch.Tensor
    best_pattern: torch.Tensor
    best_success: torch.Tensor

    @classmethod
    def start(cls, labels, shape, opts: CleanseOptions, seed: int, device) -> "_Search":
        k, (c, h, w) = len(labels), shape
        starts = [_initial_trigger(t, (c, h, w), seed) for t in labels]
        up = torch.zeros(k, dtype=torch.long, device=device)
        return cls(a=torch.stack([s[0] for s in starts]).to(device).requires_grad_(True),
                   b=torch.stack([s[1] for s in starts]).to(device).requires_grad_(True),
                   cost=torch.full((k,), opts.init_cost, device=device), up=up, down=torch.zeros_like(up),
                   best_l1=torch.full((k,), float("inf"), device=device),
                   best_mask=torch.zeros(k, 1, h, w, device=device),
                   best_pattern=torch.zeros(k, c, h, w, device=device), best_success=torch.zeros(k, device=device))

    def trigger(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.a) / 2 + 0.5, torch.tanh(self.b) / 2 + 0.5

    @torch.no_grad()
    def end_epoch(self, success: torch.Tensor, opts: CleanseOptions) -> None:
        """Keep each label's smallest trigger that reached the threshold; adapt lambda."""
        mask, pattern = self.trigger()
        l1 = mask.flatten(1).sum(1)
        better = (success >= opts.success_threshold) & (l1 < self.best_l1)
        self.best_l1 = torch.where(better, l1, self.best_l1)
        self.best_mask[better] = mask[better, 0]
        self.best_pattern[better] = pattern[better, 0]
        self.best_success = torch.where(better, success, self.best_success)
        ok = success >= opts.success_threshold
        self.up, self.down = torch.where(ok, self.up + 1, 0), torch.where(ok, 0, self.down + 1)
        self.cost = torch.where(self.up >= opts.patience, self.cost * opts.cost_up, self.cost)
        self.cost = torch.where(self.down >= opts.patience, self.cost / opts.cost_down, self.cost)
        self.up = torch.where(self.up >= opts.patience, 0, self.up)
        self.down = torch.where(self.down >= opts.patience, 0, self.down)

    @torch.no_grad()
    def result(self, last_success: torch.Tensor) -> Reversed:
        """The kept triggers; a label that never reached the threshold keeps its last one."""
        reached = torch.isfinite(self.best_l1)
        mask, pattern = self.trigger()
        self.best_mask[~reached] = mask[~reached, 0]
        self.best_pattern[~reached] = pattern[~reached, 0]
        success = torch.where(reached, self.best_success, last_success)
        l1 = self.best_mask.flatten(1).sum(1)
        return Reversed(self.best_mask.cpu(), self.best_pattern.cpu(), l1.cpu(), success.cpu(), reached.cpu())


def _reverse_pass(model, images, labels, opts, seed, show_progress) -> Reversed:
    device = next(model.parameters()).device
    search = _Search.start(labels, images.shape, opts, seed, device)
    batches = images.batches(opts.batch_size, seed, device)
    optimizer = torch.optim.Adam([search.a, search.b], lr=opts.lr, betas=(0.5, 0.9))
    targets = torch.tensor(labels, device=device)
    bar = progress_bar(total=opts.epochs * batches.steps_per_epoch, desc=f"reverse {len(labels)} labels",
                       unit="step", enabled=show_progress)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with model_mode(model, False):
            for epoch in range(opts.epochs):
                success = _reverse_epoch(model, batches.epoch(epoch), search, optimizer, targets, bar)
                search.end_epoch(success, opts)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        bar.close()
    return search.result(success)


def _reverse_epoch(model, epoch_batches, search: _Search, optimizer, targets, bar) -> torch.Tensor:
    """One epoch of Adam steps on every label's mask and pattern; the epoch's attack success per label."""
    k = len(targets)
    hits = torch.zeros(k, device=targets.device)
    seen = 0
    for xb, _ in epoch_batches:
        n = len(xb)
        mask, pattern = search.trigger()
        logits = model(stamp(xb[None], mask, pattern).flatten(0, 1)).view(k, n, -1)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.repeat_interleave(n), reduction="none")
        l1 = mask.flatten(1).sum(1)
        loss = (ce.view(k, n).mean(1) + search.cost * l1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        hits += (logits.detach().argmax(2) == targets[:, None]).sum(1)
        seen += n
        bar.update(1)
    return hits / seen


def anomaly_indices(norms: torch.Tensor) -> torch.Tensor:
    """|norm - median| / (1.4826 * median absolute deviation), per label."""
    norms = norms.double()
    median = norms.quantile(0.5)  # the usual median (mean of the middle two for an even count)
    mad = MAD_CONSISTENCY * (norms - median).abs().quantile(0.5)
    return (norms - median).abs() / mad.clamp_min(1e-12)


def unlearn(model, images, masks: torch.Tensor, patterns: torch.Tensor, opts: CleanseOptions, seed: int,
            show_progress: bool = False):
    """A copy of ``model`` fine-tuned by plain SGD on the clean image set ``images`` (in memory
    or streamed, without augmentation) where the first ``unlearn_fraction`` of each shuffled
    batch is stamped with one of the triggers (chosen at random), labels kept."""
    device = next(model.parameters()).device
    masks, patterns = masks.to(device), patterns.to(device)
    generator = torch.Generator().manual_seed(seed)

    def stamped_loss(tuned, xb, yb):
        n_stamp = round(opts.unlearn_fraction * len(xb))
        if n_stamp:
            which = torch.randint(len(masks), (n_stamp,), generator=generator).to(device)
            xb = torch.cat([stamp(xb[:n_stamp], masks[which], patterns[which]), xb[n_stamp:]])
        return F.cross_entropy(tuned(xb), yb)

    tuning = Tuning(opts.unlearn_epochs, opts.unlearn_batch_size, opts.unlearn_lr)
    return fine_tune(model, images, stamped_loss, tuning, seed, show_progress, desc="unlearn")


def clean_data(run: TrainedRun, opts: CleanseOptions) -> tuple[object, object, str]:
    """(defender's clean images, the evaluation that measures before and after, a description).
    The clean training images kept out of training by ``data.holdout_per_class`` (the original's
    protocol), measured on the whole test set; or, named explicitly with ``clean_data: test-split``
    (the original's fallback), a seeded ``holdout_fraction`` of the test set, measured on the rest."""
    if opts.clean_data == "test-split":
        defender, evaluation = run.evaluation.split(opts.holdout_fraction, run.spec.seed)
        return defender, evaluation, f"{len(defender)} test images (clean_data test-split, holdout_fraction {opts.holdout_fraction})"
    holdout = holdout_images(run, "neural-cleanse", or_else=TEST_SPLIT_HINT)
    return holdout, run.evaluation, describe_holdout(holdout)


def label_detection_metrics(labels: list[int], flagged: list[int], scores: torch.Tensor,
                            backdoored_labels: list[int]) -> dict:
    """Neural Cleanse's detection judged per label against ``backdoored_labels``, the classes
    triggered images are sent to (the target; every class for an all-to-all backdoor; none in a
    run without poison, where every flagged label is a false positive): ``cleanse_false_flags``
    (flagged labels that are not backdoored), ``cleanse_false_positive_rate`` (their share of the
    clean labels), ``cleanse_precision`` (None when nothing is flagged) and ``cleanse_auroc`` of
    the labels' anomaly indices (0 for labels above the median norm; None without a backdoor)."""
    backdoored = torch.tensor([t in backdoored_labels for t in labels])
    is_flagged = torch.tensor([t in flagged for t in labels])
    out = detection_metrics("cleanse", is_flagged, backdoored, torch.ones(len(labels), dtype=torch.bool), scores)
    return {"cleanse_false_flags": out["cleanse_clean_removed"],
            **{k: out[k] for k in ("cleanse_false_positive_rate", "cleanse_precision", "cleanse_auroc")}}


def value_at(values: torch.Tensor, position: int | None) -> float | None:
    """``values[position]`` as a float, None without a position."""
    return None if position is None else float(values[position])


# on generated data: one epoch of reversing and one of unlearning, on 8 images
@BACKDOOR_DEFENSES.register("neural-cleanse", options=CleanseOptions, synthetic=SyntheticCut(options={
    "epochs": 1, "unlearn_epochs": 1, "reverse_images": 8, "batch_size": 8, "unlearn_batch_size": 8}))
def cleanse_defense(run: TrainedRun, opts: CleanseOptions, log, show_progress) -> dict:
    """Neural Cleanse (Wang et al. 2019): reverse-engineer triggers, flag outliers, unlearn."""
    spec, model, target = run.spec, run.model, run.data.backdoor_target
    num_classes = run.data.num_classes
    defender, evaluation, source = clean_data(run, opts)
    reverse_set = defender
    if opts.reverse_images is not None and opts.reverse_images < len(defender):
        g = torch.Generator().manual_seed(spec.seed + 3)
        reverse_set = defender.take(torch.randperm(len(defender), generator=g)[:opts.reverse_images].sort().values)
    labels = list(range(num_classes)) if opts.labels == "all" else [target.label]  # all-to-one (check_spec)
    log(f"neural cleanse: clean data {source}; reversing {len(labels)} label(s) on {len(reverse_set)} of them, "
        f"unlearning on {len(defender)}, measuring on {len(evaluation)} test images")
    rev = reverse_engineer(model, reverse_set, labels, opts, spec.seed, show_progress)
    metrics: dict = {"cleanse_labels": opts.labels, "cleanse_clean_data": source,
                     "cleanse_measured_images": len(evaluation)}
    # the one target label's numbers; an all-to-all backdoor has none (see the module's docstring)
    position = None if target.single_label is None else labels.index(target.single_label)
    metrics["cleanse_target_mask_l1"] = value_at(rev.l1, position)
    metrics["cleanse_target_reversed_success"] = value_at(rev.success, position)
    flagged: list[int] = []
    if opts.labels == "all":
        index = anomaly_indices(rev.l1)
        below = rev.l1 < rev.l1.quantile(0.5)
        flagged = [labels[i] for i in range(len(labels)) if below[i] and index[i] > opts.anomaly_threshold]
        candidates = torch.where(below, index, torch.zeros_like(index))
        metrics.update({
            "cleanse_anomaly_index": value_at(index, position),
            "cleanse_most_anomalous_label": labels[int(candidates.argmax())],
            "cleanse_max_anomaly_index": float(candidates.max()),
            "cleanse_median_mask_l1": float(rev.l1.quantile(0.5)),
            "cleanse_flagged_labels": " ".join(map(str, flagged)),
            "cleanse_target_flagged": None if position is None else target.single_label in flagged,
            **label_detection_metrics(labels, flagged, candidates,
                                      target.classes if run.data.poison_mask.any() else []),
        })
        run.add_artifact("cleanse.safetensors", {"labels": torch.tensor(labels), "masks": rev.masks,
                                                      "patterns": rev.patterns, "l1": rev.l1, "anomaly_index": index})
    else:
        run.add_artifact("cleanse.safetensors", {"labels": torch.tensor(labels), "masks": rev.masks,
                                                      "patterns": rev.patterns, "l1": rev.l1})
    mode = opts.unlearn if opts.unlearn != "auto" else ("flagged" if opts.labels == "all" else "target")
    chosen = {"flagged": flagged, "target": [target.label], "none": []}[mode]
    before = evaluation.measure(model)
    metrics["cleanse_unlearned_labels"] = " ".join(map(str, chosen))
    if chosen and opts.unlearn_epochs > 0:
        pick = torch.tensor([labels.index(t) for t in chosen])
        cleaned = unlearn(model, defender, rev.masks[pick], rev.patterns[pick], opts, spec.seed + 3, show_progress)
        after = evaluation.measure(cleaned)
        run.add_artifact("cleanse_model.safetensors", cleaned.state_dict())
    else:
        log("neural cleanse: no label to unlearn; the model is unchanged")
        after = before
    metrics.update(before_after_metrics("cleanse", before, after))
    log("neural cleanse: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return metrics
