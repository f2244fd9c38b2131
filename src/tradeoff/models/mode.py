"""Switching a model between train and eval mode for the length of a block: training, crafting,
evaluation and every backdoor defence put the model in the mode they need and leave it as it was."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def model_mode(model: nn.Module, training: bool):
    """Temporarily put the model in train or eval mode; its earlier mode is restored on exit."""
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)
