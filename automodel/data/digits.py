"""scikit-learn's 8x8 handwritten digits: ships with scikit-learn, no download."""

from __future__ import annotations

import numpy as np

from automodel.data.source import Raw


def load(cfg) -> Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Raw(
        x=bunch.data.astype(np.float32),  # rows of 64 pixel values in 0..16
        y=bunch.target.astype(np.int64),
        input_shape=(1, 8, 8),
        classes=[str(c) for c in bunch.target_names],
    )
