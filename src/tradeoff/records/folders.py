"""Run folders, written in place from the first step. One marker, ``unfinished.json``, says a
folder is unfinished (being written, killed, preempted, or failed after training): it is written
first and removed last, after metrics.json, and every command reads it the same way (a folder
with a metrics.json and the marker is not finished). An unfinished folder keeps what its run
produced (snapshots, the trained model, the metrics computed so far) for ``--resume``."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable

import yaml
from safetensors import SafetensorError
from safetensors.torch import save_file

from tradeoff.core.errors import OutOfSpace, TradeoffError
from tradeoff.core.spec import renamed_key
from tradeoff.records.claims import WAIT_SECONDS, Claim, is_stale, read_holder
from tradeoff.records.names import (
    ACCURACY,
    ADVERSARIAL_DEFENSE,
    BACKDOOR_SUCCESS,
    COLLAPSED,
    DATASET,
    POISONING_METHOD,
    ROBUSTNESS,
    SYNTHETIC,
)

SUMMARY_COLUMNS = ["run", DATASET, POISONING_METHOD, ADVERSARIAL_DEFENSE, ACCURACY, ROBUSTNESS, BACKDOOR_SUCCESS,
                   COLLAPSED, SYNTHETIC]
UNFINISHED = "unfinished.json"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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


def is_unfinished(run_dir: Path) -> bool:
    return (Path(run_dir) / UNFINISHED).is_file()


def is_finished(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / "metrics.json").is_file() and not is_unfinished(run_dir)


def writer_alive(state: dict) -> bool:
    """Whether the process that wrote an unfinished marker still runs (known on its own host only)."""
    if state.get("error") or state.get("host") != socket.gethostname() or not state.get("pid"):
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError):
        return False
    return True


def unfinished_state(run_dir: Path) -> dict:
    """The marker's content: the stage the run reached and, after a failure, its error."""
    try:
        state = json.loads((Path(run_dir) / UNFINISHED).read_text())
    except (OSError, ValueError):
        return {"stage": "unknown"}
    return state if isinstance(state, dict) else {"stage": "unknown"}


def run_folder_claim(run_dir: Path, wait: float = WAIT_SECONDS) -> Claim:
    """The claim on a run folder: held by the run that writes it, and by whatever updates a
    finished folder's metrics.json afterwards (a backdoor defence, the transfer check)."""
    run_dir = Path(run_dir)
    return Claim(run_dir.parent / f".{run_dir.name}", wait=wait, what=f"run folder {run_dir}")


def run_claimed(run_dir: Path) -> bool:
    """Whether a live process (on any node) holds the run folder's claim: the run is running."""
    claim = run_folder_claim(run_dir)
    holder = read_holder(claim.file)
    return holder is not None and not is_stale(claim.file, holder, claim.lease)


class RunFolder:
    """``OUT/NAME/``, marked unfinished until the run has written everything.

    ``resume``: continue an unfinished folder; ``restart``: remove an unfinished one and start over.
    Without either an unfinished folder is one sentence. A finished folder of the same name is
    moved aside to ``.NAME.previous`` while the new run works and removed when it has finished."""

    def __init__(self, path: Path, resume: bool = False, restart: bool = False):
        self.path = Path(path)
        self.resume, self.restart = resume, restart
        self.previous = self.path.parent / f".{self.path.name}.previous"  # removed once this run has finished
        self.moved_aside = False
        self.resuming = False  # an unfinished folder is being continued
        self._log = None
        self._stage = "starting"
        # Held while the run writes, so that no two processes (or nodes) run one folder at once.
        self.claim = run_folder_claim(self.path, wait=0)

    def __enter__(self) -> "RunFolder":
        self.claim.acquire()
        try:
            self._open()
        except BaseException as e:
            if not self.resuming and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()  # created here, nothing written: no folder left behind
            if self.moved_aside and not self.path.exists():
                os.replace(self.previous, self.path)
            self.claim.release()
            if isinstance(e, OutOfSpace):
                raise OutOfSpace(f"{str(e).rstrip('.')}; the run has not started: free space and run it "
                                 "again.") from None
            raise
        return self

    def _open(self) -> None:
        path = self.path
        if is_unfinished(path):
            if self.resume:
                self.resuming = True
            elif self.restart:
                shutil.rmtree(path)
            else:
                raise TradeoffError(f"{path} holds an unfinished run (stage: {unfinished_state(path).get('stage')}); "
                                    "pass --resume to continue it or --restart to start it over.")
        elif path.exists() and write_leftovers_only(path):  # killed before its first marker landed
            for leftover in path.iterdir():
                leftover.unlink()
        elif path.exists() and any(path.iterdir()):
            if not is_finished(path):
                raise TradeoffError(f"{path} exists and is not a run folder; remove it or choose another name.")
            shutil.rmtree(self.previous, ignore_errors=True)
            os.replace(path, self.previous)
            self.moved_aside = True
        path.mkdir(parents=True, exist_ok=True)
        self.mark("resuming" if self.resuming else "starting")
        self._log = open(path / "log.txt", "a", buffering=1)

    def mark(self, stage: str, **details) -> None:
        """Record the stage the run has reached, and which process is writing, in the marker."""
        self._stage = stage
        state = {"stage": stage, **details, "host": socket.gethostname(), "pid": os.getpid()}
        write_text_atomic(self.path / UNFINISHED, json.dumps(state) + "\n")

    def log(self, message: str) -> None:
        try:
            self._log.write(message + "\n")
        except OSError as e:
            if e.errno in NO_SPACE:
                raise OutOfSpace(no_space_sentence(self.path / "log.txt", e)) from None
            raise

    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.path / name, text)

    def write_json(self, name: str, data) -> None:
        self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def save_tensors(self, name: str, tensors: dict) -> None:
        save_tensors_atomic(self.path / name, tensors)

    def holds_work(self) -> bool:
        """A snapshot or a trained model: what a failed run keeps for --resume."""
        return (self.path / "model.safetensors").is_file() or any((self.path / "snapshots").glob("step-*"))

    def __exit__(self, exc_type, exc, tb):
        try:
            try:
                self._log.close()
            except OSError:
                pass  # a full disk: the lines already written stay
            if exc_type is not None:
                self._failed(exc_type, exc)
                return False
            self.claim.check()
            unreadable = None
            try:  # before the commit point: a full disk here leaves the run unfinished, resumable
                write_summary(self.path.parent, finishing=self.path)
            except OutOfSpace as e:
                self._failed(OutOfSpace, e)
            except TradeoffError as e:  # another folder's fault (an earlier version's): this run is done
                unreadable = e
            shutil.rmtree(self.path / "snapshots", ignore_errors=True)  # the weights are in model.safetensors
            (self.path / UNFINISHED).unlink()  # the commit point: the folder is finished from here on
            shutil.rmtree(self.previous, ignore_errors=True)
            if unreadable is not None:
                raise unreadable
        finally:
            self.claim.release()
        return False

    def _failed(self, exc_type, exc) -> None:
        """Keep what the failed run produced, marked unfinished with its error (or remove the folder
        when it holds nothing worth keeping); a full disk becomes one sentence saying what is left."""
        if not self.resuming and not self.holds_work():  # failed before anything worth keeping
            shutil.rmtree(self.path, ignore_errors=True)
            if self.moved_aside:
                os.replace(self.previous, self.path)
            if exc_type is OutOfSpace:
                raise OutOfSpace(f"{str(exc).rstrip('.')}; the run had no snapshot yet and its folder {self.path} is removed: free "
                                 "space and run it again.") from None
            return
        error = "interrupted" if exc_type is KeyboardInterrupt else f"{exc_type.__name__}: {exc}"
        try:
            self.mark(self._stage, error=error)
        except OutOfSpace:
            pass  # the marker as it was still says unfinished
        if exc_type is OutOfSpace:
            raise OutOfSpace(f"{str(exc).rstrip('.')}; {self.path} is kept unfinished with its newest snapshot: free space and rerun "
                             "with --resume.") from None


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """The one way files are written: ``write(temporary name)`` beside ``path``, then a rename,
    so a kill or a full disk mid-write leaves any earlier file of that name whole. A disk or
    quota that is full is :class:`OutOfSpace` (one sentence); the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        if e.errno in NO_SPACE:
            raise OutOfSpace(no_space_sentence(path, e)) from None
        raise
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; results are for everyone to read
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise OutOfSpace(no_space_sentence(path, e)) from None
        raise


def no_space_sentence(path: Path, e: OSError) -> str:
    kept = "; its previous version is intact" if path.exists() else ""
    return f"no space left for {path} ({e.strerror or os.strerror(e.errno)}){kept}."


def save_tensors_atomic(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Write tensors (moved to the CPU) as safetensors, atomically."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        try:
            save_file(cpu, tmp, metadata=metadata)
        except SafetensorError as e:  # safetensors reports the system's error inside its message
            code = re.search(r"\(os error (\d+)\)", str(e))
            if code:
                raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from None
            raise

    write_atomic(path, write)


# What an atomic write (below) leaves when killed before its rename: ".NAME." + mkstemp's 8 characters.
_WRITE_LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def write_leftovers_only(run_dir: Path) -> bool:
    """Whether every entry of ``run_dir`` is a temporary file of an interrupted atomic write."""
    entries = list(Path(run_dir).iterdir())
    return bool(entries) and all(e.is_file() and _WRITE_LEFTOVER.match(e.name) for e in entries)


def write_text_atomic(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    write_atomic(path, write)


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(spec dict, metrics dict) of a finished run folder written by this version."""
    run_dir = Path(run_dir)
    spec_file, metrics_file = run_dir / "spec.yaml", run_dir / "metrics.json"
    if is_unfinished(run_dir):
        raise TradeoffError(f"{run_dir} is an unfinished run (stage: {unfinished_state(run_dir).get('stage')}); "
                            "continue it with `tradeoff run SPEC --resume` (or `tradeoff sweep` for a sweep's cell).")
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
    runs = sorted(p.parent for p in out_dir.glob("*/metrics.json")
                  if not p.parent.name.startswith(".") and not is_unfinished(p.parent))
    for run in runs:
        try:
            raw = yaml.safe_load((run / "spec.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue  # a folder without a readable spec is reported by whoever reads it
        if isinstance(raw, dict):
            refuse_earlier_version(run, raw)
    return runs


def write_summary(out_dir: Path, finishing: Path | None = None) -> Path:
    """``summary.csv``: one row per finished run folder in ``out_dir`` (and ``finishing``, a run
    folder about to be committed). Read and written under the file's claim, so that runs
    finishing at once (processes, cluster nodes) each leave every row."""
    path = Path(out_dir) / "summary.csv"
    with Claim(path):
        write_text_atomic(path, summary_text(out_dir, finishing))
    return path


def summary_text(out_dir: Path, finishing: Path | None = None) -> str:
    rows = {}
    for run in finished_runs(out_dir):
        try:
            rows[run.name] = read_run(run)[1]
        except TradeoffError:
            if is_finished(run):
                raise
            continue  # moved aside by a rerun of the same name since it was listed
    if finishing is not None and (Path(finishing) / "metrics.json").is_file():
        rows[Path(finishing).name] = json.loads((Path(finishing) / "metrics.json").read_text())
    rows = [{"run": name, **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}}
            for name, metrics in sorted(rows.items())]
    columns = list(SUMMARY_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()
