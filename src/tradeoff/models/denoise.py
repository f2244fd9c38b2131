"""The non-local denoising block (Xie et al. 2019, embedded-Gaussian non-local means).

y_i = sum_j softmax_j(theta(x)_i . phi(x)_j / sqrt(C/2)) x_j, then a 1x1 conv, batch norm and
a residual add: out = x + BN(conv(y)).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class NonLocalDenoise(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 2)
        self.theta = nn.Conv2d(channels, inner, 1, bias=False)
        self.phi = nn.Conv2d(channels, inner, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.scale = 1.0 / math.sqrt(inner)
        nn.init.zeros_(self.bn.weight)  # the block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (n, hw, c/2)
        phi = self.phi(x).flatten(2)  # (n, c/2, hw)
        weights = torch.softmax(torch.bmm(theta, phi) * self.scale, dim=-1)  # (n, hw, hw)
        y = torch.bmm(weights, x.flatten(2).transpose(1, 2))  # (n, hw, c)
        y = y.transpose(1, 2).reshape(n, c, h, w)
        return x + self.bn(self.out(y))
