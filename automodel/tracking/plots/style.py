"""What every picture shares: its size, its colours, how long a label may be, how it is written.

Figures are `matplotlib.figure.Figure`s made without pyplot: no global state to restore, no
backend to choose, nothing left open if a plot fails half way.
"""

from __future__ import annotations

from pathlib import Path

DPI = 110  # 8 x 5 in -> 880 x 550 px: readable inline in the MLflow UI
BEST = "#d62728"
COMPLETE = "#1f77b4"
PRUNED = "#b5b5b5"
CLIPPED = "#7f7f7f"  # a value beyond the shown range, drawn on the axis's edge
MUTED = "#555555"


def figure(width: float, height: float):
    """An empty figure of width x height inches that lays itself out (labels never overlap)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, facecolor="white")


def save_html(fig, path: Path) -> None:
    """A plotly figure as one self-contained page: plotly.js inside (~4.8 MB), so it opens
    without a network (a "cdn" page is blank offline)."""
    fig.update_layout(template="plotly_white")
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def short(text: str, limit: int = 16) -> str:
    """`text` cut to `limit` characters with an ellipsis: axis labels that fit their slot."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def fmt(value: float) -> str:
    return f"{value:.4g}"
