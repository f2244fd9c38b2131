"""Interval bound propagation (Gowal et al. 2018).

An L-inf box around each input, clipped to the pixel range [0, 1], is pushed through the
network layer by layer as elementwise ``(lower, upper)`` bounds. Affine layers use the
center/radius form (``mu' = W mu + b``, ``r' = |W| r``), monotone layers (ReLU, pooling) map
the two ends. The last linear layer is folded into the specification: the bounds on the
margins ``z_j - z_y`` come from the penultimate interval and the rows ``W_j - W_y``, which is
tighter than subtracting two logit intervals.

Propagation rules are registered per layer type (exact type: a subclass may change the
computation, so it needs its own rule); a layer without one raises :class:`TradeoffError`.
Inside :func:`recording_relu_inputs` every ReLU's input bounds are kept, for regularisers that
shape them (IBP's warm-up regularisers).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.core.errors import TradeoffError
from tradeoff.models.base import FeatureClassifier
from tradeoff.models.resnet import Normalize

Bounds = tuple[torch.Tensor, torch.Tensor]
RULES: dict[type, Callable[[nn.Module, torch.Tensor, torch.Tensor], Bounds]] = {}
_RELU_INPUTS: ContextVar[list | None] = ContextVar("relu_inputs", default=None)


def interval_rule(*layer_types: type):
    """Register ``fn(layer, lower, upper) -> (lower, upper)`` for the given layer types."""

    def add(fn):
        for t in layer_types:
            if t in RULES:
                raise ValueError(f"interval rule for {t.__name__} is registered twice")
            RULES[t] = fn
        return fn

    return add


def supported_layers() -> list[str]:
    return sorted(t.__name__ for t in RULES)


def interval_forward(module: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """Elementwise bounds on ``module``'s output for any input between ``lower`` and ``upper``."""
    rule = RULES.get(type(module))
    if rule is None:
        raise TradeoffError(
            f"interval bound propagation does not support the layer {type(module).__name__}; "
            f"supported layers: {', '.join(supported_layers())}.")
    return rule(module, lower, upper)


def _affine(fn_center, fn_radius, lower, upper) -> Bounds:
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    mu, r = fn_center(mu), fn_radius(r)
    return mu - r, mu + r


@interval_rule(nn.Sequential)
def _sequential(layer, lower, upper):
    for child in layer:
        lower, upper = interval_forward(child, lower, upper)
    return lower, upper


@interval_rule(FeatureClassifier)
def _feature_classifier(layer, lower, upper):
    lower, upper = interval_forward(layer.features, lower, upper)
    return interval_forward(layer.classifier, lower, upper)


@interval_rule(nn.Linear)
def _linear(layer, lower, upper):
    return _affine(lambda m: F.linear(m, layer.weight, layer.bias),
                   lambda r: F.linear(r, layer.weight.abs()), lower, upper)


@interval_rule(nn.Conv2d)
def _conv2d(layer, lower, upper):
    # _conv_forward applies the layer's padding mode; every mode copies pixels, so |W| on the
    # padded radius stays exact.
    return _affine(lambda m: layer._conv_forward(m, layer.weight, layer.bias),
                   lambda r: layer._conv_forward(r, layer.weight.abs(), None), lower, upper)


@interval_rule(Normalize)
def _normalize(layer, lower, upper):
    return _affine(lambda m: (m - layer.mean) / layer.std, lambda r: r / layer.std.abs(), lower, upper)


@contextmanager
def recording_relu_inputs() -> Iterator[list[Bounds]]:
    """Within the block, every ReLU that bounds pass through appends its input bounds
    ``(lower, upper)`` (pre-activation bounds, in network order) to the yielded list."""
    record: list[Bounds] = []
    token = _RELU_INPUTS.set(record)
    try:
        yield record
    finally:
        _RELU_INPUTS.reset(token)


@interval_rule(nn.ReLU)
def _relu(layer, lower, upper):
    record = _RELU_INPUTS.get()
    if record is not None:
        record.append((lower, upper))
    return F.relu(lower), F.relu(upper)


@interval_rule(nn.LeakyReLU)
def _leaky_relu(layer, lower, upper):
    if layer.negative_slope < 0:
        raise TradeoffError("interval bound propagation needs LeakyReLU with a non-negative slope.")
    return F.leaky_relu(lower, layer.negative_slope), F.leaky_relu(upper, layer.negative_slope)


@interval_rule(nn.Sigmoid, nn.Tanh)
def _monotone(layer, lower, upper):
    return layer(lower), layer(upper)


@interval_rule(nn.MaxPool2d)
def _max_pool(layer, lower, upper):
    if layer.return_indices:
        raise TradeoffError("interval bound propagation does not support MaxPool2d with return_indices.")
    return layer(lower), layer(upper)


# Averages have non-negative weights, so the two ends map to the two ends.
@interval_rule(nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)
def _ends(layer, lower, upper):
    return layer(lower), layer(upper)


# --------------------------------------------------------------------------- specifications


def input_box(x: torch.Tensor, eps: float, low: float = 0.0, high: float = 1.0) -> Bounds:
    """The L-inf ball of radius ``eps`` around ``x``, intersected with the pixel range."""
    return (x - eps).clamp(low, high), (x + eps).clamp(low, high)


def _classifier_parts(model) -> tuple[nn.Module, nn.Linear]:
    # Look through DistributedDataParallel (.module) and torch.compile (._orig_mod) wrappers: the
    # nominal loss still runs through the wrapper, so DDP prepares its gradient reduction.
    for attribute in ("_orig_mod", "module", "_orig_mod"):
        model = getattr(model, attribute, model)
    if not isinstance(model, FeatureClassifier) or type(model.classifier) is not nn.Linear:
        raise TradeoffError(
            f"certification needs a model with 'features' and a linear 'classifier', not {type(model).__name__}.")
    return model.features, model.classifier


def logit_bounds(model: nn.Module, x: torch.Tensor, eps: float) -> Bounds:
    """Plain interval bounds on every logit (no specification folded in)."""
    return interval_forward(model, *input_box(x, eps))


def margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Bounds:
    """Lower and upper bounds on ``z_j - z_y`` for every class j, shape (n, K); column y is 0.

    The classifier is folded in: with the penultimate interval (mu, r) and ``C_j = W_j - W_y``,
    ``z_j - z_y`` lies in ``C_j mu + b_j - b_y -/+ |C_j| r``."""
    features, classifier = _classifier_parts(model)
    lower, upper = interval_forward(features, *input_box(x, eps))
    mu, r = (upper + lower) / 2, (upper - lower) / 2
    w = classifier.weight
    spec_w = w.unsqueeze(0) - w[y].unsqueeze(1)  # (n, K, h)
    center = torch.einsum("nkh,nh->nk", spec_w, mu)
    if classifier.bias is not None:
        b = classifier.bias
        center = center + (b.unsqueeze(0) - b[y].unsqueeze(1))
    radius = torch.einsum("nkh,nh->nk", spec_w.abs(), r)
    return center - radius, center + radius


def worst_case_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Upper bounds on ``z_j - z_y`` (0 at y): cross-entropy over these is the verified loss."""
    return margin_bounds(model, x, y, eps)[1]


def certified(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per image: True when every margin ``z_j - z_y`` (j != y) is proved negative in the box."""
    upper = margin_bounds(model, x, y, eps)[1]
    others = upper.masked_fill(F.one_hot(y, upper.shape[1]).bool(), float("-inf"))
    return others.amax(1) < 0
