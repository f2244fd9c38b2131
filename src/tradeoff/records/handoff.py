"""The typed hand-offs between the pipeline's stages: the poisoned data a run trains on, and the
trained run that the backdoor defences, ``tradeoff defend`` and the run folder receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from tradeoff.core.spec import Spec
from tradeoff.poisoning import BackdoorTarget, PoisonPlan
from tradeoff.records.record import RunRecord
from tradeoff.triggers import Trigger


@dataclass
class PoisonedData:
    """The training set as poisoned (an in-memory ImageSet with the triggers stamped, or a
    streamed FolderSet that stamps on the fly: both have the same interface), the test set, and
    the ground truth of the poisoning."""

    train: object  # ImageSet | FolderSet: labels are the training labels after poisoning
    test: object  # ImageSet | FolderSet
    plan: PoisonPlan  # poisoned indices, their corners, training labels, ground-truth mask
    trigger: Trigger
    backdoor_target: BackdoorTarget  # each triggered image's target class (poison.target, or all-to-all)
    num_classes: int
    shape: tuple  # (C, H, W) of the images the model sees
    streamed: bool = False
    holdout: Optional[object] = None  # clean training images kept out of training (ImageSet | FolderSet)

    @property
    def poisoned_indices(self) -> torch.Tensor:
        return self.plan.indices

    @property
    def poison_mask(self) -> torch.Tensor:
        return self.plan.mask


@dataclass
class TrainedRun:
    """A trained model with everything the steps after training need."""

    spec: Spec  # resolved
    model: nn.Module
    record: RunRecord  # what metrics.json holds (a mapping of its keys is taken as one)
    data: PoisonedData
    device: torch.device
    run_dir: Optional[Path] = None
    artifacts: dict = field(default_factory=dict)  # file name -> {tensor name: tensor}, saved beside metrics.json
    # a backdoor defence's only way to the test set (backdoor_defenses.sealed.TestEvaluation); None outside one
    evaluation: Optional[object] = None

    def __post_init__(self):
        if not isinstance(self.record, RunRecord):
            self.record = RunRecord.from_dict(self.record)

    @property
    def metrics(self) -> dict:
        """The record's keys and values, in file order (``run.metrics[BACKDOOR_SUCCESS]``)."""
        return self.record.values

    def add_artifact(self, file_name: str, tensors: dict) -> None:
        """Tensors for the run folder (saved by the experiment or ``tradeoff defend``)."""
        self.artifacts[file_name] = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
