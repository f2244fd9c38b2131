"""Paper tables as grids (tradeoff.sweeps.grids) and the resumable sweep (tradeoff.sweeps.sweep)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

import tradeoff.pipeline.experiment
from slow_steps import slow_steps_source
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.records.folders import finished_runs
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import seed_major, sweep

TINY_TABLE = """
id: tiny
table: Table 1(a)
title: a tiny grid for tests
datasets: [digits]
layout: {rows: [Adv. Defense]}
metrics: {Accuracy: accuracy, Backdoor Success rate: backdoor_success_rate}
base:
  trigger: {size: 2}
  poison: {method: clean-label, fraction_of_target_class: 0.5}
  data: {train_subset: 200, test_subset: 100}
cells:
  - setting: Adv. Defense=None (Std. Training)
    set: {adversarial_defense: {objective: none}}
  - setting: Adv. Defense=Adv. Training
    twin: Adv. Defense=None (Std. Training)
    set: {adversarial_defense: {objective: pgd}}
  - setting: Adv. Defense=Denoising Layer
    set: {adversarial_defense: {denoise: true}}
  - setting: Adv. Defense=Bogus
    set: {adversarial_defense: {objective: no-such-defence}}
"""
TIMING = set(TIMING_KEYS)


def _runs(out: Path) -> dict:
    """run folder name -> metrics without the timing fields, for finished runs."""
    return {run.name: {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in TIMING}
            for run in finished_runs(out)}


def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, one_thread):
    """A smoke sweep killed with SIGKILL after its first cell finished, then run again, ends with
    exactly the run folders and metrics of an uninterrupted sweep; finished cells are not rerun, the
    killed cell's unfinished folder is resumed, an invalid cell is a per-cell error and a
    dataset that is not present is a one-line note, neither stopping the grid."""
    table = tmp_path / "tiny.yaml"
    table.write_text(TINY_TABLE)
    empty = tmp_path / "no-data"
    empty.mkdir()
    args = dict(datasets=["digits", "imagenet"], data_root=str(empty), echo=lambda m: None)

    ref = sweep([str(table)], "smoke", tmp_path / "ref", **args)
    reference = _runs(tmp_path / "ref")
    assert len(reference) == 3 and len(ref.ran) == 3
    assert any("no-such-defence" in msg for msg in ref.failed.values())
    assert any(n.startswith("skipping imagenet:") and "\n" not in n for n in ref.notes)
    # once both twins are finished the adversarially trained one gets its transfer check
    (checked,) = ref.transfer_checked
    assert "adv-training" in checked and 0 <= reference[checked]["masking_transfer_robustness"] <= 1

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tradeoff", "sweep", str(table), "--preset", "smoke",
                             "--out", str(out), "--datasets", "digits", "imagenet", "--data-root", str(empty)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not _runs(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _runs(out)
    assert 1 <= len(before) < 3, "the sweep should have been killed part-way"
    stamps = {name: (out / name / "metrics.json").stat().st_mtime_ns for name in before}

    again = sweep([str(table)], "smoke", out, **args)
    assert sorted(again.cached) == sorted(before)
    assert len(again.ran) == 3 - len(before)
    assert _runs(out) == reference
    assert {name: (out / name / "metrics.json").stat().st_mtime_ns for name in before} == stamps
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.is_dir()]
    assert (out / "summary.csv").read_text().count("\n") == 4  # header + one row per run

    third = sweep([str(table)], "smoke", out, **args)
    assert third.ran == [] and len(third.cached) == 3
    assert third.transfer_checked == []  # done once, not again


def test_sigterm_stops_a_sweep_after_a_snapshot_and_the_next_sweep_resumes(tmp_path, one_thread):
    """SIGTERM to a sweep (as SLURM sends it): the running cell writes a snapshot and stops, no
    other cell starts, the sweep exits 75; the next sweep resumes that cell and ends with the
    metrics of an uninterrupted sweep."""
    table = tmp_path / "tiny.yaml"
    table.write_text(TINY_TABLE)
    args = dict(datasets=["digits"], echo=lambda m: None)
    sweep([str(table)], "smoke", tmp_path / "ref", **args)
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(slow_steps_source(0.2))  # steps of 200 ms in the sweep's process
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tradeoff", "sweep", str(table), "--preset", "smoke", "--out",
                             str(out), "--datasets", "digits", "--set", "snapshots.every_steps=1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("*/snapshots/step-*")):
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before its first snapshot"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "stopped on request" in err and "Traceback" not in err
    assert finished_runs(out) == []  # the first cell stopped and no other started

    again = sweep([str(table)], "smoke", out, **args, overrides=["snapshots.every_steps=1"])
    assert len(again.ran) == 3 and not again.preempted
    assert _runs(out) == _runs(tmp_path / "ref")


def test_a_cell_that_failed_after_training_resumes_from_its_snapshot(tmp_path, one_thread, monkeypatch):
    """Evaluation fails in one cell: the sweep reports it, the cell's folder keeps the trained model
    and is marked unfinished; the next sweep resumes that cell from its end-of-training snapshot
    (no training step again) and ends with the uninterrupted sweep's metrics."""
    table = tmp_path / "tiny.yaml"
    table.write_text(TINY_TABLE)
    args = dict(datasets=["digits"], echo=lambda m: None, only=["adv-training"])
    sweep([str(table)], "smoke", tmp_path / "ref", **args)
    evaluate = tradeoff.pipeline.experiment.evaluate

    def fails(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("tradeoff.pipeline.experiment.evaluate", fails)
    first = sweep([str(table)], "smoke", tmp_path / "out", **args)
    assert len(first.failed) == 1 and "out of memory" in next(iter(first.failed.values()))
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    marker = json.loads((folder / "unfinished.json").read_text())
    assert (marker["stage"], marker["error"]) == ("evaluation", "RuntimeError: out of memory")
    assert (folder / "model.safetensors").is_file() and _runs(tmp_path / "out") == {}

    monkeypatch.setattr("tradeoff.pipeline.experiment.evaluate", evaluate)
    again = sweep([str(table)], "smoke", tmp_path / "out", **args)
    assert again.ran == [folder.name] and not again.failed
    assert "resumed from the snapshot" in (folder / "log.txt").read_text()
    assert _runs(tmp_path / "out") == _runs(tmp_path / "ref")


def test_layers_and_shared_cells():
    """A cell's spec is the documented merge of layers (preset < table base < cell < --set), checked
    against the same spec written out by hand; and identical specs of different tables (Table 1(a)'s
    standard cell, Table 2(d)'s fixed-position cell) get one digest, so they run once."""
    g = grids.expand(grids.load_table("table1a"), "cpu", datasets=["mnist"], seeds=2,
                     overrides=["train.epochs=3"], only=["adv-training"])
    assert [(c.slug, c.seed) for c in g.cells] == [("adv-training", 0), ("adv-training", 1)]
    by_hand = load_spec(None, {
        "seed": 1, "data": {"dataset": "mnist", "train_subset": 5000, "test_subset": None},
        "trigger": {"kind": "sticker", "pattern": "square", "size": 3, "corner": "bottom-right", "offset": 0},
        "poison": {"method": "clean-label", "target": 7, "fraction_of_target_class": 0.5},
        "model": {"name": "small-cnn"}, "adversarial_defense": {"objective": "pgd", "eps_ramp": 0.25},
        "train": {"epochs": 3, "batch_size": 100, "optimizer": "adam", "lr": 0.001},
        "eval": {"attack": {"steps": 20, "step_size": 0.3, "step_schedule": "cosine", "loss": "margin",
                            "target_classes": 9, "first_success": True}}})
    assert g.cells[1].digest == resolve(by_hand).digest()
    assert g.cells[1].run_name == f"table1a-mnist-adv-training-s1-{g.cells[1].digest}"

    t1 = {c.setting: c.digest for c in grids.expand(grids.load_table("1a"), "cpu", datasets=["mnist"]).cells}
    t2 = {c.setting: c.digest for c in grids.expand(grids.load_table("Table 2 (d)"), "cpu", datasets=["mnist"]).cells}
    assert t1["Adv. Defense=None (Std. Training)"] == t2["Adv. Defense=None; Trigger Pos.=Fixed"]
    assert t1["Adv. Defense=Adv. Training"] == t2["Adv. Defense=Adv. Training; Trigger Pos.=Fixed"]
    assert len(set(t1.values())) == len(t1)


def test_cells_run_seed_by_seed():
    """The run queue holds every cell's seed 0 before any seed 1 (a stopped sweep has one seed of
    everything), with table and cell order kept within a seed: checked against the grids' own order."""
    cells = [c for t in ("table1a", "table3ab") for c in
             grids.expand(grids.load_table(t), "cpu", datasets=["mnist"], seeds=3).cells]
    queue = seed_major(cells)
    assert [c.seed for c in queue] == sorted(c.seed for c in cells)
    for seed in range(3):
        assert [c.label for c in queue if c.seed == seed] == [c.label for c in cells if c.seed == seed]
    assert queue[0].table == "table1a" and queue[-1].table == "table3ab"


def test_every_paper_cell_has_a_config_cell():
    """Cross-check of the shipped table configs against the paper's numbers (paper_tables.csv): every
    (table, dataset, setting, metric) of the paper is produced by exactly one config cell, and every
    config cell's setting and metrics exist in the paper (apart from metrics marked beyond the paper
    and datasets the paper preset skips for the table)."""
    from tradeoff.report import paper_values

    text = (resources.files("tradeoff") / "resources" / "paper_tables.csv").read_text(encoding="utf-8")
    shared = Path("/work/shared/paper_tables.csv")
    if shared.exists():
        assert text == shared.read_text(encoding="utf-8")
    paper = {(r["table"], r["dataset"], r["setting"], r["metric"]) for r in paper_values()}
    names = grids.load_presets()["datasets"]
    produced = []
    for tid in grids.paper_table_ids():
        t = grids.load_table(tid)
        at_paper_preset = grids.expand(t, "paper", seeds=1, overrides=["model.from_scratch=true"])
        for ds in t.datasets:
            if ds in at_paper_preset.skipped:  # a dataset the paper lacks, run at the cpu preset only
                continue
            for c in t.cells:
                if c.applies_to(ds):
                    for m in c.metrics or t.metrics:
                        if not m.beyond:  # metrics of ours beside the paper's (e.g. textbook decision rules)
                            produced.append((t.table, names[ds]["paper_name"], c.setting, m.paper))
    assert len(produced) == len(set(produced))
    assert set(produced) == paper


def test_cli_errors_are_one_line(tmp_path, capsys):
    """Unknown tables and presets, and a sweep none of whose datasets can be loaded (which would
    otherwise run nothing and exit 0, as if done), are user errors: exit code 2 and one sentence,
    no traceback, nothing written."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "sweep"
    assert main(["sweep", "table9z", "--out", str(out)]) == 2
    assert main(["sweep", "table1a", "--preset", "huge", "--out", str(out)]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert main(["sweep", "table2d", "--datasets", "mnist", "--data-root", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("tradeoff: error:") for line in err)
    assert "table1a" in err[0] and "smoke" in err[1] and "manifest" in err[2]
    assert "No dataset of this sweep can be loaded: mnist: MNIST not found" in err[3]
    assert not any(out.rglob("*.json"))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TRADEOFF_DATA"), reason="needs MNIST under $TRADEOFF_DATA")
def test_smoke_sweep_on_real_mnist(tmp_path, one_thread):
    """End to end on real MNIST: the two fixed-position cells of Table 2(d) under the smoke preset,
    then the report, which places both cells beside the paper's values (17.2 and 67.2). One epoch
    on 300 images is not meant to converge: either cell may be marked collapsed instead of a value."""
    from tradeoff.report import write_report

    out = tmp_path / "sweep"
    result = sweep(["table2d"], "smoke", out, datasets=["mnist"], only=["fixed-*"], echo=lambda m: None)
    assert len(result.ran) == 2 and not result.failed
    write_report(out)
    md = (out / "report.md").read_text()
    ours = r"(\d+\.\d|collapsed)"
    assert re.search(rf"\| None \| {ours} \(17\.2\) \|", md)
    assert re.search(rf"\| Adv. Training \| {ours} \(67\.2\) \|", md)


def test_manifest_keeps_cells_of_earlier_partial_sweeps(tmp_path):
    """Sweeping some cells, then others, into one folder lists all of them in the table's manifest
    (what the report reads); re-planning a cell replaces its old entry instead of duplicating it."""
    from tradeoff.sweeps.sweep import read_manifests, write_manifest

    table = grids.load_table("table2d")
    for only in (["fixed-*"], ["random-*"], ["fixed-standard"]):
        write_manifest(tmp_path, grids.expand(table, "smoke", datasets=["mnist"], only=only), {}, {})
    (manifest,) = read_manifests(tmp_path)
    assert sorted(c.slug for c in manifest.cells) == sorted(
        ["fixed-standard", "fixed-adv-training", "random-standard", "random-adv-training"])


def test_defense_tables_run_mnist_at_the_cpu_preset_only():
    """Tables 3(a)(b), 3(c), S5(a)(b) list MNIST at the cpu preset (with the textbook rules beside
    the paper's) and skip it at the paper preset, saying why; a metric restricted to MNIST is not a
    column of the other datasets' cells."""
    for tid in ("table3ab", "table3c", "supp5a", "supp5b"):
        table = grids.load_table(tid)
        cpu = grids.expand(table, "cpu", datasets=["mnist"])
        assert cpu.cells and all(c.spec is not None and c.seed in (0, 1, 2) for c in cpu.cells)
        paper = grids.expand(table, "paper", datasets=["mnist"])
        assert not paper.cells and "no MNIST cells" in paper.skipped["mnist"]
    cell = grids.expand(grids.load_table("table3ab"), "cpu", datasets=["mnist"]).cells[0]
    prefixes = [e.prefix or e.name for e in cell.spec.backdoor_defenses]
    assert prefixes == ["spectral", "spectral_textbook", "activation-clustering", "clustering_size"]
    s5 = grids.load_table("supp5a")
    restricted = [m for m in s5.metrics if m.datasets == ["mnist"]]
    assert [m.keys for m in restricted] == [["spectral_textbook_detection_rate"],
                                            ["spectral_textbook_backdoor_success_rate_after"]]


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_mnist_cells_follow_the_original_mnist_scripts(preset):
    """MNIST cells resolve to the facts of the original's MNIST scripts: Table 2(a)'s watermark is the
    picture added at 0.3 over the whole image with adversarial training and robustness at eps 0.2,
    step 0.04, 10 steps (mnist_exp_global_trigger_*.py, the 0.3 run that mnist_eval_global_trigger
    .ipynb reports); Supplement 1's eps-0.15 row steps 0.05; Supplement 2's FGSM targets a random
    wrong label in training and in the test. CIFAR-10's watermark stays 64/255 inside a 2 px border."""
    def cells(table, ds, **kw):
        return {c.slug: c.spec for c in grids.expand(grids.load_table(table), preset, datasets=[ds], seeds=1,
                                                     **kw).cells}

    t2a = cells("table2a", "mnist")
    assert set(t2a) == {"watermark-standard", "watermark-adv-training"}
    for spec in t2a.values():
        t = spec.trigger
        assert (t.kind, t.options.pattern, t.options.amplitude, t.options.border, t.options.pattern_file) == (
            "watermark", "picture", 0.3, 0, None)
        assert (spec.eval.attack.eps, spec.eval.attack.step_size, spec.eval.attack.steps) == (0.2, 0.04, 10)
    a = t2a["watermark-adv-training"].adversarial_defense
    assert (a.objective, a.attack.eps, a.attack.step_size, a.attack.steps) == ("pgd", 0.2, 0.04, 10)
    assert t2a["watermark-standard"].adversarial_defense.objective == "none"

    weaker = cells("table2a", "mnist", overrides=["trigger.amplitude=0.1"])["watermark-adv-training"].trigger
    assert (weaker.options.pattern, weaker.options.amplitude) == ("picture", 0.1)

    cifar = cells("table2a", "cifar10")["watermark-adv-training"]
    assert (cifar.trigger.options.pattern, cifar.trigger.options.border) == (None, 2)
    assert cifar.trigger.options.amplitude == pytest.approx(64 / 255)
    assert cifar.adversarial_defense.attack.eps == pytest.approx(8 / 255)

    small = cells("supp1", "mnist")["eps-small"]
    for attack in (small.adversarial_defense.attack, small.eval.attack):
        assert (attack.eps, attack.step_size, attack.steps) == (0.15, 0.05, 10)

    for spec in cells("supp2", "mnist").values():
        assert spec.adversarial_defense.attack.targeted and spec.eval.attack.targeted
        assert (spec.eval.attack.eps, spec.eval.attack.step_size, spec.eval.attack.steps) == (0.3, 0.3, 1)
    assert cells("supp2", "mnist")["fgsm-training"].adversarial_defense.objective == "fgsm"
    assert not cells("supp2", "cifar10")["fgsm-training"].adversarial_defense.attack.targeted
