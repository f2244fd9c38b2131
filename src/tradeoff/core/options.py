"""Dataclasses from plain mappings, every key, type and bound checked: one sentence per mistake.

Used for the spec's sections and for every component's options. A field's metadata (see
:func:`tradeoff.core.spec.option`) gives its bounds and, with ``choices``, the registry whose names
are its allowed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union

from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import registry_of

LARGEST_WHOLE_NUMBER = 2**63  # what a tensor index, a seed or a count can hold


def close_match(name: str, options, prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or an empty string."""
    match = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {prefix + match[0]!r}?)" if match else ""


def check_type(value, hint, where: str):
    """``value`` as the type ``hint`` asks for (ints accepted for floats), or a TradeoffError."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_type(value, inner[0], where)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value in allowed:
            return value
        raise TradeoffError(f"spec key {where!r} must be one of {', '.join(map(repr, allowed))}, not {value!r}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TradeoffError(f"spec key {where!r} must be true or false, not {value!r}.")
    if hint is int:
        whole = value if isinstance(value, int) and not isinstance(value, bool) else (
            int(value) if isinstance(value, float) and value.is_integer() else None)
        if whole is not None and abs(whole) < LARGEST_WHOLE_NUMBER:
            return whole
        size = " below 2^63" if whole is not None else ""
        raise TradeoffError(f"spec key {where!r} must be a whole number{size}, not {value!r}.")
    if hint is float:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as text
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        raise TradeoffError(f"spec key {where!r} must be a finite number, not {value!r}.")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TradeoffError(f"spec key {where!r} must be text, not {value!r}.")
    if hint is list or origin is list:
        if isinstance(value, list):
            return value
        raise TradeoffError(f"spec key {where!r} must be a list, not {value!r}.")
    return value


def check_bounds(value, meta, where: str) -> None:
    """The field's ``min``/``max`` (inclusive) and ``above``/``below`` (exclusive) bounds, and its
    registry ``choices``."""
    if value is None:
        return
    low = ("[", meta["min"], value >= meta["min"]) if "min" in meta else (
        ("(", meta["above"], value > meta["above"]) if "above" in meta else None)
    high = (meta["max"], "]", value <= meta["max"]) if "max" in meta else (
        (meta["below"], ")", value < meta["below"]) if "below" in meta else None)
    if (low and not low[2]) or (high and not high[2]):
        if low and high:
            rule = f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
        elif low:
            rule = f"at least {low[1]}" if low[0] == "[" else f"greater than {low[1]}"
        else:
            rule = f"at most {high[0]}" if high[1] == "]" else f"less than {high[0]}"
        raise TradeoffError(f"{where} must be {rule}, not {value}.")
    if "choices" in meta:
        registry_of(meta["choices"]).get(value, where=where)


def optional_dataclass(hint):
    """The dataclass of an ``Optional[SomeDataclass]`` hint, else None."""
    if typing.get_origin(hint) not in (Union, types.UnionType):
        return None
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    return inner[0] if len(inner) == 1 and dataclasses.is_dataclass(inner[0]) else None


def build(cls, raw, where: str, skip: tuple = ()):
    """An instance of the dataclass ``cls`` from the mapping ``raw`` (None: the defaults).
    Nested dataclass fields are built recursively; ``skip``: field names left to the caller."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TradeoffError(f"spec section {where or 'top level'!r} must be a mapping, not {raw!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            prefix = f"{where}." if where else ""
            raise TradeoffError(f"unknown spec key {path!r}{close_match(str(key), fields, prefix)}.")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, path)
        elif optional_dataclass(hint) is not None and value is not None:  # an optional sub-section
            kwargs[key] = build(optional_dataclass(hint), value, path)
        else:
            kwargs[key] = check_type(value, hint, path)
    obj = cls(**kwargs)
    for name, f in fields.items():
        check_bounds(getattr(obj, name), f.metadata, f"{where}.{name}" if where else name)
    check = getattr(obj, "check", None)
    if callable(check):
        check(where)
    return obj


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, doc) of each option of the dataclass ``cls`` (for ``tradeoff list``)."""
    if cls is None:
        return []
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "options":
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out
