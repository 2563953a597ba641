"""Table files as users export them: delimiters, encodings, decimal commas, Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automodel import data as datalib
from automodel.config import DataConfig
from automodel.data import tablefile
from tests.conftest import FAST, cli, tree

BASE = [o for o in FAST if not o.startswith(("data=", "data.n_"))]


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(3)
    return pd.DataFrame(
        {
            "width": x,
            "city": rng.choice(["Zürich", "Genève", "Köln"], size=n),
            "label": np.where(x > 0, "big", "small"),
        }
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return _frame()


def _expected(frame: pd.DataFrame) -> list[list[str]]:
    return [[repr(float(w)), c, lab] for w, c, lab in frame.itertuples(index=False)]


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("comma.csv", lambda f, p: f.to_csv(p, index=False)),
        ("tab.tsv", lambda f, p: f.to_csv(p, index=False, sep="\t")),
        (
            "semicolon_decimal_comma.csv",
            lambda f, p: f.to_csv(p, index=False, sep=";", decimal=","),
        ),
        ("pipe.txt", lambda f, p: f.to_csv(p, index=False, sep="|")),
        ("table.parquet", lambda f, p: f.to_parquet(p)),
    ],
)
def test_every_format_reads_to_the_same_cells(tmp_path, frame, name, write):
    path = tmp_path / name
    write(frame, path)
    header, lines, rows = tablefile.read(path)
    assert header == ["width", "city", "label"]
    assert [[float(r[0]), r[1], r[2]] for r in rows] == [
        [float(a), b, c] for a, b, c in _expected(frame)
    ]
    assert lines[0] == 2 if not name.endswith("parquet") else lines[0] >= 1


def test_a_latin1_file_needs_its_encoding_and_reads_with_it(tmp_path, frame):
    path = tmp_path / "latin.csv"
    frame.to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(ValueError, match=r"is not utf-8 text .*data\.encoding=latin-1"):
        tablefile.read(path)
    _, _, rows = tablefile.read(path, encoding="latin-1")
    assert {r[1] for r in rows} == {"Zürich", "Genève", "Köln"}


def test_a_forced_wrong_delimiter_names_what_was_seen_and_the_fix(tmp_path, frame):
    path = tmp_path / "t.tsv"
    frame.to_csv(path, index=False, sep="\t")
    with pytest.raises(ValueError, match=r"reads as one column .* set data\.delimiter=tab"):
        tablefile.read(path, delimiter=",")


def test_decimal_points_stay_points_in_a_semicolon_file(tmp_path, frame):
    """Auto-detection reads commas as decimals only when no number uses a point."""
    path = tmp_path / "s.csv"
    frame.to_csv(path, index=False, sep=";")
    _, _, rows = tablefile.read(path)
    assert [float(r[0]) for r in rows] == list(frame["width"])


def test_a_semicolon_table_with_decimal_commas_loads_as_numbers(tmp_path, frame):
    path = tmp_path / "s.csv"
    frame.to_csv(path, index=False, sep=";", decimal=",")
    cfg = DataConfig(name="s", source="csv", path=str(path), target="label")
    data = datalib.load(cfg, seed=0)
    kinds = [c["kind"] for c in data.spec.columns]
    assert kinds[0] == "numeric", data.spec.columns


def test_a_parquet_table_searches_like_its_csv(tmp_path, frame):
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    cfg = DataConfig(name="p", source="csv", path=str(path), target="label")
    via_parquet = datalib.load(cfg, seed=0)
    csv_path = tmp_path / "p.csv"
    frame.to_csv(csv_path, index=False)
    via_csv = datalib.load(
        DataConfig(name="p", source="csv", path=str(csv_path), target="label"), seed=0
    )
    assert via_parquet.spec.columns == via_csv.spec.columns
    assert np.array_equal(via_parquet.x_train.numpy(), via_csv.x_train.numpy())


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("data.encoding=klingon", "data.encoding 'klingon' is not an encoding Python knows"),
        ("data.delimiter=ab", "data.delimiter must be one character"),
        ("data.decimal=x", "data.decimal must be null, '.' or ','"),
    ],
)
def test_bad_reading_settings_are_one_line_exit_2_nothing_written(
    tmp_path, frame, setting, fragment
):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    runs = tmp_path / "runs"
    res = cli(
        "search",
        *BASE,
        "data=csv",
        f"data.path={path}",
        "data.target=label",
        setting,
        f"runs_dir={runs}",
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err
    assert tree(runs) == []


def _unreadable(tmp_path, frame) -> dict[str, tuple[dict, str]]:
    """case -> (tablefile.read arguments, fragment of the one-line error)."""
    frame.to_csv(tmp_path / "latin.csv", index=False, encoding="latin-1")
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    return {
        "undecodable": (
            {"path": tmp_path / "latin.csv"},
            f"data.path '{tmp_path / 'latin.csv'}' is not utf-8 text (byte 0xe8 at offset 26); "
            "set data.encoding, for example data.encoding=latin-1",
        ),
        "one column": (
            {"path": tmp_path / "t.tsv", "delimiter": ";"},
            "t.tsv reads as one column 'width\\tcity\\tlabel' with delimiter semicolon; its "
            "header holds tab: set data.delimiter=tab",
        ),
        "not parquet": (
            {"path": tmp_path / "junk.parquet"},
            f"data.path '{tmp_path / 'junk.parquet'}' is not a readable Parquet file",
        ),
        # Root reads any file whatever its mode; the kernel still refuses this one (EIO).
        "os refuses": ({"path": "/proc/self/mem"}, "'/proc/self/mem' cannot be read: "),
    }


@pytest.mark.parametrize("case", ["undecodable", "one column", "not parquet", "os refuses"])
def test_an_unreadable_table_names_the_file_and_what_to_set(tmp_path, frame, case):
    arguments, fragment = _unreadable(tmp_path, frame)[case]
    if case == "os refuses" and not tablefile.Path("/proc/self/mem").is_file():
        pytest.skip("no /proc/self/mem here")
    with pytest.raises(ValueError) as err:
        tablefile.read(**arguments)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_parquet_without_pyarrow_is_one_line_exit_2_nothing_written(tmp_path, frame):
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    blocker = tmp_path / "blocker" / "pyarrow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no pyarrow here')\n")
    runs = tmp_path / "runs"
    res = cli(
        "search", *BASE, "data=csv", f"data.path={path}", "data.target=label",
        f"runs_dir={runs}", env={"PYTHONPATH": str(blocker.parent)},
    )  # fmt: skip
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr == (
        f"error: reading data.path '{path}' needs pyarrow: pip install pyarrow (or give the "
        "table as a CSV file)\n"
    )
    assert tree(runs) == []
