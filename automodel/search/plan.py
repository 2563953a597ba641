"""What a search will do, checked before anything is written: the space, the data, the study.

    prepare(cfg)       -> Plan (raises ConfigError)
    open_study(plan)   -> the plan's Optuna study, created or joined
    write_run_files    -> config.yaml and search_space.yaml in the study folder

Every setting a user can get wrong fails here, before the first trial, naming the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from automodel import config, data, models, outputs, spaces
from automodel.config import ConfigError, RunConfig
from automodel.data import Dataset, DataSpec
from automodel.study import load_or_create


@dataclass
class Plan:
    cfg: RunConfig
    space: spaces.Space
    space_path: Path
    data: Dataset

    @property
    def run(self) -> RunConfig:
        """The same settings as `cfg`, under the name the tracking module reads."""
        return self.cfg


def prepare(cfg: RunConfig) -> Plan:
    """Load and check the space and the data; nothing is written. Raises ConfigError."""
    runs_dir = Path(cfg.runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"runs_dir {cfg.runs_dir!r} is a file, not a folder")
    space_path = config.resolve_space_path(cfg.search_space)
    try:
        space = spaces.load(space_path)
        dataset = data.load(cfg.data, cfg.seed)
        # A family that cannot fit the data fails here (with the space's fixed values).
        fixed = {e.name: e.value for e in space.entries if e.type == "fixed" and not e.when}
        models.create(space.family, fixed, dataset.spec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_batch_size(space, space_path, len(dataset.x_train), cfg.data.name)
    _check_task(space, space_path, dataset.spec)
    return Plan(cfg, space, space_path, dataset)


# Params that only one task reads: a space that searches them for the other task is refused.
_TASK_PARAMS = {"loss": "regression", "label_smoothing": "classification"}


def _check_task(space: spaces.Space, path: Path, spec: DataSpec) -> None:
    for e in space.entries:
        task = _TASK_PARAMS.get(e.name)
        if task is not None and task != spec.task:
            raise ConfigError(
                f"{path}: params.{e.name} applies to {task} only; data {spec.name} is "
                f"{spec.task} (remove {e.name} from the space)"
            )
        if e.name == "augment" and len(spec.input_shape) != 3 and e.value != "none":
            raise ConfigError(
                f"{path}: params.augment applies to images only; data {spec.name} has input "
                f"shape {tuple(spec.input_shape)} (remove augment from the space)"
            )


def _check_batch_size(space: spaces.Space, path: Path, n_train: int, data_name: str) -> None:
    for e in space.entries:
        if e.name != "batch_size":
            continue
        largest = e.value if e.type == "fixed" else (max(e.choices) if e.choices else e.high)
        if largest > n_train:
            raise ConfigError(
                f"{path}: params.batch_size allows {largest}, more than the {n_train} training "
                f"rows of data {data_name}; lower it to at most {n_train}"
            )


def open_study(plan: Plan, seed_offset: int = 0, must_exist: bool = False) -> optuna.Study:
    """The plan's study (see study.load_or_create): created, or joined when `must_exist`."""
    return load_or_create(
        plan.cfg,
        plan.space.source,
        plan.data.spec.direction,
        seed_offset,
        must_exist,
        enqueue=plan.space.enqueue,  # queued by the process that creates the study, only
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
        outputs.write_atomic(study_dir / "search_space.yaml", plan.space_path.read_bytes())
