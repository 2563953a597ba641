"""The tabular family: numeric embeddings where the numbers are, k heads trained on their mean
loss and predicting their mean, and a CSV search whose script retrains it to the bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import automodel.data
from automodel import config, models, search
from automodel.data import DataSpec
from automodel.models import tabular
from automodel.runtime.recipe import new_loss
from tests.test_csv import BASE, people, write_csv
from tests.test_export import _script, blocker  # noqa: F401 (a fixture)

COLUMNS = (
    {"name": "age", "kind": "numeric", "fill": 40.0, "indicator": True},  # features 0, 1
    {"name": "a", "kind": "numeric", "fill": 0.0, "indicator": False},  # 2
    {"name": "b", "kind": "numeric", "fill": 0.0, "indicator": False},  # 3
    {"name": "city", "kind": "onehot", "levels": ["x", "y", "z"]},  # 4, 5, 6
    {"name": "c", "kind": "numeric", "fill": 0.0, "indicator": False},  # 7
    {"name": "shop", "kind": "hash", "buckets": 4},  # 8 .. 11
)


def _spec(n_classes: int = 3) -> DataSpec:
    classes = tuple("abcdefgh"[:n_classes])
    task, metric = ("classification", "accuracy") if n_classes else ("regression", "rmse")
    return DataSpec("t", (12,), n_classes, classes, (0.0,) * 12, (1.0,) * 12, task, metric,
                    columns=COLUMNS)  # fmt: skip


def test_only_the_numbers_of_a_table_are_embedded():
    assert tabular.numeric_spans(COLUMNS, 12) == ((0, 1), (2, 4), (7, 8))
    assert tabular.numeric_spans(None, 5) == ((0, 5),)
    torch.manual_seed(0)
    model = models.create("tabular", {"d_embedding": 3, "k": 1}, _spec())
    embedding = model[0]
    assert isinstance(embedding, tabular.PeriodicEmbedding)
    x = torch.randn(6, 12)
    out = embedding(x)
    # Four numbers of 3 values each, then the indicator, one-hot and hashed features as given.
    assert out.shape == (6, 4 * 3 + 8)
    assert torch.equal(out[:, 12:], x[:, [1, 4, 5, 6, 8, 9, 10, 11]])
    assert model[1].in_features == 20


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_k_heads_train_on_their_mean_loss(task):
    gen = torch.Generator().manual_seed(0)
    heads = torch.randn(10, 4, 3 if task == "classification" else 1, generator=gen)
    y = torch.randint(0, 3, (10,), generator=gen) if task == "classification" else torch.randn(10)
    loss = new_loss(task, "mse", 0.0)
    each = [loss(heads[:, i], y) for i in range(4)]
    torch.testing.assert_close(loss(heads, y), torch.stack(each).mean())


@pytest.mark.parametrize("n_classes", [3, 0])
def test_the_ensemble_predicts_the_mean_of_its_heads(n_classes):
    torch.manual_seed(0)
    model = models.create("tabular", {"k": 4, "dropout": 0.0}, _spec(n_classes))
    assert [type(m) for m in model][1] is tabular.EnsembleInput
    x = torch.randn(7, 12)
    with torch.no_grad():
        heads = model.train()(x)
        mean = model.eval()(x)
    assert heads.shape == (7, 4, max(n_classes, 1))
    assert not torch.allclose(heads[:, 0], heads[:, 1])  # the copies start apart
    if n_classes:  # the mean of the heads' probabilities
        expected = torch.softmax(heads, -1).mean(1)
        torch.testing.assert_close(torch.softmax(mean, -1), expected)
    else:
        torch.testing.assert_close(mean, heads.mean(1))


# Every block of the family, with dropout, searched once on a table with gaps and categories.
SPACE = """
family: tabular
params:
  embedding: periodic
  n_frequencies: 6
  frequency_scale: 0.1
  d_embedding: 5
  k: 4
  depth: 2
  width: 32
  dropout: 0.1
  optimizer: adamw
  lr: 0.003
  batch_size: 32
"""


@pytest.fixture(scope="module")
def csv_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("tabular")
    path = people(root / "people.csv", n=300)
    (root / "space.yaml").write_text(SPACE)
    overrides = [*BASE, "data=csv", f"data.path={path}", "data.target=label",
                 f"search_space={root / 'space.yaml'}", f"runs_dir={root / 'runs'}",
                 "study.n_trials=1", "trainer.max_epochs=4"]  # fmt: skip
    run = config.to_run_config(config.compose(overrides))
    summary = search.search(run, "test")
    return run, summary, automodel.data.load_raw_splits(run.data, run.seed)


def _csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ["age", "income", "city", "zip", "label"]
    return write_csv(path, header, [[*row, ["no", "yes"][t]] for row, t in zip(x, y, strict=True)])


def test_the_script_retrains_and_evaluates_a_csv_search_exactly(csv_search, blocker, tmp_path):  # noqa: F811
    run, summary, s = csv_search
    export_dir = Path(summary["export"])
    source = (export_dir / "best_model.py").read_text()
    assert "PeriodicEmbedding(" in source and "EnsembleHeads(4, 32, 2)" in source
    train_csv = _csv(tmp_path / "train.csv", s["x_train"], s["y_train"])
    val_csv = _csv(tmp_path / "val.csv", s["x_val"], s["y_val"])
    test_csv = _csv(tmp_path / "test.csv", s["x_test"], s["y_test"])
    res = _script(export_dir, blocker, "evaluate", "--input", test_csv)
    assert res.returncode == 0, res.stderr
    printed = {k: float(v) for k, v in map(str.split, res.stdout.splitlines())}
    assert printed == summary["test"]
    res = _script(export_dir, blocker, "train", "--input", train_csv, "--val-input", val_csv,
                  "--output", tmp_path / "r.pt")  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split("best val_accuracy")[1].split()[0])
    assert best == json.loads((run.study_dir / "summary.json").read_text())["val"]["accuracy"]
