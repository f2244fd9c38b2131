"""`tradeoff sweep --synthetic`: the paper preset's cells on generated data with the named budget
cuts. A sample (the cheapest cell of each table, and of each dataset's other code paths) runs end to end with the sweep's own
code path; only the sizes are tighter than a real synthetic sweep's (test-only cuts through the
same :class:`tradeoff.sweeps.synthetic.Cuts` layer)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

import tradeoff.sweeps.synthetic as synthetic
from tradeoff.cli import main
from tradeoff.config.build import differing_fields, spec_from_dict
from tradeoff.models import model_for
from tradeoff.report import write_report
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import sweep
from tradeoff.sweeps.synthetic import Cuts, SyntheticData

# Tighter than the sweep's cuts, for the test's time only: the same layer, smaller numbers.
TEST_CUTS = Cuts(
    fields={"default": {"train.steps": 1, "train.batch_size": 10, "data.test_subset": 10, "eval.batch_size": 10},
            "imagenet": {"train.steps": 1, "train.batch_size": 2, "data.test_subset": 2, "eval.batch_size": 2,
                         "train.precision": "fp32", "data.workers": 1, "data.image_size": 64}},
    options={"neural-cleanse": {"epochs": 1, "unlearn_epochs": 1, "reverse_images": 2, "batch_size": 2,
                                "unlearn_batch_size": 2}})


def small_data(root: Path) -> SyntheticData:
    return SyntheticData(root, shapes={"mnist": {"train": 60, "test": 30}, "cifar10": {"train": 60, "test": 30},
                                       "imagenet": {"train": 2, "test": 1, "sizes": (64, 96)}})


def _cost(cell) -> tuple:
    s = cell.spec
    return (len(s.backdoor_defenses), s.adversarial_defense.objective != "none", s.adversarial_defense.denoise,
            s.adversarial_defense.lipschitz > 0, s.model.width, s.eval.attack.steps)


# Beside each table's first dataset, the datasets' other code paths: CIFAR-10 and ImageNet
# training, and a backdoor defence on streamed ImageNet data.
OTHER_DATASETS = (("table1a", "cifar10"), ("table1a", "imagenet"), ("supp5b", "imagenet"))


def sample(data: SyntheticData) -> list[tuple[str, str, str]]:
    """(table, dataset, slug): the cheapest cell of every table on its first dataset, and of
    OTHER_DATASETS, at the paper preset."""
    picked = []
    for table in grids.table_ids():
        g = grids.expand(grids.load_table(table), "paper", seeds=1, synthetic=data)
        datasets = list(dict.fromkeys(c.dataset for c in g.cells))
        for ds in datasets[:1] + [d for t, d in OTHER_DATASETS if t == table]:
            cells = [c for c in g.cells if c.dataset == ds and c.spec is not None]
            picked.append((table, ds, min(cells, key=_cost).slug))
    return picked


def test_cut_names_every_change_and_the_flag_is_in_the_digest(tmp_path):
    """The paper preset's ImageNet cell: the stand-in checkpoint, fp16 -> fp32 and the budgets are
    named from -> to; the neural-cleanse budgets are cut inside the defence's entry; synthetic
    true changes the digest (false leaves it as without the field)."""
    data = SyntheticData(tmp_path / "synthetic-data")
    plain = grids.expand(grids.load_table("table3c"), "paper", seeds=1, datasets=["cifar10"]).cells[0]
    cell = grids.expand(grids.load_table("table3c"), "paper", seeds=1, datasets=["cifar10"], synthetic=data).cells[0]
    assert cell.spec.synthetic and not plain.spec.synthetic
    assert cell.digest == cell.spec.digest() != dataclasses.replace(cell.spec, synthetic=False).digest()
    cuts = cell.records["synthetic.json"]["cuts"]
    assert cuts["train.steps"] == {"from": 100000, "to": 3} and cuts["synthetic"] == {"from": False, "to": True}
    cleanse = next(i for i, e in enumerate(cell.spec.backdoor_defenses) if e.name == "neural-cleanse")
    assert cuts[f"backdoor_defenses[{cleanse}].epochs"] == {"from": 20, "to": 1}
    # every field the cut changed is named, and nothing else differs from the uncut cell
    differ = set(differing_fields(plain.spec.to_dict(), cell.spec.to_dict(), skip={"name", "data.root"}))
    assert differ - {"backdoor_defenses"} == {k for k in cuts if not k.startswith("backdoor_defenses[")}
    assert "backdoor_defenses" in differ

    imagenet = grids.expand(grids.load_table("table1a"), "paper", seeds=1, datasets=["imagenet"], synthetic=data)
    cuts = imagenet.cells[0].records["synthetic.json"]["cuts"]
    assert cuts["train.precision"] == {"from": "fp16", "to": "fp32"}
    assert cuts["model.checkpoint"]["to"] == str(data.weights_of("imagenet")) == imagenet.cells[0].spec.model.checkpoint
    assert cuts["train.steps"]["from"] == "90 epochs" and imagenet.cells[0].spec.data.options.workers == 1


def test_synthetic_sample_runs_every_table(tmp_path, monkeypatch, capsys, one_thread):
    """One cell per table (and of the other datasets' code paths) through `tradeoff sweep
    --synthetic`'s code path: every cell finishes (an ImageNet cell's backdoor defence on streamed
    data included), the flag is in
    every spec.yaml, metrics.json, summary.csv row and report
    table, each run folder's synthetic.json names its cuts, summary.csv has a row per cell the
    dry run lists, and the stand-in checkpoint is the ImageNet model's starting point."""
    monkeypatch.setattr(synthetic, "CUTS", TEST_CUTS)
    out = tmp_path / "out"
    data = small_data(out / synthetic.FOLDER)
    picked = sample(data)
    assert {t for t, _, _ in picked} == set(grids.table_ids())
    failed, listed = {}, set()
    for table, ds, slug in picked:
        result = sweep([table], "paper", out, seeds=1, datasets=[ds], only=[slug], synthetic=data, echo=lambda m: None)
        failed.update(result.failed)
        g = grids.expand(grids.load_table(table), "paper", seeds=1, datasets=[ds], only=[slug], synthetic=data)
        listed |= {c.digest for c in g.cells}
    assert not failed, failed
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["spec_digest"] for r in rows} == listed
    assert all(r["synthetic"] == "True" for r in rows)

    # the dry run lists the same cells (in-process CLI, same test cuts)
    dry = set()
    for table, ds, slug in picked:
        assert main(["sweep", table, "--preset", "paper", "--synthetic", "--dry-run", "--seeds", "1", "--out", str(out),
                     "--datasets", ds, "--cells", slug]) == 0
        dry |= {line.split()[4] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert dry == listed

    for row in rows:
        run = out / row["run"]
        spec = yaml.safe_load((run / "spec.yaml").read_text())
        assert spec["synthetic"] is True and json.loads((run / "metrics.json").read_text())["synthetic"] is True
        record = json.loads((run / "synthetic.json").read_text())
        assert record["synthetic"] is True and record["cuts"]["train.steps"]["to"] == 1
    imagenet = next(out / r["run"] for r in rows if r["dataset"] == "imagenet")
    record = json.loads((imagenet / "synthetic.json").read_text())
    assert {"train.precision", "model.checkpoint", "data.image_size"} <= set(record["cuts"])

    # the stand-in checkpoint is what the ImageNet model starts from (all but the 1000-class head)
    spec = spec_from_dict(yaml.safe_load((imagenet / "spec.yaml").read_text()))
    model = model_for(spec, (3, 64, 64), 10, torch.device("cpu"))
    state = load_file(spec.model.checkpoint)
    aliases = model.checkpoint_aliases
    own = model.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.2.bn3.running_var"):
        head, _, rest = key.partition(".")
        assert torch.equal(own[f"{aliases[head]}.{rest}"], state[key])
    assert state["fc.weight"].shape == (1000, 2048)

    write_report(out)
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert text.count("[SYNTHETIC DATA]") == len(grids.table_ids())
        assert text.count("SYNTHETIC DATA: these numbers come from generated data") == len(grids.table_ids())


def test_synthetic_refuses_a_data_root(tmp_path, capsys):
    assert main(["sweep", "table1a", "--preset", "paper", "--synthetic", "--dry-run", "--out", str(tmp_path),
                 "--data-root", str(tmp_path)]) == 2
    assert "--synthetic generates its own data" in capsys.readouterr().err
