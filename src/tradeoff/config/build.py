"""Specs from YAML and ``--set`` overrides: reading, layering, building and validating.

Validation goes through the component registries: a section's kind (``trigger.kind``, ...) must
be a registered name, and the section's other keys are either the section's own fields or the
options that component declares. A layer (a ``base:`` file, a preset, ``--set``) that changes a
section's kind drops the options of the kind it replaces, so that layers never mix two kinds'
options. Spec keys of earlier versions are one sentence naming their new name.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import yaml

# The component packages register their kinds on import; validation needs every registry.
from tradeoff import adversarial_defenses, backdoor_defenses, data, models, poisoning, triggers  # noqa: F401
from tradeoff.attacks import pgd  # noqa: F401
from tradeoff.attacks.autoattack import check as check_autoattack
from tradeoff.backdoor_defenses import check_entry, parse_entry
from tradeoff.core import device  # noqa: F401
from tradeoff.core.errors import TradeoffError
from tradeoff.core.options import build, close_match
from tradeoff.core.registry import registry_of
from tradeoff.core.spec import SECTIONS, Spec, kinded_sections, renamed_key
from tradeoff.poisoning import check_poisoning, perturbs_images
from tradeoff.training import loop  # noqa: F401

# --------------------------------------------------------------------------- reading and layering


MAX_YAML_BYTES = 1 << 20  # a spec, table or preset file is a few kilobytes
MAX_YAML_NODES = 100_000  # values once every alias is expanded: bounds an alias bomb
MAX_YAML_DEPTH = 64


def read_yaml(path: str | Path, what: str = "spec file") -> dict:
    """A YAML mapping from ``path`` (``yaml.safe_load``, bounded), or one sentence saying what is wrong."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise TradeoffError(f"{what} {str(path)!r} is larger than {MAX_YAML_BYTES // 1024} KiB; a spec is a few lines.")
        text = path.read_text()
    except FileNotFoundError:
        raise TradeoffError(f"{what} {str(path)!r} does not exist.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise TradeoffError(f"{what} {str(path)!r} cannot be read ({e.__class__.__name__}).") from None
    raw = load_yaml_text(text, f"{what} {str(path)!r}")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TradeoffError(f"{what} {str(path)!r} must hold a mapping.")
    return raw


def load_yaml_text(text: str, what: str):
    """``yaml.safe_load(text)``, refused in one sentence when it is not valid YAML or when it would
    expand (aliases of aliases: an alias bomb) or nest beyond what any spec needs."""
    if len(text) > MAX_YAML_BYTES:
        raise TradeoffError(f"{what} is larger than {MAX_YAML_BYTES // 1024} KiB; a spec is a few lines.")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_expanded_size(node, what)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise TradeoffError(f"{what} is not valid YAML{at}.") from None
    except RecursionError:
        raise TradeoffError(f"{what} nests deeper than {MAX_YAML_DEPTH} levels.") from None


def _check_expanded_size(root, what: str) -> None:
    """Count the values of the composed document as if every alias were expanded (each shared node
    once per reference), stopping at the first bound crossed; a node inside itself is refused."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > MAX_YAML_DEPTH:
            raise TradeoffError(f"{what} nests deeper than {MAX_YAML_DEPTH} levels.")
        if id(node) in open_nodes:
            raise TradeoffError(f"{what} holds a value that contains itself (a recursive alias).")
        open_nodes.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_YAML_NODES:
                raise TradeoffError(f"{what} expands to more than {MAX_YAML_NODES} values (aliases of aliases?); "
                                    "a spec is a few lines.")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def merge(base: dict, update: dict) -> dict:
    """``update`` layered over ``base`` (nested mappings merged). Where ``update`` changes a
    section's kind, the options of the replaced kind are dropped."""
    out = dict(base)
    kinded = kinded_sections()
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            cls = kinded.get(key)
            if cls is not None and cls.kind_key in value and value[cls.kind_key] != old.get(
                    cls.kind_key, _default(cls, cls.kind_key)):
                old = {k: v for k, v in old.items() if k in _common_fields(cls)}
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.epochs=3", "adversarial_defense.objective=pgd"]`` -> a nested dict (values as YAML)."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise TradeoffError(f"--set expects key=value, got {pair!r}.")
        key, text = pair.split("=", 1)
        try:
            value = load_yaml_text(text, f"--set {key!r}") if text else ""
        except TradeoffError:
            if len(text) > MAX_YAML_BYTES:
                raise
            value = text  # not YAML: the text itself (validation then says whether it fits)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TradeoffError(f"--set {key!r} conflicts with another --set.")
        node[parts[-1]] = value
    return nested


def load_spec(path: str | Path | None = None, overrides: list[str] | dict | None = None,
              base: dict | None = None) -> Spec:
    """Read a YAML spec (or start from ``base`` or the defaults), apply ``--set`` overrides, build
    and validate. A spec file may name ``base: other.yaml`` (relative to itself) to inherit from it."""
    raw: dict = dict(base or {})
    if path is not None:
        raw = merge(raw, _read_with_bases(Path(path), set()))
    if overrides:
        raw = merge(raw, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    spec = spec_from_dict(raw)
    if path is not None and "name" not in raw:
        spec.name = Path(path).stem
    return spec


def _read_with_bases(path: Path, seen: set) -> dict:
    if path.resolve() in seen:
        raise TradeoffError(f"spec file {str(path)!r} inherits from itself.")
    seen.add(path.resolve())
    raw = read_yaml(path)
    parent = raw.pop("base", None)
    if parent is None:
        return raw
    return merge(_read_with_bases(path.parent / str(parent), seen), raw)


# --------------------------------------------------------------------------- building


def flat_fields(d: dict, prefix: str = "") -> dict:
    """{'a.b': value} for every leaf of nested mappings."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_fields(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differing_fields(a: dict, b: dict, skip: set = frozenset()) -> list[str]:
    """The dotted names of the fields in which two specs (as plain data) differ."""
    fa, fb = flat_fields(a), flat_fields(b)
    return [k for k in sorted(set(fa) | set(fb)) if k not in skip and fa.get(k) != fb.get(k)]


def spec_from_dict(raw: dict) -> Spec:
    """A validated :class:`Spec` from plain data (a YAML mapping with every layer applied)."""
    if not isinstance(raw, dict):
        raise TradeoffError(f"a spec must be a mapping, not {raw!r}.")
    renamed = renamed_key(raw)
    if renamed:
        raise TradeoffError(f"{renamed}; rename it in the spec.")
    top = {k: v for k, v in raw.items() if k not in SECTIONS}
    spec = build(Spec, top, "", skip=tuple(SECTIONS))
    for name, cls in SECTIONS.items():
        setattr(spec, name, build_section(name, cls, raw.get(name)))
    # each entry parsed once into its defence's options: the name and every option, before any training
    spec.backdoor_defenses = [parse_entry(entry) for entry in spec.backdoor_defenses]
    for entry in spec.backdoor_defenses:
        check_entry(entry, spec)
    check_run_name(spec.name)
    for item in spec.train.lr_schedule:
        if not (isinstance(item, list) and len(item) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in item)):
            raise TradeoffError(f"train.lr_schedule entries must be [at, lr] pairs of finite numbers, not {item!r}.")
    if spec.model.from_scratch is False and not spec.model.checkpoint:
        raise TradeoffError("this protocol fine-tunes released weights: set model.checkpoint to a file (for "
                            "ImageNet, torchvision's ResNet-50 weights, a v1.5 ResNet), or model.from_scratch=true "
                            "to train from scratch on purpose.")
    if perturbs_images(spec.poison) and data.DATASETS.get(spec.data.dataset).streamed:
        raise TradeoffError(f"poison.method {spec.poison.method!r} perturbs the training images in memory before "
                            f"stamping, so the streamed dataset {spec.data.dataset!r} is not supported.")
    check_poisoning(spec.poison, spec.trigger.kind, data.DATASETS.get(spec.data.dataset).streamed)
    ood = getattr(spec.poison.options, "ood_dataset", None)
    if ood is not None and (ood not in data.DATASETS or data.DATASETS.get(ood).streamed):
        raise TradeoffError(f"poison.ood_dataset {ood!r} is not an in-memory dataset; choose one of: "
                            f"{', '.join(n for n in data.DATASETS.names() if not data.DATASETS.get(n).streamed)}.")
    if spec.model.from_scratch and spec.model.checkpoint:
        raise TradeoffError("model.from_scratch is true but model.checkpoint is set; choose one.")
    if spec.eval.autoattack is not None:
        check_autoattack(spec.eval.autoattack, spec.eval.attack)  # the package too, before any training
    return spec


def check_run_name(name: str) -> None:
    """A run's name is its folder's name inside the output folder: one plain, visible folder name."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or len(name) > 200:
        raise TradeoffError(f"spec key 'name' must be a plain folder name (no '/', not starting with '.', at "
                            f"most 200 characters), not {name!r}.")


def section(name: str, **keys):
    """One spec section from its YAML keys, built and validated: ``section("trigger", size=2)``
    (for Python users and tests; a kinded section's options sit flat beside its kind)."""
    if name not in SECTIONS:
        raise TradeoffError(f"unknown spec section {name!r}; choose one of: {', '.join(SECTIONS)}.")
    return build_section(name, SECTIONS[name], keys)


def build_section(name: str, cls, raw):
    """One section; for a kinded section, its common fields plus the chosen component's options."""
    if not hasattr(cls, "kind_key"):
        return build(cls, raw, name)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TradeoffError(f"spec section {name!r} must be a mapping, not {raw!r}.")
    common = _common_fields(cls)
    section = build(cls, {k: v for k, v in raw.items() if k in common}, name, skip=("options",))
    kind = getattr(section, cls.kind_key)
    registry = registry_of(cls.registry)
    entry = registry.entry(kind, where=f"{name}.{cls.kind_key}")
    rest = {k: v for k, v in raw.items() if k not in common}
    for key in rest:
        if entry.options is None or key not in {f.name for f in dataclasses.fields(entry.options)}:
            raise TradeoffError(_not_an_option(name, cls, registry, kind, key))
    section.options = build(entry.options, rest, name) if entry.options is not None else None
    return section


def _not_an_option(section: str, cls, registry, kind: str, key: str) -> str:
    owners = [e.name for e in registry.entries()
              if e.options is not None and key in {f.name for f in dataclasses.fields(e.options)}]
    where = f"{section}.{key}"
    if owners:
        return (f"spec key {where!r} is an option of {registry.kind} {' or '.join(map(repr, owners))}, "
                f"not of {kind!r}.")
    known = list(_common_fields(cls)) + [f.name for e in registry.entries() if e.options is not None
                                         for f in dataclasses.fields(e.options)]
    return f"unknown spec key {where!r}{close_match(key, known, section + '.')}."


def _common_fields(cls) -> tuple:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "options")


def _default(cls, field_name: str):
    return next(f.default for f in dataclasses.fields(cls) if f.name == field_name)
