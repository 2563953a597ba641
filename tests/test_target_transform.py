"""Regression targets skewed to the right are learned as log1p(y), chosen on the training split;
predictions and every metric stay in the target's own units, in the search and the script."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import automodel.data
from automodel import config, metrics, models, search
from automodel.data import choose_target_transform
from tests.test_csv import BASE, write_csv
from tests.test_export import _script, blocker  # noqa: F401 (a fixture)


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        (lambda rng: rng.lognormal(3.0, 0.8, 500), "log1p"),  # prices: positive, long tail
        (lambda rng: rng.geometric(0.2, 500) - 1.0, "log1p"),  # counts from 0, a long tail
        (lambda rng: rng.normal(100.0, 10.0, 500), "none"),  # symmetric
        (lambda rng: -rng.lognormal(3.0, 0.8, 500), "none"),  # skewed to the left
        (lambda rng: rng.lognormal(3.0, 0.8, 500) - 10, "none"),  # negative values
    ],
)
def test_a_skewed_positive_target_gets_log1p_and_others_none(draw, expected):
    assert choose_target_transform(draw(np.random.default_rng(0))) == expected


def test_log1p_metrics_are_in_the_targets_own_units():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(300, generator=gen)
    out = (y + 0.3 * torch.randn(300, generator=gen)).unsqueeze(1)
    got = metrics.compute("regression", out, y, 0.7, 3.0, "log1p")
    y_raw = np.expm1(0.7 * y.double().numpy() + 3.0)
    p_raw = np.expm1(0.7 * out[:, 0].double().numpy() + 3.0)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y_raw, p_raw))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y_raw, p_raw))
    assert got["r2"] == pytest.approx(skm.r2_score(y_raw, p_raw))


def _table(path: Path, n: int = 240) -> Path:
    """Prices: positive, log-normal, driven by two numbers and a category."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        size, age = rng.uniform(20, 200), rng.uniform(0, 50)
        city = str(rng.choice(["Paris", "Rome", "Oslo"]))
        log_price = 4 + size / 100 - age / 50 + (city == "Oslo") / 2 + rng.normal(0, 0.3)
        rows.append([f"{size:.1f}", f"{age:.1f}", city, f"{np.exp(log_price):.2f}"])
    return write_csv(path, ["size", "age", "city", "price"], rows)


@pytest.fixture(scope="module")
def skewed_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("skewed")
    path = _table(root / "prices.csv")
    overrides = [*BASE, "data=csv", f"data.path={path}", "data.target=price",
                 f"runs_dir={root / 'runs'}", "study.n_trials=1", "trainer.max_epochs=5"]  # fmt: skip
    run = config.to_run_config(config.compose(overrides))
    summary = search.search(run, "test")
    return run, summary, automodel.data.load_raw_splits(run.data, run.seed)


def test_a_skewed_csv_target_is_learned_as_log1p(skewed_search):
    run, summary, s = skewed_search
    data = automodel.data.load(run.data, run.seed)
    assert data.spec.target_transform == "log1p"
    # What the model learns: log1p(y) normalised, from the training split's statistics.
    learned = (np.log1p(s["y_train"].astype(float)) - data.spec.target_mean) / data.spec.target_std
    np.testing.assert_allclose(data.y_train.numpy(), learned, rtol=1e-6, atol=1e-6)
    plain = automodel.data.load(dataclasses.replace(run.data, target_transform="none"), 0)
    assert plain.spec.target_transform == "none"
    assert summary["test"]["rmse"] < 0.5 * float(np.std(s["y_test"].astype(float)))


def test_the_script_predicts_in_the_targets_units_and_reproduces_the_metrics(
    skewed_search,
    blocker,  # noqa: F811
    tmp_path,
):
    run, summary, s = skewed_search
    export_dir = Path(summary["export"])
    assert 'TARGET_TRANSFORM = "log1p"' in (export_dir / "best_model.py").read_text()
    header = ["size", "age", "city", "price"]
    files = {}
    for split in ("train", "val", "test"):
        rows = [[*x, y] for x, y in zip(s[f"x_{split}"], s[f"y_{split}"], strict=True)]
        files[split] = write_csv(tmp_path / f"{split}.csv", header, rows)
    res = _script(export_dir, blocker, "evaluate", "--input", files["test"])
    assert res.returncode == 0, res.stderr
    assert {k: float(v) for k, v in map(str.split, res.stdout.splitlines())} == summary["test"]
    res = _script(export_dir, blocker, "train", "--input", files["train"], "--val-input",
                  files["val"], "--output", tmp_path / "r.pt")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.split("best val_rmse")[1].split()[0]) == summary["val"]["rmse"]
    # Predictions in prices, not in log-prices: expm1 of the model's denormalised output.
    script = runpy.run_path(str(export_dir / "best_model.py"))
    values, _ = script["predict"](s["x_test"])
    data = automodel.data.load(run.data, run.seed)
    ckpt = torch.load(run.study_dir / "best_model.pt", weights_only=True)
    model = models.create(ckpt["family"], ckpt["params"], data.spec)
    model.load_state_dict(ckpt["state_dict"])
    with torch.inference_mode():
        out = model.eval()(data.x_test)[:, 0].double()
    expected = np.expm1(out.numpy() * data.spec.target_std + data.spec.target_mean)
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    y = s["y_test"].astype(float)
    assert np.sqrt(np.mean((np.asarray(values) - y) ** 2)) == pytest.approx(summary["test"]["rmse"])
