"""The report's attack-strength notes on fabricated run folders of the beyond-attacks table: each
attack's success under standard training, its trigger's L-inf size beside the training eps read
from the runs' spec.yaml, and an attack below 20% under every training flagged "not working at
this budget", its with/without pairs without a verdict while the other attacks' keep theirs."""

from __future__ import annotations

import json

from tradeoff.report import build_reports
from tradeoff.report.attack_strength import NOT_WORKING, setting_value
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import write_manifest

# backdoor success rate per (cell slug, seed): SIG never takes hold, all-to-all does
RATES = {"sig-standard": (0.05, 0.10), "sig-adv-training": (0.12, 0.15), "sig-trades": (0.08, 0.19),
         "all-to-all-standard": (0.60, 0.70), "all-to-all-adv-training": (0.90, 0.95),
         "all-to-all-trades": (0.10, 0.15)}


def _fake_sweep(out):
    grid = grids.expand(grids.load_table("beyond-attacks"), "smoke", seeds=2, datasets=["mnist"],
                        only=["sig-*", "all-to-all-*"])
    for c in grid.cells:
        run = out / c.run_name
        run.mkdir(parents=True)
        (run / "spec.yaml").write_text(c.spec.to_yaml())
        (run / "metrics.json").write_text(json.dumps({
            "dataset": "mnist", "accuracy": 0.95, "adversarial_robustness": 0.5, "spec_digest": c.digest,
            "backdoor_success_rate": RATES[c.slug][c.seed], "trigger_linf": 0.15 if "sig" in c.slug else 1.0,
            "adversarial_defense": c.spec.adversarial_defense.objective, "train_seconds": 1.0}))
    write_manifest(out, grid, {}, {})


def test_weak_attack_is_flagged_and_its_pairs_get_no_verdict(tmp_path):
    _fake_sweep(tmp_path)
    (report,) = build_reports(tmp_path)
    sig_note = next(n for n in report.notes if n.startswith("MNIST, SIG"))
    assert "backdoor success 7.5% under standard training" in sig_note
    assert "trigger L-inf size 0.15 beside training eps 0.3" in sig_note and NOT_WORKING in sig_note
    a2a_note = next(n for n in report.notes if n.startswith("MNIST, All-to-All"))
    assert "65.0% under standard training" in a2a_note and "size 1" in a2a_note and NOT_WORKING not in a2a_note
    for c in report.comparisons:
        attack = setting_value(c.with_, "Backdoor Attack")
        assert (c.verdict == f"no verdict ({NOT_WORKING})") == attack.startswith("SIG"), (attack, c.verdict)
    assert {setting_value(c.with_, "Backdoor Attack") for c in report.comparisons} == {
        "SIG (delta 40/255, f 6)", "All-to-All Sticker (5%)"}
