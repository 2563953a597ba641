"""Experimental stacked training: k candidates at once give each its own, correct result.

Not part of the default test run (testpaths is tests/):
    python -m pytest -q benchmarks/experimental/test_stacked.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from automodel import data as datalib
from automodel import models, train
from automodel.config import DataConfig


def _load_stacked():
    # By its path: benchmarks/ is no package, and whether this folder is on sys.path
    # depends on how pytest imports this file.
    spec = importlib.util.spec_from_file_location("stacked", Path(__file__).with_name("stacked.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


stacked = _load_stacked()


@pytest.fixture(scope="module")
def dataset():
    return datalib.load(DataConfig(name="synthetic", n_samples=300), seed=0)


def _models(family, params, spec, k):
    built = []
    for i in range(k):
        torch.manual_seed(i)
        built.append(models.create(family, params, spec))
    return built


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("mlp", {"depth": 2, "width": 16, "batch_norm": True, "dropout": 0.1}),
        ("mlp", {"depth": 1, "width": 8, "activation": "gelu"}),
    ],
)
def test_each_model_gets_its_best_epoch_weights(dataset, family, params):
    built = _models(family, params, dataset.spec, 3)
    lrs = [1e-3, 1e-2, 3e-2]
    results = stacked.fit_stacked(built, dataset, lrs, epochs=4, batch_size=32)
    for model, result in zip(built, results, strict=True):
        acc = train.evaluate(model, dataset.x_val, dataset.y_val, dataset.spec)["accuracy"]
        assert acc == pytest.approx(result.best_value)
        assert [e.epoch for e in result.history] == [1, 2, 3, 4]
    assert len({r.history[-1].train_loss for r in results}) == 3  # trained apart


def test_one_stacked_model_trains_like_train_fit(dataset):
    params = {"depth": 2, "width": 16}
    (alone,) = _models("mlp", params, dataset.spec, 1)
    (stack,) = _models("mlp", params, dataset.spec, 1)
    recipe = train.Recipe.from_params({"lr": 0.01, "batch_size": 32}, epochs=3, seed=0)
    expected = train.fit(alone, dataset, recipe)
    (got,) = stacked.fit_stacked([stack], dataset, [0.01], epochs=3, batch_size=32, seed=0)
    for a, b in zip(expected.history, got.history, strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)


def test_other_architectures_go_through_vmap():
    data = datalib.load(DataConfig(name="digits"), seed=0)
    params = {"blocks": 1, "channels": 4, "kernel_size": 3, "batch_norm": False}
    built = _models("cnn", params, data.spec, 2)
    results = stacked.fit_stacked(built, data, [1e-3, 1e-2], epochs=1, batch_size=64)
    for model, result in zip(built, results, strict=True):
        acc = train.evaluate(model, data.x_val, data.y_val, data.spec)["accuracy"]
        assert acc == pytest.approx(result.best_value)


def test_one_lr_per_model_is_required(dataset):
    built = _models("mlp", {}, dataset.spec, 2)
    with pytest.raises(ValueError, match="one lr"):
        stacked.fit_stacked(built, dataset, [1e-3], epochs=1, batch_size=32)
