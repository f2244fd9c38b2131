"""A backdoor defence on a finished run folder (``tradeoff defend RUN_DIR --defense NAME``).

The trained run is rebuilt from the folder: ``spec.yaml`` (the resolved spec), the data, trigger and
poisoning re-derived from the spec's seed (checked against ``poison.safetensors``), and the
weights in ``model.safetensors``. The defence's metrics are merged into ``metrics.json`` (a
temporary file renamed into place), its tensors saved beside it, the entry appended to
``defenses.yaml``, and the parent folder's ``summary.csv`` rewritten. A defence that cannot run on
the model is one sentence, and the folder is left as it was.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
import yaml

from tradeoff.backdoor_defenses import as_entry, check_entry, try_backdoor_defense
from tradeoff.config.build import spec_from_dict
from tradeoff.config.resolve import resolve_backdoor_defense
from tradeoff.core.checkpoints import load_state
from tradeoff.core.device import pick_device, seed_everything
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import BackdoorDefenseSpec, Spec
from tradeoff.models import build_model
from tradeoff.pipeline.experiment import prepare, saved_poison
from tradeoff.records.folders import read_run, run_folder_claim, save_tensors_atomic, write_summary, write_text_atomic
from tradeoff.records.handoff import TrainedRun
from tradeoff.records.record import RunRecord, error_key, read_record


def load_trained_run(run_dir: Path, data_root: str | None = None, device: str | None = None,
                     check: Callable[[Spec], None] | None = None) -> TrainedRun:
    """The :class:`~tradeoff.records.handoff.TrainedRun` of a finished run folder; ``check(spec)``
    runs before any data is read."""
    run_dir = Path(run_dir)
    raw, values = read_run(run_dir)
    for name in ("model.safetensors", "poison.safetensors"):
        if not (run_dir / name).is_file():
            raise TradeoffError(f"{run_dir} has no {name}; it is not a finished run folder.")
    if data_root:
        raw.setdefault("data", {})["root"] = data_root
    spec = folder_spec(raw)
    if check is not None:
        check(spec)
    dev = pick_device(device or spec.train.device)
    seed_everything(spec.seed)
    saved = saved_poison(run_dir)
    data = prepare(spec, dev, saved_images=saved.get("images"), saved_trigger=saved.get("trigger"))
    if not (torch.equal(saved["indices"], data.plan.indices) and torch.equal(saved["corners"], data.plan.corners)):
        raise TradeoffError(f"the poisoning re-derived from {run_dir}/spec.yaml does not match its poison.safetensors "
                            "(different dataset files or code version?); refusing to defend a different data set.")
    model = load_model(run_dir, spec, data.shape, data.num_classes, dev)
    return TrainedRun(spec, model, RunRecord.from_dict(values), data, dev, run_dir=run_dir)


def folder_spec(raw: dict) -> Spec:
    """The spec of a finished run folder, without the defences it ran (they are done; a folder
    written before a defence's checks tightened still rebuilds)."""
    return spec_from_dict({k: v for k, v in raw.items() if k != "backdoor_defenses"})


def load_model(run_dir: Path, spec: Spec, shape: tuple, num_classes: int, device) -> torch.nn.Module:
    """The trained model of a run folder (its spec's model, the weights in model.safetensors),
    on ``device`` in eval mode."""
    model = build_model(spec.model.name, shape, num_classes, spec.model.width, spec.adversarial_defense.denoise)
    try:
        model.load_state_dict(load_state(Path(run_dir) / "model.safetensors"))
    except RuntimeError:
        raise TradeoffError(f"{run_dir}/model.safetensors does not fit model {spec.model.name!r} of its spec.") from None
    return model.to(device).eval()


def defend_run_folder(run_dir: str | Path, entry: BackdoorDefenseSpec | dict, data_root: str | None = None,
                      device: str | None = None, show_progress: bool = True, echo: bool = True) -> dict:
    """Run one defence entry ({name: ..., options}) on a finished run; returns the new metrics."""
    entry = as_entry(entry)  # checked before the folder is read
    run_dir = Path(run_dir)
    run = load_trained_run(run_dir, data_root, device, check=lambda spec: check_entry(entry, spec))
    entry = resolve_backdoor_defense(entry, run.spec.data.dataset)  # its attack budgets: the run's dataset's
    lines: list[str] = []

    def log(message: str) -> None:
        lines.append(message)
        if echo:
            print(f"[{run_dir.name}] {message}", file=sys.stderr)

    log(f"defend: {entry.to_dict()}")
    result = try_backdoor_defense(entry, run, log, show_progress)
    error = result.get(error_key(entry.metric_prefix))
    if error:  # nothing written: the folder stays as it was
        raise TradeoffError(error)
    # Everything is computed before anything is written.
    with run_folder_claim(run_dir):
        for file_name, tensors in run.artifacts.items():
            save_tensors_atomic(run_dir / file_name, tensors)
        # another defence or the transfer check may have added to the record meanwhile; an earlier
        # failure of this defence is superseded
        read_record(run_dir).merged(result, drop=[error_key(entry.metric_prefix)]).write(run_dir)
        history_file = run_dir / "defenses.yaml"
        history = yaml.safe_load(history_file.read_text()) if history_file.is_file() else None
        write_text_atomic(history_file, yaml.safe_dump((history or []) + [entry.to_dict()], sort_keys=False))
        with open(run_dir / "log.txt", "a") as fh:
            fh.write("".join(line + "\n" for line in lines))
    write_summary(run_dir.parent)
    return result
