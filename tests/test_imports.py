"""Arrows point one way: train, models, data and the runtime never import the layers above
them, and the runtime, copied into every exported script, imports what the script has."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "automodel"
LOWER = ["train.py", "crossval.py", "metrics.py", "hparams.py", "models", "data", "runtime"]
FORBIDDEN_ABOVE = {"optuna", "mlflow", "hydra", "omegaconf"}
FORBIDDEN_OURS = {
    "automodel.search",
    "automodel.study",
    "automodel.tracking",
    "automodel.export",
    "automodel.config",
    "automodel.spaces",
    "automodel.__main__",
    "automodel.status",
    "automodel.study_export",
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _files():
    for entry in LOWER:
        path = PKG / entry
        yield from (sorted(path.rglob("*.py")) if path.is_dir() else [path])


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(PKG)))
def test_lower_layers_import_nothing_from_above(path):
    names = _imports(path)
    assert not {n.split(".")[0] for n in names} & FORBIDDEN_ABOVE, names
    assert not names & FORBIDDEN_OURS, names


def test_only_spaces_calls_suggest():
    for path in PKG.rglob("*.py"):
        if path.name != "spaces.py":
            assert "suggest_" not in path.read_text(), path


def test_only_tracking_imports_mlflow():
    for path in PKG.rglob("*.py"):
        if "tracking" not in path.relative_to(PKG).parts[:1]:
            assert "mlflow" not in {n.split(".")[0] for n in _imports(path)}, path


@pytest.mark.parametrize("path", sorted((PKG / "runtime").glob("*.py")), ids=lambda p: p.name)
def test_the_runtime_imports_only_what_an_exported_script_has(path):
    """Module level: the standard library, numpy, torch and the runtime's own modules (whose
    names the script defines); Pillow and pyarrow only inside the functions that read images
    and Parquet files, which say how to install them when they are missing."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        for name in names:
            top = name.split(".")[0]
            if node in tree.body:
                allowed = top in sys.stdlib_module_names or top in ("numpy", "torch")
                assert allowed or name.startswith("automodel.runtime."), (path, name)
            else:
                assert name in ("PIL", "pyarrow.parquet"), (path, name)


def _module_graph() -> dict[str, set[str]]:
    """automodel module -> the automodel modules it imports (packages by their __init__)."""
    modules = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_circles_in_the_package():
    graph, state, stack, circles = _module_graph(), {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                circles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 40  # the walk found the package
    assert circles == [], " -> ".join(circles[0])
