"""The experiment spec: the ground floor of the package. Dataclasses with a default and a
one-line doc for every field; this module imports nothing of the project.

A section that picks a component by name (``data.dataset``, ``trigger.kind``, ``poison.method``,
``adversarial_defense.objective``) holds that component's own options in ``options``: a dataclass
declared beside the component's code (see ``tradeoff list``). In YAML the options sit flat in the
section (``trigger: {kind: sticker, size: 3}``); :mod:`tradeoff.config.build` builds and checks them.

Field metadata (read by :mod:`tradeoff.core.options` and ``tradeoff list``):
``doc`` (one line), ``min``/``max`` (inclusive bounds), ``above`` (exclusive lower bound),
``choices`` (the name of a registry whose names are the allowed values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

import yaml


def option(default=dataclasses.MISSING, *, doc: str = "", factory=dataclasses.MISSING, **checks):
    """A dataclass field with its documentation and its checks (min, max, above, choices)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc, **checks})


@dataclass
class DataSpec:
    dataset: str = option("mnist", doc="dataset by name (tradeoff list datasets)")
    root: Optional[str] = option(None, doc="data folder; else $TRADEOFF_DATA, else ~/.cache/tradeoff")
    train_subset: Optional[int] = option(None, doc="a seeded random subset of the training set", min=1)
    test_subset: Optional[int] = option(None, doc="a seeded random subset of the test set", min=1)
    augment: Optional[bool] = option(None, doc="training augmentation; unset: the dataset's protocol")
    augment_flip: bool = option(True, doc="with augmentation: mirror each training image left-right with "
                                          "probability 1/2 (false for digits, whose mirror images are not digits)")
    holdout_per_class: Optional[int] = option(None, doc="the last N training images of each class are kept "
                                                        "out of training, as the defences' clean data", min=1)
    options: Any = None  # the dataset's own options

    kind_key: ClassVar[str] = "dataset"
    registry: ClassVar[str] = "dataset"


@dataclass
class TriggerSpec:
    kind: str = option("sticker", doc="trigger by name (tradeoff list triggers)")
    options: Any = None  # the trigger's own options (size, corner, amplitude, ...)

    kind_key: ClassVar[str] = "kind"
    registry: ClassVar[str] = "trigger"


@dataclass
class PoisonSpec:
    method: str = option("clean-label", doc="poisoning method by name (tradeoff list poisoning)")
    target: int = option(7, doc="the backdoor's target class", min=0)
    options: Any = None  # the method's own options (its poison rate)

    kind_key: ClassVar[str] = "method"
    registry: ClassVar[str] = "poisoning method"


@dataclass
class AttackSpec:
    """A gradient attack's budget: PGD, and FGSM as one step of eps without a random start."""

    norm: str = option("linf", doc="threat model", choices="norm")
    eps: Optional[float] = option(None, doc="budget; unset: the dataset's protocol", min=0)
    step_size: Optional[float] = option(None, doc="step; unset: the protocol's, scaled with eps", min=0)
    steps: Optional[int] = option(None, doc="iterations; unset: the protocol's", min=1)
    random_start: bool = option(True, doc="start from a uniform point of the eps-ball")
    restarts: int = option(1, doc="random restarts, keeping each image's first success", min=1)
    loss: str = option("ce", doc="the loss the attack ascends", choices="attack loss")
    targeted: bool = option(False, doc="step towards a random wrong label instead")
    target_classes: Optional[int] = option(None, doc="one run towards each of the k wrong classes the model "
                                                     "scores highest, any success counting (APGD-T's scheme)", min=1)
    step_schedule: Optional[Literal["constant", "cosine"]] = option(
        None, doc="cosine: the step falls from step_size to 0 over the steps; unset: constant")
    first_success: bool = option(False, doc="return each image's first iterate that fools the model (any iterate "
                                            "counts, as AutoAttack's); off: the last iterate (as training uses)")


@dataclass
class ModelSpec:
    name: Optional[str] = option(None, doc="model by name (tradeoff list models); unset: the dataset's protocol",
                                 choices="model")
    width: float = option(1.0, doc="width multiplier", above=0)
    init: str = option("default", doc="weight initialisation by name (tradeoff list initialisations)",
                       choices="weight initialisation")
    checkpoint: Optional[str] = option(None, doc="initial weights: safetensors or a weights-only torch file")
    from_scratch: Optional[bool] = option(None, doc="false: the protocol fine-tunes, a checkpoint is required; "
                                                    "true: train from scratch on purpose")


@dataclass
class AdversarialDefenseSpec:
    """The adversarial defence: a training objective, optional regulariser and denoising blocks."""

    objective: str = option("none", doc="training objective by name (tradeoff list objectives)")
    attack: AttackSpec = option(factory=AttackSpec, doc="the attack that crafts training examples")
    eps_ramp: float = option(0.0, doc="eps rises linearly from 0 over this fraction of training (IBP: a cap "
                                                "on its own eps schedule)", min=0, max=0.99)
    lipschitz: float = option(0.0, doc="cross-Lipschitz coefficient (paper 1e-4; 0: off)", min=0)
    denoise: bool = option(False, doc="non-local denoising blocks inside the model")
    attack_model_mode: str = option("eval", doc="the model's mode while crafting training examples",
                                    choices="attack model mode")
    options: Any = None  # the objective's own options

    kind_key: ClassVar[str] = "objective"
    registry: ClassVar[str] = "training objective"


@dataclass
class TrainSpec:
    epochs: int = option(20, doc="passes over the training set", min=1)
    steps: Optional[int] = option(None, doc="optimiser steps; overrides epochs", min=1)
    batch_size: int = option(100, doc="the global batch", min=1)
    optimizer: Optional[str] = option(None, doc="unset: the dataset's protocol", choices="optimizer")
    lr: Optional[float] = option(None, doc="learning rate; unset: the protocol's", above=0)
    momentum: float = option(0.9, doc="SGD momentum", min=0)
    weight_decay: Optional[float] = option(None, doc="unset: the protocol's (SGD: weights only)", min=0)
    lr_schedule: list = option(factory=list, doc="[[at, lr], ...], piecewise constant")
    lr_schedule_unit: Literal["steps", "epochs"] = option("steps", doc="what lr_schedule's 'at' counts")
    lr_policy: str = option("piecewise", doc="learning-rate policy", choices="learning-rate policy")
    lr_peak: float = option(0.4, doc="triangular policy: where the peak lies, as a fraction of training",
                            above=0, max=0.99)
    grad_clip: float = option(0.0, doc="clip the gradient's global L2 norm to this before each step (0: off)", min=0)
    device: str = option("auto", doc="auto, cpu, cuda, cuda:1, ...")
    precision: str = option("fp32", doc="autocast precision", choices="precision")
    channels_last: bool = option(False, doc="channels-last memory format")
    compile: bool = option(False, doc="torch.compile the training module and its attack")
    tf32: str = option("convolutions", doc="TF32 on GPUs: convolutions (PyTorch's default), all (and matrix "
                                           "products), off", choices="TF32 setting")


@dataclass
class AutoAttackSpec:
    """AutoAttack (Croce & Hein 2020) at the evaluation attack's norm and eps, on a seeded subset
    of the test set; needs the optional extra ``tradeoff[autoattack]``."""

    version: Literal["standard", "plus", "rand"] = option("standard", doc="AutoAttack's version")
    images: int = option(1000, doc="a seeded random subset of this many test images", min=1)
    attacks: Optional[list] = option(None, doc="run only these of the version's attacks "
                                               "(e.g. [apgd-ce, apgd-t]); unset: all of them")


@dataclass
class SpatialSpec:
    """Rotations and translations (Engstrom et al. 2019, "Exploring the Landscape of Spatial
    Robustness"): the grid of ``translations`` x ``translations`` x ``rotations`` evenly spaced
    transformations, each image rotated about its centre by up to ``max_rotation`` degrees and
    moved by up to ``max_translation`` pixels along each axis, either way (5 x 5 x 31 = 775 by
    default, as their reference code); the worst case per image is the first transformation that
    misclassifies it, else the one of highest loss."""

    max_rotation: float = option(30.0, doc="largest rotation in degrees, either way", min=0, max=180)
    max_translation: float = option(3.0, doc="largest translation in pixels along each axis, either way", min=0)
    rotations: int = option(31, doc="grid points over [-max_rotation, max_rotation]", min=1)
    translations: int = option(5, doc="grid points over [-max_translation, max_translation], each axis", min=1)


@dataclass
class EvalSpec:
    attack: AttackSpec = option(factory=AttackSpec, doc="the robustness attack; unset fields: the protocol's")
    autoattack: Optional[AutoAttackSpec] = option(None, doc="autoattack_robustness beside the PGD robustness "
                                                            "(unset: off)")
    batch_size: int = option(500, doc="evaluation batch", min=1)
    adversarial: bool = option(True, doc="measure adversarial_robustness")
    certified_eps: Optional[float] = option(None, doc="IBP-certified robustness at this eps", min=0)
    every_steps: int = option(0, doc="learning curve: the metrics on a fixed test subset every N optimiser "
                                     "steps (0: off)", min=0)
    curve_images: int = option(500, doc="learning curve: the size of its fixed, seeded test subset", min=1)
    masking_checks: bool = option(True, doc="gradient-masking checks (eps 1.0, 5x the steps, transfer from the "
                                            "standard twin) on adversarial evaluations")
    masking_images: int = option(200, doc="the fixed seeded test subset of the masking checks and the trigger "
                                          "saliency", min=1)
    saliency: bool = option(True, doc="trigger_saliency_share and saliency.safetensors")
    spatial: Optional[SpatialSpec] = option(None, doc="spatial_robustness: accuracy under the worst rotation and "
                                                      "translation of this grid (unset: off)")


@dataclass
class BackdoorDefenseSpec:
    """One ``backdoor_defenses`` entry: a backdoor defence by name, the prefix of its metrics and
    its own options (a dataclass declared beside the defence), parsed once when the spec is built.
    In YAML the options sit flat beside the name: ``{name: spectral, variant: textbook}``."""

    name: str = option(doc="backdoor defence by name (tradeoff list backdoor-defenses)")
    prefix: Optional[str] = option(None, doc="the prefix of its metrics and files; unset: the defence's own "
                                             "(one run can apply a defence twice under two prefixes)")
    options: Any = None  # the defence's own options
    # The option keys the entry was written with: written back by to_dict (beside every option that
    # differs from its default), so that an entry's plain data, and the digest, are as it was written.
    given: tuple = field(default=(), repr=False, compare=False)

    kind_key: ClassVar[str] = "name"
    registry: ClassVar[str] = "backdoor defence"

    @property
    def metric_prefix(self) -> str:
        """Its metrics' prefix: ``prefix``, else the defence's own (its options' ``metric_prefix``)."""
        return self.prefix or self.own_prefix

    @property
    def own_prefix(self) -> str:
        """The defence's own prefix, whatever the entry's ``prefix``."""
        return getattr(self.options, "metric_prefix", None) or self.name.replace("-", "_")

    def to_dict(self) -> dict:
        """Plain data as in YAML: the name, the prefix when given, the options given or changed."""
        out: dict = {"name": self.name}
        if self.prefix is not None or "prefix" in self.given:
            out["prefix"] = self.prefix
        for f in dataclasses.fields(self.options) if dataclasses.is_dataclass(self.options) else ():
            value = getattr(self.options, f.name)
            if f.name in self.given or value != _default_of(f):
                out[f.name] = section_dict(value) if dataclasses.is_dataclass(value) else value
        return out


def _default_of(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# Fields added after 0.2.0, each left out of the digest at the value where it changes nothing, so
# that earlier cells keep their digests: (dotted path, that value). A kinded section's option only
# where the section's kind has it (the watermark's ``pattern``).
ADDED_LATER = (("model.from_scratch", None), ("data.holdout_per_class", None), ("trigger.pattern", None),
               ("eval.every_steps", 0), ("eval.curve_images", 500), ("eval.autoattack", None),
               *((f"{section}.attack.{key}", None) for section in ("adversarial_defense", "eval")
                 for key in ("target_classes", "step_schedule")),
               *((f"{section}.first_success", False)
                 for section in ("adversarial_defense.attack", "eval.attack", "poison.perturbation")),
               ("synthetic", False),
               ("eval.masking_checks", True), ("eval.masking_images", 200), ("eval.saliency", True),
               ("data.augment_flip", True), ("model.init", "default"), ("train.grad_clip", 0.0),
               ("adversarial_defense.ibp_warmup_regularizer", 0.0),
               ("adversarial_defense.ibp_regularizer_tolerance", 0.5), ("data.verify", "headers"),
               ("data.skip_unreadable", False), ("eval.spatial", None), ("poison.target_mode", "all-to-one"),
               ("train.tf32", "convolutions"))


@dataclass
class SnapshotSpec:
    """Mid-training snapshots (not the weights a run starts from: that is ``model.checkpoint``).
    Never part of the digest: changing them never reruns a finished cell."""

    every_steps: int = option(0, doc="a snapshot every N optimiser steps (0: off)", min=0)
    every_minutes: float = option(10.0, doc="a snapshot every M minutes of training (0: off)", min=0)
    keep: int = option(2, doc="the newest snapshots kept in the run folder", min=1)


@dataclass
class Spec:
    name: str = option("run", doc="the run folder's name")
    seed: int = option(0, doc="seeds the subsets, poisoning, initialisation and batches")
    data: DataSpec = option(factory=DataSpec)
    trigger: TriggerSpec = option(factory=TriggerSpec)
    poison: PoisonSpec = option(factory=PoisonSpec)
    model: ModelSpec = option(factory=ModelSpec)
    adversarial_defense: AdversarialDefenseSpec = option(factory=AdversarialDefenseSpec)
    train: TrainSpec = option(factory=TrainSpec)
    eval: EvalSpec = option(factory=EvalSpec)
    backdoor_defenses: list[BackdoorDefenseSpec] = option(factory=list, doc="steps after training: "
                                                                         "[{name: spectral, ...}, ...]")
    snapshots: SnapshotSpec = option(factory=SnapshotSpec, doc="mid-training snapshots for exact resume")
    synthetic: bool = option(False, doc="generated data and cut budgets (tradeoff sweep --synthetic): "
                                        "a rehearsal of the pipeline, never a result")

    def to_dict(self) -> dict:
        """Plain data, every kinded section's options flat beside its kind (as in YAML)."""
        return section_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """A short hash of everything that changes the result (not the name, data root, loader
        processes, image check or snapshot cadence)."""
        blob = json.dumps(self.digest_fields(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def digest_fields(self) -> dict:
        """What :meth:`digest` hashes."""
        d = self.to_dict()
        d.pop("name")
        d.pop("snapshots")
        for dotted, unchanged in ADDED_LATER:  # at these values they leave earlier cells' digests as they were
            *path, key = dotted.split(".")
            node = d
            for name in path:  # a kinded section holds some options only for some kinds
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict) and key in node and node[key] == unchanged:
                node.pop(key)
        d["data"].pop("root")
        d["data"].pop("workers", None)
        d["data"].pop("verify", None)  # how the files are checked before training changes no result
        return d


def section_dict(section) -> dict:
    """A spec dataclass as plain data; a kinded section's ``options`` merged flat into it."""
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name == "options":
            out.update(section_dict(value) if dataclasses.is_dataclass(value) else {})
        elif dataclasses.is_dataclass(value):
            out[f.name] = section_dict(value)
        elif isinstance(value, list):
            out[f.name] = [v.to_dict() if isinstance(v, BackdoorDefenseSpec) else dict(v) if isinstance(v, dict)
                           else v for v in value]
        else:
            out[f.name] = value
    return out


SECTIONS = {"data": DataSpec, "trigger": TriggerSpec, "poison": PoisonSpec, "model": ModelSpec,
            "adversarial_defense": AdversarialDefenseSpec, "train": TrainSpec, "eval": EvalSpec,
            "snapshots": SnapshotSpec}


def kinded_sections() -> dict:
    """Section name -> its dataclass, for the sections that pick a component by name."""
    return {name: cls for name, cls in SECTIONS.items() if hasattr(cls, "kind_key")}


# Spec keys of earlier versions -> their names now: an old key in a spec is one sentence naming
# the new one (tradeoff.config.build), and a run folder written before the renames is refused with one
# sentence (tradeoff.records.folders) rather than read through a second schema.
RENAMED_KEYS = {
    "defense": "adversarial_defense",
    "defense.adversarial": "adversarial_defense.objective",
    "train.attack_model_mode": "adversarial_defense.attack_model_mode",
    "poison.attack": "poison.method",
}


def renamed_key(raw: dict) -> str | None:
    """The first key of an earlier version's spec in ``raw``, as 'old' -> 'new' text, or None."""
    for old, new in RENAMED_KEYS.items():
        section, _, leaf = old.partition(".")
        node = raw.get(section)
        if (not leaf and section in raw) or (leaf and isinstance(node, dict) and leaf in node):
            return f"spec key {old!r} is now {new!r}"
    return None
