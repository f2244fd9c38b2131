"""ARCHITECTURE.md's worked examples for a dataset and for a table with axes, run as they are
written there (the code and YAML blocks are read from the file), and the one-sentence errors of
bad table files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.data import DATASETS, load_data
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.sweeps import grids
from tradeoff.sweeps.synthetic import SyntheticData

ROOT = Path(__file__).resolve().parents[1]


def _block(title: str, language: str) -> str:
    """The first ``language`` code block under ARCHITECTURE.md's heading ``title``."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def npz_digits():
    exec(compile(_block("Worked example: a new dataset", "python"), "ARCHITECTURE.md", "exec"), {})
    try:
        yield DATASETS.entry("npz-digits")
    finally:
        DATASETS.unregister("npz-digits")


def test_the_dataset_example_loads_its_files_and_rehearses(npz_digits, tmp_path, one_thread):
    """The example's loader reads back exactly the pixels its writer stored (compared with numpy's
    own reading of the .npz files); the protocol fills the spec; a synthetic grid of table1a on it
    carries the rehearsal's cuts and names its files; one cell runs end to end on them."""
    files = npz_digits.synthetic.files
    synthetic = SyntheticData(tmp_path / "synthetic")
    files.write(synthetic.root / files.folder, **files.shape)
    spec = resolve(load_spec(None, {"data": {"dataset": "npz-digits", "root": str(synthetic.root)}}))
    assert spec.model.name == "small-cnn" and spec.adversarial_defense.attack.eps == pytest.approx(0.3)
    bundle = load_data(spec.data)
    with np.load(synthetic.root / "npz-digits" / "train.npz") as f:
        assert torch.equal(bundle.train.x, torch.from_numpy(f["images"]).float().unsqueeze(1) / 255)
        assert torch.equal(bundle.train.y, torch.from_numpy(f["labels"]).long())
    assert len(bundle.test) == 50 and bundle.shape == (1, 28, 28)

    grid = grids.expand(grids.load_table("table1a"), "smoke", seeds=1, datasets=["npz-digits"],
                        synthetic=synthetic)
    cells = [c for c in grid.cells if c.spec is not None]
    assert cells and not grid.skipped
    record = cells[0].records["synthetic.json"]
    assert record["data"]["npz-digits"] == "100 training / 50 test images, 28x28x1 (.npz)"
    assert record["cuts"]["train.steps"] == {"from": "1 epochs", "to": 3}
    assert all(c.spec.data.root == str(synthetic.root) and c.spec.synthetic for c in cells)
    run = run_experiment(cells[0].spec, show_progress=False)
    assert 0.0 <= run.metrics["accuracy"] <= 1.0 and run.metrics["synthetic"] is True


def _explicit_size_rate() -> list[dict]:
    """The example's 8 cells written out one by one, as a ``cells:`` list would hold them."""
    eps = {"mnist": 0.2, "cifar10": 0.0313725}
    cells = []
    for size in (2, 3):
        for rate_text, rate_slug, rate in (("5%", "rate5", 0.5), ("1%", "rate1", 0.1)):
            where = f"Trigger Size={size} x {size}; Poisoned Data={rate_text}"
            standard = f"Adv. Defense=None; {where}"
            shared = {"trigger": {"size": size}, "poison": {"fraction_of_target_class": rate}}
            cells.append({"setting": standard, "slug": f"size{size}-{rate_slug}-standard",
                          "metrics": {"Accuracy": "accuracy", "Backdoor Success rate": "backdoor_success_rate"},
                          "set": {**shared, "adversarial_defense": {"objective": "none"},
                                  "eval": {"adversarial": False}}})
            cells.append({"setting": f"Adv. Defense=Adv. Training; {where}", "twin": standard,
                          "slug": f"size{size}-{rate_slug}-adv-training",
                          "set": {**shared, "adversarial_defense": {"objective": "pgd"}},
                          "by_dataset": {ds: {"adversarial_defense": {"attack": {"eps": e}},
                                              "eval": {"attack": {"eps": e}}} for ds, e in eps.items()}})
    return cells


def test_the_table_example_is_its_cells_written_out(tmp_path):
    """The example's axes expand to the same cells as the table written out cell by cell (built
    by hand in this test), in the same order; every cell's spec resolves under the smoke preset,
    with the per-dataset eps in training and evaluation and each twin a cell of the grid."""
    path = tmp_path / "size-rate.yaml"
    path.write_text(_block("Worked example: a table with axes", "yaml"))
    table = grids.load_table(str(path))
    raw = grids.read_yaml(path, "table file")
    written_out = {k: v for k, v in raw.items() if k not in ("cell", "axes")} | {"cells": _explicit_size_rate()}
    assert table.cells == grids.parse_table(written_out, str(path)).cells
    assert len(table.cells) == 8
    grid = grids.expand(table, "smoke", seeds=1)
    assert all(c.spec is not None for c in grid.cells) and len(grid.cells) == 16
    settings = {(c.dataset, c.setting) for c in grid.cells}
    for c in grid.cells:
        if c.twin is not None:
            assert (c.dataset, c.twin) in settings
            want = 0.2 if c.dataset == "mnist" else 0.0313725
            assert c.spec.adversarial_defense.attack.eps == c.spec.eval.attack.eps == pytest.approx(want)
        else:
            assert c.spec.adversarial_defense.objective == "none" and len(c.metrics) == 2


def test_phase_is_four_sizes_by_a_standard_column_and_four_eps():
    """The phase table's 20 cells: for each sticker size the standard cell, then the 4 eps of the
    dataset's literals (0.25x .. 1.33x the protocol eps), each the twin of its size's standard cell."""
    table = grids.load_table("phase")
    assert len(table.cells) == 20
    for i, size in enumerate((1, 2, 3, 4)):
        standard, *trained = table.cells[5 * i:5 * i + 5]
        assert standard.slug == f"size{size}-standard" and len(standard.metrics) == 2
        assert standard.overrides["trigger"] == {"size": size}
        for cell, mnist_eps in zip(trained, (0.075, 0.15, 0.3, 0.4)):
            assert cell.twin == standard.setting and cell.metrics is None
            assert cell.by_dataset["mnist"]["eval"]["attack"]["eps"] == mnist_eps


def test_beyond_purification_cells_of_one_victim_share_its_run_and_read_their_own_defence():
    """Every defence of a victim is one cell with the same spec (so the sweep runs it once, all
    defences on one model), and each cell's metric keys are its defence's prefix (``{defense}``
    replaced by the value's literal): 132 cells, 12 runs a seed (3 victims without poison)."""
    grid = grids.expand(grids.load_table("beyond-purification"), "smoke", seeds=1, datasets=["mnist"])
    assert len(grid.cells) == 132 and len({c.digest for c in grid.cells}) == 12
    by_victim = {}
    for c in grid.cells:
        by_victim.setdefault(c.setting.split("; ", 1)[1], set()).add(c.digest)
    assert len(by_victim) == 12 and all(len(d) == 1 for d in by_victim.values())
    clean = next(c for c in grid.cells if c.slug == "fine-pruning-clean-trades")
    assert clean.spec.poison.method == "none" and clean.twin.endswith("Adv. Defense=None (Std. Training)")
    assert {m.paper: m.keys for m in clean.metrics}["Accuracy lost"] == ["fine_pruning_accuracy_lost"]
    anp = next(c for c in grid.cells if c.slug == "anp-blend-pgd")
    keys = {m.paper: m.keys for m in anp.metrics}
    assert keys["DER"] == ["anp_der"] and keys["Backdoor Success rate"] == ["backdoor_success_rate"]
    assert keys["Defence seconds"] == ["anp_seconds"]
    strip = next(c for c in grid.cells if c.slug == "strip-sticker-standard")
    assert {m.paper: m.keys for m in strip.metrics}["STRIP FAR @ 1% FRR"] == ["strip_far_1pct"]
    names = [e.name for e in anp.spec.backdoor_defenses]
    assert len(names) == 11 and {"anp", "strip", "spectral", "i-bau"} <= set(names)


BAD = [
    ({"axes": {"rate": {"values": [{"value": "5%", "literl": 0.5}]}}},
     "bad.yaml, axes, axis 'rate', value: unknown key(s) 'literl'"),
    ({"axes": {"rate": {"set": {"poison": {"fraction_of_target_class": "$rate"}}, "values": [{"value": "5%"}]}}},
     "'$rate' needs a 'literal' in the value of axis 'rate' ('5%')"),
    ({"axes": {"d": {"values": [{"value": "Adv", "twin": "Std"}]}}},
     "axis 'd': value 'Adv' names a twin 'Std' that is not a value of this axis"),
    ({"axes": {"d": {"values": [{"value": "Std"}]}}, "cells": []}, "lists 'cells' or declares 'axes', not both"),
    ({"cell": {"setting": "X={x}"}, "axes": {"d": {"values": [{"value": "Std"}]}}},
     "'cell.setting' 'X={x}' names no axis"),
    ({"axes": {"d": {"values": [{"value": "Std", "literal": {"minst": 1}}]}}},
     "value 'Std': its literal maps datasets to values, and 'minst' is not a dataset"),
    ({"cell": {"setting": "x"}}, "'cell' is the template of 'axes', and this table has no 'axes'"),
    ({"cell": {"metrics": {"DER": "{d}_der"}}, "axes": {"d": {"values": [{"value": "Std"}]}}},
     "metric key '{d}_der' names no axis with a literal"),
]


@pytest.mark.parametrize("bad, sentence", BAD)
def test_a_bad_table_file_is_one_sentence_naming_the_file_and_the_key(bad, sentence):
    raw = {"id": "bad", "table": "Bad", "datasets": ["mnist"], "metrics": {"Accuracy": "accuracy"}, **bad}
    with pytest.raises(TradeoffError) as error:
        grids.parse_table(raw, "bad.yaml")
    message = str(error.value)
    assert sentence in message and message.startswith("bad.yaml") and "\n" not in message
