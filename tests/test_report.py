"""The report (tradeoff.report) on synthetic run folders: layout, numbers, formats."""

from __future__ import annotations

import csv
import io
import json
import math
import re

from tradeoff.cli import main
from tradeoff.report import paper_values
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import write_manifest

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
                "backdoor_success_rate": asr, "spec_digest": c.digest, "train_seconds": 100.0 + 20 * c.seed,
                "eval_seconds": 15.0, "masking_seconds": 5.0, "train_steps": 60, "train_images_per_second": 30.0, **(extra or {})}))
        elif c.slug == "size1-adv-training" and c.seed == 0:
            failed[c.run_name] = "boom"
    write_manifest(out, grid, {}, failed)
    return grid


def test_report_layout_and_numbers(tmp_path, capsys):
    """Table 2(b) in the paper's layout (rows: defence; columns: dataset, trigger size, metric),
    our mean ± sample std [95% t interval] over seeds beside the paper's value, checked against hand
    computations (10% and 20% -> 15.0 ± 7.1, half-width t(0.975, 1) x 7.07 / sqrt(2) = 63.5, cut to [0, 100];
    50% and 70% -> 60.0 ± 14.1); the standard/adversarial pair's paired difference (+40, +50 ->
    +45.0, interval [-18.5, +108.5], shown clipped to [-18.5, +100]) is inconclusive; clipped ends
    are marked and their computed values kept in the CSV; missing, failed and skipped cells are
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
    t_975_1 = 12.7062047  # Student's t quantile, 1 degree of freedom (printed tables)
    half, half_adv = t_975_1 * sd2 / math.sqrt(2), t_975_1 * sd_adv / math.sqrt(2)
    # a percentage's interval is clipped to [0, 100], the clipped ends marked
    assert rows["None"][0] == f"15.0 ± {sd2:.1f} [0.0†, {15 + half:.1f}] (15.0)"
    assert rows["Adv. Training"][0] == f"60.0 ± {sd_adv:.1f} [0.0†, 100.0†] (62.5)"
    assert rows["None"][1] == "5.0 (12.2)"  # one of two seeds done: no spread
    assert rows["Adv. Training"][1] == "error (57.0)"
    assert rows["None"][2] == "– (47.1)"  # CIFAR-10 not swept
    assert "| MNIST | Backdoor Success rate | Adv. Defense=None; Trigger Size=2 x 2 | Adv. Defense=Adv. Training; " \
           f"Trigger Size=2 x 2 | 15.0 → 62.5 | +45.0 | [{45 - half:+.1f}, +100.0†] (t) | 2 | inconclusive |" in md
    assert "With/without pairs: **0 of 2 pairs reproduced (0 opposite, 1 inconclusive, 1 without a verdict)**" in md
    assert "boom" in md
    # cost: every timed stage counts (training, evaluation 15 s, masking checks 5 s):
    # size2-standard's seeds took 120 and 140 s -> 2.2 minutes per seed; 5 runs, 660 s in all
    assert "| MNIST | Adv. Defense=None; Trigger Size=2 x 2 | size2-standard | 2 | 2.2 | 60 | 30 |" in md
    assert "Cost: 0.18 hours over 5 finished runs" in md

    rows_csv = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    table = [r for r in rows_csv if r["kind"] == "value"]
    row = next(r for r in table if r["dataset"] == "MNIST" and r["setting"] == "Adv. Defense=None; Trigger Size=2 x 2")
    assert (row["table"], row["metric"], float(row["paper"])) == ("Table 2 (b)", "Backdoor Success rate", 15.0)
    assert float(row["ours_mean"]) == 15.0 and abs(float(row["ours_std"]) - sd2) < 1e-3 and row["n_seeds"] == "2"
    assert len(table) == 12  # the paper's 12 cells of Table 2(b), nothing else
    assert float(row["ci_low"]) == 0.0 and abs(float(row["ci_high"]) - (15 + half)) < 1e-3 and row["ci_method"] == "t"
    assert abs(float(row["ci_low_raw"]) - (15 - half)) < 1e-3 and row["ci_clipped"] == "low"
    pair = next(r for r in rows_csv if r["kind"] == "pair" and r["n_seeds"] == "2")
    assert (float(pair["ours_mean"]), pair["verdict"]) == (45.0, "inconclusive")
    assert (float(pair["ci_high"]), pair["ci_clipped"]) == (100.0, "high")
    assert abs(float(pair["ci_high_raw"]) - (45 + half)) < 1e-3
    assert [r["verdict"] for r in rows_csv if r["kind"] == "summary"] == [
        "0 of 2 pairs reproduced (0 opposite, 1 inconclusive, 1 without a verdict)"]

    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and 'colspan="2"' in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # self-contained
    assert (out / "tradeoff-table2b-smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_names_the_backdoor_defenses_decision_rules(tmp_path, capsys):
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


def test_the_caption_names_the_evaluation_attack_the_runs_used(tmp_path):
    """Table 1(b)'s caption names, per dataset, the evaluation attack in the run folders' spec.yaml
    (not the preset's): MNIST's two cells share one; one CIFAR-10 run's spec.yaml was edited to
    5 cross-entropy steps at 2/255, so CIFAR-10's line says its cells differ, each with its
    settings. Markdown and HTML carry the same caption; a run without robustness adds nothing."""
    import dataclasses
    import html

    out = tmp_path / "sweep"
    grid = grids.expand(grids.load_table("table1b"), "smoke", seeds=1)
    for c in grid.cells:
        spec = c.spec
        if (c.dataset, c.slug) == ("cifar10", "rate5-ibp"):
            spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, attack=dataclasses.replace(
                spec.eval.attack, loss="ce", steps=5, step_size=2 / 255)))
        run = out / c.run_name
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(spec.to_yaml())
        (run / "metrics.json").write_text(json.dumps({
            "accuracy": 0.9, "adversarial_robustness": 0.5, "certified_robustness": 0.4,
            "backdoor_success_rate": 0.3, "spec_digest": c.digest}))
    write_manifest(out, grid, {}, {})
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    caption = next(line for line in md.splitlines() if line.startswith("Ours ("))
    assert "Adv. robustness, MNIST: PGD-2, margin loss, 1 restart, Linf eps 0.4, step 0.1." in caption
    assert ("Adv. robustness, CIFAR10: the cells used different attacks: "
            "PGD-2, margin loss, 1 restart, Linf eps 8/255, step 0.1 (Poisoned Data Rate=5%; Adv. Defense=None / "
            "Poisoned Data Rate=0.5%; Adv. Defense=None / Poisoned Data Rate=0.5%; Adv. Defense=IBP); "
            "PGD-5, cross-entropy loss, 1 restart, Linf eps 8/255, step 2/255 "
            "(Poisoned Data Rate=5%; Adv. Defense=IBP).") in caption
    assert f"<caption>{html.escape(caption)}</caption>" in (out / "report.html").read_text()

    # the same runs without adversarial robustness (eval.adversarial false): no attack is named
    for run in out.iterdir():
        if (run / "spec.yaml").is_file():
            text = (run / "spec.yaml").read_text().replace("adversarial: true", "adversarial: false")
            (run / "spec.yaml").write_text(text)
            m = json.loads((run / "metrics.json").read_text())
            (run / "metrics.json").write_text(json.dumps({**m, "adversarial_robustness": None}))
    assert main(["report", str(out)]) == 0
    assert "Adv. robustness," not in (out / "report.md").read_text()


def test_a_failed_backdoor_defense_is_named_in_the_report(tmp_path, capsys):
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


def test_a_pair_without_paper_values_takes_the_papers_direction_elsewhere():
    """MNIST has no paper value in Table 3(a)(b): its clean-label vs dirty-label comparison expects
    the direction the paper reports for CIFAR-10; a textbook-rule metric expects the direction of
    the paper's metric it is ``like``."""
    from tradeoff.records.manifest import Manifest, ManifestCell, ManifestMetric
    from tradeoff.report.collect import Entry, comparisons

    det, textbook = "Detection Rate (SS) @ 5%", "Detection Rate (SS, textbook) @ 5%"
    dirty, clean = "Adv. Defense=Dirty", "Adv. Defense=Clean"
    entries = {
        ("CIFAR10", dirty, det): Entry("CIFAR10", dirty, det, paper=81.6),
        ("CIFAR10", clean, det): Entry("CIFAR10", clean, det, paper=8.7),
        ("MNIST", dirty, det): Entry("MNIST", dirty, det, values=[90.0, 80.0, 85.0], seeds=[0, 1, 2]),
        ("MNIST", clean, det): Entry("MNIST", clean, det, values=[10.0, 12.0, 9.0], seeds=[0, 1, 2]),
        ("MNIST", dirty, textbook): Entry("MNIST", dirty, textbook, values=[50.0, 55.0, 52.0], seeds=[0, 1, 2]),
        ("MNIST", clean, textbook): Entry("MNIST", clean, textbook, values=[51.0, 56.0, 53.0], seeds=[0, 1, 2]),
    }
    metrics = [ManifestMetric(det, ["d"]), ManifestMetric(textbook, ["t"], like=det)]
    manifest = Manifest("t", "Table 3 (a)(b)", "", "smoke", ["mnist"],
                        cells=[ManifestCell("mnist", "MNIST", clean, "clean", 0, twin=dirty, metrics=metrics)])
    by_metric = {c.metric: c for c in comparisons(manifest, entries)}
    assert (by_metric[det].paper_source, by_metric[det].paper_difference) == ("CIFAR10", 8.7 - 81.6)
    assert by_metric[det].verdict == "reproduced"  # -75.7 points, interval well below 0
    assert by_metric[textbook].paper_source == "CIFAR10" and by_metric[textbook].verdict == "opposite"


def test_phase_diagram_heatmap_and_the_smallest_significant_eps(tmp_path):
    """The phase table's report: a heatmap PNG of the backdoor success rate difference (adversarial
    minus standard) and, per sticker size, the smallest eps whose 3-seed interval excludes 0
    (size 1: the 0.25x differences +1, -1, +3 include 0, the 0.5x ones +30, +32, +31 do not)."""
    out = tmp_path / "sweep"
    grid = grids.expand(grids.load_table("phase"), "smoke", seeds=3, datasets=["mnist"])
    asr = {"size1-standard": [0.10, 0.12, 0.08], "size1-eps025x": [0.11, 0.11, 0.11],
           "size1-eps05x": [0.40, 0.44, 0.39], "size2-standard": [0.1, 0.1, 0.1], "size2-eps025x": [0.1, 0.1, 0.1]}
    for c in grid.cells:
        if c.slug in asr:
            run = out / c.run_name
            run.mkdir(parents=True)
            (run / "spec.yaml").write_text(c.spec.to_yaml())
            (run / "metrics.json").write_text(json.dumps({
                "accuracy": 0.9, "adversarial_robustness": 0.5, "backdoor_success_rate": asr[c.slug][c.seed],
                "spec_digest": c.digest}))
    write_manifest(out, grid, {}, {})
    assert main(["report", str(out)]) == 0
    assert (out / "heatmap-phase-smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "![phase diagram](heatmap-phase-smoke.png)" in md
    assert "- MNIST, Trigger Size=1 x 1: significant from Eps=0.5x on (+31.0 points, [+28.5, +33.5])." in md
    assert "- MNIST, Trigger Size=2 x 2: the difference is significant at no eps." in md
    assert "phase" not in grids.paper_table_ids()  # a table beyond the paper: not in `tradeoff sweep all`

def test_masking_warnings_are_marked_and_saliency_figures_drawn(tmp_path, capsys):
    """Table 1(a): a run whose gradient-masking checks warned marks its adversarial-robustness
    value ("[masking?]", not its other metrics) and puts the sentence in the notes; the pair whose
    runs saved saliency maps gets a saliency figure, embedded in the HTML, with both trigger
    saliency shares in its caption."""
    import torch
    from safetensors.torch import save_file

    out = tmp_path / "sweep"
    grid = grids.expand(grids.load_table("table1a"), "smoke", seeds=1, datasets=["mnist"])
    shares = {"standard": 0.05, "adv-training": 0.40}
    for c in grid.cells:
        run = out / c.run_name
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(c.spec.to_yaml())
        record = {"accuracy": 0.9, "adversarial_robustness": 0.5, "backdoor_success_rate": 0.3,
                  "spec_digest": c.digest}
        if c.slug in shares:
            record["trigger_saliency_share"] = shares[c.slug]
            save_file({"images": torch.rand(4, 1, 28, 28), "abs_gradients": torch.rand(4, 1, 28, 28),
                       "region": torch.zeros(1, 28, 28)}, str(run / "saliency.safetensors"))
        if c.slug == "adv-training":
            record["masking_warnings"] = "possible gradient masking: a test sentence"
        (run / "metrics.json").write_text(json.dumps(record))
    write_manifest(out, grid, {}, {})
    assert main(["report", str(out)]) == 0
    assert "saliency-table1a-smoke.png" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    row = next(r for r in md.splitlines() if r.startswith("| Adv. Training "))
    assert row.count("[masking?]") == 1 and "50.0 [masking?]" in row
    assert "[masking?]" not in next(r for r in md.splitlines() if r.startswith("| None (Std. Training) "))
    assert "MNIST, Adv. Defense=Adv. Training, seed 0: possible gradient masking: a test sentence" in md
    assert "standard 5.0% → 40.0%" in md and "![saliency figure](saliency-table1a-smoke.png)" in md
    page = (out / "report.html").read_text()
    assert 'alt="saliency figure" src="data:image/png;base64,' in page and "[masking?]" in page


def test_table3ab_pairs_each_rate_with_its_own_twin(tmp_path):
    """Table 3(a)(b) names its dirty- and clean-label cells by the same setting at every poisoning
    rate: each clean-label cell's trade-off pair and saliency shares come from its own runs and
    from the dirty-label cell of the same rate (the one filling the same columns), and the caption
    tells the rates apart by cell."""
    from tradeoff.report.collect import build_reports
    from tradeoff.report.layout import saliency_line

    out = tmp_path / "sweep"
    grid = grids.expand(grids.load_table("table3ab"), "smoke", seeds=1, datasets=["mnist"])
    rate_of = {"rate5": 0.5, "rate1": 0.1, "rate05": 0.05}
    for c in grid.cells:
        kind, rate = c.slug.split("-")
        run = out / c.run_name
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(c.spec.to_yaml())
        shift = 0.0 if kind == "dirty" else 0.3
        (run / "metrics.json").write_text(json.dumps({
            "accuracy": 0.9, "adversarial_robustness": shift, "backdoor_success_rate": rate_of[rate] + shift,
            "trigger_saliency_share": rate_of[rate] / 2 + shift, "spectral_detection_rate": 0.5,
            "spec_digest": c.digest}))
    write_manifest(out, grid, {}, {})
    (table,) = build_reports(out)
    assert len(table.pairs) == 3
    for p in table.pairs:
        rate = rate_of[p.cell.split("-")[1]]
        assert p.ours["standard"] == (100 * rate, 0.0)
        assert p.ours["adversarial"] == (100 * (rate + 0.3), 30.0)
        assert p.saliency == {"standard": 100 * rate / 2, "adversarial": 100 * (rate / 2 + 0.3)}
    line = saliency_line(table)
    assert "Adv. Training (clean-rate5): standard 25.0% → 55.0%" in line
    assert "Adv. Training (clean-rate05): standard 2.5% → 32.5%" in line
