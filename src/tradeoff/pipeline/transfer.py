"""The transfer check of :mod:`tradeoff.evaluation.masking` on two finished run folders: an adversarially
trained run and its standard twin (the same data, trigger and poisoning, trained without the
adversarial defence).

Adversarial examples are crafted on the twin's model with the adversarial run's evaluation
attack, for the adversarial run's masking subset, and the adversarial run's model classifies them:
``masking_transfer_robustness``. A black-box attack that leaves *less* robustness than the
white-box one (``masking_robustness_same_images``, the same images) says the white-box attack
could not follow the model's own gradient. Both runs may have been trained by different processes
or cluster jobs: the check needs only their folders, and :func:`tradeoff.sweeps.sweep.sweep` runs it
once both are finished. The result is merged into the adversarial run's ``metrics.json``
(written atomically) and the folder's ``summary.csv`` rewritten.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tradeoff.config.build import spec_from_dict
from tradeoff.core.errors import TradeoffError
from tradeoff.evaluation.masking import (
    MASKING_SEED,
    WARNINGS_KEY,
    join_warnings,
    masking_subset,
    robust_accuracy,
    split_warnings,
    transfer_warning,
)
from tradeoff.pipeline.defend import load_model, load_trained_run
from tradeoff.records.folders import read_run, run_folder_claim, write_summary
from tradeoff.records.record import read_record

TRANSFER_KEY = "masking_transfer_robustness"
TRANSFER_MARK = "transferred from the standard twin"  # in the warning's sentence: replaced when rerun


def transfer_check(adversarial_dir: str | Path, twin_dir: str | Path, data_root: str | None = None,
                   device: str | None = None) -> dict:
    """Run the transfer check from ``twin_dir``'s model onto ``adversarial_dir``'s and record it in
    ``adversarial_dir/metrics.json``; returns the metrics it added or changed."""
    adversarial_dir, twin_dir = Path(adversarial_dir), Path(twin_dir)
    run = load_trained_run(adversarial_dir, data_root, device)
    raw, _ = read_run(twin_dir)
    twin_spec = spec_from_dict(raw)
    if twin_spec.data.dataset != run.spec.data.dataset:
        raise TradeoffError(f"{twin_dir} ({twin_spec.data.dataset}) is not a twin of {adversarial_dir} "
                            f"({run.spec.data.dataset}): their datasets differ.")
    twin = load_model(twin_dir, twin_spec, run.data.shape, run.data.num_classes, run.device)
    ev = run.spec.eval
    images = masking_subset(run.data.test, ev.masking_images)
    precision = run.spec.train.precision
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(MASKING_SEED)
        transferred = robust_accuracy(run.model, images, ev.attack, run.device, precision, ev.batch_size, source=twin)
        white_box = run.record.get("masking_robustness_same_images")
        if white_box is None or run.record.get("masking_images") != len(images):
            white_box = robust_accuracy(run.model, images, ev.attack, run.device, precision, ev.batch_size)
    kept = [s for s in split_warnings(run.record.get(WARNINGS_KEY)) if TRANSFER_MARK not in s]
    result = {"masking_images": len(images), "masking_robustness_same_images": white_box,
              TRANSFER_KEY: transferred, "masking_transfer_from": twin_dir.name,
              WARNINGS_KEY: join_warnings(kept + [transfer_warning(transferred, white_box) or ""])}
    with run_folder_claim(adversarial_dir):
        read_record(adversarial_dir).merged(result).write(adversarial_dir)  # the newest record, once all is computed
        with open(adversarial_dir / "log.txt", "a") as fh:
            fh.write(f"transfer check from {twin_dir.name}: {100 * transferred:.1f}% robustness "
                     f"(white-box {100 * white_box:.1f}%) on {len(images)} images\n")
    write_summary(adversarial_dir.parent)
    return result
