"""Learning curves: clean accuracy, adversarial robustness and backdoor success rate of the model
while it trains, measured every ``eval.every_steps`` optimiser steps (and at step 0 and the last
step) on a fixed, seeded subset of ``eval.curve_images`` test images, with the spec's evaluation
attack and the run's backdoor target (an all-to-all run's points use each image's own target, as
its final evaluation does): each point is :func:`tradeoff.evaluation.metrics.evaluate` on that
subset, so the last point is what ``evaluate`` gives the final model there.

A point never changes training: it is measured with torch's random generators forked and seeded
with the run's seed (the same random starts at every point), and its time is kept apart from the
training time. The points so far travel in every snapshot, so a resumed run ends with the curve of
an uninterrupted one. Sinks receive the points as they come: the run folder's ``curve.csv``
(rewritten whole, atomically) and, on request, TensorBoard.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Callable

import torch

from tradeoff.core import distributed
from tradeoff.core.errors import TradeoffError
from tradeoff.evaluation.metrics import evaluate
from tradeoff.poisoning import BackdoorTarget
from tradeoff.records.names import (
    ACCURACY,
    BACKDOOR_ROBUST_ACCURACY,
    BACKDOOR_SUCCESS,
    BACKDOOR_SUCCESS_TRUE_LABEL,
    ROBUSTNESS,
)

CURVE_FILE = "curve.csv"
METRICS = (ACCURACY, ROBUSTNESS, BACKDOOR_SUCCESS, BACKDOOR_SUCCESS_TRUE_LABEL, BACKDOOR_ROBUST_ACCURACY)
COLUMNS = ("step",) + METRICS

Sink = Callable[["LearningCurve", list], None]  # (the curve, its new points)


def curve_subset(test_set, eval_spec, seed: int):
    """The fixed evaluation subset: ``eval_spec.curve_images`` test images drawn with ``seed``."""
    return test_set.subset(eval_spec.curve_images, seed)


def measure(model, subset, trigger, target: BackdoorTarget, eval_spec, device, seed: int, precision: str = "fp32",
            ctx: distributed.DistContext | None = None) -> dict:
    """:func:`evaluate` on ``subset`` with torch's generators forked and seeded with ``seed``:
    the value depends on the model alone, and the caller's random draws are left as they were.
    ``target``: the run's backdoor target (an all-to-all run's points use each image's own)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return evaluate(model, subset, trigger, target, eval_spec, device, precision=precision,
                        show_progress=False, ctx=ctx)


class LearningCurve:
    """The points of one run's curve: ``record`` measures one, ``restore`` takes a snapshot's.
    In a data-parallel run every rank measures its share of the subset together; only rank 0 is
    given sinks."""

    def __init__(self, subset, trigger, target: BackdoorTarget, eval_spec, device, seed: int, precision: str = "fp32",
                 ctx: distributed.DistContext | None = None, sinks: list[Sink] | None = None):
        self.subset, self.trigger, self.target, self.eval_spec = subset, trigger, target, eval_spec
        self.device, self.seed, self.precision, self.ctx = device, seed, precision, ctx
        self.every_steps = eval_spec.every_steps
        self.sinks = list(sinks or [])
        self.points: list[dict] = []
        self.seconds = 0.0  # measuring, over the whole run (resumes included)

    def due(self, step: int) -> bool:
        return step % self.every_steps == 0

    @property
    def last_step(self) -> int | None:
        return self.points[-1]["step"] if self.points else None

    def record(self, model, step: int) -> float:
        """Measure the point at ``step``; the seconds it took."""
        start = time.perf_counter()
        metrics = measure(model, self.subset, self.trigger, self.target, self.eval_spec, self.device, self.seed,
                          self.precision, self.ctx)
        point = {"step": step, **{k: metrics[k] for k in METRICS}}
        self.points.append(point)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self._emit([point])
        return seconds

    def restore(self, points: list, seconds: float) -> None:
        """Continue from a snapshot's points (later points of an interrupted run are dropped)."""
        self.points, self.seconds = [dict(p) for p in points], seconds
        self._emit(self.points)

    def _emit(self, new: list) -> None:
        for sink in self.sinks:
            sink(self, new)

    def csv_text(self) -> str:
        return curve_csv(self.points)

    def close(self) -> None:
        """Close the sinks that hold a file open (TensorBoard's)."""
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()


def curve_csv(points: list) -> str:
    """The points as CSV, values exact (repr), a missing value empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in points:
        writer.writerow(["" if p.get(k) is None else repr(p[k]) for k in COLUMNS])
    return buf.getvalue()


def read_curve(path: Path) -> list[dict]:
    """The points of a ``curve.csv``: step as int, the metrics as floats (None where empty)."""
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "step" else float(v) if v else None) for k, v in row.items() if k in COLUMNS}
                for row in csv.DictReader(fh)]


# --------------------------------------------------------------------------- TensorBoard


def summary_writer_class():
    """torch's ``SummaryWriter``, imported only when asked; one sentence without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package
    except ImportError:
        raise TradeoffError("--tensorboard needs the tensorboard package: pip install 'tradeoff[tensorboard]' "
                            "(or pip install tensorboard).") from None
    return SummaryWriter


class TensorBoardSink:
    """Streams the curve to one TensorBoard run (``log_dir``): scalars ``curve/<metric>`` by
    step. Whatever an earlier or interrupted run wrote there is purged (a resumed run replays its
    snapshot's points)."""

    def __init__(self, log_dir: Path):
        self.writer = summary_writer_class()(log_dir=str(log_dir), purge_step=0)

    def __call__(self, curve: LearningCurve, new: list) -> None:
        for p in new:
            for k in METRICS:
                if p.get(k) is not None:
                    self.writer.add_scalar(f"curve/{k}", p[k], p["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
