"""benchmarks/cell_cost.py probes a cell with its own spec cut short and scales the probe's stage
times back to the cell's steps and test images."""

from types import SimpleNamespace

import pytest

from benchmark_script import load
from tradeoff.config.build import load_spec
from tradeoff.records.record import RunRecord

def load_bench():
    return load("cell_cost")


def test_the_estimate_is_the_probes_stage_times_scaled_by_steps_and_test_images(monkeypatch):
    """The scaling by hand, on a probe whose record is given: 2 s for 4 probe steps of a 1,000-step
    cell is 500 s; 1 s of evaluation and 0.5 s of masking checks on 100 probe images of a
    400-image cell is 6 s; the probe's 10 s of wall time less its 3.5 timed seconds stays as is."""
    bench = load_bench()
    spec = load_spec(None, {"train": {"steps": 1000}})
    probed = {}

    def fake_run(cut, show_progress):
        probed["spec"] = cut
        return SimpleNamespace(record=RunRecord.from_dict({
            "train_steps": 4, "train_seconds": 2.0, "eval_seconds": 1.0, "masking_seconds": 0.5, "train_images": 400}))

    clock = iter([0.0, 10.0])
    monkeypatch.setattr(bench, "run_experiment", fake_run)
    monkeypatch.setattr(bench, "cell_test_images", lambda spec: 400)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    e = bench.probe(SimpleNamespace(label="c", spec=spec), probe_steps=4, probe_test=100, data_root=None)
    assert probed["spec"].train.steps == 4 and probed["spec"].data.test_subset == 100
    assert (e.steps, e.test_images) == (1000, 400)
    assert e.train_seconds == pytest.approx(500.0) and e.after_seconds == pytest.approx(6.0)
    assert e.fixed_seconds == pytest.approx(6.5) and e.total == pytest.approx(512.5)


@pytest.mark.slow  # two probes of a smoke cell: a few seconds
def test_a_smoke_cell_is_probed_end_to_end(mnist_root, one_thread, tmp_path, capsys):
    """The sticker standard cell of beyond-spatial at the smoke preset on real MNIST: its row gives
    the cell's own step count (the preset's ``train.steps``), its test images, and positive times
    that add up to the total."""
    bench = load_bench()
    out = tmp_path / "cost.md"
    bench.main(["beyond-spatial", "--preset", "smoke", "--datasets", "mnist", "--cells", "sticker-standard",
                "--data-root", mnist_root, "--probe-steps", "2", "--probe-test", "10", "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| beyond-spatial") or "sticker-standard" in line]
    assert len(rows) == 1, out.read_text()
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    steps, per_step, train_min, test_images, eval_min, fixed_min, total_min = cells[1:]
    from tradeoff.sweeps import grids
    cell = next(c for c in grids.expand(grids.load_table("beyond-spatial"), "smoke", 1, ["mnist"]).cells
                if c.spec is not None and "sticker-standard" in c.label)
    assert int(steps) == (cell.spec.train.steps or int(steps)) and int(test_images) == cell.spec.data.test_subset
    assert float(per_step) > 0 and float(total_min) >= float(train_min) >= 0
    assert abs(float(train_min) + float(eval_min) + float(fixed_min) - float(total_min)) <= 0.15
