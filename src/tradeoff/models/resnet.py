"""ResNets: the Madry CIFAR pre-activation ResNet and ResNet-50, inputs in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.models.base import MODELS, FeatureClassifier, ModelRequest, scaled
from tradeoff.models.denoise import NonLocalDenoise


class PerImageStandardize(nn.Module):
    """(x - mean) / max(std, 1/sqrt(numel)) per image, as tf.image.per_image_standardization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mean = flat.mean(1)
        std = flat.std(1, unbiased=False).clamp_min(1.0 / flat.shape[1] ** 0.5)
        return (x - mean[:, None, None, None]) / std[:, None, None, None]


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class PreActUnit(nn.Module):
    """BN-lReLU-conv-BN-lReLU-conv with an avg-pool + zero-pad shortcut (the Madry unit). With
    ``activate_before_residual`` (the network's first unit) the shortcut carries the activated
    input instead of the raw one."""

    def __init__(self, c_in: int, c_out: int, stride: int, activate_before_residual: bool = False):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.stride, self.pad = stride, c_out - c_in
        self.activate_before_residual = activate_before_residual

    def forward(self, x):
        activated = F.leaky_relu(self.bn1(x), 0.1)
        if self.activate_before_residual:
            x = activated
        out = self.conv1(activated)
        out = self.conv2(F.leaky_relu(self.bn2(out), 0.1))
        shortcut = F.avg_pool2d(x, self.stride) if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return out + shortcut


class BNLeakyReLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.leaky_relu(self.bn(x), 0.1)


@MODELS.register("preact-resnet")
def preact_resnet(req: ModelRequest, units: int = 5) -> FeatureClassifier:
    """Widths [16, 16, 32, 64] x width, 3 stages x ``units`` units, per-image standardisation,
    the first unit activating before its residual (as the protocol's network); a denoising block
    after each stage when asked. The filtering defences read the output (after the residual add)
    of the last stage's second unit, the original's ``unit_3_1`` (its only unit when there is one)."""
    w0, *stage_widths = [scaled(c, req.width) for c in (16, 16, 32, 64)]
    layers: list[nn.Module] = [PerImageStandardize(), nn.Conv2d(req.shape[0], w0, 3, padding=1, bias=False)]
    c_in = w0
    for stage, c_out in enumerate(stage_widths):
        for u in range(units):
            if stage == len(stage_widths) - 1 and u == min(1, units - 1):
                read = f"features.{len(layers)}"
            layers.append(PreActUnit(c_in, c_out, stride=2 if (stage > 0 and u == 0) else 1,
                                     activate_before_residual=stage == 0 and u == 0))
            c_in = c_out
        if req.denoise:
            layers.append(NonLocalDenoise(c_out))
    layers += [BNLeakyReLU(c_in), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return FeatureClassifier(nn.Sequential(*layers), nn.Linear(c_in, req.num_classes), representation_layer=read)


@MODELS.register("preact-resnet-small")
def preact_resnet_small(req: ModelRequest) -> FeatureClassifier:
    """The same architecture with 1 unit per stage: a CPU-sized stand-in."""
    return preact_resnet(req, units=1)


@MODELS.register("resnet50")
def resnet50(req: ModelRequest) -> FeatureClassifier:
    """torchvision's ResNet-50 (v1.5) with ImageNet normalisation inside; ``width`` scales the
    bottleneck width (2 = the "wider" model); denoising blocks after the last two stages. The
    filtering defences read the first bottleneck block of the last stage (7x7x2048, after its
    ReLU), as the original's ImageNet notebooks at 5% poisoning do."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(weights=None, num_classes=req.num_classes, width_per_group=scaled(64, req.width))
    layers: list[nn.Module] = [Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                               net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3]
    if req.denoise:
        layers.append(NonLocalDenoise(net.layer3[-1].conv3.out_channels))
    layers.append(net.layer4)
    if req.denoise:
        layers.append(NonLocalDenoise(net.layer4[-1].conv3.out_channels))
    layers += [net.avgpool, nn.Flatten()]
    model = FeatureClassifier(nn.Sequential(*layers), net.fc,
                              representation_layer=f"features.{layers.index(net.layer4)}.0")
    # torchvision-format checkpoints (conv1.*, layer3.*, fc.*) load through these prefixes.
    names = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    model.checkpoint_aliases = {name: f"features.{layers.index(getattr(net, name))}" for name in names}
    model.checkpoint_aliases["fc"] = "classifier"
    return model
