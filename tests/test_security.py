"""Security: nothing a config or data file controls is evaluated, unpickled or instantiated,
and passwords in storage or tracking URLs never appear in clear in what we write or print."""

from __future__ import annotations

import ast
import os
import re
import uuid
from pathlib import Path

import pytest

from tests.conftest import FAST, cli, require_service

PKG = Path(__file__).resolve().parent.parent / "automodel"
PG_URL = os.environ.get("AUTOMODEL_TEST_POSTGRES_URL")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            owner = (
                f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            )
            yield owner, name, node


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_eval_exec_pickle_or_unsafe_torch_load(path):
    source = path.read_text()
    for owner, name, node in _calls(ast.parse(source)):
        if isinstance(node.func, ast.Name):  # builtins; model.eval() is a method, and fine
            assert name not in ("eval", "exec", "__import__"), (
                f"{path.name}:{node.lineno} calls {name}"
            )
        assert not (owner == "pickle" and name in ("load", "loads")), f"{path.name}:{node.lineno}"
        assert not (owner == "yaml" and name in ("load", "unsafe_load")), (
            f"{path.name}:{node.lineno} use yaml.safe_load"
        )
        if owner == "torch" and name == "load":
            kw = {k.arg: k.value for k in node.keywords}
            assert (
                isinstance(kw.get("weights_only"), ast.Constant)
                and kw["weights_only"].value is True
            ), f"{path.name}:{node.lineno}: torch.load without weights_only=True"
    assert "_target_" not in source
    assert "hydra.utils.instantiate" not in source


def test_generated_script_template_loads_weights_safely():
    # The exported best_model.py is rendered from these sources: the same rules hold there.
    text = (PKG / "export_script.py").read_text()
    assert "weights_only=True" in text
    assert not re.search(r"(?<![.\w])(eval|exec|__import__)\s*\(|\bpickle\b", text)


@require_service("PostgreSQL", bool(PG_URL), "needs AUTOMODEL_TEST_POSTGRES_URL")
def test_a_storage_password_appears_nowhere(tmp_path):
    # The throwaway server trusts local connections, so any password is accepted: we can
    # run a real search with one and look for it everywhere the search wrote or printed.
    secret = "pw-5ecr3t-xyz"
    url = PG_URL.replace("postgres@", f"postgres:{secret}@", 1)
    runs = tmp_path / "runs"
    name = f"secret-{uuid.uuid4().hex[:8]}"  # the server may outlive one test run
    res = cli(
        "search",
        *FAST,
        f"runs_dir={runs}",
        f"study.storage={url}",
        f"study.name={name}",
        "quiet=false",
    )
    assert res.returncode == 0, res.stderr
    assert secret not in res.stdout + res.stderr
    for path in runs.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    res = cli("status", f"runs_dir={runs}", f"study.storage={url}", f"study.name={name}")
    assert res.returncode == 0 and secret not in res.stdout + res.stderr
