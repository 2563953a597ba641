"""The best model on the test split: where it is wrong.

Classification: a confusion matrix normalised per true class (each row reads as "of this
class's rows, the share predicted as each class"), the counts written in the cells up to 20
classes. Regression: predicted against true with the y = x line, and the residuals against the
prediction (a trend or a funnel there is what a single rmse hides). Values in the target's units.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from automodel.tracking.plots import style

MOST_ANNOTATED = 20  # classes; past this the counts are unreadable (the HTML has them on hover)
MOST_TICK_LABELS = 30


def confusion_counts(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """counts[i, j]: rows of true class i predicted as class j."""
    flat = y_true.long().cpu() * n_classes + y_pred.long().cpu()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion(counts: np.ndarray, classes: list[str], title: str):
    n = len(classes)
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = min(max(4.5, 0.4 * n + 2.0), 10.0)
    fig = style.figure(side + 1.4, side)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    shown = range(0, n, math.ceil(n / MOST_TICK_LABELS))
    names = [style.short(classes[i], 12) for i in shown]
    tilt = n > 8 or max(map(len, names), default=0) > 3
    ax.set_xticks(
        shown,
        names,
        rotation=45 if tilt else 0,
        ha="right" if tilt else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(shown, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= MOST_ANNOTATED:
        size = 9 if n <= 12 else 7
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        color=colour,
                        fontsize=size,
                    )
    fig.colorbar(image, ax=ax, label="share of the true class's rows", fraction=0.046)
    ax.set_title(title, fontsize=10)
    return fig


def confusion_html(counts: np.ndarray, classes: list[str], title: str):
    import plotly.express as px

    return px.imshow(
        counts,
        x=list(classes),
        y=list(classes),
        color_continuous_scale="Blues",
        labels={"x": "predicted", "y": "true", "color": "rows"},
        title=title,
    )


def predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray, target: str, title: str):
    y_true, y_pred = _finite(y_true, y_pred)
    fig = style.figure(6.2, 5.6)
    ax = fig.subplots()
    ax.scatter(
        y_true, y_pred, s=10, alpha=_alpha(len(y_true)), color=style.COMPLETE, edgecolors="none"
    )
    both = np.concatenate([y_true, y_pred])
    lo, hi = float(both.min()), float(both.max())
    pad = 0.04 * (hi - lo) or 1.0
    ax.plot(
        [lo - pad, hi + pad],
        [lo - pad, hi + pad],
        "--",
        color=style.BEST,
        lw=1.2,
        label="perfect: predicted = true",
    )
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title, fontsize=10)
    return fig


def residuals(y_true: np.ndarray, y_pred: np.ndarray, target: str, title: str):
    y_true, y_pred = _finite(y_true, y_pred)
    fig = style.figure(8, 5)
    ax = fig.subplots()
    ax.scatter(
        y_pred,
        y_true - y_pred,
        s=10,
        alpha=_alpha(len(y_true)),
        color=style.COMPLETE,
        edgecolors="none",
    )
    ax.axhline(0.0, color=style.BEST, lw=1.2, ls="--")
    ax.set_xlabel(f"predicted {target}")
    ax.set_ylabel("residual: true − predicted")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return fig


def _finite(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(y_true) & np.isfinite(y_pred)
    if not keep.any():
        raise ValueError("no finite prediction on the test split")
    return y_true[keep], y_pred[keep]


def _alpha(n: int) -> float:
    """Opaque for a few points, faint for thousands: dense regions still read as dense."""
    return float(np.clip(300 / max(n, 1), 0.08, 0.8))
