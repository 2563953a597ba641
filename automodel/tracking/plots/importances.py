"""Parameter importances: which searched params moved the validation metric, as sorted bars.

Optuna's fANOVA (its default evaluator, seeded in `view`), over the params that every complete
trial has: a conditional param (momentum only with sgd) has no bar.
"""

from __future__ import annotations

from automodel.tracking.plots import style
from automodel.tracking.plots.view import View

MOST = 20  # bars at most; the rest explain next to nothing


def figure(view: View):
    from matplotlib.ticker import PercentFormatter

    names, values = _bars(view)
    fig = style.figure(8, min(1.4 + 0.32 * len(names), 7.5))
    ax = fig.subplots()
    y = range(len(names))
    ax.barh(y, values, color=style.COMPLETE, height=0.65)
    ax.set_yticks(y, [style.short(n, 24) for n in names])
    ax.invert_yaxis()  # the most important on top
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.0%}", va="center", fontsize=9)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, max(values) * 1.15 or 1.0)
    ax.set_xlabel(f"share of the variance of {view.label} (fANOVA)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Parameter importances over {style.count(len(view.complete), 'complete trial')}")
    return fig


def html(view: View):
    import plotly.graph_objects as go

    names, values = _bars(view)
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=style.COMPLETE,
            text=[f"{v:.0%}" for v in values],
            textposition="outside",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Parameter importances over {style.count(len(view.complete), 'complete trial')}",
        xaxis_title=f"share of the variance of {view.label} (fANOVA)",
        yaxis_autorange="reversed",
        xaxis_tickformat=".0%",
        height=max(350, 120 + 28 * len(names)),
    )
    return fig


def _bars(view: View) -> tuple[list[str], list[float]]:
    if view.importances is None:
        raise ValueError(view.no_importances)
    ranked = list(view.importances.items())[:MOST]
    return [k for k, _ in ranked], [v for _, v in ranked]
