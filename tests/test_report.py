"""The report (tradeoff.report) on synthetic run folders: layout, numbers, formats."""

from __future__ import annotations

import csv
import io
import json
import math
import re

from tradeoff import grids
from tradeoff.cli import main
from tradeoff.report import paper_values
from tradeoff.sweep import write_manifest

# Backdoor success rate and adversarial robustness of each (cell slug, seed) we fabricate.
FAKE = {
    ("size2-standard", 0): (0.10, 0.00), ("size2-standard", 1): (0.20, 0.02),
    ("size2-adv-training", 0): (0.50, 0.80), ("size2-adv-training", 1): (0.70, 0.90),
    ("size1-standard", 0): (0.05, 0.00),
}


def _fake_sweep(out, extra=None):
    grid = grids.expand(grids.load_table("table2b"), "smoke", seeds=2, datasets=["mnist"])
    failed = {}
    for c in grid.cells:
        if (c.slug, c.seed) in FAKE:
            asr, rob = FAKE[(c.slug, c.seed)]
            run = out / c.run_name
            run.mkdir(parents=True)
            (run / "spec.yaml").write_text(c.spec.to_yaml())
            (run / "metrics.json").write_text(json.dumps({
                "dataset": "mnist", "accuracy": 0.9, "adversarial_robustness": rob,
                "backdoor_success_rate": asr, "spec_digest": c.digest, **(extra or {})}))
        elif c.slug == "size1-adv-training" and c.seed == 0:
            failed[c.run_name] = "boom"
    write_manifest(out, grid, {}, failed)
    return grid


def test_report_layout_and_numbers(tmp_path, capsys):
    """Table 2(b) in the paper's layout (rows: defence; columns: dataset, trigger size, metric),
    our mean ± sample std over seeds beside the paper's value, checked against hand computations
    (10% and 20% -> 15.0 ± 7.1; 50% and 70% -> 60.0 ± 14.1); missing, failed and skipped cells are
    marked; CSV, self-contained HTML and a PNG plot are written."""
    out = tmp_path / "sweep"
    _fake_sweep(out)
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in printed] == ["report.md", "report.csv", "report.html",
                                                        "tradeoff-table2b-smoke.png"]

    md = (out / "report.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| Adv. Defense |")]
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    assert headers[:3] == ["Adv. Defense", "MNIST · Trigger Size=2 x 2 · Backdoor Success rate",
                           "MNIST · Trigger Size=1 x 1 · Backdoor Success rate"]
    assert headers[5:] == ["ImageNet · Trigger Size=14 x 14 · Backdoor Success rate",
                           "ImageNet · Trigger Size=7 x 7 · Backdoor Success rate"]
    rows = {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]]
            for r in md.splitlines() if r.startswith("| None") or r.startswith("| Adv. Training")}
    sd2 = math.sqrt(((10 - 15) ** 2 + (20 - 15) ** 2) / 1)
    sd_adv = math.sqrt(((50 - 60) ** 2 + (70 - 60) ** 2) / 1)
    assert rows["None"][0] == f"15.0 ± {sd2:.1f} (15.0)"
    assert rows["Adv. Training"][0] == f"60.0 ± {sd_adv:.1f} (62.5)"
    assert rows["None"][1] == "5.0 (12.2)"  # one of two seeds done: no spread
    assert rows["Adv. Training"][1] == "error (57.0)"
    assert rows["None"][2] == "– (47.1)"  # CIFAR-10 not swept
    assert "| MNIST | Adv. Defense=None; Trigger Size=2 x 2 | Adv. Defense=Adv. Training; Trigger Size=2 x 2 " \
           "| 15.0 → 60.0 | 15.0 → 62.5 | yes |" in md
    assert "boom" in md

    table = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    row = next(r for r in table if r["dataset"] == "MNIST" and r["setting"] == "Adv. Defense=None; Trigger Size=2 x 2")
    assert (row["table"], row["metric"], float(row["paper"])) == ("Table 2 (b)", "Backdoor Success rate", 15.0)
    assert float(row["ours_mean"]) == 15.0 and abs(float(row["ours_std"]) - sd2) < 1e-3 and row["n_seeds"] == "2"
    assert len(table) == 12  # the paper's 12 cells of Table 2(b), nothing else

    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and 'colspan="2"' in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # self-contained
    assert (out / "tradeoff-table2b-smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_names_the_backdoor_defences_decision_rules(tmp_path, capsys):
    """A table whose runs used an oracle decision rule (the paper's spectral removal count knows
    how many images are poisoned) says so in its notes."""
    out = tmp_path / "sweep"
    _fake_sweep(out, {"spectral_variant": "paper (oracle: knows the poison count)",
                      "clustering_rule": "size (textbook)"})
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "- spectral signatures: decision rule paper (oracle: knows the poison count)" in md
    assert "- activation clustering: decision rule size (textbook)" in md


def test_paper_values_split_embedded_numbers():
    """Supplement 5 puts success rates inside its setting labels; they become metrics of their own,
    as written in the raw CSV line."""
    rows = {(r["table"], r["dataset"], r["setting"], r["metric"]): r["value"] for r in paper_values()}
    key = ("Supplement : Table 5 (a)", "CIFAR10", "Backdoor Attack=Dirty-Label Sticker + Std. Training")
    assert rows[key + ("Detection Rate",)] == 81.6
    assert rows[key + ("Deviation",)] == 16.7
    assert rows[key + ("Succ. Rate w/o Defense",)] == 100.0
    assert rows[key + ("Succ. Rate w/ Defense",)] == 98.9
    assert rows[("Table 1(a)", "MNIST", "Adv. Defense=Adv. Training", "Backdoor Success rate")] == 67.2


def test_a_failed_backdoor_defence_is_named_in_the_report(tmp_path, capsys):
    """A run whose activation clustering could not run (clustering_error, no clustering metrics):
    its cell says 'defence failed', the notes carry the sentence, spectral's value is shown."""
    out = tmp_path / "sweep"
    grid = grids.expand(grids.load_table("table3ab"), "smoke", seeds=1, datasets=["mnist"])
    cell = next(c for c in grid.cells if c.slug == "clean-rate5")
    run = out / cell.run_name
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text(cell.spec.to_yaml())
    sentence = "backdoor defence activation-clustering could not run on this model (ValueError: boom)."
    (run / "metrics.json").write_text(json.dumps({
        "dataset": "mnist", "accuracy": 0.9, "backdoor_success_rate": 0.5, "spectral_detection_rate": 0.25,
        "clustering_error": sentence, "spec_digest": cell.digest}))
    write_manifest(out, grid, {}, {})
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "defence failed" in md and sentence in md and "25.0" in md
