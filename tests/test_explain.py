"""Explaining the shipped model end to end: a real search on a generated CSV where only two
columns carry the target ranks them first (meaning), the exported script's `explain` gives
importance.json's numbers for the test rows (fidelity), and its bad input is one line, exit 2.
"""

from __future__ import annotations

import csv
import json
import runpy
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import automodel.data
from automodel import config, importance, search
from automodel.search.console import print_summary
from automodel.tracking import importance_plots
from tests.conftest import FAST
from tests.test_export import _script, blocker  # noqa: F401 (a fixture)

SIGNAL = {"a", "city"}  # the columns the target is made of; the others are noise
HEADER = ["noise_1", "city", "color", "a", "noise_2", "label"]


def signal_csv(path: Path, task: str, n: int = 500, seed: int = 0) -> Path:
    """A numeric and a categorical column carry the target; two numbers (one with gaps)
    and a category are noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, city = rng.normal(), str(rng.choice(["x", "y", "z"], p=[0.3, 0.5, 0.2]))
        effect = 2.0 * a + 3.0 * (city == "x") - 1.0
        target = f"{10 * effect + 50:.4f}" if task == "regression" else "yes" * (effect > 0)
        noise_1 = f"{rng.normal():.4f}" if rng.random() > 0.1 else ""
        color = str(rng.choice(["red", "blue"]))
        rows.append([noise_1, city, color, f"{a:.4f}", f"{rng.normal():.4f}", target or "no"])
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return path


class Searched:
    def __init__(self, root: Path, task: str):
        self.path = signal_csv(root / "signal.csv", task)
        fast = [o for o in FAST if not o.startswith("data")]
        overrides = [*fast, "data=csv", "data.cv_folds=0", f"data.path={self.path}", "data.target=label",
                     f"runs_dir={root / 'runs'}", "study.n_trials=2", "trainer.max_epochs=15"]  # fmt: skip
        self.run = config.to_run_config(config.compose(overrides))
        self.summary = search.search(self.run)
        self.study_dir = self.run.study_dir
        self.export = self.study_dir / "export"
        self.report = json.loads((self.study_dir / "importance.json").read_text())
        self.splits = automodel.data.load_raw_splits(self.run.data, self.run.seed)
        self.classes = automodel.data.load(self.run.data, self.run.seed).spec.classes

    def test_csv(self, folder: Path, drop: str | None = None, labels: bool = True) -> Path:
        """The test split as a user's CSV: raw cells by column name, the target as text."""
        names = [h for h in HEADER[:-1] if h != drop] + (["label"] if labels else [])
        order = HEADER[:-1]  # the split's columns
        path = folder / "test.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            for x, y in zip(self.splits["x_test"], self.splits["y_test"], strict=True):
                cells = dict(zip(order, x, strict=True))
                cells["label"] = self.classes[y] if self.classes else repr(float(y))
                writer.writerow([cells[n] for n in names])
        return path


@pytest.fixture(scope="module", params=["classification", "regression"])
def searched(request, tmp_path_factory) -> Searched:
    return Searched(tmp_path_factory.mktemp(f"explain-{request.param}"), request.param)


# For tests that need one study only: the module's classification study, not a second one.
CLASSIFICATION_ONLY = pytest.mark.parametrize("searched", ["classification"], indirect=True)


def test_the_columns_that_carry_the_signal_rank_first(searched):
    report = searched.report
    metric = "accuracy" if searched.classes else "rmse"
    assert (report["method"], report["metric"], report["repeats"]) == ("permutation", metric, 5)
    assert report["rows"] == len(searched.splits["x_test"])
    ranked = [c["name"] for c in report["columns"]]
    assert sorted(ranked) == sorted(HEADER[:-1])  # a raw column each: one-hot blocks as one
    assert set(ranked[:2]) == SIGNAL, report["columns"]
    weakest_signal = report["columns"][1]["mean"]
    assert all(c["mean"] < weakest_signal / 3 for c in report["columns"][2:])
    top = searched.summary["importance"]["top"]
    assert [t["name"] for t in top] == ranked and top[0]["mean"] == report["columns"][0]["mean"]


def test_the_script_explains_the_test_rows_with_the_searchs_numbers(
    searched,
    blocker,  # noqa: F811
    tmp_path,
):
    rows = searched.test_csv(tmp_path)
    out = tmp_path / "report.json"
    res = _script(searched.export, blocker, "explain", "--input", rows, "--output", out)
    assert res.returncode == 0, res.stderr
    expected = dict(searched.report)
    del expected["seconds"]
    assert json.loads(out.read_text()) == expected  # every number, to the last digit
    printed = res.stdout.splitlines()
    assert printed[2].split()[0] == expected["columns"][0]["name"]
    other = _script(searched.export, blocker, "explain", "--input", rows, "--seed", "1")
    assert other.returncode == 0 and other.stdout != res.stdout  # the seed is the seed


def test_one_rows_contributions_are_the_change_at_each_columns_typical_value(
    searched,
    blocker,  # noqa: F811
    tmp_path,
):
    rows = searched.test_csv(tmp_path, labels=False)
    out = tmp_path / "row.json"
    res = _script(searched.export, blocker, "explain", "--input", rows, "--row", "3",
                  "--output", out)  # fmt: skip
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    columns = {c["name"]: c for c in result["columns"]}
    train = dict(zip(HEADER[:-1], np.asarray(searched.splits["x_train"]).T, strict=True))
    # Typical: a category's most common level, a number's median, in the training split.
    assert columns["city"]["typical"] == Counter(train["city"]).most_common(1)[0][0] == "y"
    assert columns["a"]["typical"] == pytest.approx(float(np.median(train["a"].astype(float))))
    magnitudes = [abs(c["contribution"]) for c in result["columns"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    # Each contribution is what predict says when that cell takes the typical value.
    script = runpy.run_path(str(searched.export / "best_model.py"))
    _, cells, _ = script["read_input"](rows)
    row = cells[3]
    for name in ("a", "city", "color"):
        changed = list(row)
        k = HEADER.index(name)
        changed[k] = str(columns[name]["typical"])
        before, cls = _prediction(script, [row])
        after, _ = _prediction(script, [changed], cls)
        assert columns[name]["value"] == row[k]
        assert columns[name]["contribution"] == pytest.approx(before - after, abs=1e-5)


def _prediction(script, rows, cls: int | None = None) -> tuple[float, int | None]:
    """The probability of class `cls` (default: the predicted one) and that class, or the
    predicted value: a changed cell may flip the prediction, and the contribution is the
    change in the original prediction's probability."""
    values, probabilities = script["predict"](rows)
    if probabilities is None:
        return float(values[0]), None
    cls = int(probabilities[0].argmax()) if cls is None else cls
    return float(probabilities[0][cls]), cls


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("row", "--row 999 is out of range: the input has"),
        ("unlabelled", "holds no labels (no 'label' column); give --labels"),
        ("missing", "needs a header row with the columns ['a']"),
        ("repeats", "--repeats must be >= 1, got 0"),
    ],
)
@CLASSIFICATION_ONLY  # once is enough: the checks do not depend on the task
def test_bad_explain_input_is_one_line_exit_2(searched, blocker, tmp_path, case, message):  # noqa: F811
    drop = "a" if case == "missing" else None
    rows = searched.test_csv(tmp_path, drop=drop, labels=case != "unlabelled")
    extra = {"row": ["--row", "999"], "repeats": ["--repeats", "0"]}.get(case, [])
    res = _script(searched.export, blocker, "explain", "--input", rows, *extra)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_the_console_and_mlflow_show_the_importance(searched, tmp_path, capsys):
    print_summary(searched.summary)
    line = next(s for s in capsys.readouterr().out.splitlines() if "importance" in s)
    top = searched.report["columns"][:5]
    assert line.split(": ", 1)[1].split(", ")[0].split()[0] == top[0]["name"]
    assert line.count(",") == 4  # the top five
    logged = []

    class Client:
        def log_artifact(self, run, path, where):
            logged.append((where, Path(path).name))

        def log_artifacts(self, run, folder, where):
            logged.extend((where, p.name) for p in sorted(Path(folder).iterdir()))

    parent = type("Parent", (), {"client": Client(), "id": "run"})()
    importance_plots.log(parent, searched.study_dir)
    assert logged == [("importance", "importance.json"), ("importance", "columns.png")]


@CLASSIFICATION_ONLY
def test_explain_false_writes_nothing_and_says_null(searched):
    assert (searched.study_dir / importance.FILE).is_file()
    searched.run.explain = False
    try:  # a rerun of the finished study: no trial, only its end
        summary = search.search(searched.run)
    finally:
        searched.run.explain = True
    assert summary["importance"] is None
    assert json.loads((searched.study_dir / "summary.json").read_text())["importance"] is None
    assert not (searched.study_dir / importance.FILE).exists()
