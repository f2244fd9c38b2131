"""Fine-pruning (Liu, Dolan-Gavitt & Garg, RAID 2018): prune the channels of the last convolution
that stay dormant on clean data, then fine-tune.

A channel's activity is the mean, over the defender's clean images and every position, of the
positive part of its output (what a following ReLU passes; in the pre-activation ResNets the last
convolution feeds a residual add, and the positive part is still the channel's own contribution).
Channels are pruned from the least active up, one step (``step_channels``) at a time, while the
accuracy on the same clean images stays within ``max_accuracy_drop`` of the unpruned model's
(``prune_fraction``: a fixed share instead); a pruned channel's weights and bias are zero and stay
zero through the fine-tuning that follows (plain SGD with cross-entropy on those images,
:mod:`~tradeoff.backdoor_defenses.finetune`). Defender data: the held-out clean training images
(``data.holdout_per_class``), in memory or streamed; the test set is never looked at.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.finetune import FineTuneOptions, Tuning, fine_tune
from tradeoff.backdoor_defenses.measure import purification_metrics
from tradeoff.core.spec import option
from tradeoff.models.mode import model_mode
from tradeoff.models.neurons import NeuronLayer, last_convolution, zero_neurons
from tradeoff.records.handoff import TrainedRun


@dataclass
class FinePruningOptions(FineTuneOptions):  # tune_epochs, tune_lr, ... : the fine-tuning after pruning
    metric_prefix: ClassVar[str] = "fine_pruning"
    max_accuracy_drop: float = option(0.04, doc="prune while the accuracy on the defender's clean images stays "
                                                "within this of the unpruned model's", min=0, max=1)
    prune_fraction: Optional[float] = option(None, doc="prune this share of the last convolution's channels "
                                                       "instead of by accuracy", min=0, max=1)
    step_channels: int = option(1, doc="channels pruned per step of the accuracy search", min=1)
    batch_size: int = option(256, doc="batch of the activation and accuracy passes", min=1)


@torch.no_grad()
def channel_activity(model: nn.Module, layer: NeuronLayer, images, batch_size: int) -> torch.Tensor:
    """Per output channel of ``layer``: the mean of its positive part over ``images`` and positions."""
    device = next(model.parameters()).device
    total, count = torch.zeros(layer.channels, dtype=torch.float64, device=device), 0
    module = model.get_submodule(layer.name)

    def record(_module, _inputs, output):
        nonlocal total, count
        total += output.clamp_min(0).sum(dim=(0, 2, 3)).double()
        count += output.shape[0] * output.shape[2] * output.shape[3]

    handle = module.register_forward_hook(record)
    try:
        with model_mode(model, False):
            for xb, _ in images.unaugmented().loader(batch_size, device=device):
                model(xb)
    finally:
        handle.remove()
    return (total / max(count, 1)).float()


@torch.no_grad()
def accuracy_without(model: nn.Module, layer: NeuronLayer, channels: torch.Tensor, images, batch_size: int) -> float:
    """Accuracy on ``images`` with ``channels`` of ``layer``'s output set to zero."""
    device = next(model.parameters()).device
    keep = torch.ones(layer.channels, device=device)
    keep[channels.to(device)] = 0
    handle = model.get_submodule(layer.name).register_forward_hook(lambda m, i, out: out * keep.view(1, -1, 1, 1))
    correct = n = 0
    try:
        with model_mode(model, False):
            for xb, yb in images.unaugmented().loader(batch_size, device=device):
                correct += int((model(xb).argmax(1) == yb).sum())
                n += len(yb)
    finally:
        handle.remove()
    return correct / max(n, 1)


def dormant_channels(model: nn.Module, layer: NeuronLayer, images, opts: FinePruningOptions) -> torch.Tensor:
    """The channels to prune, least active first: a fixed share, or the longest prefix of the
    activity order (in steps of ``step_channels``) whose pruning keeps the clean accuracy within
    ``max_accuracy_drop`` of the unpruned model's."""
    order = torch.sort(channel_activity(model, layer, images, opts.batch_size).cpu(), stable=True).indices
    if opts.prune_fraction is not None:
        return order[:math.floor(opts.prune_fraction * layer.channels)]
    floor = accuracy_without(model, layer, order[:0], images, opts.batch_size) - opts.max_accuracy_drop
    kept = 0
    for count in range(opts.step_channels, layer.channels + 1, opts.step_channels):
        if accuracy_without(model, layer, order[:count], images, opts.batch_size) < floor:
            break
        kept = count
    return order[:kept]


class ChannelMasked(nn.Module):
    """A convolution whose pruned output channels are held at zero: fine-tuning moves their
    weights no more (no gradient reaches them through the zeroed output)."""

    def __init__(self, conv: nn.Conv2d, keep: torch.Tensor):
        super().__init__()
        self.conv = conv
        self.register_buffer("keep", keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.keep.view(1, -1, 1, 1)


def _swap(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def pruned_copy(model: nn.Module, layer: NeuronLayer, channels: torch.Tensor) -> nn.Module:
    """A copy with ``channels`` of ``layer`` pruned: their weights and bias zeroed and the output
    held at zero through fine-tuning (:func:`finalise` folds it back into a plain convolution)."""
    pruned = copy.deepcopy(model)
    conv = pruned.get_submodule(layer.name)
    keep = torch.ones(layer.channels, device=conv.weight.device)
    keep[channels.to(keep.device)] = 0
    zero_neurons(pruned, layer, channels)
    if conv.bias is not None:
        with torch.no_grad():
            conv.bias.mul_(keep)
    _swap(pruned, layer.name, ChannelMasked(conv, keep))
    return pruned


def finalise(model: nn.Module, layer: NeuronLayer) -> nn.Module:
    """The plain convolution back in place (the model's own state-dict names), its pruned
    channels' weights and bias zero."""
    masked = model.get_submodule(layer.name)
    conv = masked.conv
    with torch.no_grad():
        conv.weight.mul_(masked.keep.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(masked.keep)
    _swap(model, layer.name, conv)
    return model


@BACKDOOR_DEFENSES.register("fine-pruning", options=FinePruningOptions)
def fine_pruning_defense(run: TrainedRun, opts: FinePruningOptions, log, show_progress) -> dict:
    """Prune the last convolution's dormant channels on the held-out clean images, fine-tune, measure."""
    clean = holdout_images(run, "fine-pruning")
    start = time.perf_counter()
    layer = last_convolution(run.model)
    channels = dormant_channels(run.model, layer, clean, opts)
    pruned = pruned_copy(run.model, layer, channels)
    tuned = fine_tune(pruned, clean, lambda model, x, y: F.cross_entropy(model(x), y), Tuning.of(opts),
                      run.spec.seed, show_progress, desc="fine-pruning")
    purified = finalise(tuned, layer)
    seconds = time.perf_counter() - start
    log(f"fine-pruning: {len(channels)} of {layer.channels} channels of {layer.name} pruned, then "
        f"{opts.tune_epochs} epochs of fine-tuning on {describe_holdout(clean)}")
    run.add_artifact("fine_pruning_model.safetensors", purified.state_dict())
    return {"fine_pruning_clean_data": describe_holdout(clean), "fine_pruning_layer": layer.name,
            "fine_pruning_channels": layer.channels, "fine_pruning_pruned": len(channels),
            "fine_pruning_pruned_channels": " ".join(str(int(c)) for c in channels),
            **purification_metrics("fine_pruning", run, purified, seconds, show_progress)}
