"""MNIST-1D (Greydanus 2020), generated offline by the mnist1d package's own generator.

The package's default arguments give the paper's dataset: 4000 training and 1000 test
sequences of length 40, seeded (42), so every run sees the same data without a download.
"""

from __future__ import annotations

import numpy as np

from automodel.data.source import Raw


def load(cfg) -> Raw:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds numpy's global generator; keep the caller's stream untouched.
    state = np.random.get_state()
    try:
        ds = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return Raw(
        x=ds["x"].astype(np.float32),
        y=ds["y"].astype(np.int64),
        input_shape=(1, 40),
        classes=[str(c) for c in range(10)],
        x_test=ds["x_test"].astype(np.float32),
        y_test=ds["y_test"].astype(np.int64),
    )
