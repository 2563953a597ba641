"""scikit-learn's 8x8 handwritten digits: ships with scikit-learn, no download.

The rows are read from the file scikit-learn ships (`sklearn/datasets/data/digits.csv.gz`, as
its `load_digits` reads it) without importing scikit-learn, which costs 1.5-2 s of start-up;
if that file is not where it used to be, `load_digits` itself is used.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from automodel.data.source import Raw


def load(cfg) -> Raw:
    data = _shipped_csv()
    if data is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data, bunch.target
    else:
        x, y = data[:, :-1], data[:, -1].astype(int)
    return Raw(
        x=x.astype(np.float32),  # rows of 64 pixel values in 0..16
        y=y.astype(np.int64),
        input_shape=(1, 8, 8),
        classes=[str(c) for c in range(10)],
    )


def _shipped_csv() -> np.ndarray | None:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, mode="rt", encoding="utf-8") as f:
                return np.loadtxt(f, delimiter=",")
    return None
