"""Pictures of a study: Optuna's plots and the best model's confusion matrix, written to files.

    study_plots(study, out_dir)                      -> optimization history, param importances,
                                                        parallel coordinates, learning curves
    confusion_matrix(y_true, y_pred, classes, out)   -> the best model on the test split

PNG always (matplotlib); HTML as well where plotly is installed, for the zoomable version.
A plot that cannot be drawn (param importances need two finished trials and a searched
param) is skipped and named in the returned `skipped`, never an error: plots are a view of
the study, not part of its result.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import optuna
import torch

from automodel import errors

# file stem -> Optuna plot function name (same name in visualization and visualization.matplotlib)
STUDY_PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "learning_curves": "plot_intermediate_values",
}


def has_plotly() -> bool:
    return importlib.util.find_spec("plotly") is not None


def study_plots(study: optuna.Study, out_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """Draw every plot of STUDY_PLOTS into out_dir. Returns (files written, {stem: reason})."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_mpl

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    html = has_plotly()
    for stem, name in STUDY_PLOTS.items():
        try:
            # Optuna marks its matplotlib backend experimental (we use it on purpose) and sets
            # the ggplot style globally: rc_context puts the caller's style back.
            with warnings.catch_warnings(), plt.rc_context():
                warnings.simplefilter("ignore")
                ax = getattr(optuna_mpl, name)(study)
                fig = _figure(ax)
                fig.savefig(out_dir / f"{stem}.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
                written.append(out_dir / f"{stem}.png")
                if html:
                    getattr(optuna.visualization, name)(study).write_html(
                        out_dir / f"{stem}.html", include_plotlyjs="cdn"
                    )
                    written.append(out_dir / f"{stem}.html")
        except Exception as err:  # too few trials, a single searched param, ...
            skipped[stem] = errors.reason(err)
            plt.close("all")
    return written, skipped


def _figure(ax):
    """Optuna returns an Axes, or an array of them for multi-panel plots."""
    first = ax.flat[0] if hasattr(ax, "flat") else ax
    return first.figure


def confusion_counts(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """counts[i, j]: rows of true class i predicted as class j."""
    flat = y_true.long().cpu() * n_classes + y_pred.long().cpu()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(
    y_true: torch.Tensor, y_pred: torch.Tensor, classes: list[str], out_dir: Path, title: str
) -> list[Path]:
    """Draw the confusion matrix with a count in every cell; returns the files written."""
    import matplotlib.pyplot as plt

    counts = confusion_counts(y_true, y_pred, len(classes)).numpy()
    size = max(4.0, 0.45 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.grid(False)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45 if len(classes) > 6 else 0)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = counts.max() / 2 if counts.size else 0
    for i in ticks:
        for j in ticks:
            color = "white" if counts[i, j] > high else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "confusion_matrix.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    written = [out_dir / "confusion_matrix.png"]
    if has_plotly():
        import plotly.express as px

        fig = px.imshow(
            counts,
            x=classes,
            y=classes,
            text_auto=True,
            color_continuous_scale="Blues",
            labels={"x": "predicted", "y": "true", "color": "rows"},
            title=title,
        )
        fig.write_html(out_dir / "confusion_matrix.html", include_plotlyjs="cdn")
        written.append(out_dir / "confusion_matrix.html")
    return written
