"""Every door of the command line against every failure class that applies to it: missing,
empty, wrong type, out of range, malformed, truncated, hostile, unwritable.

Each case asserts the one sentence (its words, on stderr, never a traceback), the exit code (2:
bad input; argparse's own usage errors are 2 as well), and that no folder that looks finished
appeared. ``python -m pytest tests/test_bad_input_matrix.py -s`` prints the matrix with its counts."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from test_report import _fake_sweep as fake_sweep
from tradeoff.cli import main
from tradeoff.records.folders import UNFINISHED, is_finished

CLASSES = ("missing", "empty", "wrong type", "out of range", "malformed", "truncated", "hostile", "unwritable")
TINY = ["data.dataset=digits", "data.train_subset=60", "data.test_subset=20", "train.epochs=1", "train.batch_size=30",
        "eval.adversarial=false", "eval.masking_checks=false", "eval.saliency=false"]
SETS = [a for s in TINY for a in ("--set", s)]
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
PYTHON_TAG = "name: !!python/object/apply:os.system ['echo owned']\n"


@dataclass(frozen=True)
class Case:
    door: str
    failure: str
    argv: tuple  # {W}: the world folder, {OUT}: a fresh output folder under it
    says: str  # words of the sentence
    code: int = 2

    @property
    def id(self) -> str:
        return f"{self.door}/{self.failure}/{self.says[:24]}"


CASES = [
    # tradeoff run
    Case("run", "missing", ("run", "{W}/no-such.yaml", "--out", "{OUT}"), "does not exist"),
    Case("run", "empty", ("run", "{W}/empty.yaml", "--out", "{OUT}", "--data-root", "{W}/empty-folder"),
         "MNIST not found"),
    Case("run", "wrong type", ("run", "{W}/spec.yaml", "--out", "{OUT}", "--set", "train.epochs=many"), "train.epochs"),
    Case("run", "wrong type", ("run", "{W}/list.yaml", "--out", "{OUT}"), "mapping"),
    Case("run", "out of range", ("run", "{W}/spec.yaml", "--out", "{OUT}", "--set", "poison.fraction_of_target_class=2"),
         "must be in [0, 1]"),
    Case("run", "malformed", ("run", "{W}/malformed.yaml", "--out", "{OUT}"), "not valid YAML"),
    Case("run", "malformed", ("run", "{W}/spec.yaml", "--out", "{OUT}", "--set", "train.epochs"), "expects key=value"),
    Case("run", "truncated", ("run", "{W}/spec.yaml", "--out", "{OUT}", "--set", "model.checkpoint={W}/truncated.safetensors", *SETS),
         "truncated.safetensors"),
    Case("run", "hostile", ("run", "{W}/python-tag.yaml", "--out", "{OUT}"), "not valid YAML"),
    Case("run", "hostile", ("run", "{W}/alias-bomb.yaml", "--out", "{OUT}"), "expands to more than"),
    Case("run", "hostile", ("run", "{W}/spec.yaml", "--out", "{OUT}", "--set", "model.checkpoint={W}/pickle.pt", *SETS),
         "pickle.pt"),
    Case("run", "unwritable", ("run", "{W}/spec.yaml", "--out", "{W}/a-file"), "is a file"),
    Case("run", "unwritable", ("run", "{W}/spec.yaml", "--out", "{W}/a-file/under"), "cannot be written"),
    # tradeoff run --resume
    Case("run --resume", "malformed", ("run", "{W}/spec.yaml", "--resume", "--out", "{W}/bad-spec-folder", *SETS),
         "cannot be resumed"),
    Case("run --resume", "truncated", ("run", "{W}/spec.yaml", "--resume", "--out", "{W}/truncated-snapshot", *SETS),
         "every snapshot"),
    Case("run --resume", "hostile", ("run", "{W}/spec.yaml", "--resume", "--out", "{W}/pickle-snapshot", *SETS),
         "every snapshot"),
    Case("run --resume", "wrong type", ("run", "{W}/spec.yaml", "--resume", "--out", "{W}/other-spec", *SETS,
                                        "--set", "train.epochs=2"), "another spec (train.epochs differ)"),
    Case("run --resume", "malformed", ("run", "{W}/spec.yaml", "--resume", "--restart", "--out", "{OUT}"),
         "not allowed with argument"),
    Case("run --resume", "unwritable", ("run", "{W}/spec.yaml", "--resume", "--out", "{W}/a-file"), "is a file"),
    # tradeoff sweep
    Case("sweep", "missing", ("sweep", "--out", "{OUT}"), "name a table"),
    Case("sweep", "missing", ("sweep", "table9z", "--out", "{OUT}"), "table9z"),
    Case("sweep", "empty", ("sweep", "{W}/empty.yaml", "--preset", "smoke", "--out", "{OUT}"), "empty"),
    Case("sweep", "wrong type", ("sweep", "table1a", "--seeds", "two", "--out", "{OUT}"), "invalid int value"),
    Case("sweep", "wrong type", ("sweep", "table1a", "--preset", "huge", "--out", "{OUT}"), "huge"),
    Case("sweep", "out of range", ("sweep", "table1a", "--workers", "0", "--out", "{OUT}"), "at least 1"),
    Case("sweep", "out of range", ("sweep", "table1a", "--seeds", "0", "--out", "{OUT}"), "--seeds"),
    Case("sweep", "malformed", ("sweep", "{W}/malformed.yaml", "--out", "{OUT}"), "not valid YAML"),
    Case("sweep", "hostile", ("sweep", "{W}/python-tag.yaml", "--out", "{OUT}"), "not valid YAML"),
    Case("sweep", "unwritable", ("sweep", "table1a", "--preset", "smoke", "--datasets", "digits", "--out", "{W}/a-file"),
         "is a file"),
    # tradeoff sweep --status
    Case("sweep --status", "missing", ("sweep", "--status", "{W}/no-such-folder"), "holds no sweep manifests"),
    Case("sweep --status", "empty", ("sweep", "--status", "{W}/empty-folder"), "holds no sweep manifests"),
    Case("sweep --status", "malformed", ("sweep", "--status", "{W}/garbage-manifest"), "not a readable sweep manifest"),
    Case("sweep --status", "truncated", ("sweep", "--status", "{W}/truncated-manifest"), "not a readable sweep manifest"),
    Case("sweep --status", "wrong type", ("sweep", "--status", "{W}/list-manifest"), "not a readable sweep manifest"),
    Case("sweep --status", "hostile", ("sweep", "--status", "{W}/escaping-manifest"), "not a readable sweep manifest"),
    Case("sweep --status", "unwritable", ("sweep", "--status", "{W}/a-file"), "holds no sweep manifests"),
    # tradeoff sweep --executor
    Case("sweep --executor", "wrong type", ("sweep", "table1a", "--executor", "cloud", "--out", "{OUT}"),
         "invalid choice: 'cloud'"),
    Case("sweep --executor", "missing", ("sweep", "table1a", "--executor", "slurm", "--out", "{OUT}"),
         "--slurm-partition"),
    Case("sweep --executor", "out of range", ("sweep", "table1a", "--executor", "local", "--slurm-time", "0",
                                              "--out", "{OUT}"), "must be positive"),
    Case("sweep --executor", "out of range", ("sweep", "table1a", "--executor", "local", "--nodes-per-cell", "2",
                                              "--out", "{OUT}"), "--nodes-per-cell must be 1"),
    Case("sweep --executor", "wrong type", ("sweep", "table1a", "--executor", "local", "--gpus-per-cell", "one",
                                            "--out", "{OUT}"), "invalid int value"),
    Case("sweep --executor", "unwritable", ("sweep", "table1a", "--preset", "smoke", "--datasets", "digits",
                                            "--executor", "local", "--out", "{W}/a-file"), "is a file"),
    # tradeoff report
    Case("report", "missing", ("report", "{W}/no-such-folder"), "no-such-folder is not a folder"),
    Case("report", "empty", ("report", "{W}/empty-folder"), "manifest"),
    Case("report", "malformed", ("report", "{W}/garbage-manifest"), "not a readable sweep manifest"),
    Case("report", "truncated", ("report", "{W}/truncated-manifest"), "not a readable sweep manifest"),
    Case("report", "wrong type", ("report", "{W}/list-manifest"), "not a readable sweep manifest"),
    Case("report", "hostile", ("report", "{W}/escaping-manifest"), "not a readable sweep manifest"),
    Case("report", "unwritable", ("report", "{W}/sweep", "--out", "{W}/a-file"), "is a file"),
    # tradeoff defend
    Case("defend", "missing", ("defend", "{W}/no-such-folder", "--defense", "spectral"), "not a finished run folder"),
    Case("defend", "missing", ("defend", "{W}/finished/tiny"), "--defense"),
    Case("defend", "empty", ("defend", "{W}/empty-folder", "--defense", "spectral"), "not a finished run folder"),
    Case("defend", "wrong type", ("defend", "{W}/finished/tiny", "--defense", "bogus"), "bogus"),
    Case("defend", "wrong type", ("defend", "{W}/finished/tiny", "--defense", "spectral", "--option", "retrain=maybe"),
         "retrain"),
    Case("defend", "out of range", ("defend", "{W}/finished/tiny", "--defense", "spectral", "--option",
                                    "removal_factor=-1"), "removal_factor"),
    Case("defend", "malformed", ("defend", "{W}/finished/tiny", "--defense", "spectral", "--option", "retrain"),
         "key=value"),
    Case("defend", "malformed", ("defend", "{W}/garbage-metrics/tiny", "--defense", "spectral"), "unreadable"),
    Case("defend", "truncated", ("defend", "{W}/truncated-model/tiny", "--defense", "spectral"), "model.safetensors"),
    Case("defend", "hostile", ("defend", "{W}/pickle-model/tiny", "--defense", "spectral"), "model.safetensors"),
    Case("defend", "wrong type", ("defend", "{W}/unfinished/tiny", "--defense", "spectral"), "unfinished run"),
    # tradeoff list
    Case("list", "wrong type", ("list", "bogus-kind"), "bogus-kind"),
    # tradeoff quickstart
    Case("quickstart", "wrong type", ("quickstart", "--seeds", "two", "--out", "{OUT}"), "invalid int value"),
    Case("quickstart", "out of range", ("quickstart", "--seeds", "0", "--out", "{OUT}"), "--seeds"),
    Case("quickstart", "unwritable", ("quickstart", "--out", "{W}/a-file"), "is a file"),
]


def finished_folders(root: Path) -> set:
    return {p.parent for p in root.rglob("metrics.json") if is_finished(p.parent)}


def tiny_run(root: Path, spec: Path, *extra: str) -> Path:
    assert main(["run", str(spec), "--out", str(root), "--quiet", *SETS, *extra]) == 0
    return root / "tiny"


def unfinished_copy(world: Path, finished: Path, name: str) -> Path:
    """A copy of the finished run folder, marked unfinished again (as a killed run leaves it)."""
    run = world / name / "tiny"
    shutil.copytree(finished, run)
    (run / UNFINISHED).write_text(json.dumps({"stage": "training", "host": "elsewhere", "pid": 1}) + "\n")
    (run / "snapshots").mkdir()
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("world")
    (w / "spec.yaml").write_text("name: tiny\n")
    (w / "empty.yaml").write_text("")
    (w / "list.yaml").write_text("- name: tiny\n")
    (w / "malformed.yaml").write_text("train: {epochs: [1,\n")
    (w / "python-tag.yaml").write_text(PYTHON_TAG)
    (w / "alias-bomb.yaml").write_text(ALIAS_BOMB)
    (w / "a-file").write_text("not a folder\n")
    (w / "empty-folder").mkdir()
    save_file({"w": torch.zeros(64, 64)}, str(w / "whole.safetensors"))
    data = (w / "whole.safetensors").read_bytes()
    (w / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    torch.save({"w": torch.zeros(2)}, w / "pickle.pt", _use_new_zipfile_serialization=False)

    finished = tiny_run(w / "finished", w / "spec.yaml")
    bad_spec = unfinished_copy(w, finished, "bad-spec-folder")
    (bad_spec / "spec.yaml").write_text("train: {epochs: [1,\n")
    truncated = unfinished_copy(w, finished, "truncated-snapshot")
    (truncated / "snapshots" / "step-000000001.safetensors").write_bytes(data[: len(data) // 3])
    pickled = unfinished_copy(w, finished, "pickle-snapshot")
    shutil.copy(w / "pickle.pt", pickled / "snapshots" / "step-000000001.safetensors")
    unfinished_copy(w, finished, "other-spec")
    unfinished_copy(w, finished, "unfinished")
    for name, damage in (("garbage-metrics", b"{not json"), ("truncated-model", None), ("pickle-model", "pickle")):
        run = w / name / "tiny"
        shutil.copytree(finished, run)
        if damage == "pickle":
            shutil.copy(w / "pickle.pt", run / "model.safetensors")
        elif damage is None:
            model = (run / "model.safetensors").read_bytes()
            (run / "model.safetensors").write_bytes(model[: len(model) // 2])
        else:
            (run / "metrics.json").write_bytes(damage)

    fake_sweep(w / "sweep")
    manifest = next((w / "sweep").glob("sweep-*.json"))
    for name, text in (("garbage-manifest", "\x00\x01 not json"), ("truncated-manifest", manifest.read_text()[:200]),
                       ("list-manifest", "[1, 2, 3]\n"),
                       ("escaping-manifest", escaping(json.loads(manifest.read_text())))):
        (w / name).mkdir()
        (w / name / manifest.name).write_text(text)
    return w


def escaping(manifest: dict) -> str:
    """A manifest whose first cell names a run folder outside the sweep folder."""
    manifest["cells"][0]["run"] = "../../../etc"
    return json.dumps(manifest)


RESULTS: list = []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_sentence(case: Case, world: Path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a door that writes to its default folder writes here
    out = tmp_path / "out"
    argv = [a.replace("{W}", str(world)).replace("{OUT}", str(out)) for a in case.argv]
    before = finished_folders(world)
    try:
        code = main(argv + (["--quiet"] if argv[0] in ("run", "defend", "quickstart") else []))
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    # the sentence; argparse's usage lines and a run's own log lines ("[tiny] warning: ...") aside
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("usage:", " ", "["))]
    RESULTS.append((case, code == case.code and "Traceback" not in err and len(lines) == 1 and case.says in err))
    assert "Traceback" not in err and "Warning" not in err, err
    assert code == case.code, err
    assert len(lines) == 1 and "error:" in lines[0], err
    assert case.says in lines[0], err
    assert finished_folders(world) == before
    assert not finished_folders(tmp_path), "no finished-looking folder is left"


def test_the_matrix_covers_every_door_and_class():
    doors = {c.door for c in CASES}
    assert doors == {"run", "run --resume", "sweep", "sweep --status", "sweep --executor", "report", "defend", "list",
                     "quickstart"}
    assert {c.failure for c in CASES} == set(CLASSES)
    print("\n" + matrix_text())


def matrix_text() -> str:
    """door x failure class: the number of cases (and how many failed, when some did)."""
    counts = Counter((c.door, c.failure) for c in CASES)
    failed = Counter((c.door, c.failure) for c, ok in RESULTS if not ok)
    doors = list(dict.fromkeys(c.door for c in CASES))
    width = max(len(d) for d in doors)
    head = f"{'door':{width}s} | " + " | ".join(CLASSES) + " | total"
    rows = [head, "-" * len(head)]
    for d in doors:
        cells = []
        for f in CLASSES:
            n = counts[(d, f)]
            cells.append(f"{(str(n) + (f' ({failed[(d, f)]} failed)' if failed[(d, f)] else '')) if n else '-':^{len(f)}s}")
        rows.append(f"{d:{width}s} | " + " | ".join(cells) + f" | {sum(counts[(d, f)] for f in CLASSES)}")
    totals = [f"{sum(counts[(d, f)] for d in doors):^{len(f)}d}" for f in CLASSES]
    rows.append(f"{'total':{width}s} | " + " | ".join(totals) + f" | {len(CASES)}")
    return "\n".join(rows)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(matrix_text())
