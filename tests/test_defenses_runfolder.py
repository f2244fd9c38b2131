"""Defences as spec steps and on a finished run folder (`tradeoff defend`): metrics merged into
metrics.json and summary.csv, the same numbers either way, and clear errors for bad input."""

import csv
import json

import pytest
from safetensors.torch import load_file, save_file

from tiny_spec import TINY
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.core.errors import TradeoffError
from tradeoff.pipeline.experiment import run_experiment


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    spec = load_spec(None, {"backdoor_defenses": [{"name": "spectral", "variant": "textbook", "retrain": False}]},
                     base=TINY)
    spec.name = "tiny"
    outcome = run_experiment(spec, out, show_progress=False)
    return out, outcome


def test_spec_step_writes_metrics_and_artifacts(finished_run):
    """A spec's backdoor_defenses entry lands in metrics.json, summary.csv and spectral.safetensors."""
    out, outcome = finished_run
    metrics = json.loads((out / "tiny" / "metrics.json").read_text())
    assert 0 <= metrics["spectral_detection_rate"] <= 1
    assert (out / "tiny" / "spectral.safetensors").is_file()
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert row["spectral_detection_rate"] == str(metrics["spectral_detection_rate"])


def test_defend_reproduces_the_spec_step_and_updates_the_folder(finished_run, capsys):
    """`tradeoff defend` on the folder rebuilds data, poisoning and model: the same spectral numbers
    as the in-run step; a new defence's metrics are merged into metrics.json and summary.csv."""
    out, outcome = finished_run
    run = out / "tiny"
    before = json.loads((run / "metrics.json").read_text())
    assert main(["defend", str(run), "--defense", "spectral", "--option", "variant=textbook",
                 "--option", "retrain=false", "--quiet"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    for key in ("spectral_removed", "spectral_detection_rate", "spectral_false_positive_rate"):
        assert again[key] == before[key]
    assert main(["defend", str(run), "--defense", "activation-clustering", "--option", "rule=size",
                 "--option", "retrain=false", "--quiet"]) == 0
    merged = json.loads((run / "metrics.json").read_text())
    assert "clustering_detection_rate" in merged and merged["accuracy"] == before["accuracy"]
    header = next(csv.reader((out / "summary.csv").open()))
    assert "clustering_detection_rate" in header and "spectral_detection_rate" in header
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_defend_errors_are_one_sentence(finished_run, tmp_path, capsys):
    """Unknown defence or option, a folder that is not a run, and tampered poisoning: exit code 2."""
    out, _ = finished_run
    assert main(["defend", str(out / "tiny"), "--defense", "spectrum", "--quiet"]) == 2
    assert main(["defend", str(out / "tiny"), "--defense", "spectral", "--option", "colour=red", "--quiet"]) == 2
    assert main(["defend", str(tmp_path), "--defense", "spectral", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown backdoor defence 'spectrum'" in err and "colour" in err and "not a finished run" in err
    bad = tmp_path / "tampered"
    bad.mkdir()
    for name in ("spec.yaml", "metrics.json", "model.safetensors"):
        (bad / name).write_bytes((out / "tiny" / name).read_bytes())
    poison = load_file(str(out / "tiny" / "poison.safetensors"))
    poison["indices"] = poison["indices"] + 1
    save_file(poison, str(bad / "poison.safetensors"))
    assert main(["defend", str(bad), "--defense", "spectral", "--quiet"]) == 2
    assert "does not match its poison.safetensors" in capsys.readouterr().err


def test_spec_validation_rejects_bad_defense_options():
    """A mistyped option in a spec is caught when the spec is loaded, before any training."""
    with pytest.raises(TradeoffError, match="neural-cleanse.epochs"):
        load_spec(None, {"backdoor_defenses": [{"name": "neural-cleanse", "epochs": "many"}]})


def test_one_defense_twice_under_two_prefixes(tmp_path):
    """The paper's and the textbook rule in one run: the second entry's metrics and file carry its
    prefix, and each equals what the defence gives when it runs alone under its own name (the
    defences are deterministic given the trained model)."""
    both = load_spec(None, {"backdoor_defenses": [
        {"name": "spectral", "retrain": False},
        {"name": "spectral", "variant": "textbook", "retrain": False, "prefix": "spectral_textbook"}]}, base=TINY)
    alone = load_spec(None, {"backdoor_defenses": [{"name": "spectral", "variant": "textbook", "retrain": False}]},
                      base=TINY)
    m_both = run_experiment(both, tmp_path / "both", show_progress=False).metrics
    m_alone = run_experiment(alone, tmp_path / "alone", show_progress=False).metrics
    assert m_both["spectral_variant"].startswith("paper") and m_both["spectral_textbook_variant"] == "textbook"
    for key in ("removed", "detection_rate", "false_positive_rate"):
        assert m_both[f"spectral_textbook_{key}"] == m_alone[f"spectral_{key}"]
    assert (tmp_path / "both" / both.name / "spectral_textbook.safetensors").is_file()
    with pytest.raises(TradeoffError, match="prefix"):
        load_spec(None, {"backdoor_defenses": [{"name": "spectral", "prefix": "Bad Prefix"}]}, base=TINY)
