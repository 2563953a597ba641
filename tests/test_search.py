"""The orchestrator with real Optuna storages on tmp_path: budget, pruning, failures, resume."""

from __future__ import annotations

import dataclasses
import json
import re
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


@pytest.mark.parametrize(
    "changed, named",
    [
        ("trainer.max_epochs=4", "trainer (max_epochs: 3 then, 4 now)"),
        ("trainer.eval_batch_size=64", "trainer (eval_batch_size: 2048 then, 64 now)"),
        ("trainer.compile=true", "trainer (compile: False then, True now)"),
        ("seed=1", "seed (0 then, 1 now)"),  # the seed splits the data too
    ],
)
def test_changed_trainer_settings_or_seed_on_resume_are_refused(make_run, changed, named):
    run = make_run("study.n_trials=1", "trainer.max_epochs=3")
    plan = search.prepare(run)
    search.open_study(plan)
    before = (run.study_dir / "study.journal").read_bytes()
    with pytest.raises(ConfigError, match=rf"was created with a different {re.escape(named)};"):
        search.open_study(search.prepare(make_run("study.n_trials=1", changed)))
    assert (run.study_dir / "study.journal").read_bytes() == before


def test_retraining_follows_the_trials_record_not_the_latest_settings(make_run):
    """The best trial kept no weights (they live on another host): it is retrained as it
    trained, whatever a later command line says about the trainer."""
    run = make_run("study.n_trials=2")
    best = search.search(run)["best_trial"]
    (run.study_dir / "trials" / str(best) / "model.pt").unlink()
    trial = load_study(run.study_dir).trials[best]
    later = search.prepare(make_run("trainer.max_epochs=5", "trainer.threads=2"))
    ckpt, _ = search.trained(later, trial, torch.device("cpu"))
    assert ckpt.recipe.epochs == 3 and ckpt.recipe.seed == run.seed + best
    assert ckpt.val[trial.user_attrs["metric"]] == trial.value


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
    """Only owners provably gone are failed: a pid is reused after a container restart, and
    another PID namespace's pids mean nothing here (see study.owners)."""
    run = make_run("study.n_trials=3")
    study = search.open_study(search.prepare(run))
    me = studylib.Owner.parse(studylib.worker_id())
    leases = run.study_dir / "owners"
    other_ns = dataclasses.replace(me, pid=999999999, pidns=me.pidns + 1)
    owners = {
        "legacy, dead": f"{me.host}:999999999",  # as older versions wrote it
        "pid reused": dataclasses.replace(me, start=me.start + 1),  # a restarted container
        "other pid namespace": other_ns,  # no lease here: not ours to judge
        "other namespace, lease free": dataclasses.replace(other_ns, start=7),
        "other host": dataclasses.replace(me, host="elsewhere", pid=999999999),
        "this process": me,
    }
    leases.mkdir(parents=True)
    (leases / owners["other namespace, lease free"].lease_name).touch()  # its process died
    trials = {}
    for what, owner in owners.items():
        trials[what] = study.ask()
        study._storage.set_trial_user_attr(trials[what]._trial_id, studylib.WORKER_ATTR, str(owner))
    failed = studylib.fail_dead_local_trials(study, include_unowned=True, leases=leases)
    gone = ["legacy, dead", "pid reused", "other namespace, lease free"]
    assert failed == [trials[what].number for what in gone]
    states = {t.number: t.state for t in study.get_trials()}
    for what, trial in trials.items():
        assert states[trial.number] == (TrialState.FAIL if what in gone else TrialState.RUNNING)


def test_a_trial_not_yet_owned_is_failed_only_once_it_is_old(make_run, monkeypatch):
    """Between creating a trial and writing its owner, a live worker's trial has no owner; a
    search starting on a loaded machine then failed it as dead (benchmarks/load.py)."""
    from automodel.study import owners

    run = make_run("study.n_trials=3")
    study = search.open_study(search.prepare(run))
    young = study.ask()  # created, no owner written yet
    leases = run.study_dir / "owners"
    assert studylib.fail_dead_local_trials(study, include_unowned=True, leases=leases) == []
    assert study.get_trials()[young.number].state == TrialState.RUNNING
    monkeypatch.setattr(owners, "UNOWNED_GRACE", 0.0)  # now old: a worker killed in between
    assert studylib.fail_dead_local_trials(study, include_unowned=True, leases=leases) == [
        young.number
    ]


def test_a_search_waiting_on_other_processes_says_so_and_frees_dead_places(
    make_run, monkeypatch, capsys
):
    """One trial done and two RUNNING fill a budget of 2: one of a process on another host
    (alive for all we know), one of a local process whose pid was reused (a restarted
    container), whose place is freed; the search then waits for the other, saying so."""
    from automodel.search import peers

    monkeypatch.setattr(peers, "WAIT_REPORT_SECONDS", 0.5)
    run = make_run("study.n_trials=2")
    plan = search.prepare(run)
    study = search.open_study(plan)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    me = studylib.Owner.parse(studylib.worker_id())
    elsewhere = dataclasses.replace(me, host="elsewhere", pid=7)
    numbers = []
    for owner in (elsewhere, dataclasses.replace(me, start=me.start + 1)):
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, studylib.WORKER_ATTR, str(owner))
        numbers.append(trial.number)
    search.run_trials(plan, study, torch.device("cpu"), deadline=time.time() + 2)
    states = {t.number: t.state for t in study.get_trials()}
    assert [states[n] for n in numbers] == [TrialState.RUNNING, TrialState.FAIL]
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 1  # nothing else ran
    err = capsys.readouterr().err
    expected = f"waiting for 1 trial(s) running in other processes: #{numbers[0]} (elsewhere:7)\n"
    assert expected in err


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
