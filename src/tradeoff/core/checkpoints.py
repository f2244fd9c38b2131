"""Safe loading of model weights: safetensors, or a torch file read with ``weights_only=True``
(nothing is unpickled that could run code)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from tradeoff.core.errors import TradeoffError


def load_state(path: Path) -> dict:
    """Model weights (a mapping of names to tensors) from safetensors, or a torch file loaded with
    ``weights_only=True``; anything else is one sentence, with no library warning printed."""
    path = Path(path)
    if not path.is_file():
        raise TradeoffError(f"checkpoint {str(path)!r} does not exist.")
    try:
        # torch warns about pickle protocols and weights_only before refusing a file; the
        # sentence below says all a user needs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(
                path, map_location="cpu", weights_only=True)
    except RecursionError:
        raise TradeoffError(f"checkpoint {str(path)!r} cannot be loaded safely (nested too deeply).") from None
    except Exception as e:  # noqa: BLE001  a corrupt or unsafe file is the user's input problem
        raise TradeoffError(f"checkpoint {str(path)!r} cannot be loaded safely ({e.__class__.__name__}; "
                            "expected safetensors, or a torch file of tensors only).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TradeoffError(f"checkpoint {str(path)!r} does not hold a state dict.")
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise TradeoffError(f"checkpoint {str(path)!r} is not a state dict of tensors (entry {str(odd)[:60]!r}).")
    return state
