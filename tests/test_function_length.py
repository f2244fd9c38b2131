"""Orchestrators read as one screen: no function in ``src/tradeoff`` is over 60 lines, measured
with ``ast`` from its ``def`` to its last line (decorators and docstring included)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tradeoff"
LIMIT = 60


def _lengths():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(SRC).as_posix()}:{node.name}", node.end_lineno - node.lineno + 1


def test_no_function_is_over_60_lines():
    long = {name: lines for name, lines in _lengths() if lines > LIMIT}
    assert not long
