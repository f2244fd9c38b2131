"""Run folders, written atomically: everything goes into a hidden ``.NAME.partial-*`` folder that
is renamed into place only when the run has finished, so an interrupted run never leaves a
folder that looks finished (and never destroys the previous finished one)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml
from safetensors.torch import save_file

from tradeoff.errors import TradeoffError
from tradeoff.spec import renamed_key

SUMMARY_COLUMNS = ["run", "dataset", "poisoning_method", "adversarial_defense", "accuracy",
                   "adversarial_robustness", "backdoor_success_rate", "collapsed"]


def check_output_folder(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and make sure files can be written in it: one sentence if not,
    before any training starts."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TradeoffError(f"output folder {str(out_dir)!r} is a file; name a folder.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise TradeoffError(f"output folder {str(out_dir)!r} cannot be written ({e.strerror or e.__class__.__name__}).") from None
    return out_dir


class RunFolder:
    def __init__(self, final: Path):
        self.final = Path(final)
        self.path: Path | None = None
        self._log = None

    def __enter__(self) -> "RunFolder":
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent))
        self._log = open(self.path / "log.txt", "a", buffering=1)
        return self

    def log(self, message: str) -> None:
        self._log.write(message + "\n")

    def write_text(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)

    def write_json(self, name: str, data) -> None:
        self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def save_tensors(self, name: str, tensors: dict) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(self.path / name))

    def __exit__(self, exc_type, exc, tb):
        self._log.close()
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return False
        publish(self.path, self.final)
        return False


def publish(tmp: Path, final: Path) -> None:
    """Move a finished folder into place, replacing an older one only after the new one is whole."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; results are for everyone to read
    os.replace(tmp, path)


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(spec dict, metrics dict) of a finished run folder written by this version."""
    run_dir = Path(run_dir)
    spec_file, metrics_file = run_dir / "spec.yaml", run_dir / "metrics.json"
    if not (spec_file.is_file() and metrics_file.is_file()):
        raise TradeoffError(f"{run_dir} is not a finished run folder (no spec.yaml and metrics.json).")
    try:
        raw, metrics = yaml.safe_load(spec_file.read_text()), json.loads(metrics_file.read_text())
    except (yaml.YAMLError, ValueError, OSError) as e:
        raise TradeoffError(f"{run_dir} holds an unreadable spec.yaml or metrics.json ({e.__class__.__name__}).") from None
    if not isinstance(raw, dict) or not isinstance(metrics, dict):
        raise TradeoffError(f"{run_dir}'s spec.yaml and metrics.json must each hold a mapping.")
    refuse_earlier_version(run_dir, raw)
    return raw, metrics


def refuse_earlier_version(run_dir: Path, raw_spec: dict) -> None:
    """One sentence for a run folder written before the spec's renames (see README, 'Renamed keys')."""
    renamed = renamed_key(raw_spec)
    if renamed:
        raise TradeoffError(f"{run_dir} was written by an earlier version of tradeoff ({renamed}) and is not "
                            "read by this one; rerun it into a new output folder.")


def finished_runs(out_dir: Path) -> list[Path]:
    """The finished run folders in ``out_dir``; one sentence if any was written by an earlier version."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    runs = sorted(p.parent for p in out_dir.glob("*/metrics.json") if not p.parent.name.startswith("."))
    for run in runs:
        try:
            raw = yaml.safe_load((run / "spec.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue  # a folder without a readable spec is reported by whoever reads it
        if isinstance(raw, dict):
            refuse_earlier_version(run, raw)
    return runs


def write_summary(out_dir: Path) -> Path:
    """``summary.csv``: one row per finished run folder in ``out_dir``."""
    rows = []
    for run in finished_runs(out_dir):
        _, metrics = read_run(run)
        rows.append({"run": run.name, **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}})
    columns = list(SUMMARY_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    path = Path(out_dir) / "summary.csv"
    write_text_atomic(path, buf.getvalue())
    return path
