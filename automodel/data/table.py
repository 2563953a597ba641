"""A table of the user's (CSV or Parquet, read by data.tablefile): typed and cleaned here;
encoded with training-split settings.

    load(cfg)             -> Raw: the cells of the feature columns as text, their schema, labels
    fit(schema, x_train)  -> columns: how each column is encoded, as plain data (DataSpec.columns)
    encode(columns, x)    -> float64 features, one row per row of cells

A column is numeric when every non-missing cell is a finite number, else categorical: one-hot
with up to ONEHOT_MAX_LEVELS levels (in the training split), hashed into HASH_BUCKETS buckets
beyond. Numeric cells that are missing take the training split's median, plus a 0/1 missing
indicator for columns with any missing cell. Columns that carry no usable signal (an
identifier, free text with a value per row, a constant, all missing) are dropped with a
warning. The encoding itself is the runtime's (runtime.inputs.encode_cells), which the
exported script runs too.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from automodel.data import tablefile
from automodel.data.source import Raw
from automodel.runtime.inputs import COLUMN_SETTINGS, MISSING, encode_cells

ONEHOT_MAX_LEVELS = 16
HASH_BUCKETS = 64
# A numeric target is classification when it holds at most this many whole numbers.
MAX_NUMERIC_CLASSES = 20
# Fewer non-missing cells than this never make a column look like an identifier or free text.
MIN_ROWS_TO_JUDGE = 20
# More numbers than this among a column's cells make a non-number a typo, not a category.
NUMERIC_SHARE = 0.9
_ID_NAME = re.compile(r"(^|[^a-z])(id|index|uuid)$", re.IGNORECASE)


def load(cfg) -> Raw:
    """Read `cfg.path`; raises ValueError naming the problem (file, column, line, value)."""
    path = Path(cfg.path)
    header, lines, rows = tablefile.read(path, cfg.delimiter, cfg.encoding, cfg.decimal)
    where = path.name
    if cfg.target not in header:
        raise ValueError(
            f"data.target {cfg.target!r} is not a column of {where}; columns: {', '.join(header)}"
        )
    unknown = [c for c in cfg.drop if c not in header]
    if unknown:
        raise ValueError(
            f"data.drop names {unknown[0]!r}, not a column of {where}; columns: {', '.join(header)}"
        )
    cells = np.array(rows, dtype=object).reshape(len(rows), len(header))
    warnings: list[str] = []
    y_text = cells[:, header.index(cfg.target)]
    has_target = ~_missing(y_text)
    if not has_target.all():
        warnings.append(
            f"data: dropped {int((~has_target).sum())} rows of {where} with no "
            f"{cfg.target!r} value (first on line {lines[int(np.argmin(has_target))]})"
        )
        cells, y_text, lines = cells[has_target], y_text[has_target], np.asarray(lines)[has_target]
    if len(cells) == 0:
        raise ValueError(f"{where} has no row with a {cfg.target!r} value")
    task = cfg.task or _infer_task(y_text)
    y, classes = _labels(y_text, task, cfg.target, lines)
    keep, schema = [], []
    for j, name in enumerate(header):
        if name == cfg.target or name in cfg.drop:
            continue
        column, why = _judge(name, cells[:, j], lines, where)
        if column is None:
            warnings.append(f"data: dropped column {name!r} of {where}: {why}")
            continue
        keep.append(j)
        schema.append(column)
    if not schema:
        raise ValueError(f"{where} has no usable feature column besides {cfg.target!r}")
    return Raw(
        x=cells[:, keep],
        y=y,
        input_shape=(len(keep),),
        classes=classes,
        task=task,
        columns=schema,
        target=cfg.target,
        warnings=warnings,
    )


def _missing(texts: np.ndarray) -> np.ndarray:
    return np.isin(texts.astype(str), MISSING)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _infer_task(y_text: np.ndarray) -> str:
    numbers = [_number(t) for t in y_text]
    if any(v is None for v in numbers):
        return "classification"
    whole = all(v == int(v) for v in numbers)
    return "classification" if whole and len(set(numbers)) <= MAX_NUMERIC_CLASSES else "regression"


def _labels(y_text: np.ndarray, task: str, target: str, lines) -> tuple[np.ndarray, list[str]]:
    if task == "regression":
        numbers = [_number(t) for t in y_text]
        bad = next((i for i, v in enumerate(numbers) if v is None), None)
        if bad is not None:
            raise ValueError(
                f"data.target {target!r} holds {y_text[bad]!r} on line {lines[bad]}; "
                "regression needs numbers (or set data.task=classification)"
            )
        return np.asarray(numbers, np.float64), []
    levels = sorted(set(y_text.tolist()))
    if all(_number(v) is not None for v in levels):
        levels.sort(key=float)  # 2 before 10
    index = {v: i for i, v in enumerate(levels)}
    return np.array([index[v] for v in y_text], np.int64), levels


def _judge(name: str, texts: np.ndarray, lines, where: str) -> tuple[dict | None, str]:
    """The column's schema entry, or None and why it is dropped."""
    missing = _missing(texts)
    present = texts[~missing]
    if len(present) == 0:
        return None, "every cell is missing"
    numbers = [_number(t) for t in present]
    bad = [i for i, v in enumerate(numbers) if v is None]
    distinct = len(set(present.tolist()))
    if distinct == 1 and not missing.any():
        return None, f"a constant ({present[0]!r})"
    if not bad:
        if _looks_like_id(name, np.asarray(numbers)):
            return None, "a distinct whole number on every row (an identifier?)"
        return {"name": name, "kind": "numeric", "indicator": bool(missing.any())}, ""
    if len(bad) <= (1 - NUMERIC_SHARE) * len(present):
        first = int(np.flatnonzero(~missing)[bad[0]])
        raise ValueError(
            f"{where}: column {name!r} holds numbers but {present[bad[0]]!r} on line "
            f"{lines[first]}; fix the value, leave the cell empty (missing), or "
            f"drop the column (data.drop=[{name}])"
        )
    if len(present) >= MIN_ROWS_TO_JUDGE and distinct >= NUMERIC_SHARE * len(present):
        return None, f"{distinct} distinct values in {len(present)} rows (an identifier or text?)"
    return {"name": name, "kind": "categorical"}, ""


def _looks_like_id(name: str, values: np.ndarray) -> bool:
    if len(values) < MIN_ROWS_TO_JUDGE or (values != np.round(values)).any():
        return False
    if len(np.unique(values)) != len(values):
        return False
    ordered = np.sort(values)
    return bool(_ID_NAME.search(name)) or bool((np.diff(ordered) == 1).all())


def fit(schema: list[dict], x_train: np.ndarray) -> list[dict]:
    """How each column is encoded, from the training split's cells only."""
    columns = []
    for j, col in enumerate(schema):
        texts = x_train[:, j]
        present = texts[~_missing(texts)]
        if col["kind"] == "numeric":
            values = np.array([float(t) for t in present], np.float64)
            fill = float(np.median(values)) if len(values) else 0.0
            columns.append(
                {
                    "name": col["name"],
                    "kind": "numeric",
                    "fill": fill,
                    "indicator": col["indicator"],
                }
            )
            continue
        levels = sorted(set(present.tolist()))
        if len(levels) <= ONEHOT_MAX_LEVELS:
            columns.append({"name": col["name"], "kind": "onehot", "levels": levels})
        else:
            columns.append({"name": col["name"], "kind": "hash", "buckets": HASH_BUCKETS})
    return columns


def entries(columns: list[dict]) -> list[tuple]:
    """`columns` as the runtime reads them (the exported script's COLUMNS): tuples of the
    name, the kind and the kind's settings."""
    return [(c["name"], c["kind"], *(c[k] for k in COLUMN_SETTINGS[c["kind"]])) for c in columns]


def encode(columns: list[dict], x: np.ndarray) -> np.ndarray:
    """Cells (N, len(columns)) -> features, float64: see runtime.inputs.encode_cells."""
    return encode_cells(x, entries(columns))
