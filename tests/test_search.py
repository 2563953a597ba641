"""The orchestrator with real Optuna storages on tmp_path: budget, pruning, failures, resume."""

from __future__ import annotations

import json
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from automodel import models, search
from automodel import study as studylib
from automodel.config import ConfigError
from tests.conftest import POISONED, load_study


def _trials(run):
    return load_study(run.study_dir).get_trials(deepcopy=False)


def test_search_writes_the_documented_outputs(make_run):
    run = make_run("study.n_trials=5", "study.keep_top_k=2")
    summary = search.search(run, "test")
    assert set(summary) >= {
        "study",
        "best_trial",
        "params",
        "val",
        "test",
        "counts",
        "wall_seconds",
    }
    on_disk = json.loads((run.study_dir / "summary.json").read_text())
    assert on_disk == summary
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 5
    assert 0.5 < summary["test"]["accuracy"] <= 1.0
    for name in (
        "config.yaml",
        "search_space.yaml",
        "study.journal",
        "best_model.pt",
        "best_params.json",
    ):
        assert (run.study_dir / name).is_file(), name
    # Only the top-k trials keep weights, and they are the best ones.
    kept = sorted(int(p.name) for p in (run.study_dir / "trials").iterdir())
    ranked = [t.number for t in studylib.ranked(load_study(run.study_dir))]
    assert kept == sorted(ranked[:2])
    ckpt = torch.load(run.study_dir / "best_model.pt", weights_only=True)
    assert ckpt["trial"] == summary["best_trial"] and ckpt["test"] == summary["test"]


def test_best_weights_reproduce_the_reported_metrics(make_run):
    run = make_run("study.n_trials=3")
    summary = search.search(run)
    plan = search.prepare(run)
    ckpt = torch.load(run.study_dir / "best_model.pt", weights_only=True)
    model = models.create(ckpt["family"], ckpt["params"], plan.data.spec)
    model.load_state_dict(ckpt["state_dict"])
    from automodel import train

    spec = plan.data.spec
    val = train.evaluate(model, plan.data.x_val, plan.data.y_val, spec)
    test = train.evaluate(model, plan.data.x_test, plan.data.y_test, spec)
    for name in ("accuracy", "f1_macro"):
        assert val[name] == pytest.approx(summary["val"][name])
        assert test[name] == pytest.approx(summary["test"][name])


def test_pruned_trials_stop_at_once(make_run):
    run = make_run("study.n_trials=3", "trainer.max_epochs=6")
    plan = search.prepare(run)
    storage = studylib.open_storage(None, run.study_dir)
    # A real Optuna pruner that prunes every trial whose accuracy is below 1.1: all of them.
    study = optuna.create_study(
        storage=storage, direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1)
    )
    search.run_trials(plan, study, torch.device("cpu"))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3
    assert all(list(t.intermediate_values) == [1] for t in trials)


def test_resume_counts_finished_trials_toward_the_total(make_run):
    first = search.search(make_run("study.n_trials=3"))
    assert first["counts"]["complete"] + first["counts"]["pruned"] == 3
    search.search(make_run("study.n_trials=5"))
    numbers = sorted(t.number for t in _trials(make_run()))
    assert numbers == [0, 1, 2, 3, 4]
    again = search.search(make_run("study.n_trials=5"))  # a finished study only reports
    assert len(_trials(make_run())) == 5
    assert again["best_trial"] in numbers


def test_an_unreadable_kept_checkpoint_is_retrained_with_a_warning(make_run, capsys):
    first = search.search(make_run("study.n_trials=2"))
    kept = make_run().study_dir / "trials" / str(first["best_trial"]) / "model.pt"
    kept.write_bytes(b"")  # torn: a disk that filled up mid-write
    again = search.search(make_run("study.n_trials=2"))  # a finished study only reports
    err = capsys.readouterr().err
    assert f"retraining trial {first['best_trial']} from its seed" in err
    assert "not a readable checkpoint" in err
    assert again["best_trial"] == first["best_trial"]
    assert again["test"] == pytest.approx(first["test"])
    assert torch.load(kept, weights_only=True)["trial"] == first["best_trial"]


def test_a_changed_space_on_resume_is_refused(make_run, tmp_path):
    search.search(make_run("study.n_trials=2"))
    before = (make_run().study_dir / "study.journal").read_bytes()
    other = tmp_path / "mlp.yaml"
    other.write_text("family: mlp\nparams:\n  depth: {type: int, low: 1, high: 2}\n")
    with pytest.raises(ConfigError, match="was created with a different space"):
        search.search(make_run(f"search_space={other}", "study.name=synthetic-mlp"))
    assert (make_run().study_dir / "study.journal").read_bytes() == before


@pytest.fixture
def poison_family(monkeypatch, tmp_path):
    monkeypatch.setitem(models.FAMILIES, "poisoned", POISONED)

    def space(text: str):
        path = tmp_path / "poisoned.yaml"
        path.write_text("family: poisoned\n" + text)
        return f"search_space={path}"

    return space


def test_a_nan_loss_fails_the_trial_and_the_search_goes_on(make_run, poison_family):
    space = poison_family(
        "params:\n  poison: {type: categorical, choices: [true, false]}\n"
        "enqueue:\n  - {poison: true}\n  - {poison: false}\n"
    )
    summary = search.search(make_run(space, "study.n_trials=3"))
    trials = _trials(make_run(space))
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"].startswith("NonFiniteLoss: training loss became nan")
    assert summary["counts"]["failed"] >= 1
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 3
    assert summary["params"]["poison"] is False


def test_too_many_failures_stop_the_search_naming_the_error(make_run, poison_family):
    space = poison_family("params:\n  poison: true\n")
    run = make_run(space, "study.n_trials=50", "study.failure_window=4")
    with pytest.raises(
        search.SearchStopped,
        match=r"3 of the last 3 trials failed \(most common, 3x: NonFiniteLoss",
    ):
        search.search(run)
    assert len(_trials(run)) == 3  # stopped as soon as more than half of a window of 4 failed


def test_dead_workers_running_trials_are_failed_on_resume(make_run):
    run = make_run("study.n_trials=3")
    plan = search.prepare(run)
    study = search.open_study(plan)
    ghost = study.ask()  # a trial whose process vanished: RUNNING, owned by a dead pid
    study._storage.set_trial_user_attr(
        ghost._trial_id, studylib.WORKER_ATTR, f"{studylib.worker_id().rsplit(':', 1)[0]}:999999999"
    )
    alive = study.ask()  # one owned by a live process (this one) must be left alone
    study._storage.set_trial_user_attr(alive._trial_id, studylib.WORKER_ATTR, studylib.worker_id())
    assert studylib.fail_dead_local_trials(study, include_unowned=True) == [ghost.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {ghost.number: TrialState.FAIL, alive.number: TrialState.RUNNING}


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc"])
def test_every_sampler_runs(make_run, sampler):
    summary = search.search(
        make_run(
            f"study.sampler={sampler}",
            "study.n_trials=3",
            "trainer.max_epochs=1",
            f"study.name=s-{sampler}",
        )
    )
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 3


@pytest.mark.parametrize(
    "pruner", ["median", "percentile", "successive_halving", "hyperband", "none"]
)
def test_every_pruner_runs(make_run, pruner):
    summary = search.search(
        make_run(
            f"study.pruner={pruner}",
            "study.n_trials=3",
            "trainer.max_epochs=2",
            f"study.name=p-{pruner}",
        )
    )
    assert summary["counts"]["complete"] >= 1


def test_batch_size_larger_than_the_data_is_fitted_before_training(make_run, tmp_path):
    space = tmp_path / "big.yaml"
    space.write_text(
        "family: mlp\nparams:\n  batch_size: {type: categorical, choices: [32, 4096]}\n"
    )
    plan = search.prepare(make_run(f"search_space={space}"))
    assert plan.notices == [
        "batch_size: dropped 4096 (more than the 192 training rows); searching 32"
    ]
    (entry,) = plan.space.entries
    assert entry.choices == (32,)
    assert plan.space_source["params"]["batch_size"]["choices"] == [32, 4096]  # the identity
    assert not (tmp_path / "runs").exists()


def test_timeout_stops_a_trial_that_is_still_training(make_run):
    run = make_run("study.timeout=4", "trainer.max_epochs=100000", "study.pruner=none")
    start = time.monotonic()
    with pytest.raises(search.SearchStopped, match="no trial completed"):
        search.search(run)
    assert time.monotonic() - start < 60  # not the hours 100000 epochs would take
    (trial,) = _trials(run)
    assert trial.state == TrialState.PRUNED
    assert 1 <= trial.last_step < 100000
