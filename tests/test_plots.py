"""The study's pictures, drawn from a real 100-trial Optuna study built in memory (no training).

The study looks like an mlp search on digits: int, log-scaled int and float, categorical and
conditional params; curves per epoch; a quarter of the trials pruned, a few failed, a few stuck
at chance (the outliers that used to squash every curve into the top tenth of the plot).
"""

from __future__ import annotations

import ast
import math
import random
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from automodel import study as studylib
from automodel.tracking.plots import (
    STUDY_PLOTS,
    curves,
    in_original_units,
    params,
    prediction_plots,
    predictions,
    study_plots,
)
from automodel.tracking.plots import view as views
from tests.conftest import ROOT

EPOCHS = 20
CHANCE = 0.1


def _study(n_trials: int = 100, direction: str = "maximize", seed: int = 0) -> optuna.Study:
    """Trials as an mlp search on digits reports them; rmse = 1 - accuracy when minimised."""
    rng = random.Random(seed)  # noqa: S311 (a test study, not a secret)
    study = optuna.create_study(direction=direction)
    metric = "accuracy" if direction == "maximize" else "rmse"
    for number in range(n_trials):
        p, d = {}, {}

        def suggest(name, dist, value, p=p, d=d):
            p[name], d[name] = value, dist

        suggest("depth", IntDistribution(1, 3), rng.randint(1, 3))
        for i in range(p["depth"]):
            width = round(math.exp(rng.uniform(math.log(32), math.log(512))))
            suggest(f"width_l{i}", IntDistribution(32, 512, log=True), width)
        acts = ["relu", "gelu", "silu", "tanh"]
        suggest("activation", CategoricalDistribution(acts), rng.choice(acts))
        suggest("dropout", FloatDistribution(0.0, 0.5), rng.uniform(0.0, 0.5))
        optimizers = ["adam", "adamw", "sgd", "rmsprop"]
        suggest("optimizer", CategoricalDistribution(optimizers), rng.choice(optimizers))
        suggest("lr", FloatDistribution(1e-4, 3e-2, log=True), 10 ** rng.uniform(-4, -1.53))
        suggest("batch_norm", CategoricalDistribution([True, False]), rng.random() < 0.5)
        if p["optimizer"] == "sgd":
            suggest("momentum", FloatDistribution(0.8, 0.99), rng.uniform(0.8, 0.99))
        ceiling = 0.98 - 0.04 * abs(math.log10(p["lr"]) + 2.5) - 0.05 * p["dropout"]
        if rng.random() < 0.08:
            ceiling = CHANCE + 0.05 * rng.random()  # stuck at chance
        pace = 2 + 3 * rng.random()
        curve = {
            e: ceiling - (ceiling - CHANCE) * math.exp(-e / pace) + rng.gauss(0, 0.004)
            for e in range(1, EPOCHS + 1)
        }
        roll = rng.random()
        if number >= 10 and roll < 0.3:
            stop = rng.randint(2, 10)
            state, curve = TrialState.PRUNED, {e: v for e, v in curve.items() if e <= stop}
        elif roll < 0.38:
            state, curve = TrialState.FAIL, {e: v for e, v in curve.items() if e <= 3}
        else:
            state = TrialState.COMPLETE
        if direction == "minimize":
            curve = {e: 1 - v for e, v in curve.items()}
        sign = 1 if direction == "maximize" else -1
        value = {
            TrialState.COMPLETE: max(curve.values(), key=lambda v: sign * v),
            TrialState.PRUNED: curve[max(curve)],
        }.get(state)
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params=p,
                distributions=d,
                intermediate_values=curve,
                user_attrs={studylib.METRIC_ATTR: metric},
            )
        )
    return study


@pytest.fixture(scope="module")
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _study()


@pytest.fixture(scope="module")
def drawn(study, tmp_path_factory):
    """Every study plot written once; the View they were drawn from kept for the tests."""
    out = tmp_path_factory.mktemp("plots")
    seen, read = [], views.read
    with pytest.MonkeyPatch.context() as patch:  # fANOVA takes a second: run it once
        patch.setattr(views, "read", lambda s: seen.append(read(s)) or seen[-1])
        written, skipped = study_plots(study, out)
    return SimpleNamespace(out=out, written=written, skipped=skipped, view=seen[0])


@pytest.fixture(scope="module")
def view(drawn):
    return drawn.view


def _states(study) -> dict:
    trials = study.get_trials(deepcopy=False)
    return {s: [t for t in trials if t.state == s] for s in TrialState}


def test_the_study_has_what_a_real_search_leaves(study):
    states = _states(study)
    assert len(study.trials) == 100
    assert len(states[TrialState.COMPLETE]) > 50
    assert len(states[TrialState.PRUNED]) > 10
    assert len(states[TrialState.FAIL]) > 3
    assert sum(t.value < 0.2 for t in states[TrialState.COMPLETE]) >= 3  # stuck at chance


def test_every_study_plot_is_a_readable_landscape_png(drawn):
    assert drawn.skipped == {}
    for stem in STUDY_PLOTS:
        path = drawn.out / f"{stem}.png"
        assert path in drawn.written
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
        assert height <= width <= 2000, (stem, image.size)
        assert height >= 300, (stem, image.size)


def test_the_html_pages_carry_plotly_and_work_offline(drawn):
    pages = sorted(p for p in drawn.written if p.suffix == ".html")
    assert {p.stem for p in pages} == {s for s, (_, html) in STUDY_PLOTS.items() if html}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "Plotly.newPlot" in text, page.name
        assert '<script src="https://cdn.plot.ly' not in text, page.name  # no network needed
        assert len(text) > 1_000_000, page.name  # plotly.js itself is inside
    assert '"type":"parcoords"' in (drawn.out / "parallel_coordinate.html").read_text()


def test_the_interactive_learning_curves_have_a_trace_per_group(view):
    fig = curves.html(view)
    assert [t.name for t in fig.data] == [
        f"complete ({len(view.complete) - 1})",
        f"pruned ({len(view.pruned)})",
        f"best: trial {view.best.number}",
    ]
    assert fig.layout.yaxis.range[0] > CHANCE + 0.05


def test_learning_curves_highlight_the_best_and_keep_the_legend_short(view):
    fig = curves.figure(view)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) <= 4, labels
    assert labels[0] == f"best: trial {view.best.number}"
    assert view.best.number == studylib.best_trial(view.study).number
    assert any(label.startswith("pruned") for label in labels)
    # one line per finished trial except the best (drawn on its own); failed ones not at all
    lines = sum(len(c.get_segments()) for c in ax.collections if hasattr(c, "get_segments"))
    assert lines == len(view.complete) + len(view.pruned) - 1
    assert tuple(fig.get_size_inches() * fig.dpi) == (880, 550)


def test_learning_curves_show_the_range_that_matters(view):
    low, high = curves.figure(view).axes[0].get_ylim()
    finals = [t.intermediate_values[max(t.intermediate_values)] for t in view.complete]
    assert high >= view.best.value >= low
    assert low > CHANCE + 0.05, "the trials stuck at chance set the axis"
    assert low < np.median(finals), "most trials' ends are on the plot"
    assert high - low < 0.7  # not 0..1


def test_a_minimised_metric_gets_the_mirrored_range():
    view = views.read(_study(n_trials=40, direction="minimize", seed=1))
    assert view.sign == -1 and view.metric == "rmse"
    low, high = curves.figure(view).axes[0].get_ylim()
    stuck = [t.value for t in view.complete if t.value > 0.8]
    assert stuck, "the seed should leave a trial stuck at chance"
    assert high < min(stuck)
    assert low <= view.best.value <= high
    assert view.value_range()[1] < min(stuck)


def test_params_are_ranked_by_importance_and_conditional_ones_still_shown(view):
    assert view.importances is not None
    shares = list(view.importances.values())
    assert shares == sorted(shares, reverse=True)
    assert "momentum" not in view.importances  # only sgd trials have it
    assert "momentum" in view.params  # but its slice is drawn
    assert view.params[: len(shares)] == list(view.importances)
    panels = [ax for ax in params.slices(view).axes if ax.get_visible()]
    assert len(panels) == min(len(view.params), params.MOST_SLICES)
    by_title = {ax.get_title().split()[0]: ax for ax in panels}
    assert by_title["lr"].get_xscale() == "log"
    assert by_title["dropout"].get_xscale() == "linear"
    labels = [t.get_text() for t in by_title["optimizer"].get_xticklabels()]
    assert labels == ["adam", "adamw", "sgd", "rmsprop"]


def test_parallel_coordinates_keep_only_the_most_important_params(view):
    ax = params.parallel(view).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "accuracy"
    assert 2 <= len(labels) <= params.MOST_AXES + 1
    assert all(len(label) <= 16 for label in labels)
    assert "momentum" not in labels  # not every trial has it: no line could cross its axis


def test_a_plot_that_cannot_be_drawn_is_skipped_with_its_reason(tmp_path):
    bare = optuna.create_study()  # one trial, nothing searched: no param to plot or rank
    bare.add_trial(create_trial(value=0.5, intermediate_values={1: 0.7, 2: 0.5}))
    written, skipped = study_plots(bare, tmp_path / "bare")
    assert set(skipped) == {"param_importances", "param_slices", "parallel_coordinate"}
    assert all(skipped.values()), skipped
    assert {p.name for p in written} == {
        f"{stem}.{ext}"
        for stem in ("learning_curves", "optimization_history")
        for ext in ("png", "html")
    }

    empty = optuna.create_study()
    written, skipped = study_plots(empty, tmp_path / "empty")
    assert written == []
    assert set(skipped) == set(STUDY_PLOTS)


def test_the_confusion_matrix_is_normalised_per_true_class_with_counts(tmp_path):
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (300,), generator=gen)
    logits = torch.randn(300, 10, generator=gen)
    logits[torch.arange(300), y] += 2.0
    spec = SimpleNamespace(task="classification", classes=tuple("0123456789"))
    written, skipped = prediction_plots(spec, logits, y, tmp_path, "test accuracy 0.9")
    assert skipped == {} and [p.name for p in written] == ["confusion_matrix.png"]
    with Image.open(written[0]) as image:
        assert image.size[1] <= image.size[0] <= 2000

    counts = predictions.confusion_counts(y, logits.argmax(1), 10).numpy()
    ax = predictions.confusion(counts, list("0123456789"), "t").axes[0]
    rates = ax.get_images()[0].get_array()
    assert np.allclose(rates.sum(axis=1), 1.0)
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(counts[counts > 0].tolist())


def test_many_classes_get_no_counts_but_a_page_to_hover(tmp_path):
    n = predictions.MOST_ANNOTATED + 5
    y = torch.arange(200) % n
    spec = SimpleNamespace(task="classification", classes=tuple(f"class {i}" for i in range(n)))
    written, _ = prediction_plots(spec, torch.nn.functional.one_hot(y, n).float(), y, tmp_path, "")
    assert {p.name for p in written} == {"confusion_matrix.png", "confusion_matrix.html"}
    counts = predictions.confusion_counts(y, y, n).numpy()
    assert len(predictions.confusion(counts, list(spec.classes), "").axes[0].texts) == 0


def test_regression_is_drawn_in_the_targets_units(tmp_path):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(200, generator=gen)  # normalised, as the data holds it
    outputs = (y + 0.2 * torch.randn(200, generator=gen)).unsqueeze(1)
    outputs[0] = float("nan")  # a diverged row is left out, not a failed plot
    spec = SimpleNamespace(task="regression", target_mean=200.0, target_std=50.0, target="price")
    written, skipped = prediction_plots(spec, outputs, y, tmp_path, "rmse 10")
    assert skipped == {}
    assert [p.name for p in written] == ["predicted_vs_true.png", "residuals.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.size[1] <= image.size[0] <= 2000

    true, predicted = in_original_units(spec, outputs, y)
    assert true == pytest.approx(y.double().numpy() * 50 + 200)
    ax = predictions.predicted_vs_true(true, predicted, "price", "").axes[0]
    assert ax.get_xlabel() == "true price"
    (diagonal,) = ax.get_lines()  # y = x
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata())
    assert len(ax.collections[0].get_offsets()) == 199
    residual = predictions.residuals(true, predicted, "price", "").axes[0]
    assert np.allclose(residual.collections[0].get_offsets()[:, 1], (true - predicted)[1:])


def test_the_search_does_not_import_the_plotting_libraries():
    """matplotlib and plotly are imported where a plot is drawn, never when a module loads."""
    for path in sorted((ROOT / "automodel" / "tracking" / "plots").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n.split(".")[0] for n in names} & {"matplotlib", "plotly"}, path.name
