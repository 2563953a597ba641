"""What a data source returns before splitting and normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Raw:
    """Rows as the dataset gives them, flattened: `x` is (N, prod(input_shape)).

    `y` holds class indices into `classes` (classification) or numbers (regression, with
    `classes` empty). `x_test`/`y_test` are set by sources with an official test split
    (mnist1d); the others are split here with `test_fraction`.

    A CSV table (data.table) gives its cells as text instead, `x` of (N, len(columns)), and
    `columns` says how each is typed: the encoding is fitted on the training split later.
    `warnings` are things the user should hear about (columns dropped, rows skipped).

    Images too large to hold (data.images) set `reader`: `x` and `x_test` then hold items
    (file paths, row numbers) and `reader(item)` gives an item's raw row.
    """

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    classes: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    task: str = "classification"
    columns: list[dict] | None = None
    target: str | None = None
    image_mode: str | None = None
    warnings: list[str] = field(default_factory=list)
    reader: Callable[[Any], np.ndarray] | None = None
