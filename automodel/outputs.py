"""The study folder `<runs_dir>/<study>/`: its layout, atomic writes, kept weights.

    config.yaml          resolved run settings of the latest invocation (secrets masked)
    search_space.yaml    the space the study was created with
    study.journal        Optuna storage (default)
    trials/<n>/model.pt  weights of the top-k trials (a checkpoint: weights + architecture)
    owners/              a lock file per process running trials (study.owners: dead or alive)
    best_model.pt        checkpoint of the best trial, with its test metric
    best_params.json     the best trial's params
    summary.json         what scripts read: study, best_trial, params, val, test, counts, ...
    export/              best_model.py + weights.pt, written by export.write (its own renames)

Every file is written to a temporary name and renamed into place, so a killed process leaves
the previous version or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temporary file beside `path`, readable like any file the user creates (mkstemp's
    own 0600 would make shared results unreadable to the rest of a team)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    return fd, tmp


def _read_umask() -> int:
    # os.umask() can only be read by setting it, which races with other threads' file creation.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


_UMASK = _read_umask()


def write_atomic(path: Path, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def trial_checkpoint(study_dir: Path, number: int) -> Path:
    """Where trial `number` keeps its weights (a checkpoint.Checkpoint) while it ranks top k."""
    return study_dir / "trials" / str(number) / "model.pt"


def leases(study_dir: Path) -> Path:
    """Where the processes running a study's trials hold their leases (see study.owners)."""
    return study_dir / "owners"


def prune_trials(study_dir: Path, keep: set[int], finished: set[int]) -> None:
    """Delete kept weights of finished trials that fell out of the top k.

    Only folders of finished trials are touched: a concurrent worker may be writing the
    folder of a trial that is still running.
    """
    root = study_dir / "trials"
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.name.isdigit() and int(child.name) in finished and int(child.name) not in keep:
            shutil.rmtree(child, ignore_errors=True)
