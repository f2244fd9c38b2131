"""Small CNNs for MNIST-sized images: the Madry CNN of the protocol and a faster small CNN."""

from __future__ import annotations

from torch import nn

from tradeoff.models.base import MODELS, FeatureClassifier, ModelRequest, scaled, with_dense_head
from tradeoff.models.denoise import NonLocalDenoise


def _conv_pool_net(req: ModelRequest, channels: tuple, kernel: int, hidden: int) -> FeatureClassifier:
    """conv-ReLU-maxpool blocks (a denoising block after each pooling when asked), then FC-ReLU."""
    layers: list[nn.Module] = []
    c_in = req.shape[0]
    for c in channels:
        c_out = scaled(c, req.width)
        layers += [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]
        if req.denoise:
            layers.append(NonLocalDenoise(c_out))
        c_in = c_out
    return with_dense_head(layers, req, hidden)


@MODELS.register("madry-cnn")
def madry_cnn(req: ModelRequest) -> FeatureClassifier:
    """conv5x5x32 + ReLU, maxpool 2, conv5x5x64 + ReLU, maxpool 2, FC 1024 + ReLU, FC."""
    return _conv_pool_net(req, (32, 64), kernel=5, hidden=1024)


@MODELS.register("small-cnn")
def small_cnn(req: ModelRequest) -> FeatureClassifier:
    """conv3x3x16 + ReLU, maxpool 2, conv3x3x32 + ReLU, maxpool 2, FC 100 + ReLU, FC: CPU-sized."""
    return _conv_pool_net(req, (16, 32), kernel=3, hidden=100)
