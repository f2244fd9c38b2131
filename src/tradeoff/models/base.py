"""The model registry and the common model shape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tradeoff.core.checkpoints import load_state
from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import Registry


@dataclass(frozen=True)
class ModelRequest:
    shape: tuple  # (C, H, W)
    num_classes: int
    width: float = 1.0
    denoise: bool = False


class FeatureClassifier(nn.Module):
    """``features`` (everything up to the penultimate representation) then a linear
    ``classifier``. ``representation_layer`` names the module whose output the filtering backdoor
    defences read by default (the layer the original's code reads); None: ``features``' output."""

    def __init__(self, features: nn.Sequential, classifier: nn.Linear, representation_layer: str | None = None):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.representation_layer = representation_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: Registry = Registry("model")
INITIALIZATIONS: Registry = Registry("weight initialisation", plural="initialisations")


@INITIALIZATIONS.register("default")
def default_initialization(model: nn.Module) -> None:
    """Each layer's own PyTorch initialisation."""


@INITIALIZATIONS.register("ibp")
def ibp_initialization(model: nn.Module) -> None:
    """IBP initialisation (Shi et al. 2021): every convolution and linear layer but the last (the
    classifier) drawn from N(0, 2 pi / fan_in^2), biases kept, so interval radii neither explode
    nor vanish with depth at the start of certified training."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for layer in layers[:-1]:
            fan_in = layer.weight[0].numel()
            layer.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)


def build_model(name: str, shape: tuple, num_classes: int, width: float = 1.0,
                denoise: bool = False) -> FeatureClassifier:
    return MODELS.get(name)(ModelRequest(tuple(shape), num_classes, width, denoise))


def model_for(spec, shape: tuple, num_classes: int, device) -> FeatureClassifier:
    """The spec's model (``model`` section, denoising blocks from ``adversarial_defense``),
    initialised by ``model.init``, with ``model.checkpoint``'s weights where it names them, on
    ``device``."""
    model = build_model(spec.model.name, shape, num_classes, spec.model.width, spec.adversarial_defense.denoise)
    INITIALIZATIONS.get(spec.model.init)(model)
    if spec.model.checkpoint:
        state = adapt_state(model, load_state(Path(spec.model.checkpoint)))
        missing, _ = model.load_state_dict(state, strict=False)
        if len(missing) == len(model.state_dict()):
            raise TradeoffError(f"checkpoint {spec.model.checkpoint!r} matches no weight of model {spec.model.name!r}.")
    return model.to(device)


def flat_size(module: nn.Module, shape: tuple) -> int:
    with torch.no_grad():
        return module(torch.zeros(1, *shape)).flatten(1).shape[1]


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def adapt_state(model: nn.Module, state: dict) -> dict:
    """A checkpoint's state dict in ``model``'s naming: wrapper prefixes (``module.`` from DDP,
    ``_orig_mod.`` from torch.compile) are dropped, the model's ``checkpoint_aliases`` (a foreign
    prefix -> our prefix, e.g. torchvision's ``layer1`` -> ``features.5``) are applied, and
    entries whose shape differs from the model's (a classifier head for another number of
    classes) are left out, so that fine-tuning starts from everything else."""
    own = model.state_dict()
    aliases = getattr(model, "checkpoint_aliases", {})
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        if key not in own:
            head, _, rest = key.partition(".")
            if head in aliases:
                key = f"{aliases[head]}.{rest}"
        if key in own and tuple(own[key].shape) == tuple(value.shape):
            out[key] = value
    return out


def with_dense_head(conv_layers: list, req: ModelRequest, hidden: int) -> FeatureClassifier:
    """Convolutional ``conv_layers``, then flatten, FC ``hidden`` (x width) + ReLU, and the classifier."""
    conv = nn.Sequential(*conv_layers, nn.Flatten())
    h = scaled(hidden, req.width)
    features = nn.Sequential(*conv, nn.Linear(flat_size(conv, req.shape), h), nn.ReLU())
    return FeatureClassifier(features, nn.Linear(h, req.num_classes))

