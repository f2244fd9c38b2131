"""The protocol's CIFAR network: the pre-activation unit against a hand computation, and where
its first unit activates before the residual."""

import torch
import torch.nn.functional as F

from tradeoff.models import build_model
from tradeoff.models.resnet import PreActUnit


def hand_unit(unit: PreActUnit, x: torch.Tensor, activate_before_residual: bool) -> torch.Tensor:
    """The original's residual unit, written out: BN-lReLU (shared with the shortcut when it
    activates before the residual), conv, BN-lReLU, conv, plus the avg-pooled, zero-padded shortcut."""
    a = F.leaky_relu(F.batch_norm(x, unit.bn1.running_mean, unit.bn1.running_var, unit.bn1.weight, unit.bn1.bias), 0.1)
    h = F.conv2d(a, unit.conv1.weight, stride=unit.stride, padding=1)
    h = F.leaky_relu(F.batch_norm(h, unit.bn2.running_mean, unit.bn2.running_var, unit.bn2.weight, unit.bn2.bias), 0.1)
    h = F.conv2d(h, unit.conv2.weight, padding=1)
    shortcut = a if activate_before_residual else x
    if unit.stride > 1:
        shortcut = F.avg_pool2d(shortcut, unit.stride)
    pad = h.shape[1] - shortcut.shape[1]
    return h + F.pad(shortcut, (0, 0, 0, 0, pad // 2, pad // 2))


def test_preact_units_match_the_hand_computation_with_and_without_activating_before_the_residual():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8, 8, dtype=torch.float64)
    for activate, (c_out, stride) in [(True, (16, 1)), (False, (16, 1)), (False, (32, 2))]:
        unit = PreActUnit(16, c_out, stride, activate_before_residual=activate).double().eval()
        for bn in (unit.bn1, unit.bn2):  # statistics that make the two shortcuts differ
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        assert torch.allclose(unit(x), hand_unit(unit, x, activate), atol=1e-12)


def test_only_the_first_unit_of_the_cifar_network_activates_before_its_residual():
    for name, units in (("preact-resnet", 15), ("preact-resnet-small", 3)):
        model = build_model(name, (3, 32, 32), 10)
        flags = [m.activate_before_residual for m in model.modules() if isinstance(m, PreActUnit)]
        assert flags == [True] + [False] * (units - 1)
