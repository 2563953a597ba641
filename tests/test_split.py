"""data.split gives scikit-learn's train_test_split and k-fold rows exactly, so studies keep
their splits and folds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.model_selection import train_test_split as sklearn_split

from automodel.data.split import k_fold, train_test_split

LABELS = {
    "balanced-3": np.repeat(np.arange(3), 100),
    "digits-like": np.random.RandomState(0).randint(0, 10, 1797),
    "imbalanced": np.array([0] * 50 + [1] * 9 + [2] * 4 + [3] * 137),
    "odd-37": np.array([0, 1] * 18 + [1]),
    "strings": np.array(["b", "a", "c", "a"] * 12),
}


@pytest.mark.parametrize(
    ("labels", "fraction", "seed", "stratified"),
    list(itertools.product(LABELS, [0.1, 0.2, 0.25, 1 / 3], [0, 1, 42], [True, False])),
)
def test_same_rows_as_scikit_learn(labels, fraction, seed, stratified):
    y = LABELS[labels]
    x = np.arange(len(y) * 2).reshape(len(y), 2)
    stratify = y if stratified else None
    ours = train_test_split(x, y, test_size=fraction, stratify=stratify, random_state=seed)
    theirs = sklearn_split(x, y, test_size=fraction, stratify=stratify, random_state=seed)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float_targets_split_without_stratification():
    y = np.linspace(0, 1, 50)
    x = y[:, None]
    ours = train_test_split(x, y, test_size=0.2, random_state=3)
    theirs = sklearn_split(x, y, test_size=0.2, random_state=3)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_sizes_are_refused():
    y = np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="test_size must be in"):
        train_test_split(y, y, test_size=1.5, random_state=0)
    with pytest.raises(ValueError, match="cannot hold all 2 classes"):
        train_test_split(y, y, test_size=0.1, stratify=y, random_state=0)


def test_a_table_with_four_rows_per_class_splits_with_the_default_fractions():
    """12 rows, 3 classes: 20% would leave 2 validation rows for 3 classes."""
    from automodel.data import _split
    from automodel.data.source import Raw

    y = np.repeat(np.arange(3), 4)
    raw = Raw(x=np.arange(12.0).reshape(12, 1), y=y, input_shape=(1,), classes=["a", "b", "c"])
    x_train, y_train, x_val, y_val, x_test, y_test = _split(raw, 0.2, 0.2, seed=0)
    for part in (y_train, y_val, y_test):
        assert set(part.tolist()) == {0, 1, 2}
    assert len(x_train) + len(x_val) + len(x_test) == 12


@pytest.mark.parametrize(
    ("labels", "k", "seed", "stratified"),
    list(itertools.product(LABELS, [2, 3, 4, 5], [0, 7], [True, False])),
)
def test_same_folds_as_scikit_learn(labels, k, seed, stratified):
    y = LABELS[labels]
    kind = StratifiedKFold if stratified else KFold
    theirs = kind(n_splits=k, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y)
    ours = k_fold(y, k, stratify=stratified, random_state=seed)
    for (a_train, a_val), (b_train, b_val) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a_train, b_train)
        np.testing.assert_array_equal(a_val, b_val)
