"""Per-table Holm counts, the rule that takes pairs inconclusive at 3 seeds to 10 (``tradeoff
more-seeds``), and both verdicts in the report, on fabricated sweep folders."""

from __future__ import annotations

import csv
import io
import json
import math
import shlex

from tradeoff.cli import main
from tradeoff.core.stats import INCONCLUSIVE, OPPOSITE, REPRODUCED, Comparison, holm_summary, verdict_counts
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import write_manifest


def _t_p_value_df2(values: list[float]) -> float:
    """Two-sided p-value of a one-sample t test on 3 values by the closed form of Student's t with 2
    degrees of freedom: P(|T| > t) = 1 - t / sqrt(2 + t^2)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = abs(mean) / (sd / math.sqrt(n))
    return 1 - t / math.sqrt(2 + t * t)


def test_holm_counts_against_a_hand_computation():
    """Five judged pairs of 3 seeds (paper direction +): A, B, C reproduced, E opposite, D
    inconclusive. Their p-values by the closed form of t with 2 degrees of freedom order them
    A < E < B < C < D; Holm's thresholds 0.05/5, /4, /3, /2, /1 pass A, E and B and stop at C
    (0.026 > 0.025): after the correction 2 reproduced, 1 opposite, 2 inconclusive. A one-seed pair
    has no verdict and stays out of the family."""
    diffs = {"A": [30.0, 32.0, 31.0], "B": [10.0, 14.0, 12.0], "C": [5.0, 9.0, 7.0], "D": [-10.0, 30.0, 5.0],
             "E": [-20.0, -22.0, -21.0]}
    pairs = [Comparison("MNIST", "ASR", "std", name, 10.0, 70.0, [0, 1, 2], d) for name, d in diffs.items()]
    pairs.append(Comparison("MNIST", "ASR", "std", "one seed", 10.0, 70.0, [0], [40.0]))
    p = {name: _t_p_value_df2(d) for name, d in diffs.items()}
    assert sorted(p, key=p.get) == ["A", "E", "B", "C", "D"]
    assert p["A"] <= 0.05 / 5 and p["E"] <= 0.05 / 4 and p["B"] <= 0.05 / 3 and 0.05 / 2 < p["C"] < 0.05
    for c in pairs[:5]:
        assert math.isclose(c.p_value, p[c.with_], rel_tol=1e-9)

    counts = verdict_counts(pairs)
    assert counts.counts == {REPRODUCED: 3, OPPOSITE: 1, INCONCLUSIVE: 1} and counts.judged == 5
    assert counts.holm_counts == {REPRODUCED: 2, OPPOSITE: 1, INCONCLUSIVE: 2}
    assert counts.holm == [REPRODUCED, REPRODUCED, INCONCLUSIVE, INCONCLUSIVE, OPPOSITE, ""]
    assert holm_summary(pairs) == ("after a Holm correction over the table's 5 judged pairs (family-wise alpha 0.05): "
                                   "2 reproduced, 1 opposite, 2 inconclusive")


# Backdoor success rate per (cell slug, seed): the 2x2 pair is inconclusive at seeds 0-2
# (differences +40, -7, +80: its interval's raw high end is past +100) and reproduced once seeds
# 3-9 (about +30 each) are in; the 1x1 pair is reproduced at 3 seeds (+50, +51, +50).
ASR = {"size2-standard": [0.10, 0.12, 0.08, 0.10, 0.11, 0.09, 0.10, 0.12, 0.08, 0.10],
       "size2-adv-training": [0.50, 0.05, 0.88, 0.40, 0.42, 0.38, 0.43, 0.40, 0.38, 0.42],
       "size1-standard": [0.05, 0.06, 0.04], "size1-adv-training": [0.55, 0.57, 0.54]}


# Table 2(c)'s 2.5% pair inconclusive at seeds 0-2 (+30, -5, +60), its 1% pair reproduced.
ASR_2C = {"rate25-standard": [0.10, 0.10, 0.10], "rate25-adv-training": [0.40, 0.05, 0.70],
          "rate10-standard": [0.05, 0.06, 0.04], "rate10-adv-training": [0.55, 0.57, 0.54]}


def _fabricate(out, seeds: int, only=None, overrides=None, table="table2b", asr=ASR):
    grid = grids.expand(grids.load_table(table), "smoke", seeds=seeds, datasets=["mnist"], only=only,
                        overrides=overrides)
    for c in grid.cells:
        run = out / c.run_name
        if run.exists():
            continue
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(c.spec.to_yaml())
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "mnist", "accuracy": 0.9, "adversarial_robustness": 0.5,
            "backdoor_success_rate": asr[c.slug][c.seed], "spec_digest": c.digest}))
    write_manifest(out, grid, {}, {})


def _pair_rows(out) -> dict:
    rows = csv.DictReader(io.StringIO((out / "report.csv").read_text()))
    return {r["setting"]: r for r in rows if r["kind"] == "pair"}


def test_more_seeds_lists_the_inconclusive_pairs_and_the_exact_sweep(tmp_path, capsys):
    """At 3 seeds, `tradeoff more-seeds` names the 2x2 pair (inconclusive) and not the 1x1 one
    (reproduced), and prints the one sweep that takes both 2x2 cells to 10 seeds; that command,
    given to `tradeoff sweep --dry-run`, finds seeds 0-2 of both cells done and plans seeds 3-9,
    nothing else. The report's Holm line counts the table's two judged pairs."""
    out = tmp_path / "sweep"
    _fabricate(out, 3)
    assert main(["more-seeds", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "  table2b, MNIST, Backdoor Success rate: Adv. Defense=None; Trigger Size=2 x 2 → Adv. Defense=Adv. " \
           "Training; Trigger Size=2 x 2" in printed
    assert not any("Trigger Size=1 x 1" in line for line in printed)
    expected = (f"tradeoff sweep table2b --preset smoke --datasets mnist --cells size2-standard size2-adv-training "
                f"--seeds 10 --out {shlex.quote(str(out))}")
    assert printed[-1] == f"  {expected}"

    assert main(shlex.split(expected)[1:] + ["--dry-run"]) == 0
    planned = [line.split() for line in capsys.readouterr().out.splitlines()]
    states = {(cols[2], cols[3]): " ".join(cols[5:]) for cols in planned}
    cells = ("size2-standard", "size2-adv-training")
    assert {k for k, v in states.items() if v == "done"} == {(s, f"s{i}") for s in cells for i in range(3)}
    assert {k for k, v in states.items() if v == "to run"} == {(s, f"s{i}") for s in cells for i in range(3, 10)}

    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert ("With/without pairs: **1 of 2 pairs reproduced (0 opposite, 1 inconclusive)**; after a Holm correction "
            "over the table's 2 judged pairs (family-wise alpha 0.05): 1 reproduced, 0 opposite, 1 inconclusive.") in md
    assert _pair_rows(out)["Adv. Defense=Adv. Training; Trigger Size=2 x 2"]["verdict_first_seeds"] == ""


def test_after_more_seeds_the_report_shows_both_verdicts(tmp_path, capsys):
    """Once seeds 3-9 of the 2x2 cells are in, the pair is reproduced over its 10 seeds (bootstrap
    interval) and the report shows its verdict at seeds 0-2 (inconclusive) beside it, in Markdown,
    HTML and CSV; `tradeoff more-seeds` then has nothing left to run."""
    out = tmp_path / "sweep"
    _fabricate(out, 3)
    _fabricate(out, 10, only=["size2-*"])
    assert main(["report", str(out)]) == 0
    row = _pair_rows(out)["Adv. Defense=Adv. Training; Trigger Size=2 x 2"]
    assert (row["verdict"], row["verdict_first_seeds"], row["n_seeds"], row["ci_method"]) == (
        REPRODUCED, INCONCLUSIVE, "10", "bootstrap")
    assert row["seeds"] == ";".join(map(str, range(10))) and float(row["p_value"]) < 0.05
    md = (out / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| MNIST | Backdoor Success rate |") and "2 x 2" in ln)
    assert line.rstrip(" |").endswith(f"| 10 | {REPRODUCED} | < 0.001 | {REPRODUCED} | {INCONCLUSIVE}")
    assert "verdict at seeds 0-2" in (out / "report.html").read_text()

    assert main(["more-seeds", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(line.endswith("[already at 10 seeds]") for line in printed)
    assert printed[-1] == "Every one of their cells is already at 10 seeds."


def test_more_seeds_refuses_a_sweep_run_with_other_options(tmp_path, capsys):
    """A sweep run with --set plans other runs than the plain command would: one sentence and exit
    status 2 until the same --set is given, then the command carries it."""
    out = tmp_path / "sweep"
    _fabricate(out, 3, overrides=["train.epochs=2"])
    assert main(["more-seeds", str(out)]) == 2
    assert "was swept with other options" in capsys.readouterr().err
    assert main(["more-seeds", str(out), "--set", "train.epochs=2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("--set train.epochs=2")


def test_clipped_interval_ends_are_marked_in_the_html_and_legend(tmp_path):
    """The HTML page marks a difference's interval end clipped to +100 and carries the legend that
    says what the mark means and where the computed end is kept."""
    out = tmp_path / "sweep"
    _fabricate(out, 3)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in (page, md):
        assert "marks an interval&#x27;s end clipped" in text or "marks an interval's end clipped" in text
        assert "ci_low_raw, ci_high_raw" in text
    row = _pair_rows(out)["Adv. Defense=Adv. Training; Trigger Size=2 x 2"]
    assert float(row["ci_high_raw"]) > 100 and float(row["ci_high"]) == 100.0 and row["ci_clipped"] == "high"
    assert "+100.0†" in page and "+100.0†" in md


def test_more_seeds_run_sweeps_exactly_what_it_prints(tmp_path, capsys, monkeypatch):
    """--run hands the printed command's table, preset, seeds, dataset, cells, folder, options
    and workers to the sweep (the sweep itself is replaced here: its own tests run cells)."""
    from tradeoff.cli import more_seeds as command
    from tradeoff.sweeps.sweep import SweepResult

    out = tmp_path / "sweep"
    _fabricate(out, 3)
    calls = []

    def fake_sweep(tables, preset, folder, seeds, datasets, overrides, data_root, workers, **kw):
        calls.append((tables, preset, folder, seeds, datasets, overrides, data_root, workers, kw["only"]))
        return SweepResult([])

    monkeypatch.setattr(command, "sweep", fake_sweep)
    assert main(["more-seeds", str(out), "--run", "--workers", "2"]) == 0
    assert "--workers 2" in capsys.readouterr().out
    assert calls == [(["table2b"], "smoke", out, 10, ["mnist"], [], None, 2, ["size2-standard", "size2-adv-training"])]


def test_more_seeds_of_some_tables_of_a_shared_folder(tmp_path, capsys):
    """Two tables swept into one folder, each with an inconclusive pair: --tables lists and extends
    only the tables named, and a table that was not swept into the folder is one sentence, exit 2."""
    out = tmp_path / "sweep"
    _fabricate(out, 3)
    _fabricate(out, 3, table="table2c", asr=ASR_2C)
    assert main(["more-seeds", str(out)]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  tradeoff sweep")]
    assert [c.split()[2] for c in commands] == ["table2b", "table2c"]

    assert main(["more-seeds", str(out), "--tables", "table2c"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert not any("table2b" in line for line in printed)
    assert printed[-1] == (f"  tradeoff sweep table2c --preset smoke --datasets mnist --cells rate25-standard "
                           f"rate25-adv-training --seeds 10 --out {shlex.quote(str(out))}")

    assert main(["more-seeds", str(out), "--tables", "table2a", "table2c"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tradeoff: error: table2a not swept into {out} (its tables: table2b, table2c)."]
