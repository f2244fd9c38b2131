"""Sweeps as cluster jobs through submitit: one job per unfinished cell, submitted as one job array.

``slurm`` submits to SLURM and returns (``tradeoff sweep --status`` follows the jobs; rerunning the
sweep, or ``tradeoff report``, picks up what finished); ``local`` runs the same jobs through
submitit's local executor and waits for them (what the tests use: there is no SLURM here).

A cell with several GPUs or nodes runs as a data-parallel run of the same spec, one task per GPU,
the distributed environment exported from submitit's. A preempted or timed-out job (submitit's
signal, SIGUSR2, or SLURM's SIGTERM) writes a snapshot at the next training step; the job is then
requeued through submitit's checkpointing and resumes from that snapshot.
"""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import submitit

from tradeoff.core.errors import TradeoffError
from tradeoff.records.claims import Claim
from tradeoff.records.folders import write_text_atomic
from tradeoff.sweeps.cell import run_cell

EXECUTORS = ("pool", "local", "slurm")
JOBS_FILE = "cluster-jobs.json"
ACTIVE_STATES = ("PENDING", "REQUEUED", "CONFIGURING", "RUNNING")  # a job the scheduler still holds


@dataclass
class ClusterOptions:
    executor: str = "pool"  # pool: --workers processes on this machine
    partition: Optional[str] = None
    hours: float = 24.0  # wall-time limit of each cell's job
    gpus_per_cell: int = 0
    nodes_per_cell: int = 1
    parallel: int = 64  # array tasks running at once

    def check(self) -> None:
        if self.executor not in EXECUTORS:
            raise TradeoffError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}.")
        if self.hours <= 0 or self.gpus_per_cell < 0 or self.nodes_per_cell < 1:
            raise TradeoffError("--slurm-time must be positive, --gpus-per-cell at least 0 and --nodes-per-cell "
                                "at least 1.")
        if self.executor == "slurm" and not self.partition:
            raise TradeoffError("--executor slurm needs --slurm-partition.")
        if self.executor == "slurm" and not shutil.which("srun"):
            raise TradeoffError("--executor slurm needs SLURM's srun and sbatch on this machine (a cluster's login "
                                "node); use --executor local or --workers here.")
        if self.executor == "local" and self.nodes_per_cell != 1:
            raise TradeoffError("--executor local runs on this one machine: --nodes-per-cell must be 1.")


class CellJob(submitit.helpers.Checkpointable):
    """One cell as a submitit job. Requeued (by submitit calling ``checkpoint``, inherited: the
    same call again) it resumes its run folder from the newest snapshot."""

    def __call__(self, spec_dict: dict, out: str, run_name: str, tensorboard: str | None = None,
                 records: dict | None = None) -> dict:
        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        answer = run_cell(spec_dict, out, run_name, tensorboard, records)
        if "preempted" in answer:
            # The snapshot is written; hand the signal to submitit's handler (restored once the
            # run ended), which requeues this job through checkpoint().
            signal.raise_signal(signal.SIGUSR2)
        return answer


def jobs_folder(out: Path) -> Path:
    """Where submitit keeps each job's pickles and logs (``%j``: the job id)."""
    return Path(out) / "submitit" / "%j"


def executor_for(out: Path, options: ClusterOptions) -> submitit.core.core.PicklingExecutor:
    """submitit's SLURM or local executor, with one task per GPU of a cell."""
    folder = jobs_folder(out)
    tasks = max(1, options.gpus_per_cell)
    minutes = max(1, round(60 * options.hours))
    if options.executor == "local":  # one process per task, on whatever devices this machine has
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=minutes, tasks_per_node=tasks)
        return ex
    ex = submitit.SlurmExecutor(folder)
    ex.update_parameters(job_name="tradeoff-cell", partition=options.partition, time=minutes,
                         nodes=options.nodes_per_cell, ntasks_per_node=tasks,
                         gpus_per_node=options.gpus_per_cell or None, array_parallelism=options.parallel,
                         additional_parameters={"requeue": True})
    return ex


def submit(cells: list, out: Path, options: ClusterOptions, tensorboard: str | None = None) -> list:
    """Submit one job per cell (a job array); the jobs, in the cells' order. The job ids are
    recorded in ``out/cluster-jobs.json`` for ``tradeoff sweep --status``."""
    ex = executor_for(out, options)
    jobs = ex.map_array(CellJob(), [c.spec.to_dict() for c in cells], [str(out)] * len(cells),
                        [c.run_name for c in cells], [tensorboard] * len(cells), [c.records for c in cells])
    record_jobs(out, {c.run_name: job.job_id for c, job in zip(cells, jobs)}, options.executor)
    return jobs


def record_jobs(out: Path, ids: dict, executor: str) -> None:
    path = Path(out) / JOBS_FILE
    with Claim(path):
        known = json.loads(path.read_text()) if path.is_file() else {}
        known.update({name: {"job": job_id, "executor": executor} for name, job_id in ids.items()})
        write_text_atomic(path, json.dumps(known, indent=1) + "\n")


def recorded_jobs(out: Path) -> dict:
    path = Path(out) / JOBS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def job_state(record: dict, out: Path) -> str:
    """A recorded job's state as the cluster knows it (SLURM's states; local: RUNNING/FINISHED)."""
    job_class = submitit.SlurmJob if record["executor"] == "slurm" else submitit.LocalJob
    try:
        return job_class(folder=jobs_folder(out), job_id=record["job"]).state
    except Exception:  # noqa: BLE001  an unreachable scheduler or a job it has forgotten
        return "UNKNOWN"


def answer_of(job) -> dict:
    """The cell's answer, or an error answer when the job itself failed."""
    try:
        return job.result()
    except Exception as e:  # noqa: BLE001  the job died (killed, out of memory, no result)
        last_line = (str(e).strip().splitlines() or [""])[-1]
        return {"error": f"job {job.job_id} failed ({e.__class__.__name__}: {last_line})"}
