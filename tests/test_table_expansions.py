"""Refactoring guard: every table, under every preset, on real and on synthetic data, expands to
the cells, specs (their digests, in the run names) and synthetic cuts recorded in
``tests/data/table_expansions.json`` (written by ``tests/golden_tables.py`` before the change)."""

import json

from golden_tables import GOLDEN, expansions


def test_table_expansions_are_unchanged():
    recorded = json.loads(GOLDEN.read_text())
    now = expansions()
    assert sorted(now) == sorted(recorded)
    for key in recorded:
        assert now[key] == recorded[key], key
