"""Many writers into one sweep folder: cluster jobs finishing at once, two sweeps started
together, and jobs killed while they hold a claim (tradeoff.records.claims).

Checked against the plain count: N jobs into one folder leave exactly N rows in summary.csv (each
equal to its run's metrics.json), N entries in the job record and N cells in the manifest; no run
folder is trained twice; a dead holder's claim is recovered and a live one's never is."""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tiny_spec import tiny_table
from tradeoff.records import claims
from tradeoff.records.claims import Claim, ClaimHeld
from tradeoff.records.folders import finished_runs, run_folder_claim, write_summary
from tradeoff.sweeps import cluster
from tradeoff.sweeps.grids import expand, load_table
from tradeoff.sweeps.sweep import status, sweep, write_manifest

TABLE = tiny_table("writers")
LOCAL_JOB = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_NODEID": "0",
             "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "writers.yaml"
    path.write_text(TABLE)
    return path


def cell_job(index: int, grid, out: str, barrier) -> None:
    """What one array task of ``--executor slurm`` does (submitit's job function, in submitit's job
    environment), then the sweep's shared writes for its cell, all tasks released at once."""
    os.environ.update(LOCAL_JOB, SUBMITIT_LOCAL_JOB_ID=str(1000 + index), OMP_NUM_THREADS="1")
    cell = grid.cells[index]
    barrier.wait()
    answer = cluster.CellJob()(cell.spec.to_dict(), out, cell.run_name)
    assert "metrics" in answer, answer
    barrier.wait()
    cluster.record_jobs(Path(out), {cell.run_name: str(1000 + index)}, "local")
    write_manifest(Path(out), dataclasses.replace(grid, cells=[cell]), {}, {})


@pytest.mark.parametrize("jobs", [2, 4, 8])
def test_jobs_finishing_together_leave_every_row_and_cell_once(table, tmp_path, jobs):
    grid = expand(load_table(str(table)), "smoke", seeds=jobs)
    assert len(grid.cells) == jobs
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sklearn.datasets", "tradeoff.sweeps.cluster", "tradeoff.sweeps.sweep"])
    barrier = ctx.Barrier(jobs)
    procs = [ctx.Process(target=cell_job, args=(i, grid, str(tmp_path), barrier)) for i in range(jobs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * jobs

    names = sorted(c.run_name for c in grid.cells)
    assert sorted(r.name for r in finished_runs(tmp_path)) == names
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert sorted(r["run"] for r in rows) == names  # none lost, none twice
    for row in rows:
        metrics = json.loads((tmp_path / row["run"] / "metrics.json").read_text())
        assert float(row["accuracy"]) == metrics["accuracy"]
    assert sorted(json.loads((tmp_path / cluster.JOBS_FILE).read_text())) == names
    (manifest,) = tmp_path.glob("sweep-writers-smoke.json")
    assert sorted(c["run"] for c in json.loads(manifest.read_text())["cells"]) == names
    assert not list(tmp_path.rglob("*.claim*")), "every claim is released"


def run_sweep(table: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tradeoff", "sweep", str(table), "--preset", "smoke", "--seeds",
                             "2", "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_sweeps_started_together_never_run_one_cell_twice(table, tmp_path):
    """One of two sweeps started at once into one folder runs the grid; the other is refused in one
    sentence (or, started after the first finished, finds every cell done). Each run folder's log
    shows one training."""
    first, second = run_sweep(table, tmp_path), run_sweep(table, tmp_path)
    answers = [(p.wait(timeout=240), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in answers)
    assert codes in ([0, 0], [0, 2]), answers
    for code, err in answers:
        if code == 2:
            (line,) = err.strip().splitlines()
            assert f"sweep folder {tmp_path} is being written by process" in line and socket.gethostname() in line
    runs = finished_runs(tmp_path)
    assert len(runs) == 2
    for run in runs:
        assert (run / "log.txt").read_text().count("trained ") == 1


def test_a_cell_another_process_runs_is_left_to_it(table, tmp_path):
    """A sweep meeting a cell that a live job holds (another node's job array task) leaves it to
    that job: a note, not a failure, and the cell's folder is not touched."""
    grid = expand(load_table(str(table)), "smoke", seeds=2)
    busy = grid.cells[1].run_name
    with run_folder_claim(tmp_path / busy, wait=0):
        result = sweep([str(table)], "smoke", tmp_path, seeds=2, echo=lambda m: None)
        (tmp_path / busy).mkdir()
        (tmp_path / busy / "unfinished.json").write_text(json.dumps({"stage": "training", "host": "node-9", "pid": 1}))
        assert [state.split(" ")[0] for _, state in status(tmp_path)] == ["done", "running"]
        shutil.rmtree(tmp_path / busy)
    assert result.ran == [grid.cells[0].run_name] and not result.failed
    assert any(f"run folder {tmp_path / busy} is being written by process {os.getpid()}" in n for n in result.notes)
    assert not (tmp_path / busy).exists()


HOLD = """
import sys, time
from tradeoff.records.claims import Claim
Claim(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_job_killed_while_holding_a_claim_is_recovered_at_once_on_its_host(tmp_path):
    (tmp_path / "run").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "summary.csv")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(ClaimHeld, match=f"is being written by process {proc.pid} on {socket.gethostname()}"):
        Claim(tmp_path / "summary.csv", wait=0.2).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    start = time.monotonic()
    write_summary(tmp_path)  # waits for no lease: the holder is known dead
    assert time.monotonic() - start < 5
    assert (tmp_path / "summary.csv").is_file() and not list(tmp_path.glob("*.claim*"))


def foreign_claim(target: Path, age: float) -> Path:
    """A claim left by a job on another node, its last heartbeat ``age`` seconds ago."""
    path = claims.claim_path(target)
    path.write_text(json.dumps({"host": "node-that-died", "pid": 1, "token": "0123456789abcdef",
                                "since": time.time() - age}) + "\n")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_another_nodes_claim_is_recovered_only_after_its_lease(tmp_path):
    target = tmp_path / "summary.csv"
    foreign_claim(target, age=0)
    with pytest.raises(ClaimHeld, match="process 1 on node-that-died since"):
        Claim(target, wait=0.3, lease=2).acquire()
    foreign_claim(target, age=1.5)  # two heartbeats missed: waited for until its lease ends, then taken
    start = time.monotonic()
    with Claim(target, wait=0, lease=2):
        assert 0.3 < time.monotonic() - start < 2
    foreign_claim(target, age=3)  # silent for longer than the lease
    with Claim(target, wait=0.3, lease=2) as claim:
        assert claim.held() and claims.read_holder(claims.claim_path(target))["pid"] == os.getpid()
    assert not claims.claim_path(target).exists()


def test_a_heartbeat_keeps_a_long_claim_and_recoverers_never_overlap(tmp_path):
    """A holder beating every lease / 4 is never taken for dead; eight recoverers of one stale claim
    hold it one at a time (the break claim keeps one from removing another's fresh claim)."""
    target = tmp_path / "sweep-x.json"
    with Claim(target, lease=0.4):
        time.sleep(1.2)  # three leases
        with pytest.raises(ClaimHeld):
            Claim(target, wait=0.1, lease=0.4).acquire()

    foreign_claim(target, age=10)
    holding, most = [0], [0]
    guard = threading.Lock()

    def recover():
        with Claim(target, wait=10, lease=1):
            with guard:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
            time.sleep(0.02)
            with guard:
                holding[0] -= 1

    threads = [threading.Thread(target=recover) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and not list(tmp_path.glob("*.claim*"))


def test_a_claim_file_never_shows_a_reader_an_empty_holder(tmp_path):
    """A claim appears whole (its holder linked into place): a reader polling while another thread
    takes and drops the claim 300 times never reads an empty or half-written holder, which a
    refusal would then name as "another process" instead of the holder's pid and host."""
    target = tmp_path / "folder"
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            holder = claims.read_holder(claims.claim_path(target))
            if holder is not None:
                seen.append(holder)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(300):
            with Claim(target, wait=0):
                pass
    finally:
        stop.set()
        reader.join()
    assert seen and all(h.get("pid") == os.getpid() and h.get("host") == socket.gethostname() for h in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no private files left behind
