"""What a search will do, checked before anything is written: the space, the data, the study.

    prepare(cfg)       -> Plan (raises ConfigError): the space fitted to the data, with notices
    open_study(plan)   -> the plan's Optuna study, created or joined
    write_run_files    -> config.yaml and search_space.yaml in the study folder

Every setting a user can get wrong fails here, before the first trial, naming the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from automodel import config, data, models, outputs, spaces, train
from automodel.config import ConfigError, RunConfig
from automodel.data import Dataset, DataSpec
from automodel.data import folds as data_folds
from automodel.data.folds import Folds
from automodel.study import load_or_create


@dataclass
class Plan:
    cfg: RunConfig
    space: spaces.Space  # the space as it applies to this data (see _fit)
    data: Dataset
    # The space as composed (cfg.search_space): the study's identity, search_space.yaml.
    space_source: dict = field(default_factory=dict)
    # What fitting the space to the data changed, a line each (printed as notices).
    notices: list[str] = field(default_factory=list)
    # data.cv_folds >= 2 (or auto, on small data): a Dataset per fold; None: one validation
    # split (`data`). `data` stays the study's description of the data either way.
    folds: Folds | None = None

    @property
    def k(self) -> int:
        """The number of folds a trial trains; 0 with one validation split."""
        return 0 if self.folds is None else self.folds.k

    @property
    def run(self) -> RunConfig:
        """The same settings as `cfg`, under the name the tracking module reads."""
        return self.cfg


def prepare(cfg: RunConfig) -> Plan:
    """Check the space and the data, and fit the space to the data; nothing is written.
    Raises ConfigError."""
    runs_dir = Path(cfg.runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"runs_dir {cfg.runs_dir!r} is a file, not a folder")
    try:
        spaces.parse(cfg.search_space)
    except ValueError as err:
        raise ConfigError(_space_error(cfg, err)) from None
    try:
        dataset = data.load(cfg.data, cfg.seed)
        k = data_folds.resolve(cfg.data.cv_folds, dataset)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    fitted, notices = _fit(cfg, dataset, _fewest_train_rows(dataset, k))
    try:
        space = spaces.parse(fitted)
        # A family that cannot fit the data fails here (with the space's fixed values).
        fixed = {e.name: e.value for e in space.entries if e.type == "fixed" and not e.when}
        models.create(space.family, fixed, dataset.spec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    folds = data_folds.load(cfg.data, cfg.seed, k) if k else None
    return Plan(cfg, space, dataset, cfg.search_space, notices, folds)


def _fewest_train_rows(dataset: Dataset, k: int) -> int:
    """The training rows of the smallest training split a trial sees (of a fold, with k)."""
    if not k:
        return len(dataset.x_train)
    n = len(dataset.y_train) + len(dataset.y_val)
    return n - -(-n // k)  # the largest fold holds ceil(n / k) rows out


def _space_error(cfg: RunConfig, err: ValueError) -> str:
    """A space's error, named as the user can find it: the file's path when the space came
    from a file, else the Hydra key (search_space.params.lr: ...)."""
    name, message = cfg.search_space_name or "", str(err)
    if config.is_space_path(name):
        return f"{name}: {message}"
    if message.startswith("enqueue["):  # most often a range an override narrowed
        return f"search_space.{message} (or drop the enqueued trials: ~search_space.enqueue)"
    if message.startswith("params."):
        return f"search_space.{message}"
    return f"search_space: {message}"


# Params that only one task reads, and the shape of data that augment reads.
_TASK_PARAMS = {"loss": "regression", "label_smoothing": "classification"}


def _fit(cfg: RunConfig, dataset: Dataset, n_train: int) -> tuple[dict, list[str]]:
    """The composed space as it can apply to this data, and a notice per change: params the
    data cannot use are dropped, batch sizes fitted to the training rows (spaces.fit_to_data).
    Refused only when no param is left."""
    raw, spec = cfg.search_space, dataset.spec
    reasons = {name: why for name in raw["params"] if (why := _inapplicable(name, raw, spec))}
    notices = [f"{name} {why}: dropped from the space" for name, why in reasons.items()]
    if reasons:
        raw = spaces.without(raw, set(reasons))
        if not raw["params"]:
            raise ConfigError(
                f"search_space: no param applies to data {spec.name} "
                f"({'; '.join(f'{n} {w}' for n, w in reasons.items())})"
            )
    default = train.RECIPE_PARAMS["batch_size"].default
    if "batch_size" not in raw["params"] and default > n_train:
        # The trainer's default batch would not fit either: fit it as a fixed value.
        raw = {**raw, "params": {**raw["params"], "batch_size": default}}
    raw, fitted = spaces.fit_to_data(raw, n_train)
    return raw, notices + fitted


def _inapplicable(name: str, raw: dict, spec: DataSpec) -> str | None:
    """Why param `name` cannot apply to data `spec`, or None. A value fixed at the trainer's
    default changes nothing, so it stays without a notice."""
    entry, rule = raw["params"][name], train.RECIPE_PARAMS.get(name)
    if rule is not None and not isinstance(entry, dict) and entry == rule.default:
        return None
    task = _TASK_PARAMS.get(name)
    if task is not None and task != spec.task:
        return f"applies to {task} only; data {spec.name} is {spec.task}"
    if name == "augment" and len(spec.input_shape) != 3:
        return f"applies to images only; data {spec.name} has input shape {tuple(spec.input_shape)}"
    return None


def open_study(plan: Plan, seed_offset: int = 0, must_exist: bool = False) -> optuna.Study:
    """The plan's study (see study.load_or_create): created, or joined when `must_exist`."""
    return load_or_create(
        plan.cfg,
        plan.space_source,
        plan.data.spec.direction,
        seed_offset,
        must_exist,
        enqueue=plan.space.enqueue,  # queued by the process that creates the study, only
        cv_folds=plan.k,
    )


def write_run_files(plan: Plan) -> None:
    """config.yaml (this invocation's settings) and, once, the space the study was created with.

    Both are written whole (temporary name, fsync, rename): a crash never leaves half a file.
    """
    study_dir = plan.cfg.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_atomic(
        study_dir / "config.yaml", yaml.safe_dump(config.as_dict(plan.cfg), sort_keys=False)
    )
    if not (study_dir / "search_space.yaml").exists():
        outputs.write_atomic(
            study_dir / "search_space.yaml", yaml.safe_dump(plan.space_source, sort_keys=False)
        )
