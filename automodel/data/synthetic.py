"""Small tabular problems from scikit-learn's generators, sized for tests and smoke runs.

Classification (`make_classification`) by default; `data.task=regression` gives a noisy
linear target (`make_regression`).
"""

from __future__ import annotations

import numpy as np

from automodel.data.source import Raw


def load(cfg) -> Raw:
    if cfg.n_features < 2:
        raise ValueError(f"data.n_features must be >= 2, got {cfg.n_features}")
    if getattr(cfg, "task", None) == "regression":
        return _regression(cfg)
    if cfg.n_samples < 10 * cfg.n_classes:
        raise ValueError(
            f"data.n_samples must be at least 10 per class ({10 * cfg.n_classes}), "
            f"got {cfg.n_samples}"
        )
    if cfg.n_classes < 2:
        raise ValueError(f"data.n_classes must be >= 2, got {cfg.n_classes}")
    from sklearn.datasets import make_classification

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


def _regression(cfg) -> Raw:
    from sklearn.datasets import make_regression

    if cfg.n_samples < 30:
        raise ValueError(f"data.n_samples must be at least 30, got {cfg.n_samples}")
    x, y = make_regression(
        n_samples=cfg.n_samples,
        n_features=cfg.n_features,
        n_informative=max(2, cfg.n_features // 2),
        noise=5.0,
        random_state=0,
    )
    # An offset and a scale far from (0, 1), so that target normalisation matters.
    return Raw(
        x=x.astype(np.float32),
        y=50.0 + 3.0 * y,
        input_shape=(cfg.n_features,),
        classes=[],
        task="regression",
    )
