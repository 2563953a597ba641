"""Who runs a trial, and whether that process is provably gone.

A trial's owner (its `worker` user attribute) is this, for the process that runs it:

    host:pid boot=<kernel boot id> pidns=<pid namespace inode> start=<start time in ticks>

`host:pid` alone is reused: a restarted container has the same hostname and its PIDs start
again at 1, and processes in two PID namespaces on one host (two containers with one
hostname) cannot see each other's PIDs. So a local owner is judged only on the same kernel
(host and boot id) and in the same PID namespace, alive only when a process with its pid
and start time is there. An owner in another PID namespace of this kernel is judged by its
lease: a lock file it holds in the study folder while it runs trials, which the kernel
releases when the process dies, however it dies. Anything else (another host, an owner
with no lease here) is not ours to judge: a database storage's heartbeat covers it.

Owners written as `host:pid` (before automodel recorded more) are still read, by pid.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from automodel.study.attrs import FAIL_ATTR, WORKER_ATTR

# A RUNNING trial without an owner younger than this may be a live worker's that has not yet
# written its name (see fail_dead_local_trials).
UNOWNED_GRACE = 60.0

ALIVE, GONE, UNKNOWN = "alive", "gone", "unknown"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    boot: str | None = None  # None: written as host:pid by an older automodel
    pidns: int | None = None
    start: int | None = None

    def __str__(self) -> str:
        if self.boot is None:
            return self.short
        return f"{self.short} boot={self.boot} pidns={self.pidns} start={self.start}"

    @property
    def short(self) -> str:
        return f"{self.host}:{self.pid}"

    @property
    def lease_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.short}-{self.pidns}-{self.start}") + ".lock"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner written as `text`; None for text in no form we wrote."""
        first, *rest = text.split() or [""]
        host, _, pid = first.rpartition(":")
        fields = dict(part.partition("=")[::2] for part in rest)
        try:
            pidns, start = fields.get("pidns"), fields.get("start")
            return cls(
                host,
                int(pid),
                fields.get("boot"),
                None if pidns in (None, "None") else int(pidns),
                None if start in (None, "None") else int(start),
            )
        except ValueError:
            return None


def this_process() -> Owner:
    return _owner(os.getpid())  # by pid: a forked child is another owner


@functools.cache
def _owner(pid: int) -> Owner:
    boot = pidns = None
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        pidns = os.stat("/proc/self/ns/pid").st_ino
    return Owner(socket.gethostname(), pid, boot or "unknown", pidns, _start_time(pid))


def worker_id() -> str:
    """This process, as trials record their owner."""
    return str(this_process())


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (ticks after boot); None for no such (or a zombie) process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def verdict(owner: Owner, me: Owner, leases: Path | None) -> str:
    """ALIVE, GONE or UNKNOWN (not ours to judge) for `owner`, judged by process `me`."""
    if owner.host != me.host:
        return UNKNOWN
    if owner.boot is None:  # host:pid, from an older automodel: all it says
        return ALIVE if _pid_alive(owner.pid) else GONE
    if owner.boot != me.boot:  # another machine of the same name, or before a reboot
        return UNKNOWN
    if owner.pidns == me.pidns and owner.pidns is not None:
        start = _start_time(owner.pid)
        if start is None and _pid_alive(owner.pid):
            return ALIVE  # there but unreadable (/proc mounted with hidepid): cannot tell
        return ALIVE if start == owner.start else GONE  # gone, or its pid reused since
    return _lease_verdict(leases, owner)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker stays a zombie until its parent reaps it: dead all the same.
    return _start_time(pid) is not None or not Path(f"/proc/{pid}").exists()


def _lease_verdict(leases: Path | None, owner: Owner) -> str:
    if leases is None:
        return UNKNOWN
    try:
        fd = os.open(leases / owner.lease_name, os.O_RDWR)
    except OSError:  # no lease here: the owner ran from another study folder
        return UNKNOWN
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return ALIVE
    except OSError:
        return UNKNOWN
    finally:
        os.close(fd)
    return GONE


@contextlib.contextmanager
def lease(folder: Path):
    """Hold this process's lease in `folder` while the block runs trials (see the module's
    docstring). A folder where locks cannot be taken only loses that proof of death."""
    path = folder / this_process().lease_name
    fd = None
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # before the lock goes: never a free lease of a live owner
            os.close(fd)


def fail_dead_local_trials(
    study: optuna.Study, include_unowned: bool, leases: Path | None = None
) -> list[int]:
    """Mark FAIL the RUNNING trials whose owner is provably gone (see `verdict`).

    A worker killed with SIGKILL leaves its trial RUNNING; the journal has no heartbeat, so
    the next process on the same machine cleans up. A trial with no owner yet (killed between
    creation and its first write) is failed only when `include_unowned` (a local journal
    when a search starts) and it is older than UNOWNED_GRACE seconds: a live worker writes
    its name right after creating the trial, but on a loaded machine another process starting
    in between saw it unowned and failed it (benchmarks/load.py, 32 workers on 2 cores).
    `leases`: the study's lease folder. Returns the trial numbers.
    """
    me, failed = this_process(), []
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        text = t.user_attrs.get(WORKER_ATTR, "")
        owner = Owner.parse(text) if text else None
        if owner is None and not (include_unowned and not text and _age(t, now) > UNOWNED_GRACE):
            continue
        if owner is not None and (owner == me or verdict(owner, me, leases) != GONE):
            continue
        if fail_trial(study, t, "worker process died while the trial ran (killed?)"):
            failed.append(t.number)
        if owner is not None and leases is not None:
            (leases / owner.lease_name).unlink(missing_ok=True)
    return failed


def _age(trial: optuna.trial.FrozenTrial, now: datetime.datetime) -> float:
    """Seconds since the trial was created (Optuna's local-time datetime_start)."""
    start = trial.datetime_start
    return math.inf if start is None else (now - start).total_seconds()


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> bool:
    """Mark `trial` FAIL with `why`; False when it finished meanwhile (its owner, or
    another process that judged it first)."""
    try:
        study._storage.set_trial_user_attr(trial._trial_id, FAIL_ATTR, why)
        return study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def running_elsewhere(study: optuna.Study) -> list[str]:
    """`#<number> (<host:pid>)` for each RUNNING trial that another process owns."""
    me = this_process()
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = Owner.parse(t.user_attrs.get(WORKER_ATTR, ""))
        if owner != me:
            out.append(f"#{t.number} ({owner.short if owner else 'no owner yet'})")
    return out
