"""Sweeps as cluster jobs through submitit's local executor (the code path of --executor slurm,
without SLURM): the same run folders and metrics as the process pool, a preempted job requeued
and resumed from its snapshot, and --status for every state a cell can be in."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from slow_steps import slow_steps_source
from tradeoff.cli import main
from tradeoff.core.errors import TradeoffError
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.records.folders import finished_runs
from tradeoff.sweeps import cluster, grids
from tradeoff.sweeps.cluster import ClusterOptions
from tradeoff.sweeps.sweep import cell_state, status, sweep

TABLE = """
id: jobs
table: Table 1(a)
title: a grid for the cluster tests
datasets: [digits]
layout: {rows: [Adv. Defense]}
metrics: {Accuracy: accuracy}
base:
  trigger: {size: 2}
  data: {train_subset: 300, test_subset: 100}
  train: {epochs: 3, batch_size: 50}
cells:
  - setting: Adv. Defense=None (Std. Training)
    set: {adversarial_defense: {objective: none}}
  - setting: Adv. Defense=Adv. Training
    set: {adversarial_defense: {objective: pgd, attack: {steps: 2}}}
"""
TIMING = set(TIMING_KEYS)


def metrics_by_run(out: Path) -> dict:
    return {run.name: {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in TIMING}
            for run in finished_runs(out)}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "jobs.yaml"
    path.write_text(TABLE)
    return path


@pytest.fixture(scope="module")
def pool_sweep(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("pool")
    sweep([str(table)], "smoke", out, echo=lambda m: None)
    return metrics_by_run(out)


def test_local_jobs_give_the_pool_sweeps_folders_and_metrics(table, pool_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "jobs"
    assert main(["sweep", str(table), "--preset", "smoke", "--out", str(out), "--executor", "local"]) == 0
    assert metrics_by_run(out) == pool_sweep and len(pool_sweep) == 2
    ids = json.loads((out / cluster.JOBS_FILE).read_text())
    assert sorted(ids) == sorted(pool_sweep) and {r["executor"] for r in ids.values()} == {"local"}
    assert "submitted 2 job(s) to local" in capsys.readouterr().err
    assert [state for _, state in status(out)] == ["done", "done"]


# Imported (as sitecustomize) by every Python process of the job: steps of 200 ms, so that the
# preemption signal lands mid-training on any machine.
SLOW_STEPS = slow_steps_source(0.2)


def test_a_preempted_job_is_requeued_and_resumes_from_its_snapshot(table, pool_sweep, tmp_path, monkeypatch):
    """submitit's preemption signal (SIGUSR2) reaches the job mid-training: it writes a snapshot,
    submitit requeues it (checkpoint), and the requeued job resumes and ends as the pool's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_STEPS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "jobs"
    grid = grids.expand(grids.load_table(str(table)), "smoke", overrides=["snapshots.every_steps=1"],
                        only=["adv-training"])
    (cell,) = grid.cells
    (job,) = cluster.submit([cell], out, ClusterOptions(executor="local", hours=1))
    snapshots = out / cell.run_name / "snapshots"
    deadline = time.monotonic() + 240
    while not any(snapshots.glob("step-*")) if snapshots.exists() else True:
        assert time.monotonic() < deadline and not job.done(), "the job ended before its first snapshot"
        time.sleep(0.02)
    marker = json.loads((out / cell.run_name / "unfinished.json").read_text())
    os.kill(marker["pid"], signal.SIGUSR2)  # submitit's preemption signal, to the task's process as SLURM sends it
    answer = cluster.answer_of(job)
    assert "metrics" in answer, answer
    log = (out / cell.run_name / "log.txt").read_text()
    assert "resumed from the snapshot" in log
    assert metrics_by_run(out) == {cell.run_name: pool_sweep[cell.run_name]}


def test_a_two_task_job_runs_the_cell_data_parallel(table, pool_sweep, tmp_path, monkeypatch):
    """--gpus-per-cell 2 through the local executor: two tasks, the distributed environment exported
    from submitit's, one run folder written by rank 0, the single-process numbers to one test image."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "jobs"
    grid = grids.expand(grids.load_table(str(table)), "smoke", only=["none-std-training"])
    (cell,) = grid.cells
    (job,) = cluster.submit([cell], out, ClusterOptions(executor="local", gpus_per_cell=2))
    answers = job.results()
    assert len(answers) == 2 and all("metrics" in a for a in answers), answers
    got, single = metrics_by_run(out)[cell.run_name], pool_sweep[cell.run_name]
    assert got["train_steps"] == single["train_steps"]
    assert abs(got["accuracy"] - single["accuracy"]) <= 1 / 100 + 1e-9


def test_status_names_every_state(table, tmp_path, monkeypatch, capsys):
    out = tmp_path / "status"
    assert main(["sweep", str(table), "--preset", "smoke", "--out", str(out), "--cells", "none-std-training"]) == 0
    assert dict(status(out)) == {"jobs digits none-std-training s0": "done"}
    assert cell_state(out, "jobs-digits-adv-training-s0-0123456789ab", {}) == "not started"

    def fails(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("tradeoff.pipeline.experiment.evaluate", fails)
    main(["sweep", str(table), "--preset", "smoke", "--out", str(out)])
    assert dict(status(out))["jobs digits adv-training s0"].startswith("failed (evaluation): RuntimeError: out of memory")
    capsys.readouterr()
    assert main(["sweep", "--status", str(out)]) == 0
    assert "failed (evaluation)" in capsys.readouterr().out

    (folder,) = [p for p in out.iterdir() if p.name.startswith("jobs-digits-adv-training")]
    marker = json.loads((folder / "unfinished.json").read_text())
    del marker["error"]
    (folder / "unfinished.json").write_text(json.dumps({**marker, "pid": os.getpid()}))  # a live writer
    assert dict(status(out))["jobs digits adv-training s0"].startswith("running (evaluation)")
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it
    (folder / "unfinished.json").write_text(json.dumps({**marker, "pid": dead}))  # the writer was killed
    assert dict(status(out))["jobs digits adv-training s0"].startswith("resumable (stopped in evaluation)")


def test_slurm_jobs_ask_for_the_cells_resources(tmp_path, monkeypatch):
    """The SLURM executor (built where srun exists; a stand-in srun here) asks for the partition,
    the time limit in minutes, one task per GPU on every node, requeueing, and an array limit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ex = cluster.executor_for(tmp_path, ClusterOptions(executor="slurm", partition="gpu", hours=12,
                                                       gpus_per_cell=4, nodes_per_cell=2))
    p = ex.parameters
    assert (p["partition"], p["time"], p["nodes"], p["ntasks_per_node"], p["gpus_per_node"]) == ("gpu", 720, 2, 4, 4)
    assert p["additional_parameters"] == {"requeue": True} and p["array_parallelism"] == 64


def test_cluster_options_are_checked_before_anything_runs(table, tmp_path, monkeypatch):
    with pytest.raises(TradeoffError, match="needs --slurm-partition"):
        sweep([str(table)], "smoke", tmp_path / "x", cluster=ClusterOptions(executor="slurm"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(TradeoffError, match="needs SLURM's srun"):
        sweep([str(table)], "smoke", tmp_path / "x", cluster=ClusterOptions(executor="slurm", partition="gpu"))
    with pytest.raises(TradeoffError, match="--nodes-per-cell"):
        sweep([str(table)], "smoke", tmp_path / "x", cluster=ClusterOptions(executor="local", nodes_per_cell=0))
    assert not (tmp_path / "x").exists()
