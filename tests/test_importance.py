"""Input importance: the columns that carry the signal rank first; saliency has the right shape."""

from __future__ import annotations

import pytest
import torch

from automodel import data as datalib
from automodel import importance, models, train
from automodel.config import DataConfig


def _signal_table(task: str, n: int = 600, seed: int = 0):
    """Eight columns; only columns 2 and 5 carry the target."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    signal = 2.0 * x[:, 2] - 1.5 * x[:, 5]
    y = (signal > 0).long() if task == "classification" else signal
    return x, y


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_columns_that_carry_the_signal_rank_first(task):
    x, y = _signal_table(task)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 2 if task == "classification" else 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = torch.nn.CrossEntropyLoss() if task == "classification" else torch.nn.MSELoss()
    for _ in range(300):
        opt.zero_grad()
        out = model(x) if task == "classification" else model(x).squeeze(1)
        loss(out, y).backward()
        opt.step()
    groups = importance.feature_groups(None, 8)
    result = importance.permutation(model, x, y, task, groups, repeats=3, seed=0)
    ranked = sorted(result, key=lambda r: -r["mean"])
    assert {r["name"] for r in ranked[:2]} == {"x2", "x5"}
    assert all(abs(r["mean"]) < ranked[1]["mean"] / 4 for r in ranked[2:])
    again = importance.permutation(model, x, y, task, groups, repeats=3, seed=0)
    assert again == result  # seeded


def test_a_categorical_column_is_permuted_as_one_group():
    columns = [
        {"name": "age", "kind": "numeric", "fill": 0.0, "indicator": True},
        {"name": "city", "kind": "onehot", "levels": ["a", "b", "c"]},
        {"name": "zip", "kind": "hash", "buckets": 4},
    ]
    groups = importance.feature_groups(columns, 9)
    assert groups == [("age", [0, 1]), ("city", [2, 3, 4]), ("zip", [5, 6, 7, 8])]
    with pytest.raises(ValueError, match="encode 9 features, the model reads 10"):
        importance.feature_groups(columns, 10)


def test_saliency_maps_have_the_inputs_shape_and_favour_the_informative_pixels():
    data = datalib.load(DataConfig(name="digits"), seed=0)
    model = models.create(
        "mlp",
        {"depth": 1, "width_l0": 32, "activation": "relu", "dropout": 0.0, "batch_norm": False},
        data.spec,
    )
    train.fit(model, data, train.Recipe(epochs=5, lr=0.01, batch_size=64))
    maps = importance.saliency(model, data.x_test, data.y_test, "classification")
    assert maps.shape == data.x_test.shape and (maps >= 0).all()
    per_class = importance.saliency_by_class(maps, data.y_test, 10)
    assert per_class.shape == (10, *data.spec.input_shape)
    # digits' border columns are (nearly) always blank: they matter less than the centre.
    mean = maps.mean(0).reshape(8, 8)
    assert mean[:, 0].mean() < mean[:, 3:5].mean()
