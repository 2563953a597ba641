"""Input importance: the columns that carry the signal rank first; saliency has the right
shape; one row's contributions are the change at each column's typical value."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from automodel import data as datalib
from automodel import importance, models, train
from automodel.config import DataConfig
from automodel.runtime import explain
from automodel.runtime import importance as runtime
from automodel.tracking import importance_plots


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


def test_the_typical_row_takes_each_columns_median_or_most_common_level():
    columns = [
        ("age", "numeric", 40.0, True),
        ("city", "onehot", ["a", "b", "c"]),  # b in half the rows; a fifth missing
        ("zip", "hash", 2),  # missing in 70% of the rows: commoner than either bucket
    ]
    mean = [38.0, 0.1, 0.2, 0.5, 0.1, 0.1, 0.2]
    std = [10.0, 0.3, 0.4, 0.5, 0.3, 0.3, 0.4]
    ref, shown = runtime.reference(columns, mean, std)
    raw = torch.tensor([40.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    f64 = torch.float64
    expected = (raw - torch.tensor(mean, dtype=f64)) / torch.tensor(std, dtype=f64)
    assert torch.equal(ref, expected.float())
    assert shown == [40.0, "b", None]
    plain, shown = runtime.reference(None, [1.5, -2.0], [1.0, 1.0])
    assert torch.equal(plain, torch.zeros(2)) and shown == [1.5, -2.0]  # the training mean


def test_a_contribution_is_the_change_at_the_typical_value():
    """A linear regression: each column contributes its weight times its distance from the
    typical value, in the target's units."""
    model = torch.nn.Linear(3, 1, bias=True)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, -1.0, 0.5]]))
        model.bias.fill_(0.3)
    x = torch.tensor([[1.0, 2.0, -4.0]])
    ref = torch.tensor([0.0, 1.0, 0.0])
    groups = [("a", [0]), ("bc", [1, 2])]
    predicted, value, changes = runtime.contributions(model, x, groups, ref, "regression", 10.0)
    assert predicted is None and value == pytest.approx((2 - 2 - 2 + 0.3) * 10)
    assert changes == pytest.approx([2.0 * 1 * 10, (-1.0 * 1 + 0.5 * -4) * 10])
    classifier = torch.nn.Linear(3, 2)
    predicted, p, changes = runtime.contributions(classifier, x, groups, ref, "classification")
    probabilities = torch.softmax(classifier(x).detach(), 1)[0]
    assert predicted == int(probabilities.argmax()) and p == pytest.approx(
        float(probabilities.max())
    )


def test_the_search_writes_saliency_maps_and_their_pictures(tmp_path):
    data = datalib.load(DataConfig(name="digits"), seed=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    entry = importance.explain(model, data, tmp_path, seed=0, batch_size=512)
    report = json.loads((tmp_path / importance.FILE).read_text())
    assert report["rows"] == len(data.x_test) <= runtime.SALIENCY_ROWS
    assert entry["top"][0]["name"] == report["positions"][0]["name"]
    assert np.load(tmp_path / report["by_class"]).shape == (10, 1, 8, 8)
    examples = np.load(tmp_path / report["examples"]["file"])
    assert examples.shape == (runtime.EXAMPLES, 1, 8, 8)
    assert report["examples"]["labels"] == [str(int(v)) for v in data.y_test[:4]]
    pictures = importance_plots.draw(tmp_path, tmp_path / "plots")
    assert [p.name for p in pictures] == ["saliency_by_class.png", "saliency_examples.png"]


def test_a_sequence_regression_gets_one_map_over_every_row_sampled(tmp_path):
    """1000 test rows of a sequence (1, 40): 512 of them, seeded; one map, no classes."""
    spec = datalib.DataSpec("seq", (1, 40), 0, (), (0.0,), (1.0,), "regression", "rmse", 5.0, 2.0)
    x = torch.randn(1000, 1, 40)
    y = x[:, 0, 7] * 3  # only step 7 matters
    data = datalib.Dataset(spec, x, y, x, y, x, y)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 1))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 7] = 3.0
    entry = importance.explain(model, data, tmp_path, seed=0, batch_size=512)
    report = json.loads((tmp_path / importance.FILE).read_text())
    assert report["rows"] == runtime.SALIENCY_ROWS and report["classes"] is None
    assert entry["top"][0]["name"] == "c0 t7" and entry["top"][1]["mean"] == 0.0
    assert np.load(tmp_path / report["by_class"]).shape == (1, 1, 40)
    assert report["examples"]["labels"][0] == pytest.approx(
        float(y[report["examples"]["rows"][0]]) * 2.0 + 5.0
    )
    pictures = importance_plots.draw(tmp_path, tmp_path / "plots")
    assert [p.name for p in pictures] == ["saliency_by_class.png", "saliency_examples.png"]


def test_a_saliency_map_becomes_a_png_brightest_where_it_is_largest(tmp_path):
    saliency_map = np.zeros((3, 4, 8), np.float32)
    saliency_map[:, 2, 5] = 1.0
    explain.save_heatmap(tmp_path / "map.png", saliency_map)
    with Image.open(tmp_path / "map.png") as image:
        pixels = np.asarray(image)
    assert pixels.shape == (4 * 32, 8 * 32)  # scaled up to 256 pixels across
    assert pixels[2 * 32 + 3, 5 * 32 + 3] == 255 and pixels[0, 0] == 0


def test_a_wide_table_is_read_on_fewer_rows_the_same_for_a_seed():
    x = torch.randn(3000, 100)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(100, 2)
    groups = runtime.feature_groups(None, 100)
    small = torch.nn.Linear(4, 2)
    narrow = runtime.permutation_report(small, x[:, :4], y, "classification", groups[:4])
    assert narrow["rows"] == runtime.MAX_ROWS
    wide = runtime.permutation_report(model, x, y, "classification", groups, repeats=2)
    assert wide["rows"] == runtime.EVALUATIONS // (100 * 2) == 1000
    again = runtime.permutation_report(model, x, y, "classification", groups, repeats=2)
    assert again == wide
