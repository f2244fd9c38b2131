"""The command line: bad input is one sentence and exit code 2; unfinished run folders are marked."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tradeoff.pipeline.experiment
from tradeoff.cli import main
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.records.folders import finished_runs

TINY = ["data.dataset=digits", "data.train_subset=200", "data.test_subset=100", "train.epochs=1",
        "eval.attack.steps=2", "adversarial_defense.attack.steps=2"]


def _sets(pairs):
    return [arg for p in pairs for arg in ("--set", p)]


def run_cli(args):
    return subprocess.run([sys.executable, "-m", "tradeoff", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["run", "missing.yaml"], "does not exist"),
    (["run", "SPEC", "--set", "trigger.size=40"], "does not fit in a 16x16 image"),
    (["run", "SPEC", "--set", "nonsense.key=1"], "unknown spec key 'nonsense'"),
    (["run", "SPEC", "--set", "data.dataset=imagenet21k"], "unknown dataset"),
])
def test_bad_input_is_one_sentence_and_exit_code_2(tmp_path, args, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text("data: {dataset: digits}\ntrain: {epochs: 1}\n")
    args = [str(spec) if a == "SPEC" else a for a in args] + ["--out", str(tmp_path / "out"), "--quiet"]
    proc = run_cli(args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0  # one line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_dataset_names_the_expected_files(tmp_path, capsys):
    code = main(["run", "--quiet", "--out", str(tmp_path / "o"), "--data-root", str(tmp_path),
                 str(_write(tmp_path, "data: {dataset: mnist}\n"))])
    err = capsys.readouterr().err
    assert code == 2 and "MNIST not found: expected train-images-idx3-ubyte" in err and str(tmp_path) in err
    assert not any(tmp_path.rglob("raw"))  # a failed download leaves no empty folders behind


def _write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_malformed_yaml_and_bad_values(tmp_path, capsys):
    assert main(["run", str(_write(tmp_path, "train: {epochs: [1,\n")), "--quiet"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["run", str(_write(tmp_path, "poison: {fraction_of_target_class: 2}\n")), "--quiet"]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_run_writes_a_complete_folder_and_summary(tmp_path, capsys):
    spec = _write(tmp_path, "name: tiny\n")
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet", *_sets(TINY)]) == 0
    folder = tmp_path / "out" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["log.txt", "metrics.json", "model.safetensors",
                                                        "poison.safetensors", "saliency.safetensors", "spec.yaml"]
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("accuracy", "adversarial_robustness", "backdoor_success_rate", "backdoor_success_rate_true_label"):
        assert 0.0 <= metrics[key] <= 1.0
    assert load_file(str(folder / "model.safetensors"))
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert (rows[0]["run"] == "tiny" and rows[0]["adversarial_defense"] == "none"
            and rows[0]["poisoning_method"] == "clean-label")
    assert list(rows[0])[:8] == ["run", "dataset", "poisoning_method", "adversarial_defense", "accuracy",
                                 "adversarial_robustness", "backdoor_success_rate", "collapsed"]
    assert "tiny" in capsys.readouterr().out


def test_an_interrupted_run_keeps_its_work_and_the_previous_one_until_resumed(tmp_path, monkeypatch):
    """Interrupted after training, a rerun's folder keeps the trained model, is marked unfinished
    (left out of summary.csv and refused by readers), keeps the previous finished folder aside, and
    --resume finishes it with the numbers of an uninterrupted run."""
    spec = _write(tmp_path, "name: tiny\n")
    out, reference = tmp_path / "out", tmp_path / "reference"
    assert main(["run", str(spec), "--out", str(out), "--quiet", *_sets(TINY)]) == 0
    assert main(["run", str(spec), "--out", str(reference), "--quiet", *_sets(TINY + ["seed=1"])]) == 0
    evaluate = tradeoff.pipeline.experiment.evaluate

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("tradeoff.pipeline.experiment.evaluate", boom)
    assert main(["run", str(spec), "--out", str(out), "--quiet", *_sets(TINY + ["seed=1"])]) == 130
    folder = out / "tiny"
    assert sorted(p.name for p in out.iterdir()) == [".tiny.previous", "summary.csv", "tiny"]
    assert (folder / "model.safetensors").is_file() and not (folder / "metrics.json").exists()
    marker = json.loads((folder / "unfinished.json").read_text())
    assert (marker["stage"], marker["error"], marker["pid"]) == ("evaluation", "interrupted", os.getpid())
    assert finished_runs(out) == []
    assert main(["run", str(spec), "--out", str(out), "--quiet", *_sets(TINY + ["seed=1"])]) == 2  # no --resume

    monkeypatch.setattr("tradeoff.pipeline.experiment.evaluate", evaluate)
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--resume", *_sets(TINY + ["seed=1"])]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "tiny"]
    assert _without_timings(folder / "metrics.json") == _without_timings(reference / "tiny" / "metrics.json")


def _without_timings(path):
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING_KEYS}


def test_same_spec_same_numbers(tmp_path):
    spec = _write(tmp_path, "name: tiny\n")
    for out in ("a", "b"):
        assert main(["run", str(spec), "--out", str(tmp_path / out), "--quiet", *_sets(TINY)]) == 0
    a, b = (json.loads((tmp_path / o / "tiny" / "metrics.json").read_text()) for o in ("a", "b"))
    keys = ("accuracy", "adversarial_robustness", "backdoor_success_rate")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    wa, wb = (load_file(str(tmp_path / o / "tiny" / "model.safetensors")) for o in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_every_subcommand_has_help():
    from tradeoff.cli import build_parser

    parser = build_parser()
    names = parser._subparsers._group_actions[0].choices
    for name in names:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0


def test_bad_output_folders_and_dataset_names_fail_before_any_work(tmp_path, capsys):
    """`--out FILE` (a regular file) and an unknown name in `sweep --datasets` are one sentence and
    exit code 2, before anything trains or any folder is written."""
    spec = _write(tmp_path, "name: tiny\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", str(spec), "--out", str(blocker), "--quiet", *_sets(TINY)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err
    assert main(["sweep", "table1a", "--datasets", "minst", "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'minst'" in err and "did you mean 'mnist'" in err
    assert not (tmp_path / "sw").exists()
