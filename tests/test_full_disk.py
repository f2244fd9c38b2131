"""A full disk (ENOSPC) or quota (EDQUOT) at each write of a run, a sweep and a report, injected
in the one atomic-write layer (tradeoff.records.folders.write_atomic), and on a real tmpfs of a
few hundred kilobytes where this machine lets the test mount one.

Checked against the uninterrupted run: every failure is one sentence and exit status 75, leaves
no folder that looks finished and every earlier file whole; ``--resume`` once space is back ends
with the uninterrupted run's metrics.json (timings aside) and summary.csv."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_report import _fake_sweep as fake_sweep
from tradeoff.cli import main
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.records import folders
from tradeoff.records.folders import is_finished, is_unfinished
from tradeoff.training import snapshots

SPEC = "name: tiny\n"
TINY = ["data.dataset=digits", "data.train_subset=100", "data.test_subset=50", "train.epochs=1",
        "train.batch_size=50", "snapshots.every_steps=1", "eval.every_steps=1", "eval.masking_checks=false",
        "eval.saliency=false", "eval.adversarial=false"]
TIMING = set(TIMING_KEYS)


def run_args(spec: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(spec), "--out", str(out), "--quiet", *extra, *[a for s in TINY for a in ("--set", s)]]


def metrics(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in TIMING}


def the_sentence(err: str) -> str:
    """The command's one line (the run's own warnings, "[tiny] ...", aside); never a traceback."""
    assert "Traceback" not in err
    (line,) = [ln for ln in err.strip().splitlines() if not ln.startswith("[")]
    return line


class Writes:
    """The atomic-write layer, counting its writes and failing the ``fail_at``-th one (half its
    bytes written first) with ``code``."""

    def __init__(self, fail_at: int | None = None, code: int = errno.ENOSPC):
        self.real, self.fail_at, self.code = folders.write_atomic, fail_at, code
        self.paths: list[Path] = []

    def __call__(self, path, write):
        self.paths.append(Path(path))
        if len(self.paths) != self.fail_at:
            return self.real(path, write)

        def half_then_full(tmp: str) -> None:
            write(tmp)
            with open(tmp, "r+b") as fh:
                fh.truncate(os.path.getsize(tmp) // 2)
            raise OSError(self.code, os.strerror(self.code))

        return self.real(path, half_then_full)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and the files it writes, in order."""
    root = tmp_path_factory.mktemp("reference")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    writes = Writes()
    mp = pytest.MonkeyPatch()
    mp.setattr(folders, "write_atomic", writes)
    try:
        assert main(run_args(spec, root / "out")) == 0
    finally:
        mp.undo()
    return metrics(root / "out" / "tiny"), (root / "out" / "summary.csv").read_text(), writes.paths


def test_the_reference_run_writes_every_kind_of_file(reference):
    names = {p.name for p in reference[2]}
    assert {"unfinished.json", "spec.yaml", "poison.safetensors", "curve.csv", "model.safetensors", "metrics.json",
            "summary.csv"} <= names
    assert sum(p.parent.name == "snapshots" for p in reference[2]) >= 2


def test_a_full_disk_at_each_write_of_a_run_is_resumable(reference, tmp_path, monkeypatch, capsys):
    ref_metrics, ref_summary, paths = reference
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    for k in range(1, len(paths) + 1):
        out = tmp_path / f"at-{k}"
        code = errno.ENOSPC if k % 2 else errno.EDQUOT
        capsys.readouterr()
        monkeypatch.setattr(folders, "write_atomic", Writes(fail_at=k, code=code))
        assert main(run_args(spec, out)) == 75, f"write {k} ({paths[k - 1].name})"
        line = the_sentence(capsys.readouterr().err)
        assert line.startswith("tradeoff: error: no space left for ") and os.strerror(code) in line, line
        assert line.endswith(("rerun with --resume.", "run it again.")), line
        run = out / "tiny"
        assert not is_finished(run), f"write {k} ({paths[k - 1].name}) left a finished-looking folder"
        assert not list(out.rglob(".*.????????")), "no temporary file is left"
        left = sorted((run / "snapshots").glob("step-*")) if run.is_dir() else []
        for snap in left:  # every snapshot left is whole
            snapshots.read(snap)
        monkeypatch.setattr(folders, "write_atomic", Writes())  # space is back
        assert main(run_args(spec, out, "--resume")) == 0, f"resume after write {k}"
        assert is_finished(run) and metrics(run) == ref_metrics, f"write {k} ({paths[k - 1].name})"
        assert (out / "summary.csv").read_text().splitlines()[0] == ref_summary.splitlines()[0]
        assert len((out / "summary.csv").read_text().splitlines()) == 2
        shutil.rmtree(out)


def test_a_full_disk_keeps_the_previous_snapshot_of_a_resumed_run(reference, tmp_path, monkeypatch, capsys):
    """The snapshot write fails on a run that already has one: that one stays and the run resumes
    from it (the log says which step's snapshot was not written)."""
    ref_metrics, _, paths = reference
    second_snapshot = [i for i, p in enumerate(paths, 1) if p.parent.name == "snapshots"][1]
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    monkeypatch.setattr(folders, "write_atomic", Writes(fail_at=second_snapshot))
    assert main(run_args(spec, tmp_path)) == 75
    run = tmp_path / "tiny"
    assert is_unfinished(run) and [p.name for p in (run / "snapshots").glob("step-*")] == ["step-000000001.safetensors"]
    assert "snapshot at step 2 not written: no space left" in (run / "log.txt").read_text()
    assert "kept unfinished with its newest snapshot" in capsys.readouterr().err
    monkeypatch.setattr(folders, "write_atomic", Writes())
    assert main(run_args(spec, tmp_path, "--resume")) == 0
    assert metrics(run) == ref_metrics


def test_a_full_disk_during_a_report_keeps_the_previous_report(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    fake_sweep(out)
    assert main(["report", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.glob("report.*")}
    for k in range(1, 5):  # report.md, .csv, .html and the figure
        writes = Writes(fail_at=k)
        monkeypatch.setattr(folders, "write_atomic", writes)
        capsys.readouterr()
        assert main(["report", str(out)]) == 75
        line = the_sentence(capsys.readouterr().err)
        assert line.startswith("tradeoff: error: no space left for ") and "previous version is intact" in line
        assert {p.name: p.read_bytes() for p in out.glob("report.*")} == before
    assert len(writes.paths) >= 4


def mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_a_run_on_a_real_full_filesystem(reference, tmp_path, capsys):
    """A tmpfs with room for one snapshot of the run, not two: the real ENOSPC (raised inside
    safetensors) is one sentence and exit 75; moved to a larger disk, the folder resumes from the
    snapshot it kept to the uninterrupted metrics."""
    small = tmp_path / "small"
    if not mount_tmpfs(small, "1100k"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root and mount rights)")
    try:
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC)
        code = main(run_args(spec, small))
        err = capsys.readouterr().err
        assert code == 75 and "no space left for" in err and "Traceback" not in err, err
        assert not is_finished(small / "tiny")
        moved = tmp_path / "moved"
        shutil.copytree(small, moved)
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, timeout=10)
    assert is_unfinished(moved / "tiny") and list((moved / "tiny" / "snapshots").glob("step-*"))
    assert main(run_args(spec, moved, "--resume")) == 0
    assert metrics(moved / "tiny") == reference[0]
