"""Tasks: classification and regression metrics, direction-aware search, regression export."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from sklearn import metrics as skm

import automodel.data
from automodel import config, metrics, models, search, train
from tests.conftest import FAST, cli, load_study, tree
from tests.test_export import _script, blocker  # noqa: F401 (a fixture)

REGRESSION = ["data.task=regression", "data.n_samples=300"]


def test_classification_metrics_match_scikit_learn():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=gen)
    scores = torch.randn(200, 5, generator=gen)  # class 4 is predicted, never a label
    got = metrics.compute("classification", scores, y)
    predicted = scores.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y.numpy(), predicted))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y.numpy(), predicted, average="macro"))


def test_regression_metrics_match_scikit_learn_in_original_units():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(300, generator=gen)
    out = (y + 0.3 * torch.randn(300, generator=gen)).unsqueeze(1)
    got = metrics.compute("regression", out, y, target_std=7.0)
    y_raw, p_raw = 7.0 * y.double().numpy(), 7.0 * out[:, 0].double().numpy()
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y_raw, p_raw))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y_raw, p_raw))
    assert got["r2"] == pytest.approx(skm.r2_score(y_raw, p_raw))


@pytest.fixture(scope="module")
def regression_data():
    return automodel.data.load(config.DataConfig(name="synthetic", task="regression"), seed=0)


def test_regression_targets_are_normalised_with_train_statistics(regression_data):
    d = regression_data
    assert d.spec.task == "regression" and d.spec.metric == "rmse"
    assert d.spec.direction == "minimize" and d.spec.n_outputs == 1 and d.spec.classes == ()
    assert d.y_train.dtype == torch.float32
    assert abs(float(d.y_train.mean())) < 1e-5 and abs(float(d.y_train.std()) - 1) < 0.01
    assert d.spec.target_std > 10 and abs(d.spec.target_mean - 50) < 30  # raw units kept
    assert models.create("mlp", {}, d.spec)(d.x_val).shape == (len(d.x_val), 1)


@pytest.mark.parametrize("loss", train.LOSSES)
def test_regression_learns_with_each_loss(regression_data, loss):
    train.seed_everything(0)
    model = models.create("mlp", {"depth": 1, "width": 64}, regression_data.spec)
    recipe = train.Recipe.from_params({"lr": 0.01, "loss": loss}, epochs=8, seed=0)
    result = train.fit(model, regression_data, recipe)
    assert result.best_value == min(e.value for e in result.history)  # lower is better
    assert set(result.best_metrics) == {"rmse", "mae", "r2"}
    assert result.best_metrics["r2"] > 0.8
    assert result.best_value < regression_data.spec.target_std / 2


def test_regression_search_minimises_rmse_and_reports_every_metric(make_run, blocker, tmp_path):  # noqa: F811
    run = make_run(*REGRESSION, "study.n_trials=3", "study.keep_top_k=2", "study.pruner=none")
    summary = search.search(run, "test")
    assert set(summary["val"]) == set(summary["test"]) == {"rmse", "mae", "r2"}
    study = load_study(run.study_dir)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert summary["best_trial"] == min(complete, key=lambda t: (t.value, t.number)).number
    assert summary["val"]["rmse"] == min(t.value for t in complete)
    kept = sorted(int(p.name) for p in (run.study_dir / "trials").iterdir())
    assert kept == sorted(t.number for t in sorted(complete, key=lambda t: t.value)[:2])

    # The export takes raw rows and raw targets, and gives the search's numbers back.
    export_dir = Path(summary["export"])
    splits = automodel.data.load_raw_splits(run.data, run.seed)
    files = {}
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        files[key] = tmp_path / f"{key}.npy"
        np.save(files[key], splits[key])
    res = _script(export_dir, blocker, "evaluate", "--input", files["x_test"], "--labels",
                  files["y_test"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    printed = {k: float(v) for k, v in map(str.split, res.stdout.splitlines())}
    assert printed == summary["test"]
    res = _script(export_dir, blocker, "train", "--input", files["x_train"], "--labels",
                  files["y_train"], "--val-input", files["x_val"], "--val-labels",
                  files["y_val"], "--output", tmp_path / "r.pt")  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split("best val_rmse")[1].split()[0])
    assert best == pytest.approx(summary["val"]["rmse"], rel=0.01)
    script = runpy.run_path(str(export_dir / "best_model.py"))
    values, probabilities = script["predict"](splits["x_test"][:5])
    assert probabilities is None and len(values) == 5
    data = automodel.data.load(run.data, run.seed)
    ckpt = torch.load(run.study_dir / "best_model.pt", weights_only=True)
    model = models.create(ckpt["family"], ckpt["params"], data.spec)
    model.load_state_dict(ckpt["state_dict"])
    with torch.inference_mode():
        expected = model.eval()(data.x_test[:5])[:, 0].double() * data.spec.target_std
    np.testing.assert_allclose(values, expected.numpy() + data.spec.target_mean, rtol=1e-6)
    source = (export_dir / "best_model.py").read_text()
    assert "1 value" in source and "TARGET_STD = " in source and "values, _ = predict" in source


def test_regression_cli_prints_every_metric(tmp_path):
    runs = tmp_path / "runs"
    res = cli("search", *FAST, *REGRESSION, f"runs_dir={runs}", "quiet=false", "study.n_trials=2")
    assert res.returncode == 0, res.stderr
    assert "test rmse" in res.stdout and " mae " in res.stdout and " r2 " in res.stdout
    assert "val_rmse=" in res.stdout
    summary = json.loads((runs / "synthetic-mlp" / "summary.json").read_text())
    assert set(summary["test"]) == {"rmse", "mae", "r2"}


@pytest.mark.parametrize(
    ("overrides", "space", "fragment"),
    [
        (["data=digits", "data.task=regression"], None, "data 'digits' is a classification"),
        (["data.task=ordinal"], None, "data.task must be null, classification or regression"),
        ([], "loss: huber", "no param applies to data synthetic (loss applies to regr"),
    ],
)
def test_params_and_tasks_that_do_not_fit_are_refused(tmp_path, overrides, space, fragment):
    runs = tmp_path / "runs"
    extra = []
    if space is not None:
        path = tmp_path / "space.yaml"
        path.write_text(f"family: mlp\nparams:\n  {space}\n")
        extra = [f"search_space={path}"]
    fast = [
        o
        for o in FAST
        if not o.startswith(("data=", "data.n_")) or overrides[:1] != ["data=digits"]
    ]
    res = cli("search", *fast, f"runs_dir={runs}", *overrides, *extra)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err
    assert tree(runs) == []
