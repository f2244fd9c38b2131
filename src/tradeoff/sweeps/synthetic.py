"""Synthetic rehearsal of a sweep (``tradeoff sweep TABLES --synthetic``): generated data of each
dataset's shape in its on-disk format, generated stand-ins for released weights, and one layer of
budget cuts on top of the preset. Everything else (models, input shapes, data pipelines, attacks,
certificates, backdoor defences, retraining, the report) is what a real run executes; the numbers
mean nothing, and every cell carries ``synthetic: true`` (part of its digest) so that they can
never pass for results.

What is generated and cut is each component's own declaration
(:class:`~tradeoff.core.registry.SyntheticCut`, beside the component: a dataset's files, shape and
budget in ``data/generated.py``, an objective's schedule, a backdoor defence's budget); this module
applies the declarations of the components a spec uses, over a rehearsal budget common to all.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tradeoff.backdoor_defenses import BACKDOOR_DEFENSES
from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import Entry, SyntheticCut, registry_of
from tradeoff.core.spec import SECTIONS, Spec, kinded_sections
from tradeoff.data import DATASETS
from tradeoff.records.folders import save_tensors_atomic, write_text_atomic

FOLDER = "synthetic-data"  # under the sweep's output folder
VERSION = 1  # of the generated files; a folder written by another version is written again

# The budget of every rehearsal, below what the components declare: a few steps of small batches
# on a test subset; the generated sets hold 20 training images a class, 2 of them held out.
REHEARSAL = SyntheticCut(fields={"train.steps": 3, "train.batch_size": 20, "data.test_subset": 40,
                                 "eval.batch_size": 100},
                         where_set={"data.holdout_per_class": 2})

# What an unset field means, for the "from" of a cut
_UNSET = {"train.steps": lambda raw: f"{_get(raw, 'train.epochs', _spec_default('train.epochs'))} epochs",
          "data.test_subset": lambda raw: "the whole test set"}


# --------------------------------------------------------------------------- the generated data


def _generating() -> list[Entry]:
    """The datasets that declare generated files."""
    return [e for e in DATASETS.entries() if e.synthetic is not None and e.synthetic.files is not None]


@dataclass(frozen=True)
class SyntheticData:
    """What ``--synthetic`` generates, and where: under ``root``, every dataset that declares
    generated files, each of its declared shape unless ``shapes`` names another
    (``{dataset: {"train": 2}}``), and the stand-in weights the datasets declare."""

    root: Path
    shapes: dict = field(default_factory=dict, hash=False)  # dataset -> the writer's size arguments

    def shape_of(self, entry: Entry) -> dict:
        return {**entry.synthetic.files.shape, **self.shapes.get(entry.name, {})}

    def weights_of(self, dataset: str) -> Optional[Path]:
        """The stand-in weights that ``dataset`` declares (None: it declares none)."""
        cut = DATASETS.entry(dataset).synthetic
        return self.root / cut.weights.file if cut is not None and cut.weights is not None else None

    def describe(self) -> dict:
        """The generated data, for each run folder's synthetic.json."""
        out = {"root": str(self.root)}
        weights = []
        for entry in _generating():
            out[entry.name] = entry.synthetic.files.describe(**self.shape_of(entry))
            if entry.synthetic.weights is not None:
                weights.append(f"{self.weights_of(entry.name)} ({entry.synthetic.weights.description})")
        if weights:
            out["checkpoint"] = "; ".join(weights)
        return out

    def write(self) -> None:
        """Generate every dataset and stand-in once (a marker file names this version)."""
        marker = self.root / "synthetic.json"
        want = {"version": VERSION, **self.describe()}
        try:
            if json.loads(marker.read_text()) == want:
                return
        except (OSError, ValueError):
            pass
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in _generating():
            files = entry.synthetic.files
            files.write(self.root / files.folder, **self.shape_of(entry))
            weights = entry.synthetic.weights
            if weights is not None:
                save_tensors_atomic(self.weights_of(entry.name), weights.state(),
                                    metadata={"tradeoff": "synthetic stand-in, random weights"})
        write_text_atomic(marker, json.dumps(want, indent=1) + "\n")


# --------------------------------------------------------------------------- the budget cuts


@dataclass
class Cuts:
    """Cuts on top of the components' own (tighter budgets for a test, say): spec fields by dotted
    path for every dataset (``"default"``) or one, and component options by component name."""

    fields: dict = field(default_factory=dict)  # {"default" or dataset: {dotted path: value}}
    options: dict = field(default_factory=dict)  # {component name: {option: value}}


CUTS = Cuts()


def _get(raw: dict, path: str, default=None):
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set(raw: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _spec_default(path: str):
    """The Spec's default of a dotted field (before the dataset's protocol fills it)."""
    return _get(Spec().to_dict(), path)


def _names(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)} if cls is not None else set()


def _components(raw: dict) -> dict:
    """Section -> the registry entry of the component the spec picks there (the spec's default kind
    where it names none), for every section that picks one."""
    out = {}
    for section, cls in kinded_sections().items():
        name = _get(raw, f"{section}.{cls.kind_key}", _spec_default(f"{section}.{cls.kind_key}"))
        registry = registry_of(cls.registry)
        if isinstance(name, str) and name in registry:
            out[section] = registry.entry(name)
    return out


class _Changes(dict):
    """{field: {"from": ..., "to": ...}} of every field a cut changed."""

    def note(self, path: str, value, old) -> None:
        if old != value:
            self[path] = {"from": old, "to": value}


def _cut_fields(out: dict, cut_fields: dict, components: dict, changes: _Changes) -> None:
    """Spec fields by dotted path; a field that is neither its section's nor an option of the
    section's component (``data.workers`` of the folder datasets, on another) is left alone."""
    for path, value in cut_fields.items():
        section, _, key = path.partition(".")
        entry = components.get(section)
        options = entry.options if entry is not None else None
        if section in SECTIONS and "." not in key and key not in _names(SECTIONS[section]) | _names(options):
            continue
        old = _get(out, path, _spec_default(path))
        if old is None and key in _names(options):
            old = getattr(options(), key)
        if old is None and path in _UNSET:
            old = _UNSET[path](out)
        _set(out, path, value)
        changes.note(path, value, old)


def _cut_options(out: dict, where: str, entry: Entry, changes: _Changes, cuts: Cuts) -> None:
    """A component's own options, flat in its section (``where``: ``adversarial_defense``) or its
    entry of a list (``backdoor_defenses[0]``)."""
    budget = {**(entry.synthetic.options if entry.synthetic else {}), **cuts.options.get(entry.name, {})}
    if not budget:
        return
    name, _, index = where.partition("[")
    node = out[name][int(index[:-1])] if index else out.setdefault(name, {})
    for key, value in budget.items():
        old = node.get(key)
        if old is None:
            old = getattr(entry.options(), key)
        node[key] = value
        changes.note(f"{where}.{key}", value, old)


def _declared(components: list, part: str, dataset: str, cuts: Cuts) -> dict:
    """One part of the rehearsal's cut and every used component's, layered in that order."""
    merged = dict(getattr(REHEARSAL, part))
    for entry in components:
        if entry.synthetic is not None:
            merged.update(getattr(entry.synthetic, part))
    if part == "fields":
        merged.update({**cuts.fields.get("default", {}), **cuts.fields.get(dataset, {})})
    return merged


def cut(raw: dict, dataset: str, data: SyntheticData, cuts: Cuts | None = None) -> tuple[dict, dict]:
    """``raw`` (a cell's spec as plain data, every preset and table layer applied) with the
    synthetic layer on top: ``synthetic: true``, the generated data and stand-in weights, the cuts
    the rehearsal and the spec's components declare. Returns (the new raw spec, {field: {"from":
    ..., "to": ...}} for every field it changed). ``cuts``: default :data:`CUTS`."""
    cuts = cuts or CUTS
    out = copy.deepcopy(raw)
    # the dataset first: a later layer that names it would otherwise drop the dataset's options (data.workers)
    out.setdefault("data", {})["dataset"] = dataset
    changes = _Changes()
    components = _components(out)
    defenses = {f"backdoor_defenses[{i}]": BACKDOOR_DEFENSES.entry(e["name"])
                for i, e in enumerate(out.get("backdoor_defenses") or [])
                if isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] in BACKDOOR_DEFENSES}
    used = list(components.values()) + list(defenses.values())
    _cut_fields(out, _declared(used, "fields", dataset, cuts), components, changes)
    for path, value in _declared(used, "where_set", dataset, cuts).items():
        if _get(out, path) is not None:
            changes.note(path, value, _get(out, path))
            _set(out, path, value)
    for where, entry in {**components, **defenses}.items():
        _cut_options(out, where, entry, changes, cuts)
    weights = data.weights_of(dataset) if dataset in DATASETS else None
    if weights is not None and _get(out, "model.from_scratch") is False:
        changes.note("model.checkpoint", str(weights), _get(out, "model.checkpoint"))
        _set(out, "model.checkpoint", str(weights))
    out["synthetic"] = True
    changes.note("synthetic", True, False)
    return out, dict(changes)


def record(changes: dict, data: SyntheticData) -> dict:
    """The content of a run folder's ``synthetic.json``."""
    return {"synthetic": True,
            "warning": "generated data and cut budgets: these numbers test the pipeline and are not results",
            "data": data.describe(), "cuts": changes}


def check_not_real(data_root) -> None:
    if data_root:
        raise TradeoffError("--synthetic generates its own data under --out; leave out --data-root.")
