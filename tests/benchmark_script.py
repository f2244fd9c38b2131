"""A script of benchmarks/ loaded as a module, for the tests of its functions."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    """benchmarks/``name``.py as the module ``name`` (registered in sys.modules: its dataclasses
    look their module up). benchmarks/ goes on the import path, as it is for a script run there,
    for the modules the scripts share (outputs.py)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
