"""The fine-tune / unlearn loop of post-training defences: a copy of the model trained on the
defender's clean images (:mod:`~tradeoff.backdoor_defenses.defender`) with a loss the defence
gives per batch (stamped reversed triggers, adversarial examples, a distillation term, ...).

The loop owns what every such defence repeats: the copy, the batches (seeded, without
augmentation), train mode, the optimiser step, the progress bar and eval mode at the end. The
step goes through ``optimizer.step(closure)``, so an optimiser that evaluates the loss more than
once per step (sharpness-aware minimisation) plugs in as any ``torch.optim.Optimizer``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Optional

import torch
from torch import nn

from tradeoff.core.progress import progress_bar
from tradeoff.core.spec import option
from tradeoff.models.mode import model_mode

# (model being tuned, images, labels) -> the batch's loss
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# the parameters to optimise -> an optimiser over them
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass
class FineTuneOptions:
    needs_holdout: ClassVar[bool] = True  # trains or calibrates on data.holdout_per_class only
    """The fine-tuning budget a purification defence inherits into its options (flat in YAML)."""

    tune_epochs: int = option(10, doc="fine-tuning epochs over the defender's clean images", min=0)
    tune_batch_size: int = option(128, doc="fine-tuning batch", min=1)
    tune_lr: float = option(0.01, doc="SGD learning rate of fine-tuning", above=0)
    tune_momentum: float = option(0.9, doc="SGD momentum of fine-tuning", min=0)
    tune_weight_decay: float = option(5e-4, doc="SGD weight decay of fine-tuning", min=0)


@dataclass(frozen=True)
class Tuning:
    """One fine-tuning pass: epochs, batch, plain SGD's learning rate, momentum and weight decay."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def of(cls, options: FineTuneOptions) -> "Tuning":
        return cls(options.tune_epochs, options.tune_batch_size, options.tune_lr, options.tune_momentum,
                   options.tune_weight_decay)

    def sgd(self, parameters) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


def fine_tune(model: nn.Module, images, batch_loss: BatchLoss, tuning: Tuning, seed: int,
              show_progress: bool = False, desc: str = "fine-tune", make_optimizer: Optional[OptimizerFactory] = None,
              parameters: Optional[Callable[[nn.Module], Iterable[torch.nn.Parameter]]] = None) -> nn.Module:
    """A copy of ``model`` trained for ``tuning.epochs`` on the image set ``images`` (in memory or
    streamed, read without augmentation in seeded batches) by ``batch_loss``, in train mode;
    returned in eval mode. ``make_optimizer``: default plain SGD of ``tuning``; ``parameters``:
    which of the copy's parameters it optimises (default all)."""
    model = copy.deepcopy(model)
    device = next(model.parameters()).device
    chosen = parameters(model) if parameters is not None else model.parameters()
    optimizer = (make_optimizer or tuning.sgd)(chosen)
    batches = images.unaugmented().batches(tuning.batch_size, seed, device)
    bar = progress_bar(total=tuning.epochs * batches.steps_per_epoch, desc=desc, unit="step", enabled=show_progress)
    with model_mode(model, True):
        for epoch in range(tuning.epochs):
            for xb, yb in batches.epoch(epoch):
                optimizer.step(_closure(model, optimizer, batch_loss, xb, yb))
                bar.update(1)
    bar.close()
    return model.eval()


def _closure(model, optimizer, batch_loss: BatchLoss, xb, yb) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, xb, yb)
        loss.backward()
        return loss
    return closure
