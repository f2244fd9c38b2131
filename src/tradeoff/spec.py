"""The experiment spec: dataclasses with defaults for every field, YAML in, clear errors out.

A spec says *what* to run; protocol defaults that depend on the dataset (attack budget,
model, optimiser) are left as ``None`` and filled in by :func:`resolve`, so the run folder's
``spec.yaml`` is always complete and reproduces the run on its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import yaml

from tradeoff.errors import TradeoffError


@dataclass
class DataSpec:
    dataset: str = "mnist"
    root: Optional[str] = None  # else $TRADEOFF_DATA, else the user cache folder
    train_subset: Optional[int] = None  # a seeded class-balanced subset, for CPU budgets
    test_subset: Optional[int] = None
    augment: Optional[bool] = None  # None: the dataset's protocol default
    image_size: Optional[int] = None  # streamed (folder) datasets: crop size
    workers: int = 4  # streamed datasets: loader worker processes
    folder: Optional[str] = None  # folder datasets: the folder under root (default: the dataset's name), or a path


@dataclass
class TriggerSpec:
    kind: str = "sticker"  # sticker | watermark | channel
    pattern: str = "square"  # sticker pattern: square | x | checkerboard
    size: int = 3
    corner: str = "bottom-right"  # top-left | top-right | bottom-left | bottom-right | random
    offset: int = 0  # pixels between the patch and the corner's edges
    eval_corner: str = "bottom-right"  # where the test-time trigger goes
    amplitude: float = 64 / 255  # watermark: x' = clip(x + amplitude * P)
    pattern_file: Optional[str] = None  # watermark: .npy or image file; else a seeded pattern
    pattern_seed: int = 0
    border: int = 2  # watermark: untouched border width
    channel: int = 2  # channel trigger: the colour channel set to 0 (2 = blue)


@dataclass
class PoisonSpec:
    attack: str = "clean-label"  # clean-label | dirty-label | none
    target: int = 7
    # clean-label: the share of the target class's training images that get the trigger.
    fraction_of_target_class: float = 0.5
    # dirty-label: the share of the whole training set drawn from other classes and relabelled.
    fraction_of_training_set: float = 0.05


@dataclass
class AttackSpec:
    norm: str = "linf"  # linf | l2
    eps: Optional[float] = None
    step_size: Optional[float] = None
    steps: Optional[int] = None
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"  # ce | margin
    targeted: bool = False  # one step/steps towards a random wrong label


@dataclass
class ModelSpec:
    name: Optional[str] = None
    width: float = 1.0  # width multiplier
    checkpoint: Optional[str] = None  # initial weights (safetensors or a weights-only torch file)


@dataclass
class DefenseSpec:
    """The adversarial defence: an objective plus optional regulariser and denoising blocks."""

    adversarial: str = "none"  # none | pgd | ... (see tradeoff.objectives)
    attack: AttackSpec = field(default_factory=AttackSpec)
    lipschitz: float = 0.0  # cross-Lipschitz coefficient (0: off)
    denoise: bool = False  # non-local denoising blocks inside the model
    replays: int = 4  # free adversarial training: minibatch replays
    fast_step: float = 1.25  # fast adversarial training: step = fast_step * eps (Wong et al. 2020)
    eps_ramp: float = 0.0  # adversarial training: eps rises linearly from 0 over this fraction of training
    ibp_eps: Optional[float] = None  # IBP: training eps
    ibp_warmup_steps: int = 2000
    ibp_ramp_steps: int = 10000
    ibp_final_mix: float = 0.5  # IBP: weight of the verified loss at the end of the ramp


@dataclass
class TrainSpec:
    epochs: int = 20
    steps: Optional[int] = None  # overrides epochs when set
    batch_size: int = 100
    optimizer: Optional[str] = None  # adam | sgd
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: Optional[float] = None
    lr_schedule: list = field(default_factory=list)  # [[at, lr], ...], piecewise constant
    lr_schedule_unit: str = "steps"  # steps | epochs
    lr_policy: str = "piecewise"  # piecewise (lr, then lr_schedule) | triangular (0 -> lr -> 0)
    lr_peak: float = 0.4  # triangular: where the peak lies, as a fraction of training
    attack_model_mode: str = "eval"  # eval | train: the model's mode while crafting examples
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    channels_last: bool = False
    compile: bool = False


@dataclass
class EvalSpec:
    attack: AttackSpec = field(default_factory=AttackSpec)
    batch_size: int = 500
    adversarial: bool = True  # measure adversarial_robustness
    certified_eps: Optional[float] = None  # IBP-certified robustness at this eps


@dataclass
class Spec:
    name: str = "run"
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    poison: PoisonSpec = field(default_factory=PoisonSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    defense: DefenseSpec = field(default_factory=DefenseSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    backdoor_defenses: list = field(default_factory=list)  # [{name: spectral, ...}, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """A short hash of everything that changes the result (not the name or data root)."""
        d = self.to_dict()
        d.pop("name")
        d["data"].pop("root")
        d["data"].pop("workers")
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------- building


def _close(name: str, options, prefix: str = "") -> str:
    match = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {prefix + match[0]!r}?)" if match else ""


def _check_type(value, hint, where: str):
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TradeoffError(f"spec key {where!r} must be true or false, not {value!r}.")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TradeoffError(f"spec key {where!r} must be a whole number, not {value!r}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as text
            try:
                return float(value)
            except ValueError:
                pass
        raise TradeoffError(f"spec key {where!r} must be a number, not {value!r}.")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TradeoffError(f"spec key {where!r} must be text, not {value!r}.")
    if hint is list or origin is list:
        if isinstance(value, list):
            return value
        raise TradeoffError(f"spec key {where!r} must be a list, not {value!r}.")
    return value


def build_section(cls, raw, where: str):
    """A spec dataclass (a section, or a defence's options) from a mapping, keys and types checked."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise TradeoffError(f"spec section {where or 'top level'!r} must be a mapping, not {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            prefix = f"{where}." if where else ""
            raise TradeoffError(f"unknown spec key {path!r}{_close(str(key), names, prefix)}.")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_section(hint, value, path)
        else:
            kwargs[key] = _check_type(value, hint, path)
    return cls(**kwargs)


def spec_from_dict(raw: dict) -> Spec:
    spec = build_section(Spec, raw, "")
    validate(spec)
    return spec


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.epochs=3", "defense.adversarial=pgd"]`` -> a nested dict (values parsed as YAML)."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise TradeoffError(f"--set expects key=value, got {pair!r}.")
        key, text = pair.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TradeoffError(f"--set {key!r} conflicts with another --set.")
        node[parts[-1]] = value
    return nested


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TradeoffError(f"spec file {str(path)!r} does not exist.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise TradeoffError(f"spec file {str(path)!r} cannot be read ({e.__class__.__name__}).") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise TradeoffError(f"spec file {str(path)!r} is not valid YAML{at}.") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TradeoffError(f"spec file {str(path)!r} must hold a mapping of spec keys.")
    return raw


def load_spec(path: str | Path | None = None, overrides: list[str] | dict | None = None,
              base: dict | None = None) -> Spec:
    """Read a YAML spec (or start from the defaults), apply ``--set`` overrides, validate.

    A spec file may name ``base: other.yaml`` (relative to itself) to inherit from it.
    """
    raw: dict = dict(base or {})
    if path is not None:
        raw = _merge(raw, _read_with_bases(Path(path), set()))
    if overrides:
        upd = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        raw = _merge(raw, upd)
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
    return _merge(_read_with_bases(path.parent / str(parent), seen), raw)


# --------------------------------------------------------------------------- validation

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _require(cond: bool, message: str):
    if not cond:
        raise TradeoffError(message)


def _validate_attack(a: AttackSpec, where: str):
    _require(a.norm in ("linf", "l2"), f"{where}.norm must be 'linf' or 'l2', not {a.norm!r}.")
    _require(a.eps is None or a.eps >= 0, f"{where}.eps must be >= 0, not {a.eps}.")
    _require(a.step_size is None or a.step_size >= 0, f"{where}.step_size must be >= 0, not {a.step_size}.")
    _require(a.steps is None or a.steps >= 1, f"{where}.steps must be at least 1, not {a.steps}.")
    _require(a.restarts >= 1, f"{where}.restarts must be at least 1, not {a.restarts}.")
    _require(a.loss in ("ce", "margin"), f"{where}.loss must be 'ce' or 'margin', not {a.loss!r}.")


def validate(spec: Spec) -> None:
    """Checks that need no data: ranges and names. Image-size checks happen once data is loaded."""
    from tradeoff import data as data_mod
    from tradeoff import models, objectives, triggers

    data_mod.DATASETS.get(spec.data.dataset)
    for key in ("train_subset", "test_subset"):
        n = getattr(spec.data, key)
        _require(n is None or n > 0, f"data.{key} must be a positive number of images, not {n}.")
    _require(spec.data.image_size is None or spec.data.image_size >= 8,
             f"data.image_size must be at least 8 pixels, not {spec.data.image_size}.")
    _require(spec.data.workers >= 0, f"data.workers must be >= 0, not {spec.data.workers}.")
    t = spec.trigger
    triggers.TRIGGERS.get(t.kind)
    _require(t.size >= 1, f"trigger.size must be at least 1 pixel, not {t.size}.")
    _require(t.offset >= 0, f"trigger.offset must be >= 0, not {t.offset}.")
    for key in ("corner", "eval_corner"):
        c = getattr(t, key)
        allowed = CORNERS + (("random",) if key == "corner" else ())
        _require(c in allowed, f"trigger.{key} must be one of {', '.join(allowed)}, not {c!r}.")
    _require(0 <= t.amplitude <= 1, f"trigger.amplitude must be in [0, 1], not {t.amplitude}.")
    p = spec.poison
    _require(p.attack in ("clean-label", "dirty-label", "none"),
             f"poison.attack must be 'clean-label', 'dirty-label' or 'none', not {p.attack!r}.")
    for key in ("fraction_of_target_class", "fraction_of_training_set"):
        v = getattr(p, key)
        _require(0 <= v <= 1, f"poison.{key} must be in [0, 1], not {v}.")
    _require(p.target >= 0, f"poison.target must be a class index >= 0, not {p.target}.")
    if spec.model.name is not None:
        models.MODELS.get(spec.model.name)
    _require(spec.model.width > 0, f"model.width must be > 0, not {spec.model.width}.")
    objectives.OBJECTIVES.get(spec.defense.adversarial)
    _validate_attack(spec.defense.attack, "defense.attack")
    _validate_attack(spec.eval.attack, "eval.attack")
    _require(spec.defense.lipschitz >= 0, f"defense.lipschitz must be >= 0, not {spec.defense.lipschitz}.")
    _require(spec.defense.replays >= 1, f"defense.replays must be at least 1, not {spec.defense.replays}.")
    _require(0 <= spec.defense.eps_ramp < 1, f"defense.eps_ramp must be in [0, 1), not {spec.defense.eps_ramp}.")
    _require(spec.defense.fast_step > 0, f"defense.fast_step must be > 0, not {spec.defense.fast_step}.")
    d = spec.defense
    _require(d.ibp_eps is None or d.ibp_eps >= 0, f"defense.ibp_eps must be >= 0, not {d.ibp_eps}.")
    _require(d.ibp_warmup_steps >= 0 and d.ibp_ramp_steps >= 0,
             "defense.ibp_warmup_steps and defense.ibp_ramp_steps must be >= 0.")
    _require(0 <= d.ibp_final_mix <= 1, f"defense.ibp_final_mix must be in [0, 1], not {d.ibp_final_mix}.")
    tr = spec.train
    _require(tr.epochs >= 1, f"train.epochs must be at least 1, not {tr.epochs}.")
    _require(tr.steps is None or tr.steps >= 1, f"train.steps must be at least 1, not {tr.steps}.")
    _require(tr.batch_size >= 1, f"train.batch_size must be at least 1, not {tr.batch_size}.")
    _require(tr.optimizer in (None, "adam", "sgd"), f"train.optimizer must be 'adam' or 'sgd', not {tr.optimizer!r}.")
    _require(tr.lr is None or tr.lr > 0, f"train.lr must be > 0, not {tr.lr}.")
    _require(tr.lr_schedule_unit in ("steps", "epochs"),
             f"train.lr_schedule_unit must be 'steps' or 'epochs', not {tr.lr_schedule_unit!r}.")
    for item in tr.lr_schedule:
        _require(isinstance(item, list) and len(item) == 2 and all(isinstance(v, (int, float)) for v in item),
                 f"train.lr_schedule entries must be [at, lr] pairs, not {item!r}.")
    from tradeoff.train import LR_POLICIES

    LR_POLICIES.get(tr.lr_policy)
    _require(0 < tr.lr_peak < 1, f"train.lr_peak must be in (0, 1), not {tr.lr_peak}.")
    _require(tr.attack_model_mode in ("eval", "train"),
             f"train.attack_model_mode must be 'eval' or 'train', not {tr.attack_model_mode!r}.")
    _require(tr.precision in ("fp32", "bf16", "fp16"), f"train.precision must be fp32, bf16 or fp16, not {tr.precision!r}.")
    _require(spec.eval.batch_size >= 1, f"eval.batch_size must be at least 1, not {spec.eval.batch_size}.")
    _require(spec.eval.certified_eps is None or spec.eval.certified_eps >= 0,
             f"eval.certified_eps must be >= 0, not {spec.eval.certified_eps}.")
    _validate_backdoor_defenses(spec.backdoor_defenses)


def _validate_backdoor_defenses(entries: list) -> None:
    from tradeoff import defenses

    for entry in entries:
        _require(isinstance(entry, dict) and "name" in entry,
                 f"backdoor_defenses entries must be mappings with a 'name', not {entry!r}.")
        defenses.check_entry(entry)  # the name and every option, before any training


# --------------------------------------------------------------------------- resolution


def resolve(spec: Spec) -> Spec:
    """Fill the dataset-dependent ``None`` fields from the dataset's protocol defaults."""
    from tradeoff import data as data_mod

    spec = dataclasses.replace(spec)  # shallow; sections are replaced below, never mutated
    info = data_mod.DATASETS.get(spec.data.dataset)
    defaults = info.protocol
    spec.data = dataclasses.replace(spec.data)
    if spec.data.augment is None:
        spec.data.augment = defaults.augment
    spec.model = dataclasses.replace(spec.model)
    if spec.model.name is None:
        spec.model.name = defaults.model
    spec.train = dataclasses.replace(spec.train)
    for key in ("optimizer", "lr", "weight_decay"):
        if getattr(spec.train, key) is None:
            setattr(spec.train, key, getattr(defaults, key))
    from tradeoff.objectives import OBJECTIVES

    train_attack = spec.defense.attack
    forced_norm = getattr(OBJECTIVES.get(spec.defense.adversarial), "attack_norm", None)  # e.g. 'l2-pgd'
    if forced_norm:
        train_attack = dataclasses.replace(train_attack, norm=forced_norm)
    spec.defense = dataclasses.replace(spec.defense, attack=_resolve_attack(train_attack, defaults))
    spec.eval = dataclasses.replace(spec.eval, attack=_resolve_attack(spec.eval.attack, defaults))
    return spec


def _resolve_attack(a: AttackSpec, defaults) -> AttackSpec:
    a = dataclasses.replace(a)
    eps_default = defaults.eps if a.norm == "linf" else defaults.eps_l2
    if a.eps is None:
        a.eps = eps_default
    if a.step_size is None:
        # The protocol's step for its own eps; scaled with eps when the user changes it.
        a.step_size = defaults.step_size * (a.eps / defaults.eps) if a.norm == "linf" else a.eps / 4
    if a.steps is None:
        a.steps = defaults.steps
    return a
