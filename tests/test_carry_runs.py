"""benchmarks/carry_runs.py: a sweep's finished runs saved without weights and restored into a new
sweep folder count as done there, each naming the commit that made it, and record_table.py lists
the commits and the carried runs of a table recorded from such a folder. Checked against the sweep
itself: the second sweep runs only the cell that was not carried, and its summary.csv holds the
first sweep's rows unchanged."""

import csv
import shutil
import sys
from pathlib import Path

from benchmark_script import load
from tiny_spec import tiny_table
from tradeoff.sweeps.sweep import sweep

TABLE = tiny_table("carried")


def rows(folder: Path) -> dict:
    with open(folder / "summary.csv", newline="") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


def test_restored_runs_are_done_in_a_new_sweep_folder_and_only_the_rest_runs(tmp_path, capsys, monkeypatch):
    carry = load("carry_runs")
    table = tmp_path / "carried.yaml"
    table.write_text(TABLE)
    first = tmp_path / "first"
    done = sweep([str(table)], "smoke", first, seeds=2, echo=lambda _: None)
    assert len(done.ran) == 2
    kept = tmp_path / "kept"
    assert carry.main(["save", str(first), "--to", str(kept), "--code", "abc123"]) == 0
    carried = sorted(p.name for p in (kept / done.ran[0]).iterdir())
    assert carried == ["made_with.txt", "metrics.json", "spec.yaml"]
    shutil.rmtree(kept / done.ran[1])  # a run that had not finished when the session ended

    second = tmp_path / "second"
    assert carry.main(["restore", str(kept), "--to", str(second)]) == 0
    assert carry.main(["restore", str(kept), "--to", str(second)]) == 0  # again: nothing replaced
    assert "0 run(s) restored" in capsys.readouterr().out.splitlines()[-1]
    again = sweep([str(table)], "smoke", second, seeds=2, echo=lambda _: None)
    assert again.cached == [done.ran[0]] and again.ran == [done.ran[1]]
    assert rows(second)[done.ran[0]] == rows(first)[done.ran[0]]
    assert not list(second.glob(".*.restoring"))
    # carried again from the new folder (by newer code): the restored run keeps the commit that made it
    assert carry.main(["save", str(second), "--to", str(kept), "--code", "def456"]) == 0
    assert (kept / done.ran[0] / "made_with.txt").read_text() == "abc123\n"
    assert (kept / done.ran[1] / "made_with.txt").read_text() == "def456\n"

    # the table recorded from the new folder names both commits and the carried run
    # (the rerun cell, made in this session, has no made_with.txt in the sweep folder: the current commit)
    record = load("record_table")
    out = tmp_path / "recorded"
    argv = ["record_table.py", "carried", "--sweep", str(second), "--preset", "smoke", "--out", str(out),
            "--command", "tradeoff sweep carried.yaml", "--code", "def456"]
    monkeypatch.setattr(sys, "argv", argv)
    assert record.main() == 0
    run_md = (out / "RUN.md").read_text()
    assert "- code: abc123 (1 runs), def456 (1 runs)" in run_md  # in the manifest's order: seed 0 first
    assert "- runs: 2; 1 of them carried from an earlier working session" in run_md
    assert rows(out) == rows(second) and (out / "report.md").is_file()


def test_a_missing_folder_is_one_sentence_and_exit_2(tmp_path, capsys):
    carry = load("carry_runs")
    assert carry.main(["save", str(tmp_path / "nowhere"), "--to", str(tmp_path / "kept")]) == 2
    assert carry.main(["restore", str(tmp_path / "nowhere"), "--to", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"carry_runs: no sweep folder {tmp_path / 'nowhere'}.",
                   f"carry_runs: no carried runs in {tmp_path / 'nowhere'}."]


def test_a_save_stopped_mid_copy_leaves_the_carried_files_whole(tmp_path, monkeypatch):
    """save runs beside a sweep that still writes, and a session's end may stop it at any moment:
    a save killed half way through copying a run's metrics (here: a copy that writes half the file,
    then is interrupted) leaves the carried copy as the previous save wrote it, with no partial
    file beside it; the next save brings it up to date."""
    carry = load("carry_runs")
    sweep_dir, kept = tmp_path / "sweep", tmp_path / "kept"
    run = sweep_dir / "t-digits-standard-s0-0123456789ab"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text("name: t-digits-standard-s0\n")
    (run / "metrics.json").write_text('{"accuracy": 0.5}')
    assert carry.save(sweep_dir, kept, "abc123") == [run.name]
    (run / "metrics.json").write_text('{"accuracy": 0.75, "masking_transfer_robustness": 0.5}')

    def interrupted_copy(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(carry.shutil, "copy2", interrupted_copy)
    try:
        carry.save(sweep_dir, kept, "abc123")
    except KeyboardInterrupt:
        pass
    assert (kept / run.name / "metrics.json").read_text() == '{"accuracy": 0.5}'
    assert (kept / run.name / "spec.yaml").read_text() == "name: t-digits-standard-s0\n"
    assert sorted(p.name for p in (kept / run.name).iterdir()) == ["made_with.txt", "metrics.json", "spec.yaml"]
    monkeypatch.undo()
    carry.save(sweep_dir, kept, "abc123")
    assert (kept / run.name / "metrics.json").read_text() == (run / "metrics.json").read_text()
