"""Backdoor triggers by name (``tradeoff list triggers``). Each trigger is one module that
declares its options and registers itself; every trigger compiles to the one stamping rule of
:mod:`tradeoff.triggers.base`."""

from tradeoff.triggers import blend, channel, narcissus, sig, sticker, wanet, watermark  # noqa: F401  (register the triggers)
from tradeoff.triggers.base import (
                                    CORNERS,
                                    TRIGGERS,
                                    PatchTrigger,
                                    PlacementOptions,
                                    Stamp,
                                    Trigger,
                                    apply_stamp,
                                    make_trigger,
                                    patch_box,
                                    trigger_linf,
)
from tradeoff.triggers.sticker import sticker_pattern
from tradeoff.triggers.watermark import fit_pattern, load_pattern_file

__all__ = ["CORNERS", "TRIGGERS", "PatchTrigger", "PlacementOptions", "Stamp", "Trigger", "apply_stamp",
           "make_trigger", "patch_box", "sticker_pattern", "trigger_linf", "fit_pattern", "load_pattern_file"]
