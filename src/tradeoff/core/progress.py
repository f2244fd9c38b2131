"""Progress bars that stay quiet when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0):
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))
