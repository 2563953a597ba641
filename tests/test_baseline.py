"""The gradient-boosting baseline reported beside every table result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from automodel import baseline
from automodel import data as datalib
from automodel.config import DataConfig


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_baseline_scores_its_own_predictions_on_the_same_splits(task):
    data = datalib.load(
        DataConfig(name="synthetic", task=task, n_samples=400, n_features=8), seed=0
    )
    assert baseline.applies(data)
    result = baseline.gradient_boosting(data, seed=0)
    assert result["model"] == "HistGradientBoosting" and result["seconds"] > 0
    x_train, y_train = data.x_train.numpy(), data.y_train.numpy()
    x_test, y_test = data.x_test.numpy(), data.y_test.numpy()
    if task == "classification":
        model = HistGradientBoostingClassifier(random_state=0).fit(x_train, y_train)
        expected = float((model.predict(x_test) == y_test).mean())
        assert result["test"]["accuracy"] == pytest.approx(expected)
        assert set(result["val"]) == {"accuracy", "f1_macro"}
    else:
        model = HistGradientBoostingRegressor(random_state=0).fit(x_train, y_train)
        err = (model.predict(x_test) - y_test) * data.spec.target_std
        assert result["test"]["rmse"] == pytest.approx(float(np.sqrt((err**2).mean())), rel=1e-5)
        assert set(result["val"]) == {"rmse", "mae", "r2"}
    # Better than chance / than predicting the mean: it learned the signal.
    if task == "classification":
        assert result["test"]["accuracy"] > 1 / data.spec.n_classes + 0.2
    else:
        assert result["test"]["r2"] > 0.3


def test_images_and_sequences_get_no_baseline():
    data = datalib.load(DataConfig(name="digits"), seed=0)
    assert not baseline.applies(data)
    assert torch.is_tensor(data.x_train)
