"""The folders are the layers (ARCHITECTURE.md): every module of ``src/tradeoff`` sits in one
layer's package, and its imports of the project go to its own layer or below, never above. Read
from the source with ``ast`` (no import is executed)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tradeoff"

LAYERS = [  # lowest first; a package imports its own layer and the ones before it
    {"core"},
    {"data", "triggers", "poisoning", "models", "adversarial_defenses", "attacks"},
    {"records", "evaluation", "training", "backdoor_defenses"},
    {"config"},
    {"pipeline"},
    {"sweeps", "report"},
    {"cli", "__init__", "__main__"},
]
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _top(dotted: str) -> str:
    return dotted.split(".")[1] if "." in dotted else "__init__"


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tradeoff":
            if node.module == "tradeoff":  # a package by name, or the API of tradeoff/__init__
                yield from (f"tradeoff.{alias.name}" if alias.name in LAYER_OF else "tradeoff" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "tradeoff")


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, path.relative_to(SRC).parts


def test_every_module_sits_in_a_layer_package():
    """No flat module beside the packages but the entry points."""
    stray = ["/".join(parts) for _, parts in _modules() if parts[0].removesuffix(".py") not in LAYER_OF]
    assert not stray


def test_imports_never_go_up_a_layer():
    upward = []
    for path, parts in _modules():
        own = LAYER_OF[parts[0].removesuffix(".py")]
        for target in _imports(ast.parse(path.read_text())):
            if target != "tradeoff" and LAYER_OF[_top(target)] > own:
                upward.append(f"{'/'.join(parts)} imports {target}")
    assert not upward
