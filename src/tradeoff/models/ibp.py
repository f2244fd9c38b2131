"""The networks of IBP certified training (Gowal et al. 2018), built only from layers that
:mod:`tradeoff.models.bounds` propagates intervals through.

Inputs in [0, 1] are normalised inside the model with fixed per-channel statistics, as the IBP
reference code does (MNIST for one channel, CIFAR-10 for three, none otherwise); a fixed affine
map keeps the bounds exact, unlike per-image standardisation.
"""

from __future__ import annotations

from torch import nn

from tradeoff.core.errors import TradeoffError
from tradeoff.models.base import MODELS, FeatureClassifier, ModelRequest, scaled, with_dense_head
from tradeoff.models.resnet import Normalize

_INPUT_STATS = {1: ((0.1307,), (0.3081,)), 3: ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))}


def _normalize(channels: int) -> nn.Module:
    mean, std = _INPUT_STATS.get(channels, ((0.0,) * channels, (1.0,) * channels))
    return Normalize(mean, std)


def _conv_net(req: ModelRequest, convs: tuple, hidden: int) -> FeatureClassifier:
    """``convs``: (channels, kernel, stride, padding) per conv + ReLU; then FC ``hidden`` + ReLU."""
    if req.denoise:
        raise TradeoffError("the IBP networks cannot hold denoising blocks (no interval rule for them).")
    layers: list[nn.Module] = [_normalize(req.shape[0])]
    c_in = req.shape[0]
    for channels, kernel, stride, padding in convs:
        c_out = scaled(channels, req.width)
        layers += [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding), nn.ReLU()]
        c_in = c_out
    return with_dense_head(layers, req, hidden)


@MODELS.register("ibp-large")
def ibp_large(req: ModelRequest) -> FeatureClassifier:
    """conv3x3 64, conv3x3 64, conv3x3 128 stride 2, conv3x3 128, conv3x3 128 (ReLU, same
    padding), FC 512 + ReLU, FC: the protocol's "large" IBP network."""
    return _conv_net(req, ((64, 3, 1, 1), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1), (128, 3, 1, 1)), 512)


@MODELS.register("ibp-small")
def ibp_small(req: ModelRequest) -> FeatureClassifier:
    """conv4x4 16 stride 2, conv4x4 32 (ReLU, no padding), FC 100 + ReLU, FC: Gowal et al.'s
    "small" network, sized for CPU budgets."""
    return _conv_net(req, ((16, 4, 2, 0), (32, 4, 1, 0)), 100)
