"""A run's record, ``metrics.json``: what one run measured, with the flags the report reads
(collapsed training, generated data) and the errors of backdoor defences that could not run.

This module owns the record's key names (every other module names a metric through the constants
below) and is the one place that writes and reads ``metrics.json``. The file is one flat JSON
mapping, in the order the pipeline measured it: the run's identity, the evaluation's metrics, the
training's flags and costs, the diagnostics, the spec digest, then whatever the steps after the
first write added (backdoor defences, the transfer check). A backdoor defence that could not run
leaves one sentence under ``<prefix>_error`` (its options' ``metric_prefix``) instead of its
metrics, where the prefix may itself hold underscores (``activation_clustering_error``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import Spec
from tradeoff.records.folders import read_run, write_text_atomic
from tradeoff.records.names import (  # noqa: F401  (the record's key names, importable from here too)
    ACCURACY,
    ADVERSARIAL_DEFENSE,
    BACKDOOR_ROBUST_ACCURACY,
    BACKDOOR_SUCCESS,
    BACKDOOR_SUCCESS_TRUE_LABEL,
    COLLAPSE_REASON,
    COLLAPSED,
    DATASET,
    DEFENSE_SECONDS,
    POISONING_METHOD,
    ROBUSTNESS,
    SALIENCY_SHARE,
    SEED,
    SPEC_DIGEST,
    SYNTHETIC,
    TRAIN_IMAGES_PER_SECOND,
    TRAIN_STEPS,
)

RECORD_FILE = "metrics.json"

ERROR_SUFFIX = "_error"


def error_key(prefix: str) -> str:
    """The key under which a backdoor defence with metric prefix ``prefix`` records why it could not run."""
    return prefix + ERROR_SUFFIX


def number(value) -> Optional[float]:
    """``value`` as a float when it is a number (not a flag, not NaN), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


@dataclass
class RunRecord:
    """The record of one run, as ``metrics.json`` holds it.

    ``values`` keeps every key in file order (``summary.csv`` takes its extra columns in that
    order); read it through the properties and methods, which know the key names."""

    values: dict = field(default_factory=dict)

    @classmethod
    def of_run(cls, spec: Spec, adversarial_defense: str, metrics: dict, collapse: Optional[str], trained,
               eval_seconds: float, poisoned_images: int, train_images: int, diagnostics: dict,
               curve_measured: bool) -> "RunRecord":
        """The record the pipeline writes after evaluation. ``trained``: the training's result
        (``final_loss``, ``steps``, ``seconds``, ``curve_seconds``); ``collapse``: why training
        collapsed, or None; ``curve_measured``: whether a learning curve was measured."""
        curve = {"curve_seconds": round(trained.curve_seconds, 2)} if curve_measured else {}
        return cls({
            DATASET: spec.data.dataset,
            POISONING_METHOD: spec.poison.method,
            ADVERSARIAL_DEFENSE: adversarial_defense,
            **metrics,
            COLLAPSED: collapse is not None,
            COLLAPSE_REASON: collapse or "",
            "final_train_loss": round(trained.final_loss, 6),
            "trigger": spec.trigger.kind,
            "model": spec.model.name,
            SEED: spec.seed,
            "poisoned_images": poisoned_images,
            "train_images": train_images,
            TRAIN_STEPS: trained.steps,
            "train_seconds": round(trained.seconds, 2),
            TRAIN_IMAGES_PER_SECOND: round(trained.steps * spec.train.batch_size / max(trained.seconds, 1e-9), 1),
            "eval_seconds": round(eval_seconds, 2),
            **curve,
            **diagnostics,
            SPEC_DIGEST: spec.digest(),
            SYNTHETIC: spec.synthetic,
        })

    # ---------------------------------------------------------------- flags and identity

    @property
    def collapsed(self) -> bool:
        return bool(self.values.get(COLLAPSED))

    @property
    def collapse_reason(self) -> str:
        return self.values.get(COLLAPSE_REASON) or ""

    @property
    def synthetic(self) -> bool:
        return bool(self.values.get(SYNTHETIC))

    @property
    def spec_digest(self) -> Optional[str]:
        return self.values.get(SPEC_DIGEST) or None

    # ---------------------------------------------------------------- values

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def number(self, key: str) -> Optional[float]:
        """The value of ``key`` as a number, or None where it is missing or not a number."""
        return number(self.values.get(key))

    def first_number(self, keys: Iterable[str]) -> Optional[float]:
        """The first of ``keys`` that holds a number (``-`` and ``_`` are interchangeable)."""
        normal = {k.replace("-", "_"): v for k, v in self.values.items()}
        for key in keys:
            value = number(normal.get(key.replace("-", "_")))
            if value is not None:
                return value
        return None

    # ---------------------------------------------------------------- backdoor defences

    def defense_error(self, prefix: str) -> Optional[str]:
        """Why the backdoor defence with metric prefix ``prefix`` could not run, or None."""
        return self.values.get(error_key(prefix)) or None

    def defense_errors(self, metric_keys: Iterable[str]) -> list[str]:
        """The errors of the backdoor defences whose metrics ``metric_keys`` are: for each key, the
        recorded ``<prefix>_error`` with the longest prefix that starts the key (a prefix may hold
        underscores: ``activation_clustering_error`` is the error of
        ``activation_clustering_removed_poison_rate``)."""
        prefixes = [k[: -len(ERROR_SUFFIX)] for k, v in self.values.items() if k.endswith(ERROR_SUFFIX) and v]
        errors = set()
        for key in (k.replace("-", "_") for k in metric_keys):
            owners = [p for p in prefixes if key.startswith(p + "_")]
            if owners:
                errors.add(self.values[error_key(max(owners, key=len))])
        return sorted(errors)

    def add_defense_outcome(self, outcome: dict, seconds: float) -> None:
        """Record one backdoor defence's metrics (or its error) and add its wall seconds."""
        self.values[DEFENSE_SECONDS] = round(self.values.get(DEFENSE_SECONDS, 0.0) + seconds, 2)
        self.values.update(outcome)

    def merged(self, added: dict, drop: Iterable[str] = ()) -> "RunRecord":
        """A new record with ``added`` merged in (existing keys keep their place) and ``drop`` left out."""
        dropped = set(drop)
        return RunRecord({**{k: v for k, v in self.values.items() if k not in dropped}, **added})

    # ---------------------------------------------------------------- the file

    def to_json(self) -> str:
        return json.dumps(self.values, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> "RunRecord":
        if not isinstance(values, dict):
            raise TradeoffError(f"a run record must be a mapping, not {type(values).__name__}.")
        return cls(dict(values))

    def write(self, run_dir: Path) -> None:
        """Write ``run_dir/metrics.json`` atomically (a reader never sees half a record)."""
        write_text_atomic(Path(run_dir) / RECORD_FILE, self.to_json())


def read_record(run_dir: Path) -> RunRecord:
    """The record of a finished run folder written by this version (one sentence otherwise)."""
    return RunRecord.from_dict(read_run(run_dir)[1])


def peek_record(run_dir: Path) -> Optional[RunRecord]:
    """The record in ``run_dir/metrics.json`` without the checks of a finished folder, or None
    where it cannot be read (a folder being written, or one a reader reports on its own)."""
    try:
        values = json.loads((Path(run_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return RunRecord(values) if isinstance(values, dict) else None
