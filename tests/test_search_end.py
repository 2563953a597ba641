"""The end of a search: why it stopped (the convergence rule among them) and the
gradient-boosting baseline beside a table's result."""

from __future__ import annotations

import datetime
import json

import optuna
import pytest
import torch
from optuna.trial import TrialState

from automodel import baseline, config, search, status
from automodel import data as datalib
from automodel.search import converge
from tests.conftest import FAST, load_study
from tests.test_csv import people


def _trial(number: int, value: float | None, state=TrialState.COMPLETE):
    """A finished trial as the study holds it, finishing one second after the previous."""
    start = datetime.datetime(2025, 1, 1) + datetime.timedelta(seconds=number)
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=1),
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


@pytest.mark.parametrize(
    ("values", "sign", "since", "best"),
    [
        ([0.5, 0.7, 0.6, 0.7, 0.65], 1, 3, 1),  # a tie is no new best
        ([0.5, 0.7, 0.70001, 0.6], 1, 2, 2),  # a gain under the tolerance moves the best only
        ([0.5, 0.7, 0.71, 0.6], 1, 1, 2),
        ([3.0, 2.0, 2.5, None, 2.0], -1, 3, 1),  # lower is better; a pruned trial counts
    ],
)
def test_stagnation_counts_finished_trials_since_the_last_real_gain(values, sign, since, best):
    trials = [
        _trial(i, v, TrialState.PRUNED if v is None else TrialState.COMPLETE)
        for i, v in enumerate(values)
    ]
    got_since, got_best = converge.stagnation(trials, sign, tolerance=0.001)
    assert (got_since, got_best.number) == (since, best)


def test_a_converged_search_stops_before_its_budget_and_says_so(make_run, capsys):
    run = make_run(
        "study.n_trials=40", "study.converge_patience=3", "trainer.max_epochs=2", "quiet=false"
    )
    summary = search.search(run)
    assert summary["stop_reason"] == "converged"
    done = summary["counts"]["complete"] + summary["counts"]["pruned"]
    assert 4 <= done < 40
    since, _ = converge.stagnation(load_study(run.study_dir).trials, 1, 0.001)
    assert since == 3  # it stopped at the first check where the rule held
    search.print_summary(summary)
    out = capsys.readouterr().out
    assert "converged: no val_accuracy better than trial" in out
    assert "failed; stopped: converged):" in out
    assert json.loads((run.study_dir / "summary.json").read_text())["stop_reason"] == "converged"


def test_without_the_rule_the_search_runs_to_n_trials(make_run):
    run = make_run(
        "study.n_trials=6", "study.converge_patience=1", "study.stop_when_converged=false"
    )
    summary = search.search(run)
    assert summary["stop_reason"] == "n_trials"
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 6


def test_workers_share_the_decision_and_all_stop(make_run):
    run = make_run(
        "workers=2", "study.n_trials=60", "study.converge_patience=3", "trainer.max_epochs=2"
    )
    summary = search.search(run)
    assert summary["stop_reason"] == "converged"
    study = load_study(run.study_dir)
    decided = study.user_attrs[converge.STOP_ATTR]
    finished = [t for t in study.trials if t.state.is_finished()]
    # After the decision only the trials already running (one per worker) may finish.
    assert len(finished) <= decided["finished"] + 2
    assert {t.user_attrs["worker"] for t in finished} and len(finished) < 60


def test_a_decision_on_the_study_stops_every_worker_until_the_next_invocation(make_run):
    """The record, not each worker's own judgement, stops them: a worker whose view would
    not stop honours it, and a new search clears it."""
    run = make_run("study.n_trials=3")
    plan = search.prepare(run)
    study = search.open_study(plan)
    study.set_user_attr(converge.STOP_ATTR, {"best_trial": 0, "patience": 1, "finished": 0})
    search.run_trials(plan, study, torch.device("cpu"))
    # Converged by the record alone: nothing ran (the enqueued defaults still wait).
    assert [t.state for t in study.trials] == [TrialState.WAITING]
    summary = search.search(run)  # a new invocation judges afresh
    assert summary["stop_reason"] == "n_trials" and len(load_study(run.study_dir).trials) == 3


def test_a_search_that_runs_out_of_time_says_timeout(make_run):
    run = make_run("study.n_trials=100000", "study.timeout=3", "study.stop_when_converged=false")
    assert search.search(run)["stop_reason"] == "timeout"


# ---------------------------------------------------------------------- the baseline


def _run(tmp_path, *overrides: str) -> config.RunConfig:
    """FAST's settings on other data (whose group has no data.n_samples)."""
    fast = [o for o in FAST if not o.startswith("data")]
    composed = config.compose([*fast, *overrides, f"runs_dir={tmp_path / 'runs'}"])
    return config.to_run_config(composed)


def test_a_csv_search_reports_the_baseline_of_a_direct_call(tmp_path, capsys):
    path = people(tmp_path / "people.csv", n=200)
    run = _run(tmp_path, "data=csv", f"data.path={path}", "data.target=label", "study.n_trials=2")
    summary = search.search(run)
    expected = baseline.gradient_boosting(datalib.load(run.data, run.seed), run.seed)
    written = json.loads((run.study_dir / "summary.json").read_text())["baseline"]
    assert written["model"] == "HistGradientBoosting"
    assert written["val"] == pytest.approx(expected["val"])
    assert written["test"] == pytest.approx(expected["test"])
    search.print_summary(summary)
    accuracy = f"test accuracy {expected['test']['accuracy']:.4f} (shipped: "
    assert f"baseline HistGradientBoosting: {accuracy}" in capsys.readouterr().out
    status.show(run, one_study=True)
    assert "baseline HistGradientBoosting: val accuracy" in capsys.readouterr().out


def test_baseline_false_and_digits_get_none(make_run, tmp_path):
    off = search.search(make_run("baseline=false", "study.n_trials=1"))
    assert off["baseline"] is None
    digits = _run(tmp_path, "data=digits", "study.n_trials=1", "trainer.max_epochs=1")
    assert search.search(digits)["baseline"] is None
    assert json.loads((digits.study_dir / "summary.json").read_text())["baseline"] is None
