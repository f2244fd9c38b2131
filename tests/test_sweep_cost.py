"""benchmarks/sweep_cost.py over finished run folders: each run's measured time is the sum of its
timed stages as its metrics.json gives them (here training and evaluation, added by hand), filed
under the cell (any seed) it stands for."""

import json

import pytest

from benchmark_script import load
from tiny_spec import tiny_table
from tradeoff.sweeps.sweep import sweep


def test_measured_seconds_sum_each_runs_stages_under_its_cell(tmp_path):
    cost = load("sweep_cost")
    table = tmp_path / "costed.yaml"
    table.write_text(tiny_table("costed"))
    out = tmp_path / "sweep"
    done = sweep([str(table)], "smoke", out, seeds=2, echo=lambda _: None)
    records = [json.loads((out / run / "metrics.json").read_text()) for run in done.ran]
    by_cell, by_cost = cost.measured_seconds([out])
    (times,) = by_cell.values()  # two seeds of one cell
    assert sorted(times) == pytest.approx(sorted(r["train_seconds"] + r["eval_seconds"] for r in records))
    assert list(by_cost.values()) == [times]
