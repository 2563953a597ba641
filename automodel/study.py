"""The Optuna side of a search: storage, opening a study (and refusing a foreign one),
sampler and pruner tables, stale-trial cleanup, ranking.

Storage: a JournalStorage file at `<study_dir>/study.journal` by default (safe for many
processes on one host, unlike SQLite), or any Optuna RDB URL (PostgreSQL for many hosts; with
a heartbeat so a killed worker's trial is failed by the others).

A study's identity is the space and the data it was created with (user attributes): a rerun
or a worker with other settings would mix incomparable trials, so it is refused.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import socket
import warnings
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from automodel import config
from automodel.config import ConfigError, RunConfig
from automodel.errors import reason

HEARTBEAT_SECONDS = 10
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "worker"  # "host:pid" of the process that runs a trial
FAIL_ATTR = "fail_reason"
METRIC_ATTR = "metric"  # the name of the metric a trial's value is (accuracy, rmse)
SURPLUS_ATTR = "surplus"  # set on a trial dropped because other workers filled the budget


class Surplus(RuntimeError):
    """Concurrent workers started the whole budget first; this trial is recorded, not run."""


def is_surplus(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


def quiet_optuna() -> None:
    # Our progress lines replace Optuna's per-trial INFO logs; failures are reported by us.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)


def load_or_create(
    cfg: RunConfig,
    space: str,
    direction: str,
    seed_offset: int = 0,
    must_exist: bool = False,
    cv_folds: int = 0,
) -> optuna.Study:
    """Create the study of `cfg` or attach to it; refuse one created with another space (its
    YAML source), data or number of cross-validation folds (`cv_folds`, resolved: 0 for one
    validation split). Raises ConfigError.

    Each worker passes its own `seed_offset`, so concurrent samplers do not propose alike.
    `must_exist`: a worker joining; a missing study is an error, and nothing is created.
    """
    try:
        sampler = make_sampler(cfg.study.sampler, cfg.seed + seed_offset)
        pruner = make_pruner(cfg.study.pruner, cfg.trainer.max_epochs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    missing = ConfigError(
        f"no study named {cfg.study.name!r} in {storage_label(cfg)}; start it with "
        "python -m automodel search (same settings), then add workers"
    )
    if must_exist and cfg.study.storage is None and not (cfg.study_dir / "study.journal").exists():
        raise missing  # before opening the journal, which would create it
    storage = open_study_storage(cfg)
    identity = _identity(cfg, space, cv_folds)
    try:
        existing = optuna.load_study(study_name=cfg.study.name, storage=storage).user_attrs
    except KeyError:  # a new study
        if must_exist:
            raise missing from None
        existing = {}
    if existing and "cv_folds" not in existing:  # created before folds: one validation split
        existing = {**existing, "cv_folds": 0}
    for key, value in identity.items():
        if existing.get(key) not in (None, value):
            raise ConfigError(
                f"study {cfg.study.name!r} was created with a different {key} "
                f"({_difference(existing[key], value)}); rerun with the original settings "
                "or choose a new study.name"
            )
    study = optuna.create_study(
        study_name=cfg.study.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )
    for key, value in identity.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def _identity(cfg: RunConfig, space: str, cv_folds: int) -> dict:
    """What a study's trials are comparable under: the space, the data, the folds.

    The folds count as resolved (`auto` is 5 or 0 by the data's size), so changing the
    setting but not the procedure (auto -> 5) keeps the study.
    """
    data = {k: v for k, v in config.as_dict(cfg)["data"].items() if k != "cv_folds"}
    return {"space": space, "data": data, "cv_folds": cv_folds}


def _difference(old, new, prefix: str = "") -> str:
    """The first setting that differs, as `path: old then, new now`."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            if old.get(k) != new.get(k):
                return _difference(old.get(k), new.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.') or 'value'}: {old!r} then, {new!r} now"


def storage_label(cfg: RunConfig) -> str:
    """Where the study lives, for messages and summary.json: never with a URL's password."""
    return config.mask_url(cfg.study.storage) or str(cfg.study_dir / "study.journal")


def open_study_storage(cfg: RunConfig) -> optuna.storages.BaseStorage:
    """The study storage of `cfg`; a storage that cannot be opened is a one-line ConfigError."""
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
    if storage_url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        path = str(study_dir / "study.journal")
        backend = _journal_file(path)
        repair_torn_tail(Path(path), backend._open_lock)
        return optuna.storages.JournalStorage(backend)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna.storages.RDBStorage(
        storage_url,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=2 * HEARTBEAT_SECONDS,
        engine_kwargs={"pool_pre_ping": True},
    )


def repair_torn_tail(path: Path, lock) -> bool:
    """Drop a half-written last record of the journal (a write cut by a full disk or a kill).

    Optuna appends whole records ending in a newline under `lock`; holding it, a file that does
    not end in a newline has a torn tail, whose operation never completed. Left in place, the
    next append would glue a valid record to it and make the whole journal unreadable.
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    lock.acquire()
    try:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return False
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
            return True
    finally:
        lock.release()


def _journal_file(path: str):
    """Optuna's journal file backend, without an fsync after every record.

    A trial writes a record for each suggested param, each report and each attribute, and the
    stock backend fsyncs every one while holding the lock that every worker needs
    (benchmarks/overhead.py measures both backends side by side). Without it the records still reach the operating system
    at once, under the same lock and in the same format (JSON lines), so a killed process
    loses nothing; only a power failure can lose the last seconds of trials, which a resumed
    search reruns.
    """
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    class JournalFile(JournalFileBackend):
        def __init__(self) -> None:
            self._open_lock = JournalFileOpenLock(path)
            super().__init__(path, self._open_lock)

        def append_logs(self, logs: list[dict]) -> None:
            text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
            self._open_lock.acquire()
            try:
                with open(path, "ab") as f:
                    f.write(text.encode("utf-8"))
            finally:
                self._open_lock.release()

    return JournalFile()


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    # TPE's group option is marked experimental; we choose it on purpose.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    needs = {"cmaes": "cmaes", "gp": "scipy", "qmc": "scipy"}.get(name)
    if needs and importlib.util.find_spec(needs) is None:
        raise ValueError(f"study.sampler={name} needs the {needs} package: pip install {needs}")
    samplers = {
        # group=True lets multivariate TPE handle conditional params (momentum only for sgd);
        # constant_liar keeps concurrent workers from sampling the same point.
        "tpe": lambda: optuna.samplers.TPESampler(
            multivariate=True, group=True, seed=seed, constant_liar=True, n_startup_trials=8
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    }
    if name not in samplers:
        raise ValueError(f"unknown study.sampler {name!r}; known: {', '.join(samplers)}")
    return samplers[name]()


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        "percentile": lambda: optuna.pruners.PercentilePruner(
            25.0, n_startup_trials=5, n_warmup_steps=2
        ),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs
        ),
        "none": optuna.pruners.NopPruner,
    }
    if name not in pruners:
        raise ValueError(f"unknown study.pruner {name!r}; known: {', '.join(pruners)}")
    return pruners[name]()


def has_heartbeat(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled  # what optimize() itself uses

    return is_heartbeat_enabled(study._storage)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_dead_local_trials(study: optuna.Study, include_unowned: bool) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this host no longer exists.

    A worker killed with SIGKILL leaves its trial RUNNING; the journal has no heartbeat, so
    the next process on the same host cleans up. Trials of live workers, and of other hosts
    (covered by the RDB heartbeat), are left alone. A trial with no owner yet (killed between
    creation and its first write) is failed only when `include_unowned` (a local journal,
    where no other host can be about to claim it). Returns the trial numbers it failed.
    """
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(WORKER_ATTR, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner and (owner_host != host or _alive(int(pid))):
            continue
        if not owner and not include_unowned:
            continue
        study._storage.set_trial_user_attr(
            t._trial_id, FAIL_ATTR, "worker process died while the trial ran (killed?)"
        )
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker stays a zombie until its parent reaps it: dead all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state; surplus trials (never run) are counted apart from real failures."""
    trials = study.get_trials(deepcopy=False)
    c = Counter("surplus" if is_surplus(t) else t.state for t in trials)
    return {
        "complete": c[TrialState.COMPLETE],
        "pruned": c[TrialState.PRUNED],
        "failed": c[TrialState.FAIL],
        "running": c[TrialState.RUNNING],
        "surplus": c["surplus"],
    }


VAL_LOSS_ATTR = "val_loss"  # validation loss at the best epoch: breaks accuracy ties


def rank_key(value: float, val_loss: float | None, number: int, sign: int = 1) -> tuple:
    """Sort key, best first: the better value (`sign` +1: higher is better, -1: lower), then
    the lower validation loss, then the earlier trial.

    Accuracy on a few hundred validation rows ties often (many trials reach 284/288); the loss
    tells apart a model that is right with confidence from one that is right by a hair.
    """
    return (-sign * value, math.inf if val_loss is None else val_loss, number)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    ranking = ranked(study)
    return ranking[0] if ranking else None


def ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials, best first (see `rank_key`)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = sign_of(study)
    return sorted(
        complete, key=lambda t: rank_key(t.value, t.user_attrs.get(VAL_LOSS_ATTR), t.number, sign)
    )


def sign_of(study: optuna.Study) -> int:
    """+1 when higher values are better (accuracy), -1 when lower are (rmse)."""
    return 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1


def most_common_failure(trials: list[optuna.trial.FrozenTrial]) -> tuple[str, int]:
    reasons = Counter(
        t.user_attrs.get(FAIL_ATTR, "unknown error") for t in trials if t.state == TrialState.FAIL
    )
    return reasons.most_common(1)[0] if reasons else ("", 0)
