"""The `l1` param: a penalty on the weights that the search and the exported script's `train`
apply alike, in every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import automodel.data
from automodel import config, models, search, spaces, train
from automodel.config import DataConfig
from automodel.runtime import loop, recipe
from tests.test_export import _script, blocker  # noqa: F401 (a fixture, used by name)
from tests.test_models import ACCEPTS, SHAPES, spec


@pytest.fixture(scope="module")
def dataset():
    return automodel.data.load(DataConfig(name="synthetic", n_samples=300), seed=0)


def _trained(dataset, l1: float) -> torch.nn.Module:
    train.seed_everything(0)
    params = {"depth": 2, "width": 64, "batch_norm": True, "l1": l1}
    model = models.create("mlp", params, dataset.spec)
    recipe = train.Recipe.from_params({"lr": 0.01, **params}, epochs=4, seed=0)
    train.fit(model, dataset, recipe)
    return model


def test_l1_shrinks_the_weights_and_leaves_biases_and_norms_alone(dataset):
    plain, shrunk = _trained(dataset, 0.0), _trained(dataset, 1e-3)
    named = dict(shrunk.named_parameters())
    weights = [n for n, p in named.items() if p.dim() > 1]
    assert [id(w) for w in loop.l1_weights(shrunk)] == [id(named[n]) for n in weights]
    assert len(weights) == 3 and len(named) > 6  # three linear layers; biases, batch norms

    def size(model):
        return float(loop.l1_penalty(loop.l1_weights(model)).detach())

    assert size(shrunk) < 0.9 * size(plain)
    small = sum(int((w.abs() < 1e-3).sum()) for w in loop.l1_weights(shrunk))
    assert small > sum(int((w.abs() < 1e-3).sum()) for w in loop.l1_weights(plain))


@pytest.mark.parametrize("family", list(models.FAMILIES))
def test_l1_applies_in_every_family(family):
    shape = SHAPES[min(ACCEPTS[family], key=lambda s: torch.Size(SHAPES[s]).numel())]
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 4

    def one_epoch(l1: float) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = models.create(family, {}, spec(shape))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        run = loop.train_epochs(
            model, x, y, optimizer, recipe.new_loss("classification", None, 0.0), epochs=1, batch_size=8, seed=0,
            l1=l1,
        )  # fmt: skip
        list(run)
        return loop.l1_weights(model)

    plain, penalised = one_epoch(0.0), one_epoch(1e-2)
    assert penalised, f"{family} has no weights to penalise"
    assert float(loop.l1_penalty(penalised).detach()) < float(loop.l1_penalty(plain).detach())


def test_shipped_spaces_keep_no_l1_reachable():
    for name in ("mlp", "resnet"):
        space = spaces.load(config.resolve_space_path(name))
        (entry,) = [e for e in space.entries if e.name == "l1"]
        assert 0.0 in entry.choices
        assert space.enqueue[0]["l1"] == 0.0  # the known-good first trial is unchanged


def test_the_exported_train_reproduces_a_trial_trained_with_l1(make_run, blocker, tmp_path):  # noqa: F811
    run = make_run(
        "search_space.params.l1=0.001", "~search_space.enqueue", "study.n_trials=2",
        "trainer.max_epochs=3",
    )  # fmt: skip
    summary = search.search(run)
    assert summary["params"]["l1"] == 0.001
    export = run.study_dir / "export"
    assert "L1 = 0.001  #" in (export / "best_model.py").read_text()
    s = automodel.data.load_raw_splits(run.data, run.seed)
    files = {}
    for name in ("x_train", "y_train", "x_val", "y_val"):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], s[name])
    res = _script(
        export, blocker, "train", "--input", files["x_train"], "--labels", files["y_train"],
        "--val-input", files["x_val"], "--val-labels", files["y_val"],
        "--output", tmp_path / "retrained.pt",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split("best val_accuracy")[1].split()[0])
    assert best == summary["val"]["accuracy"]
    # The same training, penalty included, to the bit: accuracy alone barely sees the penalty.
    retrained = torch.load(tmp_path / "retrained.pt", weights_only=True)
    searched = torch.load(export / "weights.pt", weights_only=True)
    assert retrained.keys() == searched.keys()
    assert all(torch.equal(retrained[k], searched[k]) for k in searched)
