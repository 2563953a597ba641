"""What a data source returns before splitting and normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Raw:
    """Rows as the dataset gives them, flattened: `x` is (N, prod(input_shape)).

    `y` holds class indices into `classes` (classification) or numbers (regression, with
    `classes` empty). `x_test`/`y_test` are set by sources with an official test split
    (mnist1d); the others are split here with `test_fraction`.
    """

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    classes: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    task: str = "classification"
