"""Optimization history: each complete trial's value as a dot, the best so far as a step line.

Does the search still find better trials, or has it levelled off? Values beyond the shown range
(a trial stuck at chance) sit on the axis's edge as grey triangles rather than squashing the rest.
"""

from __future__ import annotations

from automodel.tracking.plots import style
from automodel.tracking.plots.view import View


def figure(view: View):
    if not view.complete:
        raise ValueError("no complete trial")
    low, high = view.value_range()
    trials = sorted(view.complete, key=lambda t: t.number)
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    fig = style.figure(8, 5)
    ax = fig.subplots()
    inside = [low <= v <= high for v in values]
    ax.scatter(
        [n for n, ok in zip(numbers, inside, strict=True) if ok],
        [v for v, ok in zip(values, inside, strict=True) if ok],
        s=18,
        color=style.COMPLETE,
        alpha=0.7,
        label=f"complete trial ({len(trials)})",
        zorder=2,
    )
    beyond = [n for n, ok in zip(numbers, inside, strict=True) if not ok]
    if beyond:
        edge = low if view.sign > 0 else high
        ax.scatter(
            beyond,
            [edge] * len(beyond),
            marker="v" if view.sign > 0 else "^",
            s=30,
            color=style.CLIPPED,
            clip_on=False,
            label=f"off the axis ({len(beyond)})",
            zorder=3,
        )
    ax.step(
        numbers,
        _best_so_far(values, view.sign),
        where="post",
        color=style.BEST,
        lw=2,
        label="best so far",
        zorder=4,
    )
    if view.best is not None:
        ax.scatter(
            [view.best.number],
            [view.best.value],
            marker="*",
            s=160,
            color=style.BEST,
            zorder=5,
            label=f"best: trial {view.best.number} ({style.fmt(view.best.value)})",
        )
    ax.set_ylim(low, high)
    ax.set_xlabel("trial")
    ax.set_ylabel(view.label)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    others = f"; {len(view.pruned)} pruned, {view.failed} failed not shown"
    ax.set_title(f"Optimization history: {style.count(len(trials), 'complete trial')}{others}")
    return fig


def html(view: View):
    import optuna

    if not view.complete:
        raise ValueError("no complete trial")
    fig = optuna.visualization.plot_optimization_history(view.study, target_name=view.label)
    fig.update_layout(yaxis_range=list(view.value_range()))
    return fig


def _best_so_far(values: list[float], sign: int) -> list[float]:
    out, best = [], None
    for v in values:
        best = v if best is None or sign * v > sign * best else best
        out.append(best)
    return out
