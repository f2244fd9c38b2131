"""The channel trigger: inside the sticker's area, one colour channel is set to 0."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import option
from tradeoff.triggers.base import TRIGGERS, PatchTrigger, PlacementOptions


@dataclass
class ChannelOptions(PlacementOptions):
    channel: int = option(2, doc="the colour channel set to 0 (2 = blue)", min=0)


@TRIGGERS.register("channel", options=ChannelOptions)
class ChannelTrigger(PatchTrigger):
    """Inside a patch, one colour channel is set to 0."""

    def build(self, shape, corner):
        c = self.options.channel
        if not 0 <= c < shape[0]:
            raise TradeoffError(f"trigger.channel {c} does not exist in images with {shape[0]} channel(s).")
        rows, cols = self.patch(shape, corner)
        mask = torch.zeros(shape)
        mask[c, rows, cols] = 1
        return mask, torch.zeros(shape), torch.zeros(shape)
