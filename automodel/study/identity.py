"""Opening a study: created once, joined many times, refused when it was made for other settings.

A study's identity is what makes its trials comparable: the search space (its YAML), the data
settings, the seed (it also splits the data) and the trainer settings that change a trial's
result. They are user attributes of the study; a rerun or a worker with other settings would
mix incomparable trials, so it is refused, naming the setting.

Creation is create-then-verify, safe for processes racing to create one study: only one
`create_new_study` succeeds (the journal replays one CREATE record per name first, a database
has a unique name column); that creator writes the identity and queues the space's enqueued
trials, and writes the space last, as the mark that the rest is there. Every other process
waits for that mark and then checks the identity against its own.
"""

from __future__ import annotations

import time

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection

from automodel import config
from automodel.config import ConfigError, RunConfig
from automodel.study.algorithms import make_pruner, make_sampler
from automodel.study.storage import open_study_storage, storage_label

# Trainer settings that change what a trial trains to; trainer.threads only moves the last
# bits and differs between hosts, so each trial records its own (search.trial).
TRAINER_KEYS = ("max_epochs", "eval_batch_size", "compile")
# Checked in this order (the first difference is named); written in the reverse.
IDENTITY_KEYS = ("space", "data", "cv_folds", "seed", "trainer")
# How long a process that lost the race to create a study waits for the creator's identity.
IDENTITY_WAIT_SECONDS = 10.0


def identity(cfg: RunConfig, space: dict, cv_folds: int = 0) -> dict:
    """The folds count as resolved (`auto` is 5 or 0 by the data's size), so changing the
    setting but not the procedure (auto -> 5) keeps the study."""
    data = {k: v for k, v in config.as_dict(cfg)["data"].items() if k != "cv_folds"}
    return {
        "space": space,
        "data": data,
        "cv_folds": cv_folds,
        "seed": cfg.seed,
        "trainer": {k: getattr(cfg.trainer, k) for k in TRAINER_KEYS},
    }


def load_or_create(
    cfg: RunConfig,
    space: dict,
    direction: str,
    seed_offset: int = 0,
    must_exist: bool = False,
    enqueue: tuple[dict, ...] = (),
    cv_folds: int = 0,
) -> optuna.Study:
    """Create the study of `cfg` (queueing `enqueue`) or attach to it; refuse one created
    with another identity (see the module's docstring). Raises ConfigError.

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
    ours = identity(cfg, space, cv_folds)
    created = False
    if not _exists(storage, cfg.study.name):  # a refused rerun writes nothing
        if must_exist:
            raise missing
        try:
            way = StudyDirection.MAXIMIZE if direction == "maximize" else StudyDirection.MINIMIZE
            storage.create_new_study([way], cfg.study.name)
            created = True
        except DuplicatedStudyError:  # another process created it first: check its identity
            pass
    study = optuna.load_study(
        study_name=cfg.study.name, storage=storage, sampler=sampler, pruner=pruner
    )
    if created:
        for key in reversed(IDENTITY_KEYS):  # the space last: the mark that all is there
            if key == "space":
                for params in enqueue:
                    study.enqueue_trial(params)
            study.set_user_attr(key, ours[key])
    else:
        _check(study, ours, cfg.study.name)
    return study


def _exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _check(study: optuna.Study, ours: dict, name: str) -> None:
    """Refuse `study` unless its identity is `ours`. Keys it lacks (a study from an older
    automodel, or whose creator died before writing them) are adopted, then checked again:
    a concurrent process may have adopted others."""
    deadline = time.monotonic() + IDENTITY_WAIT_SECONDS
    attrs = study.user_attrs
    while "space" not in attrs and time.monotonic() < deadline:
        time.sleep(0.05)  # the creator is writing it: milliseconds
        attrs = study.user_attrs
    _refuse_difference(attrs, ours, name)
    lacking = [k for k in reversed(IDENTITY_KEYS) if k not in attrs]
    if lacking:
        for key in lacking:
            study.set_user_attr(key, ours[key])
        _refuse_difference(study.user_attrs, ours, name)


def _refuse_difference(attrs: dict, ours: dict, name: str) -> None:
    for key in IDENTITY_KEYS:
        if key in attrs and attrs[key] != ours[key]:
            raise ConfigError(
                f"study {name!r} was created with a different {key} "
                f"({_difference(attrs[key], ours[key], key)}); rerun with the original "
                "settings or choose a new study.name"
            )


def _difference(old, new, key: str, prefix: str = "") -> str:
    """The first setting that differs, as `path: old then, new now`."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            if old.get(k) != new.get(k):
                return _difference(old.get(k), new.get(k), key, f"{prefix}{k}.")
    where = f"{prefix.rstrip('.')}: " if prefix else ""
    return f"{where}{old!r} then, {new!r} now"
