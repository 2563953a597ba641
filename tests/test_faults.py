"""Fault injection with real processes and stores: interrupts, a full disk, trials that crash."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from automodel import models, search
from automodel import study as studylib
from automodel.hparams import Param
from tests.conftest import FAST, ROOT, cli, digits_args, load_study, poll_study, spawned


@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_stops_cleanly_and_the_study_resumes(tmp_path, workers):
    runs = tmp_path / "runs"
    args = digits_args(runs, workers)
    study_dir = runs / "digits-mlp"

    def two_done_one_running(trials):
        return (
            sum(t.state == TrialState.COMPLETE for t in trials) >= 2
            and trials[-1].state == TrialState.RUNNING
        )

    with spawned("search", *args) as proc:
        poll_study(two_done_one_running, study_dir, every=0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: finished trials are saved; rerun the same command to resume" in err
    assert "Traceback" not in err
    states = [t.state for t in load_study(study_dir).get_trials()]
    assert TrialState.RUNNING not in states  # the interrupted trials were recorded as failed
    assert TrialState.FAIL in states
    res = cli("search", *args)
    assert res.returncode == 0, res.stderr
    states = [t.state for t in load_study(study_dir).get_trials()]
    assert sum(s in studylib.FINISHED for s in states) == 12


def test_a_full_disk_is_one_clear_error_and_earlier_results_stay(tmp_path):
    runs = tmp_path / "runs"
    args = [*FAST, f"runs_dir={runs}"]
    assert cli("search", *args, "study.n_trials=3").returncode == 0
    study_dir = runs / "synthetic-mlp"
    before = {
        p: (study_dir / p).read_bytes()
        for p in ("summary.json", "best_model.pt", "export/best_model.py")
    }
    limit = (study_dir / "study.journal").stat().st_size + 3000

    def full_disk():  # writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = subprocess.run(
        [sys.executable, "-m", "automodel", "search", *args, "study.n_trials=40"],
        cwd=ROOT,
        preexec_fn=full_disk,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: File too large")
    assert "results written before this are intact" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    for name, data in before.items():
        assert (study_dir / name).read_bytes() == data, name
    # The study still loads with every trial finished before; a rerun with space completes it.
    assert sum(t.state == TrialState.COMPLETE for t in load_study(study_dir).get_trials()) >= 3
    res = cli("search", *args, "study.n_trials=6")
    assert res.returncode == 0, res.stderr
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 6


def test_runs_dir_that_is_a_file_is_refused(tmp_path):
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    res = cli("search", *FAST, f"runs_dir={a_file}")
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: runs_dir '{a_file}' is a file, not a folder"


def _pid_namespaces_work() -> bool:
    try:
        cmd = ["unshare", "--fork", "--pid", "--mount-proc", "true"]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not _pid_namespaces_work(), reason="unshare --pid is not allowed here (needs root or userns)"
)
def test_workers_run_when_the_search_is_pid_1(tmp_path):
    """A container's entrypoint is PID 1: its workers must not take that for a dead parent."""
    runs = tmp_path / "runs"
    args = [
        *FAST,
        f"runs_dir={runs}",
        "workers=2",
        "study.n_trials=8",
        # Unpruned trials of ~1 s: the worker has imported torch before the budget is spent.
        "trainer.max_epochs=50",
        "study.pruner=none",
    ]
    in_new_pid_namespace = ["unshare", "--fork", "--pid", "--mount-proc"]
    res = subprocess.run(
        [*in_new_pid_namespace, sys.executable, "-m", "automodel", "search", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "exited with code" not in res.stderr, res.stderr
    trials = load_study(runs / "synthetic-mlp").get_trials()
    pids = {studylib.Owner.parse(t.user_attrs[studylib.WORKER_ATTR]).pid for t in trials}
    assert 1 in pids and len(pids) == 2, pids  # the search (PID 1) and its one worker


def test_a_worker_whose_parent_is_gone_exits_130_without_a_traceback():
    # A parent pid that is not ours: as if the search died before the worker asked Linux to
    # signal its death.
    code = (
        "from automodel.search.workers import worker_main; "
        "worker_main(None, None, 1, 0.0, 0.0, parent_pid=-1)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr


class Failing(torch.nn.Module):
    """A test-only family whose forward raises what its `fault` param names."""

    def __init__(self, n_in, n_out, fault):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out)
        self.fault = fault

    def forward(self, x):
        if self.fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.fault == "bug":
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")
        return self.linear(x)


@pytest.fixture
def failing_family(monkeypatch, tmp_path):
    family = models.Family(
        {"fault": Param("choice", "none", choices=("none", "oom", "bug"))},
        lambda params, shape, n_out: Failing(shape[0], n_out, params.get("fault", "none")),
    )
    monkeypatch.setitem(models.FAMILIES, "failing", family)
    path = tmp_path / "failing.yaml"
    path.write_text(
        "family: failing\nparams:\n  fault: {type: categorical, choices: [none, oom, bug]}\n"
        "enqueue:\n  - {fault: oom}\n  - {fault: bug}\n  - {fault: none}\n"
    )
    return f"search_space={path}"


def test_trials_that_raise_or_run_out_of_memory_fail_with_their_reason(make_run, failing_family):
    run = make_run(failing_family, "study.n_trials=3")
    summary = search.search(run)
    trials = load_study(run.study_dir).get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert (
        trials[0].user_attrs["fail_reason"]
        == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"
    )
    assert trials[1].user_attrs["fail_reason"].startswith("RuntimeError: mat1 and mat2 shapes")
    assert summary["counts"]["failed"] >= 2 and summary["params"]["fault"] == "none"


def test_a_torn_record_is_dropped_before_another_process_appends(tmp_path):
    """A writer killed mid-record leaves half a line; a worker that opened the journal before
    (so its open did not repair it) appends next: its records must not glue onto it."""
    study_dir = tmp_path / "s"
    other_worker = studylib.open_storage(None, study_dir)  # opened before the tear
    study = optuna.create_study(study_name="s", storage=other_worker)
    trial = study.ask()
    with open(study_dir / "study.journal", "ab") as f:  # the killed writer's half record
        f.write(b'{"op_code":8,"worker_id":"gone","trial_id":0,"user_attr":{"ha')
    trial.set_user_attr("first", 1)
    trial.set_user_attr("second", 2)
    fresh = optuna.load_study(study_name="s", storage=studylib.open_storage(None, study_dir))
    assert fresh.trials[0].user_attrs == {"first": 1, "second": 2}


def test_a_failed_append_is_cut_back_and_the_journal_stays_readable(tmp_path):
    """An append that a full disk stops half-way (EFBIG here) leaves the journal as it was,
    and the same process appends whole records once there is room again."""
    study_dir = tmp_path / "s"
    optuna.create_study(study_name="s", storage=studylib.open_storage(None, study_dir)).ask()
    journal = study_dir / "study.journal"
    code = f"""
import resource, signal
from pathlib import Path
import optuna
from automodel import study as studylib
journal = Path({str(journal)!r})
study = optuna.load_study(study_name="s", storage=studylib.open_storage(None, journal.parent))
before = journal.stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (before + 20, resource.RLIM_INFINITY))
try:
    study._storage.set_trial_user_attr(0, "big", "x" * 1000)
except OSError as err:
    print(err.errno, journal.stat().st_size - before)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
study._storage.set_trial_user_attr(0, "after", 1)
study._storage.set_trial_user_attr(0, "again", 2)
"""
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(errno.EFBIG), "0"]  # failed, and nothing of it left
    fresh = optuna.load_study(study_name="s", storage=studylib.open_storage(None, study_dir))
    assert fresh.trials[0].user_attrs == {"after": 1, "again": 2}


def test_the_journal_is_fsynced_once_per_finished_trial_not_per_record(make_run, monkeypatch):
    run = make_run("study.n_trials=3")
    journal_syncs = []
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("study.journal"):
            journal_syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    search.search(run)
    records = (run.study_dir / "study.journal").read_bytes().count(b"\n")
    finished = [t for t in load_study(run.study_dir).get_trials() if t.state.is_finished()]
    assert len(finished) <= len(journal_syncs) < records / 4


def _one_line(res: subprocess.CompletedProcess, code: int, starts: str) -> str:
    """The one line a failing command printed on stderr, checked."""
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), res.stderr
    return lines[0]


def test_a_corrupt_journal_is_one_line_for_search_and_status(tmp_path):
    runs = tmp_path / "runs"
    args = [*FAST, f"runs_dir={runs}", "study.n_trials=2"]
    assert cli("search", *args).returncode == 0
    journal = runs / "synthetic-mlp" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[5] = b"\0" * 40 + b"\n"  # a block of zeros: what a power cut can leave
    journal.write_bytes(b"".join(lines))
    line = _one_line(cli("search", *args, "study.n_trials=4"), 1, f"error: {journal} is not")
    assert "line 6 is not a journal record" in line and "head -n 5" in line
    _one_line(cli("status", f"runs_dir={runs}", "study.name=synthetic-mlp"), 1, "error: ")
    res = cli("status", f"runs_dir={runs}")  # the list goes on past an unreadable study
    assert res.returncode == 0 and "unreadable" in res.stdout, res.stderr


def test_status_with_an_unreachable_database_is_one_line(tmp_path):
    url = "postgresql+psycopg2://someone:pw@127.0.0.1:1/nothing"  # no server listens on port 1
    res = cli("status", f"runs_dir={tmp_path}", "study.name=x", f"study.storage={url}")
    line = _one_line(res, 2, "error: cannot open study.storage 'postgresql+psycopg2://someone:***@")
    assert "pw" not in line


def test_a_corrupt_checkpoint_is_one_line_for_export(tmp_path):
    runs = tmp_path / "runs"
    assert cli("search", *FAST, f"runs_dir={runs}", "study.n_trials=2").returncode == 0
    best = runs / "synthetic-mlp" / "best_model.pt"
    good = torch.load(best, weights_only=True)
    damaged = {
        "torn": None,
        "weights not a mapping": {**good, "state_dict": "garbage"},
        "recipe not a mapping": {**good, "recipe": "garbage"},
    }
    for what, content in damaged.items():
        if content is None:
            best.write_bytes(best.read_bytes()[:300])
        else:
            torch.save(content, best)
        res = cli("export", f"runs_dir={runs}", "study.name=synthetic-mlp")
        assert str(best) in _one_line(res, 2, "error: "), what


def test_an_error_raised_while_an_interrupt_is_handled_counts_as_the_interrupt():
    """SIGTERM landing while Optuna records a trial makes its cleanup raise UnboundLocalError
    (found by benchmarks/load.py): the worker must still exit as interrupted, in silence."""
    code = """
import sys
from automodel.search import workers
def cut_short(*args):
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise UnboundLocalError("cannot access local variable 'updated_state'")
workers.run_slot = cut_short
workers.worker_main(None, None, 1, 0.0, 0.0, parent_pid=__import__("os").getppid())
"""
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 130, res.stderr
    assert res.stderr == ""
