"""Learning curves: every finished trial's validation metric per epoch, the best one on top.

Complete trials in a muted blue, pruned ones in grey, failed ones not drawn; the best trial
thick and red, labelled with its number and value. Three legend entries, whatever the number of
trials. The y-axis shows the range that matters (`View.value_range` of where the trials ended):
epochs far below it (the first ones, a trial stuck at chance) run off the bottom edge.
"""

from __future__ import annotations

from automodel.tracking.plots import style
from automodel.tracking.plots.view import View


def figure(view: View):
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    best, others = _split(view)
    low, high = _range(view)
    fig = style.figure(8, 5)
    ax = fig.subplots()
    # complete below, pruned above with a cross where each was stopped: the muted grey stays
    # visible among the blue
    groups = [("complete", style.COMPLETE, 1.0, 0.45), ("pruned", style.PRUNED, 0.9, 0.9)]
    handles = []
    for (state, colour, width, alpha), trials in zip(groups, others, strict=True):
        lines = [_curve(t) for t in trials]
        ax.add_collection(LineCollection(lines, colors=colour, linewidths=width, alpha=alpha))
        if trials:
            marker = "x" if state == "pruned" else ""
            handles.append(
                Line2D(
                    [], [], color=colour, lw=1.5, marker=marker, label=f"{state} ({len(trials)})"
                )
            )
        if state == "pruned" and lines:
            ends = [line[-1] for line in lines]
            ax.scatter(
                *zip(*ends, strict=True), marker="x", s=16, color=style.MUTED, lw=1, zorder=3
            )
    if best is not None:
        steps, values = zip(*_curve(best), strict=True)
        ax.plot(steps, values, color=style.BEST, lw=2.6, zorder=4)
        at = _best_step(best, view.sign)
        value = best.intermediate_values[at]
        ax.plot([at], [value], "o", color=style.BEST, ms=7, zorder=5)
        last = at == max(best.intermediate_values)  # at the right edge: label to its left
        ax.annotate(
            f"trial {best.number}: {style.fmt(value)}",
            (at, value),
            xytext=(-6 if last else 0, 8 if view.sign > 0 else -14),
            textcoords="offset points",
            ha="right" if last else "center",
            color=style.BEST,
            fontweight="bold",
        )
        label = f"best: trial {best.number}"
        handles.insert(0, Line2D([], [], color=style.BEST, lw=2.6, label=label))
    steps = [s for t in _drawn(view) for s in t.intermediate_values]
    ax.set_xlim(min(steps), max(max(steps), min(steps) + 1))
    ax.set_ylim(low, high)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(view.label)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="lower right" if view.sign > 0 else "upper right")
    failed = f", {view.failed} failed (not drawn)" if view.failed else ""
    ax.set_title(f"Learning curves: {len(_drawn(view))} trials{failed}", loc="left")
    if any(not low <= v <= high for v in _points(view)):
        ax.set_title(
            "zoomed: weaker epochs run off the axis", loc="right", fontsize=8, color=style.MUTED
        )
    return fig


def html(view: View):
    """The same picture in plotly: one trace per group (legend clicks hide a whole group),
    the trial and epoch of every point on hover."""
    import plotly.graph_objects as go

    best, (complete, pruned) = _split(view)
    fig = go.Figure()
    groups = [("complete", complete, style.COMPLETE, 1), ("pruned", pruned, style.PRUNED, 1)]
    if best is not None:
        groups.append((f"best: trial {best.number}", [best], style.BEST, 3))
    for name, trials, colour, width in groups:
        xs, ys, text = [], [], []
        for t in trials:
            for step, value in _curve(t):
                xs.append(step)
                ys.append(value)
                text.append(f"trial {t.number}")
            xs.append(None)  # a gap: the next trial is a new line in the same trace
            ys.append(None)
            text.append(None)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                text=text,
                mode="lines",
                name=name if name.startswith("best") else f"{name} ({len(trials)})",
                line={"color": colour, "width": width},
                opacity=1.0 if width > 1 else 0.6,
                hovertemplate="%{text}<br>epoch %{x}<br>%{y:.4g}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Learning curves (double-click to see every value)",
        xaxis_title="epoch",
        yaxis_title=view.label,
        yaxis_range=list(_range(view)),
    )
    return fig


def _drawn(view: View) -> list:
    return [t for t in view.complete + view.pruned if t.intermediate_values]


def _split(view: View):
    """(the best trial or None, (complete, pruned) without it): what is drawn, and how."""
    if not _drawn(view):
        raise ValueError("no finished trial reported a per-epoch value")
    best = view.best if view.best is not None and view.best.intermediate_values else None
    number = None if best is None else best.number
    pruned = [t for t in view.pruned if t.intermediate_values]
    complete = [t for t in view.complete if t.intermediate_values and t.number != number]
    return best, (complete, pruned)


def _curve(trial) -> list[tuple[int, float]]:
    return sorted(trial.intermediate_values.items())


def _range(view: View) -> tuple[float, float]:
    """Set by where the trials ended (their last epoch), wide enough for every best epoch."""
    return view.value_range([_curve(t)[-1][1] for t in _drawn(view)], _points(view))


def _points(view: View) -> list[float]:
    return [v for t in _drawn(view) for v in t.intermediate_values.values()]


def _best_step(trial, sign: int) -> int:
    """The epoch of the trial's best value (its reported value is that epoch's)."""
    return max(trial.intermediate_values, key=lambda s: sign * trial.intermediate_values[s])
