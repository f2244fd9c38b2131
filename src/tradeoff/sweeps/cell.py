"""One sweep cell in whatever process runs it (the sweep itself, a pool worker, a cluster job):
its answer is plain data, so that it crosses process boundaries."""

from __future__ import annotations

import time
import traceback

from tradeoff.config.build import spec_from_dict
from tradeoff.core.errors import OutOfSpace, TradeoffError
from tradeoff.core.preemption import Preempted
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.records.claims import ClaimHeld


def run_cell(spec_dict: dict, out: str, run_name: str, tensorboard: str | None = None,
             records: dict | None = None) -> dict:
    """Run (or resume) one cell; returns {"metrics": ..., "seconds": ...}, {"error": one line,
    "trace": ...}, {"preempted": message} when a stop request ended it after a snapshot,
    {"busy": message} when another process (another sweep, a cluster job) is running it, or
    {"out_of_space": message} when a write found the disk full (the folder resumes later).
    ``tensorboard``: the folder its learning curve is streamed to (TensorBoard run ``run_name``);
    ``records``: JSON files written into its run folder, by name."""
    start = time.perf_counter()
    try:
        outcome = run_experiment(spec_from_dict(spec_dict), out, show_progress=False, run_name=run_name, resume=True,
                                 tensorboard=tensorboard, records=records)
    except Preempted as e:
        return {"preempted": str(e)}
    except ClaimHeld as e:
        return {"busy": str(e)}
    except OutOfSpace as e:
        return {"out_of_space": str(e)}
    except TradeoffError as e:
        return {"error": str(e), "trace": ""}
    except Exception as e:  # noqa: BLE001  one broken cell must not stop the grid
        return {"error": f"{e.__class__.__name__}: {e}", "trace": traceback.format_exc()}
    return {"metrics": outcome.metrics, "seconds": time.perf_counter() - start}
