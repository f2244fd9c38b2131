"""The model registry and the common model shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tradeoff.registry import Registry


@dataclass(frozen=True)
class ModelRequest:
    shape: tuple  # (C, H, W)
    num_classes: int
    width: float = 1.0
    denoise: bool = False


class FeatureClassifier(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Linear):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: Registry = Registry("model")


def build_model(name: str, shape: tuple, num_classes: int, width: float = 1.0,
                denoise: bool = False) -> FeatureClassifier:
    return MODELS.get(name)(ModelRequest(tuple(shape), num_classes, width, denoise))


def flat_size(module: nn.Module, shape: tuple) -> int:
    with torch.no_grad():
        return module(torch.zeros(1, *shape)).flatten(1).shape[1]


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))
