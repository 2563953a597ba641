"""Reading a table file into text cells: CSV-like text by pandas, Parquet by pyarrow.

    read(path, delimiter=None, encoding="utf-8", decimal=None) -> (header, lines, rows)

Every cell comes back as stripped text, so that data.table types and encodes cells by one set
of rules whatever the file format. CSV-like files: the delimiter is detected among
DELIMITERS unless given, the text decoded with `encoding`, and decimal commas (`3,5`) read
as numbers when `decimal=","` or, with `decimal=None`, when the file is not comma-delimited
and its numbers are written only with commas. Every problem raises ValueError with one line
that names the file, what was seen and the setting that changes it.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import numpy as np

from automodel.errors import first_line
from automodel.runtime.inputs import (
    DELIMITERS,
    cell_text,
    decimal_commas,
    point_decimal,
    sniff_delimiter,
)

# The delimiter and decimal rules are the runtime's, which the exported script reads with.
PARQUET_SUFFIXES = (".parquet", ".pq")
_SAMPLE_BYTES = 64 * 1024
_PANDAS_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_SHOWN = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def read(
    path: Path, delimiter: str | None = None, encoding: str = "utf-8", decimal: str | None = None
) -> tuple[list[str], list[int], list[list[str]]]:
    """(header, the line number of each row, rows of stripped text cells); blank rows skipped."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a CSV file" if path.is_dir() else "does not exist"
        raise ValueError(f"data.path {str(path)!r} {what}")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        cells = _parquet(path)
    else:
        cells = _delimited(path, delimiter, encoding, decimal)
    blank = (cells == "").all(axis=1)
    lines = (np.flatnonzero(~blank) + 1).tolist()
    cells = cells[~blank]
    if len(cells) == 0:
        raise ValueError(f"data.path {str(path)!r} is empty")
    header = [name or f"column_{i + 1}" for i, name in enumerate(cells[0].tolist())]
    seen = set()
    for name in header:
        if name in seen:
            raise ValueError(f"{path.name}: column {name!r} appears twice in the header")
        seen.add(name)
    if len(cells) == 1:
        raise ValueError(f"data.path {str(path)!r} has a header but no rows")
    return header, lines[1:], cells[1:].tolist()


def _delimited(path: Path, delimiter: str | None, encoding: str, decimal: str | None) -> np.ndarray:
    import pandas as pd

    encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    sample = _sample(path, encoding)
    delimiter = delimiter or sniff_delimiter(sample, cut=len(sample) >= _SAMPLE_BYTES)
    try:
        frame = pd.read_csv(
            path,
            sep=delimiter,
            header=None,
            dtype=str,
            na_filter=False,
            skip_blank_lines=False,
            encoding=encoding,
            engine="c" if len(delimiter) == 1 else "python",
        )
    except pd.errors.EmptyDataError:
        raise ValueError(f"data.path {str(path)!r} is empty") from None
    except pd.errors.ParserError as err:
        raise ValueError(_parser_message(path, delimiter, str(err))) from None
    except UnicodeDecodeError as err:
        raise ValueError(_decode_message(path, encoding, err)) from None
    cells = frame.fillna("").to_numpy(dtype=object)
    cells = np.vectorize(str.strip, otypes=[object])(cells) if cells.size else cells
    if cells.shape[1] == 1 and len(cells):
        _refuse_one_column(path, delimiter, str(cells[0, 0]))
    if decimal_commas(cells[1:].ravel(), delimiter, decimal):  # the header row excluded
        cells = np.vectorize(point_decimal, otypes=[object])(cells)
    return cells


def _sample(path: Path, encoding: str) -> str:
    try:
        with open(path, encoding=encoding, newline="") as f:
            return f.read(_SAMPLE_BYTES)
    except UnicodeDecodeError as err:
        raise ValueError(_decode_message(path, encoding, err)) from None
    except OSError as err:  # no permission, an I/O error: the file, not the settings
        raise ValueError(f"data.path {str(path)!r} cannot be read: {err.strerror or err}") from None


def _refuse_one_column(path: Path, delimiter: str, header: str) -> None:
    others = [d for d in DELIMITERS if d != delimiter and d in header]
    if others:
        shown = repr(others[0]).replace("'\\t'", "tab")
        raise ValueError(
            f"{path.name} reads as one column {header[:60]!r} with delimiter "
            f"{_SHOWN.get(delimiter, repr(delimiter))}; its header holds {shown}: "
            f"set data.delimiter={'tab' if others[0] == chr(9) else repr(others[0])}"
        )


def _parser_message(path: Path, delimiter: str, text: str) -> str:
    found = _PANDAS_FIELDS.search(text)
    if found:
        expected, line, saw = found.groups()
        return (
            f"{path.name}: line {line} has {saw} cells, the header {expected} "
            f"(delimiter {_SHOWN.get(delimiter, repr(delimiter))}; set data.delimiter if "
            "that is not the file's)"
        )
    return f"data.path {str(path)!r} is not a readable table: {text.strip().splitlines()[0]}"


def _decode_message(path: Path, encoding: str, err: UnicodeDecodeError) -> str:
    name = "utf-8" if encoding == "utf-8-sig" else encoding
    return (
        f"data.path {str(path)!r} is not {name} text (byte {err.object[err.start]:#04x} at "
        f"offset {err.start}); set data.encoding, for example data.encoding=latin-1"
    )


def _parquet(path: Path) -> np.ndarray:
    """The header and the cells as text: numbers written as Python prints them, gaps empty."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            f"reading data.path {str(path)!r} needs pyarrow: pip install pyarrow "
            "(or give the table as a CSV file)"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises its own types for files that are not Parquet
        raise ValueError(
            f"data.path {str(path)!r} is not a readable Parquet file: {first_line(err)}"
        ) from None
    columns = [[cell_text(v) for v in column.to_pylist()] for column in table.columns]
    header = np.array([table.column_names], dtype=object)
    body = np.array(columns, dtype=object).T.reshape(table.num_rows, table.num_columns)
    return np.concatenate([header, body]) if table.num_rows else header
