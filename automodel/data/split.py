"""Seeded train/test splits and k folds, row for row those of scikit-learn, without importing it.

Importing `sklearn.model_selection` pulls in SciPy and pandas: 1.5-2 s of every start-up, for
a few lines of NumPy. `train_test_split` here returns exactly the rows of scikit-learn's
`train_test_split(x, y, test_size=..., stratify=..., random_state=seed)` (its ShuffleSplit,
or StratifiedShuffleSplit when stratified: same size rounding, same draws from the same
`RandomState`), so studies keep their splits; `k_fold` those of its `StratifiedKFold` (or
`KFold`) with `shuffle=True, random_state=seed`. tests/test_split.py checks both against
scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np


def train_test_split(x, y, *, test_size: float, stratify=None, random_state: int) -> list:
    """[x_train, x_test, y_train, y_test], as scikit-learn's function returns them."""
    n = len(x)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train == 0:
        raise ValueError(f"test_size {test_size} leaves no training rows out of {n}")
    rng = np.random.RandomState(random_state)
    if stratify is None:
        permutation = rng.permutation(n)
        test, train = permutation[:n_test], permutation[n_test : n_test + n_train]
    else:
        train, test = _stratified(np.asarray(stratify), n_train, n_test, rng)
    return [x[train], x[test], y[train], y[test]]


def _stratified(y: np.ndarray, n_train: int, n_test: int, rng: np.random.RandomState):
    """scikit-learn's StratifiedShuffleSplit, first split."""
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise ValueError("a class has a single row; stratified splits need at least 2 per class")
    if min(n_train, n_test) < len(classes):
        raise ValueError(
            f"a stratified split of {n_train}/{n_test} rows cannot hold all "
            f"{len(classes)} classes on both sides"
        )
    class_indices = np.split(
        np.argsort(y_indices.ravel(), kind="stable"), np.cumsum(class_counts)[:-1]
    )
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        rows = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(rows[: n_i[i]])
        test.extend(rows[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """Rows per class for `n_draws` draws: floors of the proportional shares, then one more
    for the largest remainders, ties broken at random (scikit-learn's `_approximate_mode`)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def k_fold(y, k: int, *, stratify: bool, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(training rows, validation rows)] of each of `k` folds of the rows labelled `y`, sorted,
    as scikit-learn's `StratifiedKFold(k, shuffle=True, random_state=...)` (`KFold` unless
    `stratify`) gives them."""
    y = np.asarray(y)
    n = len(y)
    if not 2 <= k <= n:
        raise ValueError(f"k-fold needs 2 <= k <= {n} rows, got k={k}")
    rng = np.random.RandomState(random_state)
    fold = _stratified_folds(y, k, rng) if stratify else _plain_folds(n, k, rng)
    rows = np.arange(n)
    return [(rows[fold != i], rows[fold == i]) for i in range(k)]


def _plain_folds(n: int, k: int, rng: np.random.RandomState) -> np.ndarray:
    """Each row's fold: consecutive runs of a shuffled order, the first n % k one row longer."""
    order = np.arange(n)
    rng.shuffle(order)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    fold = np.empty(n, dtype=int)
    fold[order] = np.repeat(np.arange(k), sizes)
    return fold


def _stratified_folds(y: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """Each row's fold: each class dealt round robin over the folds in the order the classes
    first appear, then shuffled within the class (StratifiedKFold._make_test_folds)."""
    _, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    _, by_appearance = np.unique(first, return_inverse=True)
    encoded = by_appearance[inverse.ravel()]
    n_classes = len(first)
    ordered = np.sort(encoded)
    allocation = np.asarray([np.bincount(ordered[i::k], minlength=n_classes) for i in range(k)])
    fold = np.empty(len(y), dtype=int)
    for c in range(n_classes):
        folds_for_class = np.arange(k).repeat(allocation[:, c])
        rng.shuffle(folds_for_class)
        fold[encoded == c] = folds_for_class
    return fold
