"""Worker processes sharing one study: on the journal file and on a real PostgreSQL.

PostgreSQL tests need AUTOMODEL_TEST_POSTGRES_URL (`.ci/run` starts a throwaway server with
scripts/throwaway_postgres.sh and exports it); without it they are skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automodel import search
from automodel import study as studylib
from tests.conftest import (
    FAST,
    ROOT,
    at_once,
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
    _exact_budget(trials, 12)
    owners = {t.user_attrs[studylib.WORKER_ATTR] for t in trials if t.state != TrialState.FAIL}
    assert len(owners) == 2, owners  # both processes contributed
    summary = (
        json.loads((runs / args[-1].split("=", 1)[1] / "summary.json").read_text())
        if kind == "postgres"
        else json.loads((runs / "synthetic-mlp" / "summary.json").read_text())
    )
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 12


def _exact_budget(trials: list, n_trials: int) -> None:
    """Raw states, not the surplus mark under test: exactly `n_trials` finished, nothing left
    running, and every other trial (surplus: started after others filled the budget) failed
    before it trained."""
    states = [t.state for t in trials]
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == n_trials
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}, states
    extra = [t for t in trials if t.state == TrialState.FAIL]
    assert not [t.number for t in extra if t.params or t.intermediate_values], "trained"
    assert len({t.number for t in trials}) == len(trials)


def _worker_trial(trials, parent_pid: int) -> tuple[int, int] | None:
    """(trial number, pid) of a trial from #2 on that a worker, not the parent, is running."""
    for t in trials:
        owner = studylib.Owner.parse(t.user_attrs.get(studylib.WORKER_ATTR, ""))
        pid = owner.pid if owner else None
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
    _exact_budget(trials, 14)
    finished = [t for t in trials if t.state != TrialState.FAIL]
    assert len({t.user_attrs[studylib.WORKER_ATTR] for t in finished}) >= 2


def _running_with_a_report(trials):
    return next(
        (t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values), None
    )


def test_a_trial_ended_by_another_process_is_a_warning_and_the_worker_goes_on(tmp_path):
    """Another process that judged this one dead failed its trial mid-training: Optuna then
    refuses this process's report and its tell ("Cannot tell a FAIL trial")."""
    runs = tmp_path / "runs"
    args = digits_args(runs, 1, n_trials=3, max_epochs=40)
    study_dir = runs / "digits-mlp"
    with spawned("search", *args) as proc:
        victim = poll_study(_running_with_a_report, study_dir)
        assert victim, "no trial in flight"
        assert studylib.fail_trial(load_study(study_dir), victim, "judged dead elsewhere")
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert err.strip() == (
        f"warning: trial {victim.number} was ended (fail: judged dead elsewhere) by another "
        "process while this one ran it; going on"
    )
    states = [t.state for t in load_study(study_dir).get_trials()]
    assert sum(s in studylib.FINISHED for s in states) == 3


IN_NEW_PID_NAMESPACE = ["unshare", "--fork", "--pid", "--mount-proc", "--kill-child=SIGKILL"]


def _pid_namespaces_work() -> bool:
    try:
        cmd = [*IN_NEW_PID_NAMESPACE, "true"]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_pid_namespaces = pytest.mark.skipif(
    not _pid_namespaces_work(), reason="unshare --pid is not allowed here (needs root or userns)"
)


def _in_container(*args: str) -> subprocess.Popen:
    """`python -m automodel ...` as PID 1 of a new PID namespace, with this host's name: a
    container's entrypoint. Killing the returned process kills the whole namespace."""
    cmd = [*IN_NEW_PID_NAMESPACE, sys.executable, "-m", "automodel", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@needs_pid_namespaces
def test_a_restarted_container_fails_its_dead_trial_and_finishes(tmp_path):
    """The container is killed with a trial in flight and started again: its search is PID 1
    again, on the same host name, so `host:1` alone would look alive and be waited for."""
    runs = tmp_path / "runs"
    args = ["search", *digits_args(runs, 1, n_trials=2, max_epochs=40)]
    study_dir = runs / "digits-mlp"

    def one_done_one_running(trials):
        states = [t.state for t in trials]
        return TrialState.COMPLETE in states and TrialState.RUNNING in states

    first = _in_container(*args)
    try:
        assert poll_study(one_done_one_running, study_dir), "never had a trial in flight"
    finally:
        first.kill()
        first.communicate()
    again = _in_container(*args)
    try:
        _, err = again.communicate(timeout=300)
    finally:
        again.kill()
    assert again.returncode == 0, err
    states = [t.state for t in load_study(study_dir).get_trials()]
    assert states.count(TrialState.FAIL) == 1 and TrialState.RUNNING not in states
    assert sum(s in studylib.FINISHED for s in states) == 2


def _worker_not_pid_1(trials) -> bool:
    for t in trials:
        owner = studylib.Owner.parse(t.user_attrs.get(studylib.WORKER_ATTR, ""))
        if t.state == TrialState.RUNNING and owner and owner.pid != 1:
            return True
    return False


@needs_pid_namespaces
def test_searches_in_two_pid_namespaces_leave_each_others_trials_alone(tmp_path):
    """Two containers with one host name and one study folder: the pids of the first one's
    worker processes do not exist in the second, which must not take them for dead."""
    runs = tmp_path / "runs"
    args = digits_args(runs, 2, n_trials=6, max_epochs=30)
    study_dir = runs / "digits-mlp"
    first = _in_container("search", *args)
    second = None
    try:
        # A trial of the first container's worker process (not its PID 1) is in flight.
        assert poll_study(_worker_not_pid_1, study_dir), (
            "the first container's worker never ran a trial"
        )
        second = _in_container("search", *args)
        results = [p.communicate(timeout=300) for p in (first, second)]
    finally:
        for p in (first, second):
            if p is not None:
                p.kill()
    for p, (_, err) in zip((first, second), results, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err
    trials = load_study(study_dir).get_trials()
    died = "worker process died while the trial ran (killed?)"
    assert not [t.number for t in trials if t.user_attrs.get(studylib.FAIL_ATTR) == died]
    assert sum(t.state in studylib.FINISHED for t in trials) == 6


RACER = """
import json, os, pathlib, sys, time
from automodel import config, study
from automodel.config import ConfigError
job = json.loads(sys.argv[1])
space = {"family": "mlp", "params": {"depth": 1}}
cfgs = []
for name, n_samples in zip(job["names"], job["n_samples"]):
    overrides = [f"runs_dir={job['runs']}", f"study.name={name}", f"data.n_samples={n_samples}"]
    if job["storage"]:
        overrides.append(f"study.storage={job['storage']}")
    cfgs.append(config.to_run_config(config.compose(["data=synthetic", *overrides])))
# A rendezvous once both have imported everything: round r starts at the same instant in both.
ready = pathlib.Path(job["runs"]) / f"ready-{os.getpid()}"
ready.touch()
while len(marks := list(ready.parent.glob("ready-*"))) < 2:
    time.sleep(0.01)
start = max(m.stat().st_mtime for m in marks) + 0.3
for r, cfg in enumerate(cfgs):
    time.sleep(max(0.0, start + 0.4 * r - time.time()))
    try:
        study.load_or_create(cfg, space, "maximize", enqueue=({"depth": 1},))
        print("joined", flush=True)
    except ConfigError:
        print("refused", flush=True)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_processes_racing_to_create_one_study_agree_on_it(tmp_path, kind):
    """Rounds of two processes creating the same new study at the same instant: with the
    same settings both join and its enqueued trial is queued once; with other data only the
    creator's settings stand and the other process is refused."""
    rounds = 8
    names = [f"race-{uuid.uuid4().hex[:8]}" for _ in range(rounds)]
    samples = {"a": [300] * rounds, "b": [300 if r % 2 else 400 for r in range(rounds)]}
    url = PG_URL if kind == "postgres" else None
    procs = {
        who: subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                json.dumps(
                    {
                        "runs": str(tmp_path),
                        "storage": url,
                        "names": names,
                        "n_samples": n,
                    }
                ),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who, n in samples.items()
    }
    said = {}
    for who, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        said[who] = out.split()
    for r, name in enumerate(names):
        verdicts = sorted(said[who][r] for who in samples)
        same = samples["a"][r] == samples["b"][r]
        assert verdicts == (["joined", "joined"] if same else ["joined", "refused"]), r
        study = load_study(tmp_path / name, url)
        winner = "a" if said["a"][r] == "joined" else "b"
        assert study.user_attrs["data"]["n_samples"] == samples[winner][r], r
        assert len(study.get_trials(states=(TrialState.WAITING,))) == 1, r


PG_TMP = os.environ.get("PG_TMP")  # the throwaway server's folder: this test restarts it


@needs_pg
@require_service("PostgreSQL server control", bool(PG_TMP), "set PG_TMP (throwaway_postgres.sh)")
def test_a_database_restart_mid_search_is_one_line_and_the_study_resumes(tmp_path):
    runs = tmp_path / "runs"
    args = [*digits_args(runs, 1, n_trials=4, max_epochs=40), *storage_args("postgres")]
    with spawned("search", *args) as proc:
        assert poll_study(_running_with_a_report, *where(runs, args)), "no trial in flight"
        restart = [str(ROOT / "scripts" / "throwaway_postgres.sh"), "restart", PG_TMP, "3"]
        subprocess.run(restart, check=True, timeout=120)
        _, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    if proc.returncode != 0:  # it may also ride out the restart: then it finished
        assert proc.returncode == 1, err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: lost the study's database (OperationalError: "), err
        assert "rerun the same command once it is back to resume" in err
    res = cli("search", *args)
    assert res.returncode == 0, res.stderr
    states = [t.state for t in load(runs, args).get_trials()]
    assert TrialState.RUNNING not in states
    assert sum(s in studylib.FINISHED for s in states) == 4


def _fresh_database() -> str:
    """The URL of a new, empty database on the test server."""
    import sqlalchemy

    name = f"fresh_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


@needs_pg
def test_hosts_that_open_a_new_database_at_once_all_get_in():
    """The first processes on an empty database race to create Optuna's tables: the losers
    (a duplicate key or table) retry instead of stopping with `cannot open study.storage`."""
    url = _fresh_database()
    # Below the per-process cache (whose lock would serialise these threads).
    assert at_once(lambda: studylib.storage._open_database(url).remove_session(), 8) == []


@needs_pg
def test_a_search_holds_one_pool_of_database_connections(make_run):
    """One storage per database per process: a search opened four (each with its idle
    connection), and 32 hosts then exceeded PostgreSQL's default 100 connections."""
    import sqlalchemy

    url = _fresh_database()
    run = make_run(f"study.storage={url}", "workers=1", "study.n_trials=3")
    assert studylib.open_storage(url, run.study_dir) is studylib.open_storage(url, run.study_dir)
    summary = search.search(run)
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 3
    query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name")
    admin = sqlalchemy.create_engine(PG_URL)
    with admin.connect() as c:
        held = c.execute(query, {"name": url.rsplit("/", 1)[1]}).scalar()
    admin.dispose()
    assert 1 <= held <= 2, held  # the search's thread and the heartbeat's, at most
