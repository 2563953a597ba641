"""How the searched params relate to the result: a grid of slices and parallel coordinates.

`slices` (param_slices.png) is the at-a-glance answer to "which values of each param give good
trials": one small panel per param, value against the validation metric, a log x-axis for a
log-scaled param, a box and strip per choice for a categorical one, the best trial in red.
Each panel reads on its own, where parallel coordinates over 100 trials turn into a tangle.

`parallel` (parallel_coordinate.png/.html) shows combinations: the most important params only
(those every complete trial has), labels shortened and tilted, lines coloured by the metric,
the best on top. Its HTML version is where it pays: drag along an axis to keep the trials in
that range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from optuna.distributions import IntDistribution

from automodel.tracking.plots import style
from automodel.tracking.plots.view import View

MOST_SLICES = 12  # panels; the least important params are left out past this
MOST_AXES = 8  # parallel coordinates beyond this are a barcode
FEW_LEVELS = 12  # an int param with at most this many values gets a box per value


def slices(view: View):
    names = view.params[:MOST_SLICES]
    if not names:
        raise ValueError("no searched param in a complete trial")
    low, high = view.value_range()
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    height = 0.7 + 2.4 * rows
    fig = style.figure(max(3.1 * cols, height, 6.0), height)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        _slice(ax, view, name, low, high)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(view.label)
    left_out = len(view.params) - len(names)
    more = f"; {left_out} less important params not shown" if left_out else ""
    best = f"; red: best trial {view.best.number}" if view.best is not None else ""
    fig.suptitle(
        f"{view.label} by param value, {style.count(len(view.complete), 'complete trial')}"
        f"{best}{more}"
    )
    return fig


def _slice(ax, view: View, name: str, low: float, high: float) -> None:
    trials = [t for t in view.complete if name in t.params]
    dist = trials[-1].distributions[name]
    values = [t.value for t in trials]
    levels = _levels(dist)
    if levels is not None:  # a box per choice; jitter spreads the trials that share one
        xs = np.array([levels.index(t.params[name]) for t in trials], dtype=float)
        groups = [
            [v for x, v in zip(xs, values, strict=True) if x == i] for i in range(len(levels))
        ]
        used = [i for i, g in enumerate(groups) if g]
        ax.boxplot(
            [groups[i] for i in used],
            positions=used,
            widths=0.5,
            showfliers=False,
            medianprops={"color": style.COMPLETE},
        )
        ax.set_xticks(
            range(len(levels)),
            [style.short(c, 10) for c in levels],
            rotation=30 if len(levels) > 3 else 0,
        )
        ax.set_xlim(-0.6, len(levels) - 0.4)
        xs = xs + np.random.default_rng(0).uniform(-0.15, 0.15, len(xs))
    else:
        xs = np.array([t.params[name] for t in trials], dtype=float)
        # the whole searched range: is the best at its edge? (then widen the space)
        if getattr(dist, "log", False):
            _log_axis(ax.xaxis, dist.low, dist.high)
            margin = (dist.high / dist.low) ** 0.04
            ax.set_xlim(dist.low / margin, dist.high * margin)
        else:
            margin = 0.04 * (dist.high - dist.low) or 0.5
            ax.set_xlim(dist.low - margin, dist.high + margin)
    ys = np.clip(values, low, high)
    beyond = ys != np.array(values)
    ax.scatter(xs[~beyond], ys[~beyond], s=12, color=style.COMPLETE, alpha=0.55, zorder=3)
    ax.scatter(
        xs[beyond],
        ys[beyond],
        s=18,
        marker="v" if view.sign > 0 else "^",
        color=style.CLIPPED,
        clip_on=False,
        zorder=3,
    )
    if view.best is not None and name in view.best.params:
        i = [t.number for t in trials].index(view.best.number)
        ax.scatter([xs[i]], [ys[i]], s=70, marker="*", color=style.BEST, zorder=4)
    ax.set_ylim(low, high)
    share = (view.importances or {}).get(name)
    ax.set_title(
        style.short(name, 22) + (f"  ·  {share:.0%}" if share is not None else ""), fontsize=10
    )
    ax.grid(alpha=0.3)


@dataclass(frozen=True)
class _Axis:
    """One vertical axis: a number per trial, its range, and labelled ticks in the same units
    (log10 for a log-scaled param, the choice's index for a categorical one)."""

    label: str
    values: np.ndarray
    low: float
    high: float
    ticks: list[tuple[float, str]]


def _parallel_axes(view: View) -> tuple[list, list[_Axis]]:
    """(complete trials, the best last; the metric's axis and the most important params')."""
    names = _axes(view)
    low, high = view.value_range()
    best = view.best.number if view.best is not None else None
    trials = sorted(view.complete, key=lambda t: (t.number == best, view.sign * t.value))
    raw = np.array([t.value for t in trials])
    shown = np.clip(raw, low, high)
    lo, hi = float(shown.min()), float(shown.max())
    ticks = [(v, f"{v:.3g}") for v in ([lo, (lo + hi) / 2, hi] if hi > lo else [lo])]
    if (raw < lo).any():  # trials off the range sit on its edge
        ticks[0] = (ticks[0][0], "≤" + ticks[0][1])
    if (raw > hi).any():
        ticks[-1] = (ticks[-1][0], "≥" + ticks[-1][1])
    axes = [_Axis(view.metric, shown, lo, hi, ticks)]
    for name in names:
        dist = trials[-1].distributions[name]
        if _categorical(dist):  # every choice has its place, tried or not
            values = np.array([dist.to_internal_repr(t.params[name]) for t in trials])
            choices = [(float(i), style.short(c, 10)) for i, c in enumerate(dist.choices)]
            axes.append(_Axis(name, values, 0.0, float(len(dist.choices) - 1), choices))
            continue
        log = getattr(dist, "log", False)
        values = np.array([t.params[name] for t in trials], dtype=float)
        values = np.log10(values) if log else values
        lo, hi = float(values.min()), float(values.max())
        points = [lo, (lo + hi) / 2, hi] if hi > lo else [lo]
        ticks = [(p, f"{10**p if log else p:.3g}") for p in points]
        axes.append(_Axis(name, values, lo, hi, ticks))
    return trials, axes


def parallel(view: View):
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    trials, axes = _parallel_axes(view)
    scaled = np.array([_unit(a.values, a.low, a.high) for a in axes]).T
    cmap = colormaps["viridis" if view.sign > 0 else "viridis_r"]
    norm = Normalize(axes[0].low, axes[0].high)
    fig = style.figure(10, 5.5)
    ax = fig.subplots()
    x = np.arange(len(axes))
    segments = [np.column_stack([x, row]) for row in scaled[:-1]]
    colours = cmap(norm(axes[0].values[:-1]))
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=1, alpha=0.6))
    if view.best is not None:
        label = f"best: trial {view.best.number}"
        ax.plot(x, scaled[-1], color=style.BEST, lw=2.6, zorder=4, label=label)
        ax.legend(loc="upper left", bbox_to_anchor=(0, 1.1), frameon=False)
    for j, a in enumerate(axes):
        ax.axvline(j, color="black", lw=0.8, zorder=1)
        for at, text in a.ticks:
            ax.text(
                j + 0.04,
                float(_unit(np.array([at]), a.low, a.high)[0]),
                text,
                fontsize=8,
                va="center",
                zorder=5,
                bbox={"facecolor": "white", "alpha": 0.75, "pad": 0.5, "lw": 0},
            )
    labels = [style.short(a.label, 14) for a in axes]
    ax.set_xticks(x, labels, rotation=20, ha="right", rotation_mode="anchor")
    ax.set_yticks([])
    ax.set_xlim(-0.15, len(axes) - 0.5)
    ax.set_ylim(-0.04, 1.04)
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=view.label, fraction=0.04)
    ax.set_title(
        f"The {len(axes) - 1} most important params, {style.count(len(trials), 'complete trial')}",
        loc="right",
    )
    return fig


def parallel_html(view: View):
    """plotly's parcoords (Optuna's own draws static lines): drag along an axis to keep the
    trials in that range, drag an axis's title to reorder."""
    import plotly.graph_objects as go

    trials, axes = _parallel_axes(view)
    dimensions = [
        {
            "label": a.label,
            "values": a.values,
            "range": [a.low, a.high] if a.high > a.low else [a.low - 0.5, a.high + 0.5],
            "tickvals": [t for t, _ in a.ticks],
            "ticktext": [text for _, text in a.ticks],
        }
        for a in axes
    ]
    line = {
        "color": axes[0].values,
        "colorscale": "Viridis",
        "reversescale": view.sign < 0,
        "showscale": True,
        "colorbar": {"title": {"text": view.metric}},
    }
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    fig.update_layout(
        title=f"{style.count(len(trials), 'complete trial')}: drag along an axis to keep a range",
        margin={"l": 80, "r": 40, "t": 110, "b": 40},
    )
    return fig


def _axes(view: View) -> list[str]:
    """The most important params that every complete trial has (a line needs every axis)."""
    if not view.complete:
        raise ValueError("no complete trial")
    names = [n for n in view.params if all(n in t.params for t in view.complete)]
    if not names:
        raise ValueError("no param that every complete trial has")
    return names[:MOST_AXES]


def _categorical(dist) -> bool:
    return hasattr(dist, "choices")


def _levels(dist) -> list | None:
    """The values a param takes, when few enough for a box each: choices, or a small int range."""
    if _categorical(dist):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        levels = list(range(dist.low, dist.high + 1, dist.step))
        return levels if len(levels) <= FEW_LEVELS else None
    return None


def _log_axis(axis, low: float, high: float) -> None:
    """A log scale without crowded labels: plain numbers at 1-2-5 steps over a short range
    (32..512 reads as 50 100 200 500), matplotlib's powers of ten over a long one."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log")
    if math.log10(high / low) <= 1.5:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _unit(column: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (column - lo) / (hi - lo) if hi > lo else np.full(len(column), 0.5)
