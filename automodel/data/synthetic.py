"""A small tabular classification problem from scikit-learn's generator, sized for tests."""

from __future__ import annotations

import numpy as np

from automodel.data.source import Raw


def load(cfg) -> Raw:
    from sklearn.datasets import make_classification

    if cfg.n_samples < 10 * cfg.n_classes:
        raise ValueError(
            f"data.n_samples must be at least 10 per class ({10 * cfg.n_classes}), "
            f"got {cfg.n_samples}"
        )
    if cfg.n_features < 2:
        raise ValueError(f"data.n_features must be >= 2, got {cfg.n_features}")
    if cfg.n_classes < 2:
        raise ValueError(f"data.n_classes must be >= 2, got {cfg.n_classes}")
    x, y = make_classification(
        n_samples=cfg.n_samples,
        n_features=cfg.n_features,
        n_informative=max(2, cfg.n_features // 2),
        n_redundant=0,
        n_classes=cfg.n_classes,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=0,
    )
    return Raw(
        x=x.astype(np.float32),
        y=y.astype(np.int64),
        input_shape=(cfg.n_features,),
        classes=[str(c) for c in range(cfg.n_classes)],
    )
