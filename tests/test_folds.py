"""Cross-validation and refit with real searches on tmp_path: folds over the non-test rows,
lockstep training and pruning, the model shipped (a fold's, or a refit) measured as reported,
the study's identity, and what summary.json, status and MLflow say about it."""

from __future__ import annotations

import math
import statistics

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from automodel import crossval, data, metrics, models, search, status, study_export, train
from automodel import study as studylib
from automodel.checkpoint import Checkpoint
from automodel.config import ConfigError
from automodel.data import folds as data_folds
from automodel.search import folds as search_folds
from tests.conftest import load_study

CV = ["data.cv_folds=3"]


def test_folds_cover_the_non_test_rows_once_each_normalised_by_its_own_training_rows(make_run):
    run = make_run()
    raw = data.load_raw_splits(run.data, run.seed)
    folds = data_folds.load(run.data, run.seed, 3)
    n = len(raw["y_rest"])
    assert sorted(np.concatenate(folds.val_rows).tolist()) == list(range(n))
    for fold, val in zip(folds.datasets, folds.val_rows, strict=True):
        assert set(raw["y_rest"][val].tolist()) == {0, 1, 2}  # stratified: every class, each fold
        training = raw["x_rest"][np.setdiff1d(np.arange(n), val)].astype(np.float32)
        np.testing.assert_allclose(fold.spec.mean, training.mean(0), rtol=1e-5, atol=1e-6)
        assert len(fold.x_train) == len(training) and len(fold.x_test) == len(raw["x_test"])


def test_auto_folds_small_data_and_keeps_one_split_for_large(make_run, monkeypatch):
    dataset = data.load(make_run().data, 0)
    assert data_folds.resolve("auto", dataset) == data_folds.AUTO_FOLDS
    assert data_folds.resolve(0, dataset) == 0
    monkeypatch.setattr(data_folds, "AUTO_MAX_ROWS", len(dataset.y_train) + len(dataset.y_val) - 1)
    assert data_folds.resolve("auto", dataset) == 0


PARAMS = {"depth": 1, "width_l0": 16, "dropout": 0.3}  # dropout draws from torch's generator


def test_lockstep_keeps_every_fold_at_the_epoch_where_their_mean_is_best(make_run):
    folds = data_folds.load(make_run().data, 0, 3)
    recipe = train.Recipe(epochs=12, batch_size=32, seed=5, schedule="cosine")
    built, states = [], []
    for fold in folds.datasets:
        torch.manual_seed(5)
        built.append(models.create("mlp", PARAMS, fold.spec))
        states.append(crossval.rng_state(torch.device("cpu")))
    seen: list[train.Epoch] = []
    together = crossval.fit_folds(built, folds, recipe, states, on_epoch_end=seen.append)
    alone = []
    for fold in folds.datasets:  # each fold on its own, from the same seed, every epoch
        torch.manual_seed(5)
        alone.append(train.fit(models.create("mlp", PARAMS, fold.spec), fold, recipe))
    for epoch, record in enumerate(seen):  # the reported curve: the folds' mean
        fold_values = [f.history[epoch].value for f in alone]
        assert record.value == pytest.approx(statistics.fmean(fold_values))
    # The epoch whose mean ranks best: the metric, then the lower validation loss.
    best = min(seen, key=lambda r: (-r.value, r.val_loss)).epoch
    values = [r.value for r in seen]
    assert best > values.index(max(values)) + 1  # a plateau: not its first epoch, as it was
    assert together.best_epochs == [best] * 3 and together.refit_epochs == best
    assert together.metrics["accuracy"] == pytest.approx(seen[best - 1].value)
    for fold, fit, model in zip(folds.datasets, together.fits, built, strict=True):
        # The fold's weights are those of training it alone for `best` epochs of the schedule.
        torch.manual_seed(5)
        again = train.fit(models.create("mlp", PARAMS, fold.spec), fold, recipe.stopped_at(best))
        assert all(torch.equal(fit.best_state[k], again.best_state[k]) for k in fit.best_state)
        assert all(torch.equal(v, fit.best_state[k]) for k, v in model.state_dict().items())
        assert fit.best_metrics == fit.history[best - 1].val


def test_out_of_fold_regression_outputs_share_the_first_folds_normalisation(make_run):
    run = make_run("data.task=regression")
    folds = data_folds.load(run.data, 0, 3)
    built, states = [], []
    for fold in folds.datasets:
        torch.manual_seed(0)
        built.append(models.create("mlp", PARAMS, fold.spec))
        states.append(crossval.rng_state(torch.device("cpu")))
    result = crossval.fit_folds(built, folds, train.Recipe(epochs=2, batch_size=32), states)
    out, y = crossval.out_of_fold(built, folds)
    first = folds.datasets[0].spec
    y_rest = data.load_raw_splits(run.data, 0)["y_rest"]
    np.testing.assert_allclose(y.double() * first.target_std + first.target_mean, y_rest, rtol=1e-5)
    # Pooled over every row, the RMSE is the folds' mean squared errors weighted by their rows.
    pooled = metrics.compute("regression", out, y, first.target_std)["rmse"]
    sizes = [len(v) for v in folds.val_rows]
    squares = [n * f.best_metrics["rmse"] ** 2 for n, f in zip(sizes, result.fits, strict=True)]
    assert pooled == pytest.approx(math.sqrt(sum(squares) / sum(sizes)), rel=1e-4)


def test_a_pruner_stops_a_cross_validated_trial_after_its_first_epoch(make_run):
    run = make_run(*CV, "study.n_trials=2", "trainer.max_epochs=5")
    plan = search.prepare(run)
    # A real Optuna pruner that prunes every trial below 1.1 accuracy: all, at the first report.
    study = optuna.create_study(
        storage=studylib.open_storage(None, run.study_dir),
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(lower=1.1),
    )
    search.run_trials(plan, study, torch.device("cpu"))
    assert [t.state for t in study.get_trials()] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [1] for t in study.get_trials())


def test_a_cross_validated_search_reports_the_folds_and_ships_the_first(make_run, capsys):
    run = make_run(*CV, "study.n_trials=3")
    summary = search.search(run)
    assert summary["refit"] is False and summary["cv"]["folds"] == 3
    assert summary["val"] == summary["cv"]["mean"]
    best = load_study(run.study_dir).trials[summary["best_trial"]]
    assert best.value == summary["val"]["accuracy"]
    assert best.user_attrs["cv_std"] == summary["cv"]["std"]["accuracy"]
    # The out-of-fold outputs: every non-test row in order, each from the model that held it out.
    out, y = search_folds.val_outputs(run.study_dir, summary["best_trial"])
    raw = data.load_raw_splits(run.data, run.seed)
    assert out.dtype == torch.float32 and out.shape == (len(raw["y_rest"]), 3)
    assert y.tolist() == raw["y_rest"].tolist()
    oof = metrics.compute("classification", out, y)["accuracy"]  # folds weighted by their rows
    assert oof == pytest.approx(summary["val"]["accuracy"], abs=0.01)
    # The shipped model is the first fold's: its test metrics, on the test rows the fold's way.
    ckpt = Checkpoint.load(run.study_dir / "best_model.pt")
    fold = search.prepare(run).folds.datasets[0]
    assert ckpt.spec == fold.spec and ckpt.extra["fold"] == 1
    test = train.evaluate(ckpt.build_model(), fold.x_test, fold.y_test, fold.spec)
    assert {k: test[k] for k in summary["test"]} == summary["test"]
    # Kept at the folds' best epoch: its recipe (that many epochs of the trials' schedule, the
    # last weights) trains the first fold to these weights again, as the script's `train` does.
    recipe = ckpt.recipe
    assert (recipe.keep, recipe.epochs) == ("last", best.user_attrs["best_epoch"])
    assert recipe.span == run.trainer.max_epochs
    train.seed_everything(recipe.seed)
    again = models.create("mlp", ckpt.params, fold.spec)
    train.fit(again, fold, recipe)
    shipped = ckpt.build_model().state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in again.state_dict().items())
    capsys.readouterr()
    status.show(run, one_study=True)
    shown = capsys.readouterr().out
    assert "selection: 3-fold cross-validation (accuracy" in shown and "shipped: trial" in shown
    assert f"val={best.value:.4f}±" in shown
    # Another trial exported: retrained (no kept weights), measured the way of its first fold.
    other = next(n for n in range(3) if n != summary["best_trial"])
    source = study_export.export_study(make_run(*CV, f"trial={other}")) / "best_model.py"
    assert "selected by 3-fold cross-validation" in source.read_text()


def _cosine_lrs(lr: float, span: int, epochs: int) -> list[float]:
    """The learning rate of each of the first `epochs` epochs of a cosine over `span`."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=span)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_a_refit_stops_at_the_best_epoch_inside_the_schedule_its_trials_ran(make_run):
    """The folds were best after E epochs of a cosine over max_epochs; the refit runs those E
    epochs of that same cosine. A whole cosine squeezed into E epochs learnt at about half
    the rate and shipped underfit models (iris: 0.76 test accuracy instead of 0.96)."""
    run = make_run(
        "data.cv_folds=3", "study.refit=true", "study.n_trials=2", "trainer.max_epochs=8",
        "search_space.params.schedule=cosine", "~search_space.enqueue",
    )  # fmt: skip
    search.search(run)
    ckpt = Checkpoint.load(run.study_dir / "best_model.pt")
    recipe = ckpt.recipe
    assert (recipe.schedule, recipe.schedule_epochs, recipe.keep) == ("cosine", 8, "last")
    every_row = data_folds.refit(run.data, run.seed)
    train.seed_everything(recipe.seed)
    model = models.create("mlp", ckpt.params, every_row.spec)
    result = train.fit(model, every_row, recipe)
    assert [e.lr for e in result.history] == pytest.approx(_cosine_lrs(recipe.lr, 8, recipe.epochs))
    shipped = ckpt.build_model().state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("folds", [0, 3])
def test_refit_trains_every_non_test_row_for_the_best_epoch_count(make_run, folds):
    run = make_run(f"data.cv_folds={folds}", "study.refit=true", "study.n_trials=2")
    summary = search.search(run)
    assert summary["refit"] is True and (summary["cv"] is None) == (folds == 0)
    best = load_study(run.study_dir).trials[summary["best_trial"]]
    ckpt = Checkpoint.load(run.study_dir / "best_model.pt")
    assert ckpt.recipe.keep == "last" and ckpt.recipe.epochs == best.user_attrs["best_epoch"]
    if folds:  # one epoch count for all folds: where their mean was best
        assert set(best.user_attrs["fold_best_epochs"]) == {ckpt.recipe.epochs}
    assert ckpt.extra["refit"] is True and ckpt.val == summary["val"]
    every_row = data_folds.refit(run.data, run.seed)
    assert len(every_row.x_train) == len(data.load_raw_splits(run.data, run.seed)["y_rest"])
    assert ckpt.spec == every_row.spec  # the statistics of every non-test row
    test = train.evaluate(ckpt.build_model(), every_row.x_test, every_row.y_test, every_row.spec)
    assert {k: test[k] for k in summary["test"]} == summary["test"]


def test_a_study_refuses_a_rerun_with_other_folds_but_not_the_same_folds_named_otherwise(
    make_run,
):
    search.search(make_run("data.cv_folds=5", "study.n_trials=1", "trainer.max_epochs=1"))
    journal = make_run().study_dir / "study.journal"
    # auto is 5 folds on these 240 non-test rows: the same procedure, the same study.
    search.search(make_run("data.cv_folds=auto", "study.n_trials=1", "trainer.max_epochs=1"))
    before = journal.read_bytes()
    for other in ("data.cv_folds=3", "data.cv_folds=0"):
        with pytest.raises(ConfigError, match=r"was created with a different cv_folds \(5 then"):
            search.search(make_run(other, "study.n_trials=2", "trainer.max_epochs=1"))
    assert journal.read_bytes() == before


@pytest.mark.slow  # a tracked search: creating the MLflow store, registering the model
def test_the_parent_run_shows_the_folds_and_the_refit(make_run):
    from mlflow import MlflowClient

    run = make_run(*CV, "study.refit=true", "study.n_trials=1", "tracking.enabled=true")
    summary = search.search(run)
    client = MlflowClient(f"sqlite:///{run.runs_dir}/mlflow.db")
    parent = client.get_run(summary["mlflow_run_id"]).data
    assert parent.metrics["cv_folds"] == 3
    assert parent.metrics["cv_std_accuracy"] == pytest.approx(summary["cv"]["std"]["accuracy"])
    assert parent.tags["automodel.refit"] == "true"
