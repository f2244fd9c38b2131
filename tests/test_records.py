"""The run record (``records/record.py``) and the sweep manifest (``records/manifest.py``): files
written by the version before these types read back and write out byte for byte, the report of
such a folder is what that version reported, a failed backdoor defence whose metric prefix holds
an underscore is found, and a manifest of another shape is one sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tradeoff.cli import main
from tradeoff.core.errors import TradeoffError
from tradeoff.records.manifest import Manifest, ManifestCell, ManifestMetric, read_manifest, read_manifests
from tradeoff.records.record import BACKDOOR_SUCCESS, RunRecord, error_key, read_record
from tradeoff.report.collect import FinishedRun, collect

# A sweep of a three-cell digits table (tests/data/records-v1/table.yaml) at the smoke preset, run
# by the code before these types (its README says how), with activation clustering made to fail.
V1 = Path(__file__).parent / "data" / "records-v1"
MANIFEST = "sweep-records-v1-smoke.json"


@pytest.fixture
def v1_folder(tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(V1 / "sweep", out)
    return out


def _run_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/metrics.json"))


def test_records_of_the_earlier_version_read_and_write_back_byte_for_byte(v1_folder):
    """Every metrics.json the earlier version wrote reads into a RunRecord whose file text is the
    original's, key order included (summary.csv's columns follow it); its flags and digest are the
    file's values, and the failed defence's sentence is found under its prefix."""
    runs = _run_folders(v1_folder)
    assert len(runs) == 3
    for run in runs:
        text = (run / "metrics.json").read_text()
        record = read_record(run)
        assert record.to_json() == text
        raw = json.loads(text)
        assert (record.collapsed, record.synthetic, record.spec_digest) == (raw["collapsed"], raw["synthetic"],
                                                                             raw["spec_digest"])
        assert record.get(BACKDOOR_SUCCESS) == raw["backdoor_success_rate"]
        assert record.defense_error("clustering") == raw["clustering_error"]
        assert record.defense_errors(["clustering_detection_rate"]) == [raw["clustering_error"]]
        assert record.number("spectral_textbook_detection_rate") == raw["spectral_textbook_detection_rate"]


def test_a_manifest_of_the_earlier_version_reads_and_writes_back_byte_for_byte(v1_folder, tmp_path):
    """The manifest the earlier version wrote reads into a Manifest (its cells, metrics, skipped
    datasets and the invalid cell's error as typed fields) and writes out as the same bytes."""
    path = v1_folder / MANIFEST
    manifest = read_manifest(path)
    assert manifest.table == "records-v1" and manifest.preset == "smoke"
    assert [c.slug for c in manifest.cells] == [c["slug"] for c in json.loads(path.read_text())["cells"]]
    bogus = [c for c in manifest.cells if c.digest is None]
    assert {c.dataset for c in bogus} == {"digits", "mnist"}
    assert all("no-such-defence" in c.error and c.run is None for c in bogus)
    assert all(c.skipped.startswith("MNIST not found") for c in manifest.cells if c.dataset == "mnist")
    assert "imagenet" in manifest.skipped and "mnist" in manifest.skipped
    assert all(isinstance(m, ManifestMetric) for c in manifest.cells for m in c.metrics)
    copy = tmp_path / "copy.json"
    manifest.write(copy)
    assert copy.read_text() == path.read_text()
    assert read_manifests(v1_folder) == [manifest]


def test_the_report_of_an_earlier_folder_is_what_the_earlier_version_reported(v1_folder):
    """`tradeoff report` on the earlier version's folder writes the report.md and report.csv that
    version wrote (tests/data/records-v1/report.md, .csv): the same cells, values, notes and costs."""
    assert main(["report", str(v1_folder)]) == 0
    for name in ("report.md", "report.csv"):
        assert (v1_folder / name).read_text() == (V1 / name).read_text(), name


def test_a_run_record_round_trips_and_merges_in_place():
    """to_json/from_dict keep every key and its order; a merge keeps existing keys where they were,
    appends new ones, and drops the named ones (a superseded defence error)."""
    values = {"dataset": "mnist", "accuracy": 0.9, "collapsed": False, "collapse_reason": "", "spec_digest": "abc",
              "synthetic": True, "spectral_error": "could not run."}
    record = RunRecord.from_dict(json.loads(RunRecord(values).to_json()))
    assert list(record.values.items()) == list(values.items())
    merged = record.merged({"accuracy": 0.8, "spectral_removed": 3}, drop=[error_key("spectral")])
    assert list(merged.values) == ["dataset", "accuracy", "collapsed", "collapse_reason", "spec_digest", "synthetic",
                                   "spectral_removed"]
    assert merged.get("accuracy") == 0.8 and record.get("accuracy") == 0.9
    assert record.synthetic and not record.collapsed and record.spec_digest == "abc"
    record.add_defense_outcome({"clustering_removed": 1}, 1.234)
    record.add_defense_outcome({"cleanse_error": "no."}, 2.0)
    assert record.get("backdoor_defense_seconds") == 3.23 and list(record.values)[-3:] == [
        "backdoor_defense_seconds", "clustering_removed", "cleanse_error"]


def test_the_error_of_a_defence_whose_prefix_holds_an_underscore_is_found():
    """A defence with metric prefix ``activation_clustering`` records ``activation_clustering_error``;
    the report finds it for ``activation_clustering_removed_poison_rate`` (splitting the key at its
    first underscore looked for ``activation_error``), and a longer recorded prefix wins over a
    shorter one that also starts the key."""
    record = RunRecord({"activation_clustering_error": "AC could not run.", "spectral_error": "SS could not run.",
                        "spectral_v2_error": "SS v2 could not run."})
    assert record.defense_errors(["activation_clustering_removed_poison_rate"]) == ["AC could not run."]
    assert record.defense_errors(["spectral_v2_detection_rate"]) == ["SS v2 could not run."]
    assert record.defense_errors(["spectral_detection_rate"]) == ["SS could not run."]
    assert record.defense_errors(["accuracy"]) == []

    metric = ManifestMetric("Removed (AC)", ["activation_clustering_removed_poison_rate"])
    cell = ManifestCell("mnist", "MNIST", "Adv. Defense=None", "standard", 0, digest="d1", run="run-d1",
                        metrics=[metric])
    manifest = Manifest("t", "Table 3 (a)(b)", "", "smoke", ["mnist"], cells=[cell])
    runs = {"d1": [FinishedRun("run-d1", RunRecord({"spec_digest": "d1", **record.values}))]}
    report = collect(manifest, runs, [])
    entry = report.entries[("MNIST", "Adv. Defense=None", "Removed (AC)")]
    assert entry.status == "defence failed" and not entry.values
    assert "MNIST, Adv. Defense=None, seed 0: AC could not run." in report.notes


def test_a_manifest_of_another_shape_is_one_sentence(tmp_path):
    """A sweep-*.json that is not JSON, or lacks a manifest's keys, is refused in one sentence."""
    (tmp_path / "sweep-a-smoke.json").write_text("{not json")
    with pytest.raises(TradeoffError, match="is not a readable sweep manifest"):
        read_manifests(tmp_path)
    (tmp_path / "sweep-a-smoke.json").write_text(json.dumps({"table": "a", "cells": [{"slug": "x"}]}))
    with pytest.raises(TradeoffError, match="is not a sweep manifest this version of tradeoff reads"):
        read_manifests(tmp_path)
