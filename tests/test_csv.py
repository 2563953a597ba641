"""`data=csv`: a user's table searched with no code, exported to take the raw CSV columns."""

from __future__ import annotations

import ast
import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import automodel.data
from automodel.config import DataConfig
from automodel.data import table
from tests.conftest import FAST, checkpoint, cli, tree
from tests.test_export import _script, blocker  # noqa: F401 (a fixture)

BASE = [o for o in FAST if not o.startswith(("data=", "data.n_"))]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def people(path: Path, n: int = 300, seed: int = 0, regression: bool = False) -> Path:
    """A table as users have them: an id, numbers with gaps, categories with few and many
    levels, free text, string labels (or a numeric target for regression)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age = int(rng.integers(18, 80))
        income = rng.normal(50, 15)
        city = str(rng.choice(["Paris", "Rome", "Oslo"]))
        score = (age - 50) / 15 + (income - 50) / 15 + (city == "Oslo") + rng.normal(0, 0.4)
        target = f"{10 * score + 100:.3f}" if regression else ("yes" if score > 0 else "no")
        rows.append(
            [
                1000 + i,
                str(age) if rng.random() > 0.1 else str(rng.choice(["", "NA", "?", " NaN "])),
                f"{income:.2f}",
                city if rng.random() > 0.05 else "",
                f"z{rng.integers(0, 100)}",
                f"said {rng.integers(0, 10**6)} things",
                target,
            ]
        )
    header = ["customer_id", "age", "income", "city", "zip", "notes", "label"]
    return write_csv(path, header, rows)


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(
        **{"name": path.stem, "source": "csv", "path": str(path), "target": "label", **kw}
    )


# ------------------------------------------------------------------------ reading, typing


def test_columns_are_typed_cleaned_and_junk_is_dropped_with_warnings(tmp_path):
    raw = table.load(_cfg(people(tmp_path / "p.csv")))
    assert [(c["name"], c["kind"]) for c in raw.columns] == [
        ("age", "numeric"),
        ("income", "numeric"),
        ("city", "categorical"),
        ("zip", "categorical"),
    ]
    assert raw.columns[0]["indicator"] and not raw.columns[1]["indicator"]
    assert raw.classes == ["no", "yes"] and raw.task == "classification"
    assert any("'customer_id'" in w and "identifier" in w for w in raw.warnings)
    assert any("'notes'" in w for w in raw.warnings)


def test_encoding_is_fitted_on_the_training_split_only(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        ["n", "c", "label"],
        [["1", "a", "x"], ["3", "b", "x"], ["", "a", "y"], ["100", "zz", "y"]],
    )
    raw = table.load(DataConfig(source="csv", path=str(path), target="label"))
    columns = table.fit(raw.columns, raw.x[:3])  # the 4th row plays the test split
    assert columns[0] == {"name": "n", "kind": "numeric", "fill": 2.0, "indicator": True}
    assert columns[1] == {"name": "c", "kind": "onehot", "levels": ["a", "b"]}
    encoded = table.encode(columns, raw.x)
    assert encoded.tolist() == [
        [1, 0, 1, 0],
        [3, 0, 0, 1],
        [2, 1, 1, 0],  # missing: the train median, and the indicator
        [100, 0, 0, 0],  # an unseen level: all zeros
    ]


def test_many_levels_are_hashed_stably(tmp_path):
    levels = [f"level{i}" for i in range(40)]
    rows = [[levels[i % 40], "ab"[i % 2]] for i in range(120)]
    raw = table.load(DataConfig(source="csv", path=str(write_csv(tmp_path / "h.csv", ["c", "label"], rows)), target="label"))  # fmt: skip
    (column,) = table.fit(raw.columns, raw.x)
    assert column == {"name": "c", "kind": "hash", "buckets": table.HASH_BUCKETS}
    encoded = table.encode([column], raw.x)
    assert (encoded.sum(1) == 1).all() and encoded.shape == (120, table.HASH_BUCKETS)
    assert np.array_equal(encoded, table.encode([column], raw.x))


@pytest.mark.parametrize(
    ("labels", "task", "classes"),
    [
        (["cat", "dog"], "classification", ["cat", "dog"]),
        (["2", "10", "1"], "classification", ["1", "2", "10"]),  # numeric order
        (["0.5", "1.25", "3"], "regression", []),
    ],
)
def test_the_task_is_inferred_from_the_target(tmp_path, labels, task, classes):
    rows = [[i, labels[i % len(labels)]] for i in range(60)]
    path = write_csv(tmp_path / "t.csv", ["x", "label"], [[r[0] * 0.5, r[1]] for r in rows])
    raw = table.load(DataConfig(source="csv", path=str(path), target="label"))
    assert raw.task == task and raw.classes == classes


def test_a_whole_number_target_can_be_declared_regression(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["x", "label"], [[i * 0.5, i % 3] for i in range(60)])
    raw = table.load(DataConfig(source="csv", path=str(path), target="label", task="regression"))
    assert raw.task == "regression" and raw.y.dtype == np.float64


def test_the_script_encodes_cells_exactly_as_the_search(tmp_path):
    from automodel.export import verbatim

    (line,) = [x for x in verbatim.RUNTIME.splitlines() if x.startswith("MISSING = ")]
    assert ast.literal_eval(line.split(" = ")[1]) == table.MISSING  # the same markers
    path = people(tmp_path / "p.csv", n=200)
    run_cfg = _cfg(path)
    data = automodel.data.load(run_cfg, seed=0)
    splits = automodel.data.load_raw_splits(run_cfg, seed=0)
    from automodel import export, models

    model = models.create("mlp", {"depth": 1}, data.spec)
    ckpt = checkpoint("mlp", {"depth": 1}, data.spec, model)
    export_dir = export.write(tmp_path, ckpt, export.provenance("s", "c"))
    script = runpy.run_path(str(export_dir / "best_model.py"))
    assert torch.equal(script["prepare"](splits["x_test"]), data.x_test)
    odd = [[" 41 ", "NA", "Lima", "", "?"], [7, 3.25, "Oslo", "z3", "x"]]
    expected = table.encode(list(data.spec.columns), np.array([r[:4] for r in odd], object))
    assert np.array_equal(script["encode"]([r[:4] for r in odd]), expected)
    with pytest.raises(ValueError, match="column 'age', row 0: 'abc' is not a finite number"):
        script["encode"]([["abc", "1", "Oslo", "z"]])


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    path = people(root / "people.csv", n=300)
    runs = root / "runs"
    res = cli("search", *BASE, "data=csv", f"data.path={path}", "data.target=label",
              f"runs_dir={runs}", "study.n_trials=3", "study.pruner=none",
              "trainer.max_epochs=10")  # fmt: skip
    return path, runs / "people-tabular", res


def test_search_on_a_csv_with_no_code(searched):
    _, study_dir, res = searched
    assert res.returncode == 0, res.stderr
    assert "warning: data: dropped column 'customer_id'" in res.stderr
    assert "warning: data: dropped column 'notes'" in res.stderr
    summary = json.loads((study_dir / "summary.json").read_text())
    assert set(summary["test"]) == {"accuracy", "f1_macro"}
    assert summary["test"]["accuracy"] > 0.6
    assert summary["export"] == str(study_dir / "export")


def test_the_export_predicts_and_evaluates_from_the_raw_csv(searched, blocker, tmp_path):  # noqa: F811
    path, study_dir, _ = searched
    export_dir = study_dir / "export"
    run_cfg = _cfg(path, name="people")
    splits = automodel.data.load_raw_splits(run_cfg, seed=0)
    classes = ["no", "yes"]
    columns = ["age", "income", "city", "zip"]
    test_csv = write_csv(  # columns in another order, the target as text, an extra column
        tmp_path / "test.csv",
        ["label", "extra", *reversed(columns)],
        [
            [classes[y], "?", *reversed(list(x))]
            for x, y in zip(splits["x_test"], splits["y_test"], strict=True)
        ],
    )
    res = _script(export_dir, blocker, "evaluate", "--input", test_csv)
    assert res.returncode == 0, res.stderr
    printed = {k: float(v) for k, v in map(str.split, res.stdout.splitlines())}
    assert printed == json.loads((study_dir / "summary.json").read_text())["test"]
    res = _script(export_dir, blocker, "predict", "--input", path, "--output", tmp_path / "p.csv")
    assert res.returncode == 0, res.stderr
    table_out = list(csv.reader((tmp_path / "p.csv").open()))
    assert table_out[0] == ["label", *classes] and len(table_out) == 301
    assert {r[0] for r in table_out[1:]} <= set(classes)
    source = (export_dir / "best_model.py").read_text()
    assert (
        'TARGET = "label"' in source and '("city", "onehot", ("Oslo", "Paris", "Rome"))' in source
    )


def test_the_export_retrains_from_csv_files(searched, blocker, tmp_path):  # noqa: F811
    path, study_dir, _ = searched
    splits = automodel.data.load_raw_splits(_cfg(path, name="people"), seed=0)
    header = ["age", "income", "city", "zip", "label"]
    files = {}
    for split in ("train", "val"):
        rows = [[*x, ["no", "yes"][y]] for x, y in zip(splits[f"x_{split}"], splits[f"y_{split}"], strict=True)]  # fmt: skip
        files[split] = write_csv(tmp_path / f"{split}.csv", header, rows)
    res = _script(study_dir / "export", blocker, "train", "--input", files["train"],
                  "--val-input", files["val"], "--output", tmp_path / "r.pt")  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split("best val_accuracy")[1].split()[0])
    summary = json.loads((study_dir / "summary.json").read_text())
    assert abs(best - summary["val"]["accuracy"]) <= 0.01


def test_a_regression_csv_reports_rmse_mae_r2(tmp_path):
    path = people(tmp_path / "prices.csv", n=200, regression=True)
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=csv", f"data.path={path}", "data.target=label",
              f"runs_dir={runs}", "study.n_trials=2")  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads((runs / "prices-tabular" / "summary.json").read_text())
    assert set(summary["val"]) == {"rmse", "mae", "r2"}


# ------------------------------------------------------------------------ bad input


def _bad_files(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, fragment of the one-line error)."""
    ok_rows = [[i * 0.5, "ab"[i % 2]] for i in range(40)]
    header_only = _text(tmp / "h.csv", "x,label\n")
    cases = {
        "missing file": ([f"data.path={tmp / 'nope.csv'}"], "data.path '"),
        "a folder": ([f"data.path={tmp}"], "is a folder, not a CSV file"),
        "empty": ([f"data.path={_text(tmp / 'empty.csv', '')}"], "is empty"),
        "header only": ([f"data.path={header_only}"], "a header but no rows"),
        "no target": (
            [f"data.path={write_csv(tmp / 'n.csv', ['x', 'y'], ok_rows)}"],
            "data.target 'label' is not a column of n.csv; columns: x, y",
        ),
        "single class": (
            [
                f"data.path={write_csv(tmp / 's.csv', ['x', 'label'], [[i * 0.5, 'a'] for i in range(40)])}"
            ],
            "has a single class ('a')",
        ),
        "too few per class": (
            [
                f"data.path={write_csv(tmp / 'f.csv', ['x', 'label'], [*ok_rows, [1, 'c'], [2, 'c']])}"
            ],
            "class 'c' has 2 rows; each class needs at least 4",
        ),
        "text in numbers": (
            [f"data.path={write_csv(tmp / 't.csv', ['x', 'label'], [*ok_rows, ['12b', 'a']])}"],
            "column 'x' holds numbers but '12b' on line 42",
        ),
        "ragged": (
            [f"data.path={write_csv(tmp / 'r.csv', ['x', 'label'], [*ok_rows, [1, 'a', 3]])}"],
            "line 42 has 3 cells, the header 2",
        ),
        "unknown drop": (
            [f"data.path={write_csv(tmp / 'd.csv', ['x', 'label'], ok_rows)}", "data.drop=[q]"],
            "data.drop names 'q', not a column of d.csv",
        ),
        "no path": ([], "data=csv needs data.path=..., got None"),
        "regression of text": (
            [
                f"data.path={write_csv(tmp / 'g.csv', ['x', 'label'], ok_rows)}",
                "data.task=regression",
            ],
            "data.target 'label' holds 'a' on line 2; regression needs numbers",
        ),
    }
    return cases


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES = [
    "missing file",
    "a folder",
    "empty",
    "header only",
    "no target",
    "single class",
    "too few per class",
    "text in numbers",
    "ragged",
    "unknown drop",
    "no path",
    "regression of text",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_csv_input_is_one_line_exit_2_nothing_written(tmp_path, case):
    files = tmp_path / "files"
    files.mkdir()
    cases = _bad_files(files)
    assert sorted(cases) == sorted(CASES)
    overrides, fragment = cases[case]
    target = [] if case == "no path" else ["data.target=label"]
    runs = tmp_path / "runs"
    res = cli("search", *BASE, "data=csv", *target, *overrides, f"runs_dir={runs}")
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert fragment in err, err
    assert "Traceback" not in res.stderr and tree(runs) == []
