"""MNIST-1D (Greydanus 2020), generated offline by the mnist1d package's own generator.

The package's default arguments give the paper's dataset: 4000 training and 1000 test
sequences of length 40, seeded (42), so every run sees the same data without a download.
Importing and running the generator takes seconds (it imports matplotlib), so the arrays are
kept in a cache file (`$AUTOMODEL_CACHE`, else `$XDG_CACHE_HOME/automodel`, else
`~/.cache/automodel`) named after the package version, whose default arguments it holds;
start-up then reads them in milliseconds.
"""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from automodel.data.source import Raw

_KEYS = ("x", "y", "x_test", "y_test")


def load(cfg) -> Raw:
    ds = _cached()
    return Raw(
        x=ds["x"].astype(np.float32),
        y=ds["y"].astype(np.int64),
        input_shape=(1, 40),
        classes=[str(c) for c in range(10)],
        x_test=ds["x_test"].astype(np.float32),
        y_test=ds["y_test"].astype(np.int64),
    )


def cache_dir() -> Path:
    if os.environ.get("AUTOMODEL_CACHE"):
        return Path(os.environ["AUTOMODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "automodel"


def _cached() -> dict[str, np.ndarray]:
    path = cache_dir() / f"mnist1d-{version('mnist1d')}-default.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in _KEYS}
    except (OSError, KeyError, ValueError):  # absent, partial or foreign: generate again
        pass
    ds = _generate()
    tmp = None
    try:  # a read-only or full disk only costs the next run the generation time
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            tmp = Path(f.name)
            np.savez(f, **ds)
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return ds


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds numpy's global generator; keep the caller's stream untouched.
    state = np.random.get_state()
    try:
        ds = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return {k: np.asarray(ds[k]) for k in _KEYS}
