"""Shared fixtures: the real composed config, shrunk to seconds and pointed at tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from automodel import config

ROOT = Path(__file__).resolve().parent.parent
# Small and fast: tabular synthetic data, a few epochs, one thread, no MLflow unless asked.
FAST = [
    "data=synthetic",
    "data.n_samples=300",
    "study.n_trials=4",
    "trainer.max_epochs=3",
    "trainer.threads=1",
    "workers=1",
    "tracking.enabled=false",
    "quiet=true",
]


@pytest.fixture
def make_run(tmp_path):
    """`make_run("study.n_trials=6", ...)` -> a validated RunConfig writing under tmp_path."""

    def make(*overrides: str) -> config.RunConfig:
        cfg = config.compose([*FAST, f"runs_dir={tmp_path / 'runs'}", *overrides])
        return config.to_run_config(cfg)

    return make


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m automodel ...` in a subprocess, as a user would."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "automodel", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tree(path: Path) -> list[str]:
    """Every file under `path`, relative: for "nothing was written" assertions."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# The pretrained family's backbones, with freshly initialised weights saved where torchvision
# keeps downloaded ones: the tests never download, and never see a user's own cache.


@pytest.fixture(scope="session", autouse=True)
def fake_torch_hub(tmp_path_factory):
    import torch
    import torchvision

    from automodel.models import pretrained

    home = tmp_path_factory.mktemp("torch_home")
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)  # subprocesses (cli, exported scripts) inherit it
    with torch.random.fork_rng(devices=[]):
        for name in pretrained.BACKBONES:
            path = pretrained.hub_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), path)
    yield home
    if saved is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = saved
