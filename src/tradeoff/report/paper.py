"""The paper's numbers: the rows of ``paper_tables.csv`` (shipped with the package) and the
splitting of its setting labels into (key, value) parts."""

from __future__ import annotations

import csv
import io
import re
from importlib import resources
from pathlib import Path
from typing import Optional

_EXTRA_METRIC = re.compile(r"^(Succ\. Rate w/o? Defense)=([\d.]+)%$")


def split_setting(setting: str) -> list[tuple[str, str]]:
    """``"Adv. Defense=None; Trigger Size=2 x 2"`` -> [("Adv. Defense", "None"), ("Trigger Size", "2 x 2")]."""
    parts = []
    for part in setting.split(";"):
        key, _, value = part.strip().partition("=")
        parts.append((key.strip(), value.strip()))
    return parts


def paper_values(path: Optional[Path] = None) -> list[dict]:
    """The rows of ``paper_tables.csv`` (table, dataset, setting, metric, value), in order. Settings
    that carry numbers of their own (Supplement 5's "Succ. Rate w/ Defense=98.9%") are split into
    the setting proper and extra metric rows."""
    if path is None:
        text = (resources.files("tradeoff") / "resources" / "paper_tables.csv").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    rows, seen = [], set()
    for r in csv.DictReader(io.StringIO(text)):
        kept, extras = [], []
        for key, value in split_setting(r["setting"]):
            m = _EXTRA_METRIC.match(f"{key}={value}")
            if m:
                extras.append((m.group(1), float(m.group(2))))
            else:
                kept.append(f"{key}={value}")
        setting = "; ".join(kept)
        for metric, value in [(r["metric"], float(r["value"]))] + extras:
            key = (r["table"], r["dataset"], setting, metric)
            if key not in seen:
                seen.add(key)
                rows.append({"table": r["table"], "dataset": r["dataset"], "setting": setting,
                             "metric": metric, "value": value})
    return rows
