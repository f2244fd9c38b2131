"""Safe loading of model weights: safetensors, or a torch file read with ``weights_only=True``
(nothing is unpickled)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tradeoff.errors import TradeoffError


def load_state(path: Path) -> dict:
    """Model weights from safetensors, or a torch file loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise TradeoffError(f"checkpoint {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  a corrupt or unsafe file is the user's input problem
        raise TradeoffError(f"checkpoint {str(path)!r} cannot be loaded safely ({e.__class__.__name__}).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TradeoffError(f"checkpoint {str(path)!r} does not hold a state dict.")
    return state
