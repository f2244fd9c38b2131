"""The neurons that pruning defences score and remove, named by layer and channel.

A neuron is a batch-norm channel where the model has batch norm (every ``BatchNorm2d``: the
pre-activation ResNets, ResNet-50, the denoising blocks), and otherwise a convolution's output
channel (every ``Conv2d``: the small and Madry CNNs, the IBP networks). Either way a neuron has a
per-channel scale (the layer's weight along its first dimension) and bias, and removing it sets
its scale to zero (its bias is kept, as the pruning of Wu & Wang's ANP does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BATCH_NORM, CONVOLUTION = "batch-norm channel", "convolution channel"


@dataclass(frozen=True)
class NeuronLayer:
    """One layer's neurons: its name in ``model.named_modules()``, the module and the count."""

    name: str
    module: nn.Module
    channels: int

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias_name(self) -> str | None:
        return f"{self.name}.bias" if self.module.bias is not None else None


def neuron_kind(model: nn.Module) -> str:
    """What a neuron of ``model`` is: a batch-norm channel when it has batch norm with an affine
    scale, else a convolution channel."""
    has_bn = any(isinstance(m, nn.BatchNorm2d) and m.affine for m in model.modules())
    return BATCH_NORM if has_bn else CONVOLUTION


def neuron_layers(model: nn.Module) -> list[NeuronLayer]:
    """Every layer holding neurons of ``model`` (see :func:`neuron_kind`), in module order."""
    if neuron_kind(model) == BATCH_NORM:
        return [NeuronLayer(name, m, m.num_features) for name, m in model.named_modules()
                if isinstance(m, nn.BatchNorm2d) and m.affine]
    return [NeuronLayer(name, m, m.out_channels) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def last_convolution(model: nn.Module) -> NeuronLayer:
    """The model's last ``Conv2d`` in module order (fine-pruning's layer)."""
    convs = [NeuronLayer(name, m, m.out_channels) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no convolution")
    return convs[-1]


def zero_neurons(model: nn.Module, layer: NeuronLayer, channels: torch.Tensor) -> None:
    """Set the scale of ``channels`` (indices) of ``layer`` in ``model`` to zero, in place."""
    module = model.get_submodule(layer.name)
    with torch.no_grad():
        module.weight[channels.to(module.weight.device)] = 0
