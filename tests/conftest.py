"""Shared fixtures and helpers: the real composed config, shrunk to seconds and pointed at
tmp_path; the command line run as a user would, to the end (`cli`) or in the background to be
interrupted (`spawned`, `poll_study`); and the study a search left on disk (`load_study`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch

from automodel import config, models, train
from automodel import study as studylib
from automodel.hparams import Param

ROOT = Path(__file__).resolve().parent.parent
# CI sets it: there a missing service or tool means a broken set-up, not a test to skip.
STRICT = os.environ.get("AUTOMODEL_STRICT") == "1"
# Small and fast: tabular synthetic data, a few epochs, one thread, no MLflow unless asked;
# on the CPU, so that a machine with a GPU runs the same tests (tests of devices say theirs).
# A test run started in the background by a non-interactive shell (`nohup ... &`) inherits
# SIGINT ignored, and so would every search it starts: the Ctrl-C tests' signals would be
# ignored. A handler here is reset to the default in children, which then handle Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FAST = [
    "devices=cpu",
    "data=synthetic",
    "data.n_samples=300",
    "study.n_trials=4",
    "trainer.max_epochs=3",
    "trainer.threads=1",
    "workers=1",
    "tracking.enabled=false",
    "quiet=true",
    # One validation split and the best trial's own model, whatever the defaults: the tests
    # of cross-validation and refit (tests/test_folds.py) ask for them.
    "data.cv_folds=0",
    "study.refit=false",
    # The single best trial is shipped: tests/test_ensemble_search.py turns ensembles on.
    "ensemble.size=0",
]


def digits_args(runs: Path, workers: int, n_trials: int = 12, max_epochs: int = 25) -> list[str]:
    """A search slow enough (digits, no pruning, many epochs) to interrupt mid-trial."""
    return [
        "devices=cpu",
        "data=digits",
        f"study.n_trials={n_trials}",
        f"trainer.max_epochs={max_epochs}",
        "study.pruner=none",
        "tracking.enabled=false",
        "trainer.threads=1",
        f"workers={workers}",
        "quiet=true",
        f"runs_dir={runs}",
        "data.cv_folds=0",
        "study.refit=false",
    ]


class Poisoned(torch.nn.Module):
    """A test-only family: with poison=True its output, and so its loss, is NaN."""

    def __init__(self, n_in, n_out, poison):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out)
        self.poison = poison

    def forward(self, x):
        out = self.linear(x)
        return out * float("nan") if self.poison else out


def checkpoint(
    family: str, params: dict, spec, model, *, recipe=None, trial=0, val=None, **extra
) -> dict:
    """A checkpoint as the search writes it (best_model.pt), for exporting `model` directly."""
    return {
        "family": family,
        "params": params,
        "spec": spec.to_dict(),
        "recipe": (recipe or train.Recipe()).to_dict(),
        "trial": trial,
        "val": val if val is not None else {},
        **extra,
        "state_dict": model.state_dict(),
    }


# Register with monkeypatch.setitem(models.FAMILIES, "poisoned", POISONED).
POISONED = models.Family(
    {"poison": Param("bool", False)},
    lambda params, shape, n_out: Poisoned(shape[0], n_out, params.get("poison", False)),
)


def require_service(name: str, available: bool, why: str) -> pytest.MarkDecorator:
    """Mark a test (or a param) that needs `name`, a service or tool outside Python: without
    it the test skips, except under AUTOMODEL_STRICT=1, where it fails. A missing GPU is not
    a service: those tests keep a plain skipif."""
    return pytest.mark.requires_service(name=name, available=available, why=why)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_service(name, available, why): see tests/conftest.py"
    )


@pytest.hookimpl(tryfirst=True)  # before fixtures start servers for a test that will not run
def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires_service"):
        if mark.kwargs["available"]:
            continue
        message = f"{mark.kwargs['name']} is missing: {mark.kwargs['why']}"
        if STRICT:
            pytest.fail(f"{message} (AUTOMODEL_STRICT=1 forbids skipping)", pytrace=False)
        pytest.skip(message)


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


@contextlib.contextmanager
def spawned(*args: str, **popen) -> Iterator[subprocess.Popen]:
    """`python -m automodel ...` started in the background, as `cli` runs it, for tests that
    interrupt or kill it. Output goes to text pipes unless `popen` says otherwise; leaving the
    block SIGKILLs the process if it still runs, so a failing test leaves no search behind."""
    opts = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "automodel", *args]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, **opts) as proc:
        try:
            yield proc
        finally:
            proc.kill()  # a no-op once it has exited
            proc.wait()


def load_study(study_dir: Path, storage_url: str | None = None) -> optuna.Study:
    """The study a search wrote: named as its folder, on its journal unless `storage_url`."""
    storage = studylib.open_storage(storage_url, study_dir)
    return optuna.load_study(study_name=study_dir.name, storage=storage)


def poll_study(
    pick: Callable[[list[optuna.trial.FrozenTrial]], object],
    study_dir: Path,
    storage_url: str | None = None,
    timeout: float = 120,
    every: float = 0.1,
):
    """Read the trials of a study that a background search is writing, every `every` seconds,
    until `pick(trials)` returns something truthy, which is returned; None once `timeout`
    seconds pass. A study not created yet has no trials; its journal is never created here.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(every)
        if storage_url is None and not (study_dir / "study.journal").exists():
            continue
        try:
            trials = load_study(study_dir, storage_url).get_trials(deepcopy=False)
        except (KeyError, FileNotFoundError):  # the search has not created the study yet
            continue
        if found := pick(trials):
            return found
    return None


def at_once(work: Callable[[], object], n: int) -> list[str]:
    """Run `work` in `n` threads released together; the errors they raised (repr)."""
    start, errors = threading.Barrier(n), []

    def one() -> None:
        start.wait()
        try:
            work()
        except Exception as err:
            errors.append(repr(err)[:300])

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


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
