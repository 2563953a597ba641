"""Where a study lives: a journal file (the default) or a database.

    open_storage(url, study_dir)   the journal `<study_dir>/study.journal`, or an RDB URL
    open_study_storage(cfg)        the same, with a storage that cannot open as one line

The journal is Optuna's JournalStorage over `JournalFile`, a backend that keeps the file
whole through kills and full disks (see its docstring); a database gets Optuna's heartbeat,
so that the trials of a worker killed on another host are failed by the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._storage import JournalOperation  # the record format we append
from optuna.trial import TrialState

from automodel import config
from automodel.config import ConfigError, RunConfig
from automodel.errors import StorageError, reason

HEARTBEAT_SECONDS = 10
# Tries at opening a database whose tables other hosts are creating at the same moment.
SCHEMA_ATTEMPTS = 6


def storage_label(cfg: RunConfig) -> str:
    """Where the study lives, for messages and summary.json: never with a URL's password."""
    return config.mask_url(cfg.study.storage) or str(cfg.study_dir / "study.journal")


def open_study_storage(cfg: RunConfig) -> optuna.storages.BaseStorage:
    """The study storage of `cfg`; a storage that cannot be opened is a one-line ConfigError
    (a database URL) or StorageError (an unreadable journal)."""
    if cfg.study.storage is None:
        return open_storage(None, cfg.study_dir)
    try:
        return open_storage(cfg.study.storage, cfg.study_dir)
    except Exception as err:  # driver missing, server down, bad credentials: all user-fixable
        raise ConfigError(
            f"cannot open study.storage {config.mask_url(cfg.study.storage)!r}: "
            f"{config.mask_url(reason(err))}"
        ) from None


def open_storage(storage_url: str | None, study_dir: Path) -> optuna.storages.BaseStorage:
    """Raises StorageError for a journal that holds something other than journal records."""
    if storage_url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        path = study_dir / "study.journal"
        try:
            return optuna.storages.JournalStorage(journal_file(str(path)))
        except (ValueError, KeyError, TypeError) as err:  # replaying a line that is not a record
            raise StorageError(_corrupt(path, err)) from None
    return _database(storage_url)


# One storage (one SQLAlchemy engine and its pool) per database per process. Each storage
# object keeps idle connections; a search opened four, so 32 hosts held 128 connections and
# PostgreSQL's default max_connections (100) refused the last of them (benchmarks/load.py).
_DATABASES: dict[tuple[str, int], optuna.storages.RDBStorage] = {}
_DATABASES_LOCK = threading.Lock()


def _database(storage_url: str) -> optuna.storages.RDBStorage:
    key = (storage_url, os.getpid())  # a forked child opens its own
    with _DATABASES_LOCK:
        storage = _DATABASES.get(key)
        if storage is not None:
            with storage.engine.connect():  # a server gone since fails here, as opening would
                pass
            return storage
        storage = _DATABASES[key] = _open_database(storage_url)
        return storage


def _open_database(storage_url: str) -> optuna.storages.RDBStorage:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    def open_it() -> optuna.storages.RDBStorage:
        return _Database(
            storage_url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=2 * HEARTBEAT_SECONDS,
            engine_kwargs={"pool_pre_ping": True},  # a dropped connection is replaced
        )

    for attempt in range(1, SCHEMA_ATTEMPTS):
        try:
            return open_it()
        except (IntegrityError, ProgrammingError) as err:
            # Hosts starting on an empty database race to create Optuna's tables and types;
            # the losers see a duplicate. Once the winner has committed they open it as is.
            if "duplicate" not in str(err) and "already exists" not in str(err):
                raise
            time.sleep(random.uniform(0.1, 0.5) * attempt)  # noqa: S311 (a jitter)
    return open_it()


def _corrupt(path: Path, err: Exception) -> str:
    """One line for an unreadable journal: the first line that is not a record, and the ways out."""
    line = _first_bad_line(path)
    if not line:  # every line is JSON: a record Optuna cannot replay
        return f"{path} is not a readable study journal ({reason(err)}); move it away to start over"
    keep = (
        f", or keep the records before it (head -n {line - 1} {path} > kept.journal) and move "
        "kept.journal in its place"
        if line > 1
        else ""
    )
    return (
        f"{path} is not a readable study journal: line {line} is not a journal record; move it "
        f"away to start the study over{keep}"
    )


def _first_bad_line(path: Path) -> int:
    with open(path, "rb") as f:
        for number, text in enumerate(f, start=1):
            try:
                json.loads(text)["op_code"]
            except (ValueError, KeyError, TypeError):
                return number
    return 0


class _Database(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat outlives a database restart.

    The heartbeat runs in a thread of its own; a beat that fails while the server restarts
    would end that thread with a traceback on stderr. A missed beat is harmless (the next
    one retries), and a database that stays away stops the search from its main thread.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        from sqlalchemy.exc import DBAPIError

        with contextlib.suppress(DBAPIError):
            super().record_heartbeat(trial_id)


def has_heartbeat(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled  # what optimize() itself uses

    return is_heartbeat_enabled(study._storage)


# Records after which the journal is fsynced: a trial's end (and a study's creation), so a
# power failure loses at most the trials in flight, which a resumed search reruns.
_FINISHED_STATES = {int(s) for s in TrialState if s.is_finished()}
_DURABLE_OPS = {int(JournalOperation.CREATE_STUDY), int(JournalOperation.SET_STUDY_USER_ATTR)}


def _durable(log: dict) -> bool:
    op = log.get("op_code")
    return op in _DURABLE_OPS or (
        op == JournalOperation.SET_TRIAL_STATE_VALUES and log.get("state") in _FINISHED_STATES
    )


class JournalFile(JournalFileBackend):
    """Optuna's journal file backend, made to survive torn writes, and fsynced per trial.

    - Every append first drops a torn last record (a writer killed or stopped by a full disk
      mid-write), under the lock every writer takes: glued to the next record it would make
      the whole journal unreadable. A torn record's operation never completed.
    - An append that fails (a full disk) is cut back to the length before it.
    - The file is fsynced when a trial finishes, not after every record: a trial writes one
      record per param, report and attribute, and the stock backend's fsync of each, under
      the lock every worker needs, costs more than a small trial (benchmarks/overhead.py).
      Records reach the operating system at once, so a killed process loses nothing; a power
      failure can lose the records since the last finished trial (the trials then in flight,
      which a resumed search reruns).
    """

    def __init__(self, path: str) -> None:
        self._open_lock = JournalFileOpenLock(path)
        super().__init__(path, self._open_lock)

    def append_logs(self, logs: list[dict]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        self._open_lock.acquire()
        try:
            fd = os.open(self._file_path, os.O_RDWR)
            try:
                _append(fd, data, fsync=any(_durable(log) for log in logs))
            finally:
                os.close(fd)
        finally:
            self._open_lock.release()


def _append(fd: int, data: bytes, fsync: bool) -> None:
    """Write `data` at the end of the journal open as `fd` (the caller holds the lock)."""
    end = _drop_torn_tail(fd)
    written = 0
    try:
        while written < len(data):
            written += os.pwrite(fd, data[written:], end + written)
    except BaseException:
        # Cut back what part of the record was written: nobody could have read it as a
        # record (it has no newline yet), and the next append must not glue onto it.
        with contextlib.suppress(OSError):  # then the next append drops it
            os.ftruncate(fd, end)
        raise
    if fsync:
        os.fsync(fd)


def _drop_torn_tail(fd: int) -> int:
    """Truncate the file after its last newline; returns the length it then has."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:  # backwards, a block at a time: journals grow to megabytes
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


def journal_file(path: str) -> JournalFileBackend:
    """The journal backend of a study (benchmarks swap it for Optuna's stock one)."""
    return JournalFile(path)
