"""What the benchmark scripts write beside their numbers: the commit they ran from, and a markdown
table printed and, when asked, saved."""

from __future__ import annotations

import subprocess
from pathlib import Path


def head_commit() -> str:
    """The commit of the checkout these scripts are in ("unknown" outside a git checkout)."""
    out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def emit(text: str, markdown: Path | None) -> None:
    """Print ``text``; also write it to ``markdown`` (its folder made) when one is given."""
    print(text)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(text + "\n")
