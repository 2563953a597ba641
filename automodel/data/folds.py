"""Cross-validation over the non-test rows: how many folds, which rows, a Dataset per fold.

    resolve(setting, dataset)   data.cv_folds -> k (0: one validation split, as before)
    indices(y, k, task, seed)   scikit-learn's seeded StratifiedKFold's rows (KFold's for regression)
    load(cfg, seed, k)          -> Folds: a Dataset per fold, its validation rows' positions
    refit(cfg, seed)            -> a Dataset that trains on every non-test row

Every fold's Dataset fits its encoding and its normalisation on that fold's training rows
alone (as `data.load` does on the training split), so no fold sees statistics of its
validation rows; the test rows ride along in each, normalised the fold's way, and are only
evaluated at the end of a search. The non-test rows keep one order (`data.rest_and_test`):
fold indices, out-of-fold outputs and a refit all refer to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from automodel.data import Dataset, _raw, build, rest_and_test
from automodel.data.split import k_fold

# `auto`: k-fold when the non-test rows are at most this many, one validation split beyond
# (docs/performance.md, "Small data", measures where k-fold pays for its k-fold cost).
AUTO_MAX_ROWS = 2000
AUTO_FOLDS = 5


@dataclass
class Folds:
    datasets: list[Dataset]  # fold i: its training rows, its validation rows, the test rows
    val_rows: list[np.ndarray]  # positions of fold i's validation rows among the non-test rows

    @property
    def k(self) -> int:
        return len(self.datasets)

    @property
    def n_rows(self) -> int:
        """How many non-test rows the folds cover."""
        return sum(len(v) for v in self.val_rows)

    def to(self, device: torch.device | str) -> Folds:
        return Folds([d.to(device) for d in self.datasets], self.val_rows)


def largest(dataset: Dataset) -> tuple[int, str]:
    """The most folds the non-test rows of `dataset` allow, and what limits it."""
    y = torch.cat([dataset.y_train.cpu(), dataset.y_val.cpu()])
    if dataset.spec.task == "regression":
        return len(y), f"it has {len(y)} non-test rows"
    counts = torch.bincount(y, minlength=dataset.spec.n_classes)
    smallest = int(counts.argmin())
    name = dataset.spec.classes[smallest]
    return int(counts[smallest]), f"its class {name!r} has {int(counts[smallest])} non-test rows"


def resolve(setting, dataset: Dataset) -> int:
    """data.cv_folds for this data: 0 (one validation split) or the number of folds.

    `auto`: AUTO_FOLDS folds (fewer if a class has fewer rows) when there are at most
    AUTO_MAX_ROWS non-test rows, else 0. Raises ValueError naming the value and the largest
    number of folds that fits.
    """
    most, why = largest(dataset)
    n_rows = len(dataset.y_train) + len(dataset.y_val)
    if setting == "auto":
        return min(AUTO_FOLDS, most) if n_rows <= AUTO_MAX_ROWS and most >= 2 else 0
    if setting == 0 and isinstance(setting, int) and not isinstance(setting, bool):
        return 0
    valid = f"use 0 (one validation split), auto, or a number of folds from 2 to {most} ({why})"
    if isinstance(setting, bool) or not isinstance(setting, int):
        raise ValueError(f"data.cv_folds={setting!r} is not a number of folds; {valid}")
    if not 2 <= setting <= most:
        raise ValueError(f"data.cv_folds={setting} does not fit data {dataset.spec.name}; {valid}")
    return setting


def indices(y: np.ndarray, k: int, task: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, validation rows) of each of `k` folds of the rows whose targets are
    `y`: scikit-learn's seeded StratifiedKFold for classification, KFold for regression,
    row for row (data.split, which spares every search the import of scikit-learn)."""
    return k_fold(y, k, stratify=task == "classification", random_state=seed)


def load(cfg, seed: int, k: int) -> Folds:
    """The `k` folds of the non-test rows of `cfg` (a DataConfig) as Datasets."""
    raw = _raw(cfg)
    x_rest, y_rest, x_test, y_test = rest_and_test(raw, cfg.test_fraction, seed)
    workers = getattr(cfg, "loader_workers", 2)
    datasets, val_rows = [], []
    for train_rows, val in indices(np.asarray(y_rest), k, raw.task, seed):
        splits = (x_rest[train_rows], y_rest[train_rows], x_rest[val], y_rest[val], x_test, y_test)
        datasets.append(build(raw, cfg.name, splits, workers, _transform(cfg)))
        val_rows.append(val)
    return Folds(datasets, val_rows)


def refit(cfg, seed: int) -> Dataset:
    """Every non-test row of `cfg` to train on (encoding and statistics fitted on them), no
    validation rows, and the test rows normalised the same way."""
    raw = _raw(cfg)
    x_rest, y_rest, x_test, y_test = rest_and_test(raw, cfg.test_fraction, seed)
    splits = (x_rest, y_rest, x_rest[:0], y_rest[:0], x_test, y_test)
    return build(raw, cfg.name, splits, getattr(cfg, "loader_workers", 2), _transform(cfg))


def _transform(cfg) -> str:
    """data.target_transform, chosen on each training split's own rows when auto."""
    return getattr(cfg, "target_transform", "auto")
