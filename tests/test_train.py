"""The trainer: learns, keeps the best epoch, stops on a diverged loss, is deterministic."""

from __future__ import annotations

import pytest
import torch

import automodel.data
from automodel import models, train
from automodel.config import DataConfig


@pytest.fixture(scope="module")
def dataset():
    return automodel.data.load(DataConfig(name="synthetic", n_samples=300), seed=0)


def _fit(dataset, epochs=5, seed=0, on_epoch_end=None, **params):
    train.seed_everything(seed)
    model = models.create("mlp", {"depth": 1, "width": 32, **params}, dataset.spec)
    recipe = train.Recipe.from_params({"lr": 0.01, **params}, epochs=epochs, seed=seed)
    return model, train.fit(model, dataset, recipe, on_epoch_end=on_epoch_end)


def test_fit_lowers_the_loss_and_learns(dataset):
    _, result = _fit(dataset, epochs=8)
    losses = [e.train_loss for e in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_value > 0.8
    assert [e.epoch for e in result.history] == list(range(1, 9))


def test_fit_restores_the_best_epoch(dataset):
    model, result = _fit(dataset, epochs=6)
    val = train.evaluate(model, dataset.x_val, dataset.y_val, dataset.spec)
    assert val["accuracy"] == pytest.approx(result.best_value)
    assert result.best_value == max(e.value for e in result.history)
    assert result.best_metrics == result.history[result.best_epoch - 1].val
    assert set(val) == {"loss", "accuracy", "f1_macro"}


@pytest.mark.parametrize("optimizer", train.OPTIMIZERS)
@pytest.mark.parametrize("schedule", train.SCHEDULES)
def test_every_optimizer_and_schedule_trains(dataset, optimizer, schedule):
    _, result = _fit(dataset, epochs=3, optimizer=optimizer, schedule=schedule, lr=0.01)
    assert result.history[-1].train_loss < result.history[0].train_loss * 1.5
    if schedule == "cosine":
        assert result.history[-1].lr < result.history[0].lr


def test_same_seed_same_result(dataset):
    _, a = _fit(dataset, epochs=3, seed=3)
    _, b = _fit(dataset, epochs=3, seed=3)
    assert [e.train_loss for e in a.history] == [e.train_loss for e in b.history]


def test_non_finite_loss_raises(dataset):
    broken = automodel.data.Dataset(
        dataset.spec,
        dataset.x_train.clone().fill_(float("nan")),
        dataset.y_train,
        dataset.x_val,
        dataset.y_val,
        dataset.x_test,
        dataset.y_test,
    )
    with pytest.raises(train.NonFiniteLoss, match="training loss became nan in epoch 1"):
        _fit(broken, epochs=2)


def test_callback_can_stop_training(dataset):
    seen = []

    def stop(epoch):
        seen.append(epoch.epoch)
        if epoch.epoch == 2:
            raise KeyError("stop")

    with pytest.raises(KeyError):
        _fit(dataset, epochs=10, on_epoch_end=stop)
    assert seen == [1, 2]


def test_a_last_batch_of_one_row_does_not_break_batch_norm(dataset):
    n = len(dataset.x_train)
    _, result = _fit(dataset, epochs=1, batch_norm=True, batch_size=n - 1)
    assert result.history[0].train_loss == result.history[0].train_loss  # finite, no error


def test_batch_larger_than_the_data_is_an_error(dataset):
    with pytest.raises(ValueError, match="batch_size 100000 is larger than the 192 training rows"):
        _fit(dataset, epochs=1, batch_size=100000)


def test_splits_are_stratified_and_normalised_on_train_only(dataset):
    counts = [
        torch.bincount(y, minlength=3) for y in (dataset.y_train, dataset.y_val, dataset.y_test)
    ]
    for c in counts:
        assert (c > 0).all()
    assert dataset.x_train.mean().abs() < 1e-4
    assert abs(float(dataset.x_train.std()) - 1) < 0.05
    # The test split is normalised with train statistics, so it is not exactly centred.
    assert dataset.x_test.mean().abs() > 1e-6


FUSED_RECIPES = {
    "adam": {"optimizer": "adam"},
    "adam, weight decay": {"optimizer": "adam", "weight_decay": 0.01},
    "adamw": {"optimizer": "adamw", "weight_decay": 0.05},
    "sgd, nesterov": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-3},
    "sgd, no momentum": {"optimizer": "sgd", "momentum": 0.0},
}


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here"),
        ),
    ],
)
@pytest.mark.parametrize("params", FUSED_RECIPES.values(), ids=FUSED_RECIPES)
def test_the_direct_fused_step_is_bit_identical_to_optimizer_step(params, device):
    """train.FusedStep calls the fused kernel itself: same weights and state as step(), to
    the bit, through learning-rate changes and with a frozen parameter in the optimizer."""
    recipe = train.Recipe.from_params({"lr": 0.01, **params}, epochs=3, seed=0)
    runs = []
    for direct in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        model.to(device)
        model[0].bias.requires_grad_(False)  # no gradient: both must leave it alone
        optimizer = train.make_optimizer(model, recipe, torch.device(device))
        step = train.FusedStep(optimizer) if direct else optimizer.step
        if direct:
            assert step.kernel is not None  # the fast path is the one under test
        gen = torch.Generator().manual_seed(1)
        for i in range(6):
            optimizer.param_groups[0]["lr"] = 0.01 / (i + 1)  # as a schedule would
            x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            step()
        state = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
        runs.append(([p.detach().clone() for p in model.parameters()], state))
    (weights, state), (direct_weights, direct_state) = runs
    assert all(torch.equal(a, b) for a, b in zip(weights, direct_weights, strict=True))
    for a, b in zip(state, direct_state, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_rmsprop_and_other_options_take_optimizer_step():
    model = torch.nn.Linear(3, 2)
    rmsprop = train.make_optimizer(model, train.Recipe(optimizer="rmsprop"), torch.device("cpu"))
    assert train.FusedStep(rmsprop).kernel is None
    amsgrad = torch.optim.Adam(model.parameters(), amsgrad=True, fused=True)
    assert train.FusedStep(amsgrad).kernel is None
