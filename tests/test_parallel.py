"""Worker processes sharing one study: on the journal file and on a real PostgreSQL.

PostgreSQL tests need AUTOMODEL_TEST_POSTGRES_URL (`.ci/run` starts a throwaway server with
scripts/throwaway_postgres.sh and exports it); without it they are skipped.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automodel import study as studylib
from tests.conftest import (
    FAST,
    cli,
    digits_args,
    load_study,
    poll_study,
    require_service,
    spawned,
)

PG_URL = os.environ.get("AUTOMODEL_TEST_POSTGRES_URL")
needs_pg = require_service(
    "PostgreSQL",
    bool(PG_URL),
    "set AUTOMODEL_TEST_POSTGRES_URL (see scripts/throwaway_postgres.sh)",
)


def storage_args(kind: str) -> list[str]:
    if kind == "journal":
        return []
    return [f"study.storage={PG_URL}", f"study.name=t-{uuid.uuid4().hex[:10]}"]


def where(runs, args: list[str]) -> tuple[Path, str | None]:
    """(study folder, storage URL) of the search that `args` run."""
    url = next((a.split("=", 1)[1] for a in args if a.startswith("study.storage=")), None)
    name = next((a.split("=", 1)[1] for a in args if a.startswith("study.name=")), "synthetic-mlp")
    return runs / name, url


def load(runs, args: list[str]) -> optuna.Study:
    return load_study(*where(runs, args))


KINDS = ["journal", pytest.param("postgres", marks=needs_pg)]


@pytest.mark.parametrize("kind", KINDS)
def test_two_workers_share_one_exact_budget(tmp_path, kind):
    runs = tmp_path / "runs"
    args = [
        *FAST,
        f"runs_dir={runs}",
        "workers=2",
        "study.n_trials=12",
        # Trials of ~1 s, unpruned: the search process, which trains from the start, must
        # not finish all 12 before the worker has imported torch (a few seconds).
        "trainer.max_epochs=50",
        "study.pruner=none",
        *storage_args(kind),
    ]
    res = cli("search", *args)
    assert res.returncode == 0, res.stderr
    trials = load(runs, args).get_trials()
    real = [t for t in trials if not studylib.is_surplus(t)]
    assert sum(t.state in studylib.FINISHED for t in real) == 12
    assert TrialState.RUNNING not in {t.state for t in trials}
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    owners = {t.user_attrs[studylib.WORKER_ATTR] for t in real}
    assert len(owners) == 2, owners  # both processes contributed
    summary = (
        json.loads((runs / args[-1].split("=", 1)[1] / "summary.json").read_text())
        if kind == "postgres"
        else json.loads((runs / "synthetic-mlp" / "summary.json").read_text())
    )
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 12


def _worker_trial(trials, parent_pid: int) -> tuple[int, int] | None:
    """(trial number, pid) of a trial from #2 on that a worker, not the parent, is running."""
    for t in trials:
        owner = t.user_attrs.get(studylib.WORKER_ATTR, "")
        pid = int(owner.rsplit(":", 1)[1]) if owner else None
        if t.state == TrialState.RUNNING and pid and pid != parent_pid and t.number >= 2:
            return (t.number, pid)
    return None


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_worker_does_not_stop_the_others(tmp_path, kind):
    runs = tmp_path / "runs"
    args = [*digits_args(runs, 2, n_trials=10, max_epochs=30), *storage_args(kind)]
    if kind == "journal":
        args.append("study.name=digits-mlp")
    with spawned("search", *args) as proc:
        victim = poll_study(lambda trials: _worker_trial(trials, proc.pid), *where(runs, args))
        assert victim, "no worker trial to kill"
        os.kill(victim[1], signal.SIGKILL)
        _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "exited with code -9" in err
    states = {t.number: t.state for t in load(runs, args).get_trials()}
    assert states[victim[0]] == TrialState.FAIL
    assert TrialState.RUNNING not in states.values()
    assert sum(s in studylib.FINISHED for s in states.values()) == 10


def test_worker_verb_joins_an_existing_study_only(tmp_path):
    runs = tmp_path / "runs"
    base = [*FAST, f"runs_dir={runs}"]
    res = cli("worker", *base)
    assert res.returncode == 2
    assert (
        "no study named 'synthetic-mlp'" in res.stderr
        and "python -m automodel search" in res.stderr
    )
    assert cli("search", *base, "study.n_trials=3").returncode == 0
    res = cli("worker", *base, "study.n_trials=6")
    assert res.returncode == 0, res.stderr
    assert sum(t.state in studylib.FINISHED for t in load(runs, base).get_trials()) == 6
    res = cli("worker", *base, "study.n_trials=8", "data.n_samples=400")
    assert res.returncode == 2
    assert "was created with a different data (n_samples: 300 then, 400 now)" in res.stderr


@needs_pg
def test_workers_on_two_hosts_join_one_postgres_study(tmp_path):
    """Two independent `worker` commands (as on two hosts) after one `search` created the study."""
    pg = storage_args("postgres")
    first = [*FAST, f"runs_dir={tmp_path / 'a'}", "study.n_trials=2", *pg]
    assert cli("search", *first).returncode == 0
    with (
        spawned("worker", *FAST, f"runs_dir={tmp_path / 'b'}", "study.n_trials=14", *pg) as b,
        spawned("worker", *FAST, f"runs_dir={tmp_path / 'c'}", "study.n_trials=14", *pg) as c,
    ):
        for p in (b, c):
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
    trials = load(tmp_path, first).get_trials()
    real = [t for t in trials if not studylib.is_surplus(t)]
    assert sum(t.state in studylib.FINISHED for t in real) == 14
    assert len({t.user_attrs[studylib.WORKER_ATTR] for t in real}) >= 2
    assert len({t.number for t in trials}) == len(trials)
