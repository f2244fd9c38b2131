"""The structure users build on: `tradeoff list`, components that declare their options and
register, layers that switch a section's kind, and run folders of earlier versions refused."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tradeoff.cli import main
from tradeoff.config.build import load_spec, merge, section
from tradeoff.core.registry import Registry
from tradeoff.core.spec import option
from tradeoff.sweeps import grids
from tradeoff.sweeps.catalog import catalog
from tradeoff.sweeps.sweep import write_manifest
from tradeoff.triggers import TRIGGERS, PatchTrigger, PlacementOptions, make_trigger

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["datasets", "triggers", "poisoning", "models", "objectives", "attacks", "backdoor-defenses",
         "tables", "presets"]


def test_list_shows_every_kind_with_options_and_defaults(capsys):
    """Every component kind the issue names is listed; options print with their defaults."""
    assert set(KINDS) <= set(catalog())
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind}:" in out
    assert main(["list", "poisoning"]) == 0
    out = capsys.readouterr().out
    assert "clean-label" in out and "fraction_of_target_class = 0.5" in out and "dirty-label" in out
    assert main(["list", "backdoor-defenses"]) == 0
    assert "holdout_fraction = 0.5" in capsys.readouterr().out
    assert main(["list", "tables"]) == 0
    assert "table1a" in capsys.readouterr().out
    assert main(["list", "trigers"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown kind 'trigers'" in err


def test_a_layer_that_switches_kind_drops_the_replaced_kinds_options():
    """sticker options + {kind: watermark} -> watermark with its own defaults, no sticker keys;
    the same layer without a kind change keeps them."""
    base = {"trigger": {"kind": "sticker", "size": 5, "pattern": "x"}}
    assert merge(base, {"trigger": {"kind": "watermark", "amplitude": 0.1}})["trigger"] == {
        "kind": "watermark", "amplitude": 0.1}
    assert merge(base, {"trigger": {"size": 2}})["trigger"] == {"kind": "sticker", "size": 2, "pattern": "x"}
    spec = load_spec(None, ["trigger.kind=watermark"], base=base)
    assert spec.trigger.kind == "watermark" and spec.trigger.options.amplitude == pytest.approx(64 / 255)
    assert "size" not in spec.to_dict()["trigger"]


def test_spec_dict_keeps_options_flat_and_round_trips():
    """to_dict writes a kinded section's options beside its kind, as YAML does; it reads back equal."""
    spec = load_spec(None, {"poison": {"method": "dirty-label", "fraction_of_training_set": 0.1}})
    assert spec.to_dict()["poison"] == {"method": "dirty-label", "target": 7, "fraction_of_training_set": 0.1,
                                        "target_mode": "all-to-one"}
    assert load_spec(None, spec.to_dict()) == spec


@dataclass
class DotOptions(PlacementOptions):
    value: float = option(0.5, doc="grey level of the dot", min=0, max=1)


class Dot(PatchTrigger):
    """A grey dot: the worked example of ARCHITECTURE.md (a new trigger is one class and its options)."""

    def build(self, shape, corner):
        rows, cols = self.patch(shape, corner)
        mask, fill = torch.zeros(shape), torch.zeros(shape)
        mask[:, rows, cols] = 1
        fill[:, rows, cols] = self.options.value
        return mask, fill, torch.zeros(shape)


def test_a_new_trigger_is_one_class_and_one_registration(capsys):
    """Registering a trigger makes it valid in specs, checked against its options, and listed."""
    TRIGGERS.register("test-dot", options=DotOptions)(Dot)
    try:
        spec = load_spec(None, {"trigger": {"kind": "test-dot", "size": 2, "value": 0.25}})
        out = make_trigger(spec.trigger, (1, 6, 6)).apply(torch.zeros(1, 1, 6, 6))
        expected = torch.zeros(1, 1, 6, 6)
        expected[:, :, 4:, 4:] = 0.25
        assert torch.equal(out, expected)
        with pytest.raises(Exception, match="trigger.value must be in \\[0, 1\\]"):
            section("trigger", kind="test-dot", value=2.0)
        assert main(["list", "triggers"]) == 0
        assert "test-dot" in capsys.readouterr().out
    finally:
        TRIGGERS.unregister("test-dot")


def test_registries_refuse_duplicates():
    r = Registry("test thing", listed=False)
    r.register("a")(object())
    with pytest.raises(ValueError, match="registered twice"):
        r.register("a")(object())


def _old_run_folder(out: Path) -> Path:
    run = out / "old-run"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text("name: old-run\npoison: {attack: clean-label}\ndefense: {adversarial: pgd}\n")
    (run / "metrics.json").write_text(json.dumps({"attack": "clean-label", "defense": "pgd", "accuracy": 0.9}))
    for name in ("model.safetensors", "poison.safetensors"):
        (run / name).write_bytes(b"")
    return run


def test_run_folders_of_earlier_versions_are_refused_in_one_sentence(tmp_path, capsys):
    """defend, report and a resumed sweep each refuse a folder written before the renames with
    one sentence naming the renamed key (the documented choice: no second schema is read)."""
    run = _old_run_folder(tmp_path / "out")
    write_manifest(tmp_path / "out", grids.expand(grids.load_table("table1a"), "smoke", 1, ["mnist"]), {}, {})
    commands = (["defend", str(run), "--defense", "spectral"], ["report", str(tmp_path / "out")],
                ["sweep", "table1a", "--preset", "smoke", "--datasets", "digits", "--out", str(tmp_path / "out")])
    for argv in commands:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "earlier version of tradeoff" in err and "is now" in err, argv


def test_imports_run_one_way():
    """No import cycle and no function-local import of the package's own modules (the project's
    import checker, when it is beside the checkout)."""
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.is_file():
        pytest.skip("the import checker is not beside this checkout")
    result = subprocess.run([sys.executable, str(tool), str(ROOT / "src" / "tradeoff")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "0 cycle(s); 0 function-local import(s)" in result.stdout
