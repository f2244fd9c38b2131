"""Every table's expansion as plain data: each cell's run name, setting, twin, metrics and spec
digest under every preset, on real and on synthetic data. ``python tests/golden_tables.py``
rewrites ``tests/data/table_expansions.json``, the record a refactoring must leave unchanged
(``test_table_expansions_are_unchanged``); regenerate it only for a change of a table or a default
made on purpose, and say so in the commit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tradeoff.sweeps import grids
from tradeoff.sweeps.synthetic import SyntheticData

GOLDEN = Path(__file__).parent / "data" / "table_expansions.json"
DATA_ROOT = "/data-root"  # fixed, so that the digests do not depend on where the tests run
SYNTHETIC_ROOT = Path("/synthetic-root")


def expansions() -> dict:
    """{"TABLE PRESET [synthetic]": {"cells": [[run name or error, digest of the rest], ...],
    "skipped": {...}}} for every table and preset (the run name holds the spec's digest)."""
    out = {}
    for table_id in grids.table_ids():
        table = grids.load_table(table_id)
        for preset in grids.preset_names():
            for synthetic in (None, SyntheticData(SYNTHETIC_ROOT)):
                grid = grids.expand(table, preset, seeds=1, data_root=None if synthetic else DATA_ROOT,
                                    synthetic=synthetic)
                key = f"{table_id} {preset}" + (" synthetic" if synthetic else "")
                out[key] = {"skipped": grid.skipped, "cells": [_cell(c) for c in grid.cells]}
    return out


def _cell(cell: grids.GridCell) -> list:
    rest = {"setting": cell.setting, "twin": cell.twin, "metrics": [m.to_dict() for m in cell.metrics],
            "cuts": cell.synthetic_cuts, "records": cell.records}
    text = json.dumps(rest, sort_keys=True, default=str)
    return [cell.run_name if cell.digest else cell.error, hashlib.sha256(text.encode()).hexdigest()[:16]]


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(expansions(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
