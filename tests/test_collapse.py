"""Training collapse: detected by its three signs, flagged in metrics.json, summary.csv, the sweep
line and the report (left out of means, counted in a note); and the eps ramp that prevents it."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from tradeoff.adversarial_defenses import make_objective
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.evaluation.metrics import collapse_reason
from tradeoff.report.layout import COMPARISON_HEADERS
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import write_manifest


@pytest.mark.parametrize("accuracy,loss,flagged", [
    (0.333, 1.20, True),  # seed 1 of the issue: learned a little, far from chance loss, still useless
    (0.103, 2.30, True),  # seed 2: chance accuracy and loss ln 10
    (0.95, math.log(10) + 0.04, True),  # loss within 0.05 of ln(classes)
    (0.95, float("nan"), True),
    (0.95, float("inf"), True),
    (0.50, 0.60, False),  # exactly at the accuracy threshold: not collapsed
    (0.96, 0.45, False),
])
def test_collapse_reason_by_hand(accuracy, loss, flagged):
    """The three signs, against hand-picked values on either side of each threshold."""
    reason = collapse_reason(accuracy, loss, 10)
    assert (reason is not None) == flagged
    if flagged:
        assert "\n" not in reason


def test_a_collapsed_run_is_flagged_everywhere(tmp_path, capsys):
    """A run that cannot learn (one step at a tiny learning rate) is flagged in metrics.json, in
    summary.csv and on stderr in one line (a run that learns is not: test_end_to_end)."""
    common = ["data.dataset=digits", "model.name=small-cnn", "eval.adversarial=false", "trigger.size=2"]
    stuck = load_spec(None, common + ["name=stuck", "train.steps=1", "train.lr=1e-6"])
    assert main(["run", "--quiet", "--out", str(tmp_path)] + [f"--set={s}" for s in common] +
                [str(_write(tmp_path / "stuck.yaml", stuck))]) == 0
    metrics = json.loads((tmp_path / "stuck" / "metrics.json").read_text())
    assert metrics["collapsed"] is True and "chance level" in metrics["collapse_reason"]
    err = capsys.readouterr().err
    assert sum("training collapsed" in line for line in err.splitlines()) == 1
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert rows[0]["collapsed"] == "True"


def _write(path, spec):
    path.write_text(spec.to_yaml())
    return path


def test_report_leaves_collapsed_seeds_out_of_means_and_says_so(tmp_path):
    """Three seeds of one cell, one collapsed: the mean is over the two others (hand computed),
    the cell is marked, a note counts the collapsed seed, and the with/without pair ignores it."""
    out = tmp_path / "sweep"
    grid = grids.expand(grids.load_table("table1a"), "smoke", seeds=3, datasets=["mnist"],
                        only=["standard", "adv-training"])
    asr = {("standard", 0): 0.1, ("standard", 1): 0.2, ("standard", 2): 0.3,
           ("adv-training", 0): 0.8, ("adv-training", 1): 0.0, ("adv-training", 2): 0.6}
    for c in grid.cells:
        run = out / c.run_name
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(c.spec.to_yaml())
        collapsed = (c.slug, c.seed) == ("adv-training", 1)
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "mnist", "accuracy": 0.1 if collapsed else 0.9, "adversarial_robustness": 0.5,
            "backdoor_success_rate": asr[(c.slug, c.seed)], "collapsed": collapsed,
            "collapse_reason": "clean test accuracy 10.0% is below 50%" if collapsed else "",
            "spec_digest": c.digest}))
    write_manifest(out, grid, {}, {})
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Adv. Training |"))
    # (80 + 60) / 2; sample std of {80, 60}; the 2-seed t interval [-57.1, 197.1] cut to [0, 100]
    assert "70.0 ± 14.1 [0.0†, 100.0†] [1 collapsed]" in row  # clipped ends marked
    assert "training collapsed on 1 of 3 seed(s) (seed 1)" in md
    # the pair's paired difference leaves the collapsed seed out too: seeds 0 and 2, +70 and +30
    pair = next(line for line in md.splitlines() if line.startswith("| MNIST | Backdoor Success rate |"))
    cells = [c.strip() for c in pair.strip("|").split("|")]
    assert cells[5] == "+50.0" and cells[COMPARISON_HEADERS.index("seeds")] == "2"
    table = list(csv.DictReader(open(out / "report.csv")))
    cell = next(r for r in table if r["setting"] == "Adv. Defense=Adv. Training"
                and r["metric"] == "Backdoor Success rate" and r["dataset"] == "MNIST")
    assert (cell["n_seeds"], cell["n_collapsed"]) == ("2", "1")


def test_eps_ramp_grows_linearly_to_the_full_budget():
    """With eps_ramp 0.25 of 100 steps, the crafting eps and step are (step + 1) / 25 of the full
    ones until step 24, then the full ones; without a ramp they are always full."""
    spec = resolve(load_spec(None, ["data.dataset=digits", "adversarial_defense.objective=pgd",
                                    "adversarial_defense.eps_ramp=0.25", "adversarial_defense.attack.eps=0.3",
                                    "adversarial_defense.attack.step_size=0.05"]))
    objective = make_objective(spec)
    objective.total_steps = 100
    for step, fraction in ((0, 1 / 25), (11, 12 / 25), (24, 1.0), (60, 1.0)):
        a = objective.ramped(objective.attack_spec(), step)
        assert a.eps == pytest.approx(0.3 * fraction) and a.step_size == pytest.approx(0.05 * fraction)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    adv = objective.inputs(model, x, y, 0)
    assert (adv - x).abs().max() <= 0.3 / 25 + 1e-6  # the first batch's examples lie in the ramped ball
    flat = make_objective(resolve(load_spec(None, ["data.dataset=digits", "adversarial_defense.objective=pgd"])))
    flat.total_steps = 100
    assert flat.ramped(flat.attack_spec(), 0) == flat.attack_spec()


def test_cpu_preset_and_quickstart_ramp_eps_and_the_paper_preset_does_not():
    """The convergence fix is where the issue asks for it: cpu preset and quickstart, not paper."""
    from tradeoff.sweeps.quickstart import quickstart_specs

    for preset, ramp in (("cpu", 0.25), ("paper", 0.0)):
        g = grids.expand(grids.load_table("table1a"), preset, 1, ["mnist"], only=["adv-training"])
        assert g.cells[0].spec.adversarial_defense.eps_ramp == ramp
    assert all(s.adversarial_defense.eps_ramp == 0.25 for s in quickstart_specs())


def test_the_sweep_line_names_a_collapsed_cell(tmp_path):
    """The progress line of a cell whose training collapsed says so, with the reason."""
    from tradeoff.sweeps.sweep import sweep

    table = tmp_path / "one.yaml"
    table.write_text("id: one\ntable: Table 1(a)\ntitle: one cell\ndatasets: [digits]\n"
                     "metrics: {Accuracy: accuracy}\n"
                     "cells:\n  - setting: Adv. Defense=None (Std. Training)\n"
                     "    set: {adversarial_defense: {objective: none}}\n")
    lines = []
    sweep([str(table)], "smoke", tmp_path / "out", overrides=["train.steps=1", "train.lr=1e-6", "trigger.size=2"],
          echo=lines.append)
    (line,) = [m for m in lines if m.startswith("[1/1]")]
    assert "COLLAPSED (" in line
