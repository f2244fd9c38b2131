"""Learning curves (eval.every_steps): the points land in curve.csv at the right steps, the last
is what metrics.evaluate gives the final model on the same seeded subset, measuring them changes
neither the trained model nor its metrics, a killed and resumed run ends with the uninterrupted
run's curve, the report draws one figure per with/without pair, and --tensorboard streams the
points (or says in one sentence that the package is missing)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from slow_steps import slow_steps_source
from test_report import _fake_sweep
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.core.spec import Spec
from tradeoff.evaluation.metrics import TIMING_KEYS, evaluate
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.report import build_reports
from tradeoff.report.layout import curve_band
from tradeoff.training import snapshots

# 6 steps an epoch, 4 epochs: 24 steps; a point every 10 steps, at step 0 and at the last step.
TINY = {"name": "t", "data": {"dataset": "digits", "train_subset": 300, "test_subset": 100},
        "train": {"epochs": 4, "batch_size": 50},
        "adversarial_defense": {"objective": "pgd", "eps_ramp": 0.25, "attack": {"steps": 2}},
        "eval": {"attack": {"steps": 3}, "every_steps": 10, "curve_images": 60}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def without_timings(folder) -> dict:
    record = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in record.items() if k not in TIMING_KEYS and k != "spec_digest"}


def with_eval(**changes) -> dict:
    return {**TINY, "eval": {**TINY["eval"], **changes}}


def test_the_curve_has_its_steps_and_ends_at_evaluate_on_its_subset_without_changing_training(tmp_path):
    run = run_experiment(load_spec(None, TINY), tmp_path / "curve", show_progress=False)
    points = rows(tmp_path / "curve" / "t" / "curve.csv")
    assert [int(p["step"]) for p in points] == [0, 10, 20, 24]

    # the reference: metrics.evaluate on the same seeded 60-image subset of the test set, with the
    # same random start (torch seeded with the run's seed), of the final model
    subset = run.data.test.subset(60, run.spec.seed)
    assert len(subset) == 60
    torch.manual_seed(run.spec.seed)
    final = evaluate(run.model, subset, run.data.trigger, run.data.backdoor_target, run.spec.eval, run.device,
                     show_progress=False)
    for key in ("accuracy", "adversarial_robustness", "backdoor_success_rate", "backdoor_success_rate_true_label",
                "backdoor_robust_accuracy"):
        assert float(points[-1][key]) == final[key]
    assert len({points[0]["accuracy"], points[-1]["accuracy"]}) == 2  # the model learned between them

    # the same spec without a curve: no curve.csv, no curve_seconds, and the same model and metrics
    # (a point draws from forked generators and its time is not training time)
    plain = run_experiment(load_spec(None, with_eval(every_steps=0)), tmp_path / "plain", show_progress=False)
    assert not (tmp_path / "plain" / "t" / "curve.csv").exists()
    assert "curve_seconds" not in plain.metrics and run.metrics["curve_seconds"] > 0
    assert without_timings(tmp_path / "curve" / "t") == without_timings(tmp_path / "plain" / "t")
    a, b = load_file(str(tmp_path / "curve" / "t" / "model.safetensors")), load_file(str(tmp_path / "plain" / "t" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_curve_fields_leave_earlier_digests_alone_until_set():
    """Digests computed by tradeoff 0.2.0 before the fields existed (on its own code):
    Spec() and configs/mnist-cpu/pgd.yaml; set, the fields count."""
    assert Spec().digest() == "65f4e58d7962"
    assert load_spec("configs/mnist-cpu/pgd.yaml").digest() == "796519b8c1a2"
    assert load_spec("configs/mnist-cpu/pgd.yaml", ["eval.every_steps=100"]).digest() != "796519b8c1a2"
    assert load_spec("configs/mnist-cpu/pgd.yaml", ["eval.curve_images=100"]).digest() != "796519b8c1a2"


# ------------------------------------------------------------------------------- kill and resume


def tradeoff(*args, preamble: str = ""):
    code = f"import sys\n{preamble}\nfrom tradeoff.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*args) -> None:
    proc = tradeoff(*args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def scalars(board, tag: str) -> list[tuple]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(board))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_run_killed_after_a_point_past_its_snapshot_resumes_to_the_same_curve(tmp_path):
    """Snapshots every 4 steps, points every 5: killed right after the point at step 15 (whose
    newest snapshot is step 12), the resumed run drops that point, measures it again and ends
    with the uninterrupted run's curve.csv, byte for byte, and the same TensorBoard scalars."""
    pytest.importorskip("tensorboard")
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({**with_eval(every_steps=5), "snapshots": {"every_steps": 4, "keep": 3}}))
    finish("run", str(spec), "--out", str(tmp_path / "reference"), "--quiet")
    done = tmp_path / "reference" / "t"

    out, board = tmp_path / "out", tmp_path / "board"
    proc = tradeoff("run", str(spec), "--out", str(out), "--quiet", "--tensorboard", str(board),
                    preamble=slow_steps_source(0.2))
    curve = out / "t" / "curve.csv"
    deadline = time.monotonic() + 200
    while not (curve.exists() and "\n15," in curve.read_text()):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert [p.name for p in snapshots.snapshot_files(out / "t")][0] == snapshots.snapshot_name(12)
    assert [int(p["step"]) for p in rows(curve)] == [0, 5, 10, 15]

    finish("run", str(spec), "--out", str(out), "--quiet", "--resume", "--tensorboard", str(board))
    assert curve.read_text() == (done / "curve.csv").read_text()
    assert [int(p["step"]) for p in rows(curve)] == [0, 5, 10, 15, 20, 24]
    assert without_timings(out / "t") == without_timings(done)
    pytest.importorskip("tensorboard")
    streamed = scalars(board / "t", "curve/backdoor_success_rate")
    assert [s for s, _ in streamed] == [0, 5, 10, 15, 20, 24]
    assert [v for _, v in streamed] == pytest.approx([float(p["backdoor_success_rate"]) for p in rows(curve)], abs=1e-6)


# ------------------------------------------------------------------------------- TensorBoard


def _args(tmp_path, *extra):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps(TINY))
    return ["run", str(spec), "--out", str(tmp_path / "out"), "--quiet", *extra]


def test_tensorboard_gets_one_run_per_cell_with_the_curve(tmp_path):
    pytest.importorskip("tensorboard")
    assert main(_args(tmp_path, "--tensorboard", str(tmp_path / "board"))) == 0
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "board" / "t").iterdir())
    points = rows(tmp_path / "out" / "t" / "curve.csv")
    for key in ("accuracy", "adversarial_robustness", "backdoor_success_rate"):
        streamed = scalars(tmp_path / "board" / "t", f"curve/{key}")
        assert [s for s, _ in streamed] == [int(p["step"]) for p in points]
        assert [v for _, v in streamed] == pytest.approx([float(p[key]) for p in points], abs=1e-6)


def test_tensorboard_missing_is_one_sentence_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now fails
    assert main(_args(tmp_path, "--tensorboard", str(tmp_path / "board"))) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tradeoff: error: --tensorboard needs the tensorboard package: pip install "
                   "'tradeoff[tensorboard]' (or pip install tensorboard).")
    assert not (tmp_path / "out" / "t").exists() and not (tmp_path / "board").exists()


# ------------------------------------------------------------------------------- the report

# clean accuracy of each fabricated (cell slug, seed) at steps 0, 10, 20; seed 1 has a step 30 too
CURVES = {("size2-standard", 0): [0.1, 0.5, 0.9], ("size2-standard", 1): [0.2, 0.7, 0.9, 0.95],
          ("size2-adv-training", 0): [0.1, 0.4, 0.8], ("size2-adv-training", 1): [0.1, 0.4, 0.6, 0.7]}


def test_the_report_draws_a_curve_figure_per_pair(tmp_path, capsys):
    """Table 2(b)'s standard / adversarial training pair with two seeds each: one figure, the
    mean and std at the steps both seeds measured (hand computed: 10% and 20% -> 15 ± 7.07)."""
    out = tmp_path / "sweep"
    grid = _fake_sweep(out)
    for c in grid.cells:
        if (c.slug, c.seed) in CURVES:
            lines = ["step,accuracy,adversarial_robustness,backdoor_success_rate"]
            lines += [f"{10 * i},{a},0.0,0.5" for i, a in enumerate(CURVES[(c.slug, c.seed)])]
            (out / c.run_name / "curve.csv").write_text("\n".join(lines) + "\n")
    assert main(["report", str(out)]) == 0
    printed = [p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split()]
    assert "curves-table2b-smoke-1.png" in printed and "curves-table2b-smoke-2.png" not in printed
    assert (out / "curves-table2b-smoke-1.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "![learning curves](curves-table2b-smoke-1.png)" in md
    assert md.count("Learning curves, MNIST: ") == 1
    assert md.count('alt="learning curves"') == 0 and (out / "report.html").read_text().count('alt="learning curves"') == 1

    (table,) = build_reports(out)
    (pair,) = [p for p in table.pairs if p.curves]
    assert set(pair.curves) == {"standard", "adversarial"} and len(pair.curves["standard"]) == 2
    steps, means, stds = curve_band(pair.curves["standard"], "accuracy")
    assert steps == [0, 10, 20]
    assert means == pytest.approx([15.0, 60.0, 90.0])
    assert stds == pytest.approx([math.sqrt(50), math.sqrt(200), 0.0])
