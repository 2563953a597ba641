"""Pictures of a study, each answering one question at a glance, written to files.

    study_plots(study, out_dir)                          -> learning curves, optimization
                                                            history, param importances, param
                                                            slices, parallel coordinates
    prediction_plots(spec, outputs, y_true, out, title)  -> the best model on the test split:
                                                            confusion matrix, or predicted vs
                                                            true and residuals

A PNG for each (matplotlib, 100-1400 px a side), and for the study plots an interactive HTML
page next to it (plotly, self-contained so it opens offline). Every file is drawn on its own:
one that cannot be drawn (too few trials, no searched param) is named with the reason in the
returned `skipped`, never an error: plots are a view of the study, not part of its result.
matplotlib and plotly are imported only when a plot is drawn.

    view.py         the study read once: trials by state, the best, the shown value range
    style.py        sizes, colours, saving
    curves.py       learning curves          history.py      optimization history
    importances.py  fANOVA bars              params.py       slices, parallel coordinates
    predictions.py  confusion matrix, regression scatter and residuals
"""

from __future__ import annotations

from pathlib import Path

import optuna
import torch

from automodel import errors
from automodel.tracking.plots import curves, history, importances, params, predictions, style
from automodel.tracking.plots import view as views

# file stem -> (PNG figure, HTML figure or None), each from a View
STUDY_PLOTS = {
    "learning_curves": (curves.figure, curves.html),
    "optimization_history": (history.figure, history.html),
    "param_importances": (importances.figure, importances.html),
    "param_slices": (params.slices, None),
    "parallel_coordinate": (params.parallel, params.parallel_html),
}


def study_plots(study: optuna.Study, out_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """Draw every plot of STUDY_PLOTS into out_dir. Returns (files written, {name: reason})."""
    files = _Files(out_dir)
    try:
        view = views.read(study)
    except Exception as err:
        return [], {stem: errors.reason(err) for stem in STUDY_PLOTS}
    for stem, (png, html) in STUDY_PLOTS.items():
        files.draw(stem, lambda png=png: png(view))
        if html is not None and stem not in files.skipped:  # else the PNG's reason holds
            files.draw(stem, lambda html=html: html(view), html=True)
    return files.written, files.skipped


def prediction_plots(
    spec, outputs: torch.Tensor, y_true: torch.Tensor, out_dir: Path, title: str
) -> tuple[list[Path], dict[str, str]]:
    """The best model's test outputs against the truth; `spec` is the data's DataSpec.

    `outputs` are the model's raw outputs: logits for classification, values normalised by
    spec.target_mean/target_std for regression, as `y_true` is.
    """
    files = _Files(out_dir)
    outputs, y_true = outputs.detach().float().cpu(), y_true.detach().cpu()
    if spec.task == "classification":
        classes = [str(c) for c in spec.classes]

        def counts():
            return predictions.confusion_counts(y_true, outputs.argmax(1), len(classes)).numpy()

        def hover():
            return predictions.confusion_html(counts(), classes, title)

        files.draw("confusion_matrix", lambda: predictions.confusion(counts(), classes, title))
        if len(classes) > predictions.MOST_ANNOTATED:  # no counts in the PNG: hover for them
            files.draw("confusion_matrix", hover, html=True)
        return files.written, files.skipped
    true, predicted = in_original_units(spec, outputs, y_true)
    target = spec.target or "target"
    for stem, draw in (
        ("predicted_vs_true", predictions.predicted_vs_true),
        ("residuals", predictions.residuals),
    ):
        files.draw(stem, lambda draw=draw: draw(true, predicted, target, title))
    return files.written, files.skipped


def in_original_units(spec, outputs: torch.Tensor, y_true: torch.Tensor):
    """(true, predicted) as numpy arrays in the target's units: the model learns
    (y - target_mean) / target_std, and that is what the data holds as y."""
    scale, shift = spec.target_std, spec.target_mean
    true = y_true.double().reshape(-1).numpy() * scale + shift
    predicted = outputs.double().reshape(len(outputs), -1)[:, 0].numpy() * scale + shift
    return true, predicted


class _Files:
    """The files of one plots folder: those written, and the reason for each one that wasn't."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.written: list[Path] = []
        self.skipped: dict[str, str] = {}

    def draw(self, stem: str, build, html: bool = False) -> None:
        """Build one figure and write it; a failure is recorded under its name, never raised."""
        path = self.out_dir / f"{stem}.{'html' if html else 'png'}"
        try:
            (style.save_html if html else style.save_png)(build(), path)
            self.written.append(path)
        except Exception as err:  # too few trials, a single searched param, no plotly, ...
            self.skipped[path.name if html else stem] = errors.reason(err)
