"""The wheel is complete: installed from it, not from this checkout, automodel composes its
config and runs a search in a folder that has nothing of the checkout."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What the build reads (pyproject.toml names the readme; setup.py maps conf/ and
# search_spaces/ into the package). Copied, so the build leaves nothing in the checkout.
SOURCES = ["pyproject.toml", "setup.py", "README.md", "automodel", "conf", "search_spaces"]


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
def test_a_search_runs_from_the_installed_wheel(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    # Offline: no index, and the build uses this environment's setuptools.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", tmp_path, src)
    (wheel,) = tmp_path.glob("automodel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "automodel/conf/config.yaml" in names and "automodel/conf/data/csv.yaml" in names
    assert "automodel/search_spaces/mlp.yaml" in names

    # A new environment that sees this one's third-party packages (appended after its own
    # site-packages, so the wheel's automodel comes first; .pth files there are not run, so
    # an editable install of the checkout stays out).
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    pth = Path(purelib.stdout.strip()) / "parent_env.pth"
    pth.write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, env=env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(python, "-c", "import automodel; print(automodel.__file__)", cwd=work, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    runs = work / "runs"
    run(
        python,
        *("-m", "automodel", "search", "study.n_trials=2", "trainer.max_epochs=1"),
        *("trainer.threads=1", "workers=1", "devices=cpu", "tracking.enabled=false"),
        "quiet=true",
        f"runs_dir={runs}",
        cwd=work,
        env=env,
    )
    summary = json.loads((runs / "digits-mlp" / "summary.json").read_text())
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 2
