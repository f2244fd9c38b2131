"""Run the grid of a table (or several): skip cells already done, resume after a kill, run cells in
parallel processes, report progress over the whole grid.

A cell is done when a finished run folder with its spec digest exists in the output folder; a
cell whose folder is unfinished (killed, preempted, failed after training: see
:class:`tradeoff.records.folders.RunFolder`) continues from its newest snapshot. Identical specs in several tables (e.g.
Table 1(a)'s standard cell and Table 2(d)'s "Fixed" cell) are run once and shared. Each swept
table gets a manifest ``sweep-<table>-<preset>.json`` that :mod:`tradeoff.report` reads.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

from tradeoff.core.errors import TradeoffError
from tradeoff.data import load_data
from tradeoff.pipeline.transfer import TRANSFER_KEY, transfer_check
from tradeoff.records.claims import Claim
from tradeoff.records.folders import (
    check_output_folder,
    finished_runs,
    is_finished,
    is_unfinished,
    run_claimed,
    unfinished_state,
    write_summary,
    writer_alive,
)
from tradeoff.records.manifest import (
    Manifest,
    ManifestCell,
    ManifestMetric,
    manifest_path,
    read_manifest,
    read_manifests,
)
from tradeoff.records.record import ACCURACY, BACKDOOR_SUCCESS, ROBUSTNESS, RunRecord, peek_record, read_record
from tradeoff.sweeps.cell import run_cell
from tradeoff.sweeps.cluster import ACTIVE_STATES, ClusterOptions, answer_of, job_state, recorded_jobs, submit
from tradeoff.sweeps.grids import Grid, GridCell, expand, load_table
from tradeoff.sweeps.synthetic import FOLDER as SYNTHETIC_FOLDER, SyntheticData, check_not_real


@dataclass
class SweepResult:
    grids: list
    ran: list = field(default_factory=list)  # run names finished by this sweep
    cached: list = field(default_factory=list)  # run names found done
    failed: dict = field(default_factory=dict)  # run name or cell label -> message
    notes: list = field(default_factory=list)
    transfer_checked: list = field(default_factory=list)  # adversarial run names given their transfer check
    preempted: list = field(default_factory=list)  # run names stopped on request, resumable
    submitted: list = field(default_factory=list)  # run names submitted as cluster jobs that outlive the sweep


# --------------------------------------------------------------------------- the output folder


class OutputLock:
    """The sweep's claim on its output folder (see :mod:`tradeoff.records.claims`): a second sweep
    into the same folder, on this machine or another node, is refused in one sentence; a killed
    sweep's claim is recovered at once on its host, after the lease elsewhere."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.claim = Claim(self.out / ".sweep", wait=0, what=f"sweep folder {self.out}")

    def __enter__(self):
        check_output_folder(self.out)
        self.claim.acquire()  # ClaimHeld: "sweep folder OUT is being written by process P on HOST since ..."
        return self

    def __exit__(self, *exc):
        self.claim.release()
        return False


def done_digests(out: Path) -> dict[str, str]:
    """spec digest -> run folder name, for every finished run folder in ``out``."""
    index = {}
    for run in finished_runs(out):
        record = peek_record(run)
        if record is not None and record.spec_digest:
            index.setdefault(record.spec_digest, run.name)
    return index


def manifest_cell(c: GridCell, availability: dict, failed: dict) -> ManifestCell:
    """A grid cell as its manifest lists it: why its dataset was skipped, why its run failed."""
    error = failed[c.run_name] if c.digest and c.run_name in failed else c.error
    return ManifestCell(c.dataset, c.paper_dataset, c.setting, c.slug, c.seed, c.twin, c.digest,
                        c.run_name if c.digest else None, error, c.synthetic_cuts is not None,
                        [ManifestMetric(m.paper, list(m.keys), m.percent, m.datasets, m.beyond, m.like)
                         for m in c.metrics],
                        availability.get(c.dataset))


def write_manifest(out: Path, grid: Grid, availability: dict, failed: dict) -> Path:
    """Write ``grid``'s manifest into ``out``, keeping the cells of earlier sweeps into it."""
    t = grid.table
    manifest = Manifest(t.id, t.table, t.title, grid.preset, t.datasets, t.layout_rows, t.compare, t.heatmap,
                        {**grid.skipped, **availability}, [manifest_cell(c, availability, failed) for c in grid.cells])
    path = manifest_path(out, t.id, grid.preset)
    with Claim(path):  # read, merged and written by one process at a time
        manifest.merged_with(read_manifest(path) if path.is_file() else None).write(path)
    return path


# --------------------------------------------------------------------------- data availability


def check_datasets(cells: list[GridCell]) -> dict[str, str]:
    """Try to load each dataset once; dataset -> one-line reason for those that cannot be loaded."""
    first = {}
    for c in cells:
        if c.spec is not None:
            first.setdefault(c.dataset, c.spec)
    missing = {}
    for ds, spec in first.items():
        try:
            load_data(spec.data, spec.seed)
        except TradeoffError as e:
            missing[ds] = " ".join(str(e).split())
    return missing


# --------------------------------------------------------------------------- running cells


def _watch_parent(parent: int) -> None:
    """Exit when the sweep that started this worker is gone (killed), so no orphan keeps running
    a cell that the next sweep will run again."""
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _short_metrics(record: RunRecord) -> str:
    names = ((ACCURACY, "acc"), (ROBUSTNESS, "adv"), (BACKDOOR_SUCCESS, "backdoor"))
    parts = [f"{short} {100 * record.get(k):.1f}" for k, short in names if isinstance(record.get(k), float)]
    return ", ".join(parts)


def sweep(tables: list[str], preset: str, out: str | Path, seeds: Optional[int] = None,
          datasets: Optional[list] = None, overrides: Optional[list] = None, data_root: Optional[str] = None,
          workers: int = 1, echo: Callable[[str], None] = print, only: Optional[list] = None,
          cluster: Optional[ClusterOptions] = None, tensorboard: Optional[str] = None,
          synthetic: bool | SyntheticData = False) -> SweepResult:
    """Run every cell of ``tables`` not yet done in ``out``: in this process, ``workers``
    processes, or as cluster jobs (``cluster``, see :mod:`tradeoff.sweeps.cluster`). ``tensorboard``: a
    folder where each cell streams its learning curve (one TensorBoard run per cell).
    ``synthetic``: on generated data under ``out`` (or the given
    :class:`~tradeoff.sweeps.synthetic.SyntheticData`) with the budget cuts of :mod:`tradeoff.sweeps.synthetic`."""
    cluster = cluster or ClusterOptions()
    cluster.check()
    if workers < 1:
        raise TradeoffError(f"--workers must be at least 1, not {workers}.")
    out = Path(out)
    generated = (synthetic if isinstance(synthetic, SyntheticData)
                 else synthetic_data(out, data_root) if synthetic else None)
    defs = [load_table(t) for t in tables]
    grids = [expand(t, preset, seeds, datasets, overrides, data_root, only, generated) for t in defs]
    result = SweepResult(grids)
    with OutputLock(out):
        if generated is not None:
            echo(f"synthetic data and a stand-in checkpoint in {generated.root} (not results: a rehearsal)")
            generated.write()
        unavailable = plan_grids(out, grids, result, echo)
        queue = cells_to_run(out, grids, unavailable, result)
        total = len(result.cached) + len(queue)
        echo(f"{len(grids)} table(s), preset {preset}: {total} run(s), {len(result.cached)} already done, "
             f"{len(queue)} to run" + (f" on {workers} workers" if workers > 1 and queue else ""))
        try:
            if cluster.executor == "pool":
                _run_all(queue, out, workers, result, total, echo, tensorboard)
            elif queue:
                _run_as_jobs(queue, out, cluster, result, echo, tensorboard)
        finally:
            for g in grids:
                write_manifest(out, g, unavailable, result.failed)
            if finished_runs(out):
                write_summary(out)
        check_transfers(out, grids, data_root, result, echo)
    return result


def plan_grids(out: Path, grids: list[Grid], result: SweepResult, echo) -> dict[str, str]:
    """Say which datasets are skipped or cannot be loaded and which cells are invalid, and write
    each grid's manifest before anything runs; the datasets that cannot be loaded, with why. A
    sweep none of whose datasets can be loaded stops here (it would run nothing and look done)."""
    all_cells = [c for g in grids for c in g.cells]
    skipped = {ds: why for g in grids for ds, why in g.skipped.items()}
    unavailable = check_datasets([c for c in all_cells if c.dataset not in skipped])
    missing = {**skipped, **unavailable}
    if missing and all(c.dataset in missing for c in all_cells):
        raise TradeoffError("No dataset of this sweep can be loaded: "
                            + " ".join(f"{ds}: {why}" for ds, why in missing.items()))
    for ds, why in missing.items():
        note = f"skipping {ds}: {why}"
        result.notes.append(note)
        echo(note)
    for c in all_cells:
        if c.error:
            result.failed[c.label] = c.error
            echo(f"cell {c.label} ({c.setting}): {c.error}")
    for g in grids:
        write_manifest(out, g, unavailable, {})
    return unavailable


def cells_to_run(out: Path, grids: list[Grid], unavailable: dict, result: SweepResult) -> list[GridCell]:
    """The cells not done yet, one per spec digest, seed-major; those done go to ``result.cached``."""
    done = done_digests(out)
    todo: dict[str, GridCell] = {}
    for c in (c for g in grids for c in g.cells):
        if c.spec is None or c.dataset in unavailable:
            continue
        if c.digest in done:
            result.cached.append(done[c.digest])
        else:
            todo.setdefault(c.digest, c)
    return seed_major(list(todo.values()))


def seed_major(cells: list[GridCell]) -> list[GridCell]:
    """Every cell's first seed before any cell's second (table and cell order kept within a seed):
    a sweep stopped part way has one seed of every cell, and each later seed adds intervals."""
    return sorted(cells, key=lambda c: c.seed)


def synthetic_data(out: Path, data_root: Optional[str] = None) -> SyntheticData:
    """The generated data of a synthetic sweep into ``out``."""
    check_not_real(data_root)
    return SyntheticData(Path(out).resolve() / SYNTHETIC_FOLDER)


def twin_pairs(grids: list[Grid]) -> list[tuple[GridCell, GridCell]]:
    """(adversarially trained cell, its standard twin) for every cell that names a twin."""
    pairs = []
    for g in grids:
        by_setting = {(c.dataset, c.setting, c.seed): c for c in g.cells}
        for c in g.cells:
            twin = by_setting.get((c.dataset, c.twin, c.seed)) if c.twin else None
            if twin is not None and c.digest and twin.digest:
                pairs.append((c, twin))
    return pairs


def check_transfers(out: Path, grids: list[Grid], data_root: Optional[str], result: SweepResult, echo) -> None:
    """The gradient-masking transfer check (:mod:`tradeoff.pipeline.transfer`) for every adversarially
    trained cell whose twin is finished too and that has none yet; a check that cannot run is a
    note, never a failed sweep."""
    done = done_digests(out)
    seen = set()
    for cell, twin in twin_pairs(grids):
        run, twin_run = done.get(cell.digest), done.get(twin.digest)
        if run is None or twin_run is None or run in seen:
            continue
        seen.add(run)
        ev = cell.spec.eval
        if not ev.adversarial or not ev.masking_checks:
            continue
        if TRANSFER_KEY in read_record(out / run):
            continue
        try:
            answer = transfer_check(out / run, out / twin_run, data_root)
        except Exception as e:  # noqa: BLE001  a check must not fail a finished sweep
            note = f"transfer check of {cell.label} failed: {e.__class__.__name__}: {e}"
            result.notes.append(note)
            echo(note)
            continue
        result.transfer_checked.append(run)
        flag = f" WARNING: {answer['masking_warnings']}" if answer["masking_warnings"] else ""
        echo(f"transfer check {cell.label} from {twin.slug}: {100 * answer[TRANSFER_KEY]:.1f}% "
             f"(white-box {100 * answer['masking_robustness_same_images']:.1f}%){flag}")


def _run_as_jobs(cells: list[GridCell], out: Path, cluster: ClusterOptions, result: SweepResult, echo,
                 tensorboard: Optional[str] = None) -> None:
    recorded = recorded_jobs(out)
    active = [c for c in cells if c.run_name in recorded and job_state(recorded[c.run_name], out) in ACTIVE_STATES]
    if active:
        echo(f"{len(active)} cell(s) already queued or running as jobs; not submitted again")
        result.submitted += [c.run_name for c in active]
        cells = [c for c in cells if c not in active]
    if not cells:
        return
    jobs = submit(cells, out, cluster, tensorboard)
    echo(f"submitted {len(jobs)} job(s) to {cluster.executor} (first job {jobs[0].job_id}); "
         f"follow them with: tradeoff sweep --status {out}")
    if cluster.executor == "slurm":  # the jobs outlive this command; a later sweep or report reads them
        result.submitted += [c.run_name for c in cells]
        return
    answers = ((cell, answer_of(job)) for cell, job in zip(cells, jobs))
    _record_answers(answers, out, result, len(result.cached) + len(cells), echo)


def _run_all(cells: list[GridCell], out: Path, workers: int, result: SweepResult, total: int, echo,
             tensorboard: Optional[str] = None) -> None:
    if workers == 1 or len(cells) <= 1:
        def in_order():
            for cell in cells:
                yield cell, run_cell(cell.spec.to_dict(), str(out), cell.run_name, tensorboard, cell.records)
                if result.preempted:  # a stop was requested: no new cell starts
                    return

        _record_answers(in_order(), out, result, total, echo)
        return
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(os.getpid(), threads)) as pool:
        pending = {pool.submit(run_cell, c.spec.to_dict(), str(out), c.run_name, tensorboard, c.records): c
                   for c in cells}

        def as_finished():
            while pending:
                finished_now, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished_now:
                    cell = pending.pop(future)
                    try:
                        answer = future.result()
                    except Exception as e:  # noqa: BLE001  a worker died (e.g. out of memory)
                        answer = {"error": f"the worker process failed ({e.__class__.__name__}: {e})"}
                    yield cell, answer
                if result.preempted:  # a stop was requested: let the running cells snapshot, start no new one
                    for future in pending:
                        future.cancel()

        try:
            _record_answers(as_finished(), out, result, total, echo)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _record_answers(answers, out: Path, result: SweepResult, total: int, echo) -> None:
    """Record each (cell, answer) as it comes, with a progress line."""
    start = time.perf_counter()
    count = [len(result.cached)]

    def finished(cell: GridCell, answer: dict) -> None:
        count[0] += 1
        elapsed = time.perf_counter() - start
        ran = count[0] - len(result.cached)
        left = total - count[0]
        eta = f", about {_duration(elapsed / ran * left)} left" if left and ran else ""
        head = f"[{count[0]}/{total}] {cell.label}"
        if "preempted" in answer or "out_of_space" in answer:  # the sweep stops: exit 75, resumable
            result.preempted.append(cell.run_name)
            echo(f"{head}: {answer.get('preempted') or answer['out_of_space']}; the next sweep resumes it")
        elif "busy" in answer:
            result.notes.append(answer["busy"])
            echo(f"{head}: {answer['busy']}; left to that process")
        elif "error" in answer:
            result.failed[cell.run_name] = answer["error"]
            if answer.get("trace"):
                with Claim(out / "sweep-errors.log"), open(out / "sweep-errors.log", "a") as fh:
                    fh.write(f"--- {cell.run_name}\n{answer['trace']}\n")
            echo(f"{head}: FAILED: {answer['error']}")
        else:
            result.ran.append(cell.run_name)
            record = RunRecord.from_dict(answer["metrics"])
            flag = f" COLLAPSED ({record.collapse_reason})" if record.collapse_reason else ""
            echo(f"{head}: {_short_metrics(record)}{flag} ({_duration(answer['seconds'])}; "
                 f"elapsed {_duration(elapsed)}{eta})")

    for cell, answer in answers:
        finished(cell, answer)


def last_log_line(run_dir: Path) -> str:
    try:
        lines = (run_dir / "log.txt").read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def cell_state(out: Path, run_name: str, jobs: dict) -> str:
    """done, running, queued, failed (with the reason or the last log line), resumable or not started."""
    run_dir = out / run_name
    job = jobs.get(run_name)
    scheduler = job_state(job, out) if job else None
    if is_finished(run_dir):
        return "done"
    if is_unfinished(run_dir):
        marker = unfinished_state(run_dir)
        if marker.get("error"):
            return f"failed ({marker['stage']}): {marker['error']}; last log line: {last_log_line(run_dir)}"
        if writer_alive(marker) or scheduler == "RUNNING" or run_claimed(run_dir):
            return f"running ({marker.get('stage')}): {last_log_line(run_dir)}"
        return f"resumable (stopped in {marker.get('stage')}): {last_log_line(run_dir)}"
    if scheduler in ACTIVE_STATES and scheduler != "RUNNING":
        return f"queued (job {job['job']})"
    if scheduler == "RUNNING":
        return f"running (job {job['job']}, starting)"
    if scheduler in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "INTERRUPTED"):
        return f"failed (job {job['job']} {scheduler.lower()})"
    return "not started"


def status(out: Path) -> list[tuple[str, str]]:
    """(cell label, state) for every cell of every sweep manifest in ``out``."""
    out = Path(out)
    jobs = recorded_jobs(out)
    rows = []
    for manifest in read_manifests(out):
        for c in manifest.cells:
            label = f"{manifest.table} {c.dataset} {c.slug} s{c.seed}"
            if c.skipped:
                rows.append((label, f"skipped: {c.skipped}"))
            elif not c.run:
                rows.append((label, f"invalid: {c.error}"))
            else:
                rows.append((label, cell_state(out, c.run, jobs)))
    return rows


def main_echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
