"""The exported script reads table files as the search does: delimiters, decimal commas,
encodings and Parquet give the same predictions as the plain CSV, and bad files one line."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pandas as pd
import pytest

import automodel.data
from automodel import export, models
from automodel.config import DataConfig
from tests.conftest import checkpoint


def _frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    width = rng.normal(size=n).round(3)
    height = (rng.normal(size=n) * 100).round(2)
    return pd.DataFrame(
        {
            "width": width,
            "height": height,
            "city": rng.choice(["Zürich", "Genève", "Köln"], size=n),
            "label": np.where(width + height / 100 > 0, "big", "small"),
        }
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A table model's script (untrained weights: the reading is under test) and its table."""
    root = tmp_path_factory.mktemp("table_export")
    frame = _frame()
    frame.to_csv(root / "plain.csv", index=False)
    cfg = DataConfig(name="plain", source="csv", path=str(root / "plain.csv"), target="label")
    data = automodel.data.load(cfg, seed=0)
    model = models.create("mlp", {"depth": 1}, data.spec)
    ckpt = checkpoint("mlp", {"depth": 1}, data.spec, model)
    export_dir = export.write(root, ckpt, export.provenance("s", "c"))
    return runpy.run_path(str(export_dir / "best_model.py")), frame


def _predict(script, capsys, path, *options: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = script["main"](["predict", "--input", str(path), *options])
    out, err = capsys.readouterr()
    return code, out, err


WRITERS = {
    "semicolon_decimal_comma.csv": lambda f, p: f.to_csv(p, index=False, sep=";", decimal=","),
    "tab.tsv": lambda f, p: f.to_csv(p, index=False, sep="\t"),
    "pipe.txt": lambda f, p: f.to_csv(p, index=False, sep="|"),
    "table.parquet": lambda f, p: f.to_parquet(p),
    "columns_reordered.parquet": lambda f, p: f[f.columns[::-1]].to_parquet(p),
}


@pytest.mark.parametrize("name", WRITERS)
def test_every_table_format_predicts_as_the_plain_csv(exported, tmp_path, capsys, name):
    script, frame = exported
    frame.to_csv(tmp_path / "plain.csv", index=False)
    code, expected, err = _predict(script, capsys, tmp_path / "plain.csv")
    assert code == 0, err
    WRITERS[name](frame, tmp_path / name)
    code, out, err = _predict(script, capsys, tmp_path / name)
    assert code == 0, err
    assert out == expected and len(out.splitlines()) == len(frame) + 1


def test_a_latin1_file_reads_with_encoding_and_says_so_without(exported, tmp_path, capsys):
    script, frame = exported
    frame.to_csv(tmp_path / "plain.csv", index=False)
    _, expected, _ = _predict(script, capsys, tmp_path / "plain.csv")
    frame.to_csv(tmp_path / "latin.csv", index=False, sep=";", decimal=",", encoding="latin-1")
    code, out, err = _predict(script, capsys, tmp_path / "latin.csv", "--encoding", "latin-1")
    assert code == 0 and out == expected, err
    code, out, err = _predict(script, capsys, tmp_path / "latin.csv")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "latin.csv is not utf-8 text" in err
    assert "--encoding latin-1" in err


def _bad(tmp_path, frame) -> dict[str, tuple[list[str], str]]:
    """case -> (arguments after predict, fragment of the one-line error)."""
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_csv(tmp_path / "ok.csv", index=False)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    return {
        "missing file": (["--input", str(tmp_path / "nope.csv")], "nope.csv does not exist"),
        "unknown encoding": (
            ["--input", str(tmp_path / "ok.csv"), "--encoding", "klingon"],
            "--encoding 'klingon' is not an encoding Python knows",
        ),
        "one column": (
            ["--input", str(tmp_path / "t.tsv"), "--delimiter", ","],
            "t.tsv reads as one column 'width\\theight\\tcity\\tlabel' with delimiter ','; "
            "it holds tab: give --delimiter tab",
        ),
        "bad delimiter": (
            ["--input", str(tmp_path / "ok.csv"), "--delimiter", ";;"],
            "--delimiter must be one character",
        ),
        "bad decimal": (
            ["--input", str(tmp_path / "ok.csv"), "--decimal", "x"],
            "--decimal must be . or ,",
        ),
        "not parquet": (
            ["--input", str(tmp_path / "junk.parquet")],
            "junk.parquet is not a readable Parquet file",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "unknown encoding",
        "one column",
        "bad delimiter",
        "bad decimal",
        "not parquet",
    ],
)
def test_bad_table_input_is_one_line_exit_2(exported, tmp_path, capsys, case):
    script, frame = exported
    arguments, fragment = _bad(tmp_path, frame)[case]
    output = tmp_path / "predictions.csv"
    capsys.readouterr()
    code = script["main"](["predict", *arguments, "--output", str(output)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not output.exists()
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_parquet_without_pyarrow_is_one_line_exit_2(exported, tmp_path, capsys, monkeypatch):
    script, frame = exported
    frame.to_parquet(tmp_path / "t.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now raises ImportError
    code, out, err = _predict(script, capsys, tmp_path / "t.parquet")
    assert code == 2 and out == ""
    assert (
        err
        == f"error: reading {tmp_path / 't.parquet'} needs pyarrow: pip install pyarrow (or give a CSV file)\n"
    )
