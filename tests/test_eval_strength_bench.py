"""benchmarks/bench_eval_strength.py: the criterion's verdict per checked model and the merge of
runs made apart (one process per core) into one table, computed by hand on given rows."""

import json
import sys

from benchmark_script import load


def load_bench():
    return load("bench_eval_strength")


def _row(model, seed, ours, autoattack, spatial_gap=None):
    row = {"model": model, "seed": seed, "images": 1000, "eps": 0.3, "clean_accuracy": 0.96,
           "attacks": {"ours": {"attack": "PGD-20", "robustness": ours, "seconds": 1.0,
                                "gap_points": round(100 * (ours - autoattack), 2)}},
           "autoattack": {"robustness": autoattack, "seconds": 2.0}}
    if spatial_gap is not None:
        row["spatial"] = {"grid": "5 x 5 x 31", "robustness": 0.5, "dense_grid": "7 x 7 x 61",
                          "dense_robustness": 0.5 - spatial_gap / 100, "gap_points": spatial_gap,
                          "seconds": 1.0, "dense_seconds": 2.0}
    return row


def test_merge_orders_rows_by_model_then_seed_and_the_criterion_names_each_model_above_it(tmp_path, monkeypatch,
                                                                                          capsys):
    """Two files written apart merge into MODELS' order; a gap of 2.5 points (IBP seed 1) and a
    spatial grid 2.4 points above the dense grid fail the 2-point criterion, 2.0 and the smoke
    cell's 5 (only reported) do not; the exit code says so and the table names the sources."""
    bench = load_bench()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"rows": [_row("table1b-mnist-rate5-ibp-cpu", 1, 0.85, 0.825),
                                      _row("table1b-mnist-rate5-ibp-cpu", 0, 0.84, 0.82)], "command": "run a"}))
    b.write_text(json.dumps({"rows": [_row("beyond-spatial-mnist-sticker-spatial-cpu", 0, 0.0, 0.0, 2.4),
                                      _row("table1a-mnist-adv-training-cpu", 0, 0.77, 0.76),
                                      _row("table1a-mnist-adv-training-smoke", 0, 0.10, 0.05)]}))
    rows, sources = bench.merged_rows([str(a), str(b)])
    assert sources == ["run a", str(b)]
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("table1a-mnist-adv-training-cpu", 0), ("table1b-mnist-rate5-ibp-cpu", 0), ("table1b-mnist-rate5-ibp-cpu", 1),
        ("beyond-spatial-mnist-sticker-spatial-cpu", 0), ("table1a-mnist-adv-training-smoke", 0)]
    assert bench.failures(rows) == ["table1b-mnist-rate5-ibp-cpu s1", "beyond-spatial-mnist-sticker-spatial-cpu s0"]
    summary = bench.gaps_by_kind(rows)
    assert "| table1b-mnist-rate5-ibp-cpu | 2 | 2.25 | 2.50 | - |" in summary

    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["bench_eval_strength.py", "--merge", str(a), str(b), "--results", str(out)])
    assert bench.main() == 1
    md = (out / "eval-strength.md").read_text()
    assert f"The rows of: `run a`; `{b}`." in md and "above the criterion: table1b-mnist-rate5-ibp-cpu s1" in md
    assert "not measured here: quickstart, beyond-training-mnist-trades-cpu" in md
    assert json.loads((out / "eval-strength.json").read_text())["sources"] == ["run a", str(b)]


def test_a_stopped_run_resumes_after_its_last_measured_model(tmp_path, monkeypatch):
    """Measuring 2 kinds x 2 seeds, stopped while measuring the third model: the results folder holds
    the 2 rows measured (marked partial); the same command again measures only the other 2 (none
    twice, in the same order) and writes all 4, no longer partial. The measurement is replaced by a
    stand-in here (the rows of _row); what is checked is which models are measured when."""
    bench = load_bench()
    kinds = ["table1a-mnist-adv-training-cpu", "table1b-mnist-rate5-ibp-cpu"]
    measured = []

    def fake_measure(kind, seed, *args):
        if len(measured) == 2 and not resumed:
            raise KeyboardInterrupt
        measured.append((kind, seed))
        return _row(kind, seed, 0.80, 0.79)

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench, "find_or_train", lambda *args: tmp_path / "run")
    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["bench_eval_strength.py", "--models", *kinds, "--seeds", "2",
                                      "--sweep", str(tmp_path / "sweep"), "--results", str(out)])
    resumed = False
    try:
        bench.main()
    except KeyboardInterrupt:
        pass
    saved = json.loads((out / "eval-strength.json").read_text())
    assert saved["partial"] and [(r["model"], r["seed"]) for r in saved["rows"]] == [(kinds[0], 0), (kinds[0], 1)]

    resumed = True
    assert bench.main() == 0
    assert measured == [(kinds[0], 0), (kinds[0], 1), (kinds[1], 0), (kinds[1], 1)]
    saved = json.loads((out / "eval-strength.json").read_text())
    assert "partial" not in saved and [(r["model"], r["seed"]) for r in saved["rows"]] == [
        (k, s) for k in kinds for s in (0, 1)]
