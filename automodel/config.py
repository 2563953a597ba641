"""Run settings: compose the Hydra config, convert it to typed dataclasses, validate it.

Hydra composes `conf/` plus the command-line overrides; this module is the only place that
turns the resulting DictConfig into plain, checked dataclasses. Every problem raises
`ConfigError` with one line that names the key, the bad value and what would be valid.
"""

from __future__ import annotations

import codecs
import dataclasses
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from automodel import space_group


def _shipped(name: str) -> Path:
    """conf/ or search_spaces/: inside the installed package (a wheel maps them there, see
    setup.py), else at the top level of the source checkout this package is run from."""
    package = Path(str(importlib.resources.files(__package__)))
    inside = package / name
    return inside if inside.is_dir() else package.parent / name


CONF_DIR = _shipped("conf")
SPACES_DIR = _shipped("search_spaces")

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ConfigError(ValueError):
    """Bad user input: the command line prints the message alone and exits with code 2."""


SOURCES = ("digits", "mnist1d", "synthetic", "csv", "image_folder", "torchvision")
DATA_TASKS = ("classification", "regression")
TARGET_TRANSFORMS = ("auto", "none", "log1p")  # auto: data.choose_target_transform decides
TORCHVISION_SETS = ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "FakeData")


@dataclass
class DataConfig:
    # The dataset's name (and the study name's first part); for torchvision, which set.
    # null for csv and image_folder: the file's or folder's name.
    name: str | None = "digits"
    # Where the rows come from; null: the same as name (digits, mnist1d, synthetic).
    source: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # 0: one validation split (val_fraction); k >= 2: k-fold cross-validation over every
    # non-test row; auto: k-fold on small data (data.folds.AUTO_MAX_ROWS), else 0. Checked
    # against the data once it is loaded (data.folds.resolve): the largest k that fits.
    cv_folds: Any = "auto"
    # classification or regression; null: inferred from the target (csv) or the dataset's own.
    task: str | None = None
    # synthetic only
    n_samples: int = 600
    n_features: int = 16
    n_classes: int = 3
    # csv: the file, its target column, columns to leave out. image_folder: the folder.
    path: str | None = None
    target: str | None = None
    drop: list[str] = field(default_factory=list)
    # csv: how the file is read. delimiter null: detected among , ; tab |. decimal null: a
    # comma when the file is not comma-delimited and writes its numbers only with commas.
    delimiter: str | None = None
    encoding: str = "utf-8"
    decimal: str | None = None
    # regression: learn log1p(y) instead of y; auto: for a positive, right-skewed target.
    target_transform: str = "auto"
    # image_folder and torchvision: resize to image_size x image_size (null: keep the size).
    image_size: int | None = None
    # Larger image data is read batch by batch by a DataLoader instead of held as tensors.
    in_memory_mb: float = 1024.0
    loader_workers: int = 2
    # torchvision: where the dataset lives, and whether it may be downloaded there.
    root: str = "data"
    download: bool = False

    @property
    def source_name(self) -> str:
        return self.source or self.name or ""


@dataclass
class StudyConfig:
    name: str | None = None
    n_trials: int = 100
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None
    keep_top_k: int = 1
    max_failure_fraction: float = 0.5
    failure_window: int = 20
    # After the search, retrain the best params on every non-test row (the best epoch count)
    # and ship that model, instead of the best trial's own.
    refit: bool = True
    # End the search early once more trials are unlikely to help (search/converge.py).
    stop_when_converged: bool = True
    # Converged: no new best by more than converge_tolerance (relative to the best value) in
    # the last converge_patience finished trials; null scales it with the space's size.
    converge_patience: int | None = None
    converge_tolerance: float = 0.001


@dataclass
class EnsembleConfig:
    # At most this many members (greedy selection steps, with replacement) in the ensemble
    # of the best trials; 0: no ensemble.
    size: int = 10
    # How many of the best trials may join (their weights and validation outputs are kept:
    # study.keep_top_k is raised to it while size > 0).
    candidates: int = 10


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    eval_batch_size: int = 2048
    threads: int | None = None
    compile: bool = False


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "automodel"
    registered_model: str | None = None


@dataclass
class UiConfig:
    host: str = "127.0.0.1"
    port: int = 5000


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ui: UiConfig = field(default_factory=UiConfig)
    # The composed space (search_spaces/<choice>.yaml or the user's file, with the command
    # line's search_space.* overrides applied): what the study searches, and its identity.
    search_space: dict[str, Any] = field(default_factory=dict)
    # The search_space choice as given: a name in search_spaces/ or a file's path. Set by
    # compose(); it names the default study (<data>-<stem>) and the space's errors.
    search_space_name: str | None = None
    seed: int = 0
    runs_dir: str = "runs"
    devices: Any = "auto"  # "auto", "cpu" or a list of GPU ids
    workers: Any = "auto"  # CPU worker processes: "auto" (one per core, at most 8) or a count
    trials_per_device: int = 1
    quiet: bool = False
    # The end of a search explains the best model on the test split (importance.json).
    explain: bool = True
    # Gradient boosting at default settings beside every table result (baseline.py).
    baseline: bool = True
    # Extra keys some verbs take (export's trial number); not part of conf/.
    trial: int | None = None

    @property
    def study_dir(self) -> Path:
        return Path(self.runs_dir) / self.study.name


def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/ with command-line overrides, turning Hydra's errors into one line.

    The search spaces join as config group `search_space` (see space_group), so that
    `search_space.params.lr.high=0.1` and the like override them; `search_space_name` is set
    to the choice.
    """
    try:
        hydra_overrides, user_file = space_group.register(overrides, SPACES_DIR)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        cfg = _hydra_compose(hydra_overrides)
    except _hydra_errors() as err:
        unknown = re.match(r"Could not override '([^']+)'", str(err))
        if unknown and "not in struct" in str(err.__cause__ or ""):
            key = unknown.group(1)
            if key.startswith(f"{space_group.GROUP}."):
                raise ConfigError(_unknown_space_key(key, hydra_overrides)) from None
            raise ConfigError(_unknown_key(key)) from None
        raise ConfigError(_one_line(str(err))) from None
    choice = cfg.hydra.runtime.choices.get(space_group.GROUP)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.search_space_name = space_group.chosen(choice, user_file)
    return cfg


def _hydra_compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # The Hydra node only for runtime.choices: which space was chosen (compose drops it).
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _hydra_errors() -> tuple[type[Exception], ...]:
    from hydra.errors import HydraException  # imported when composing, as Hydra itself

    return (HydraException, OmegaConfBaseException)


def _unknown_space_key(key: str, overrides: list[str]) -> str:
    rest = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key]
    try:
        composed = _hydra_compose(rest)  # the space without the bad key, to name its keys
    except _hydra_errors():
        composed = None
    return space_group.unknown_key(key, composed)


def _unknown_key(key: str) -> str:
    """Hydra suggests `+key=` for a typo; name the valid keys at that level instead."""
    node: Any = OmegaConf.structured(RunConfig)
    parent = key.rpartition(".")[0]
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, DictConfig) else None
    if not isinstance(node, DictConfig):
        return f"unknown key {key!r}"
    where = f" in {parent}" if parent else ""
    return f"unknown key {key!r}; valid keys{where}: {', '.join(node.keys())}"


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # Hydra appends full_key/object_type diagnostics that repeat what the first lines say.
    lines = [
        line
        for line in lines
        if not line.startswith(("full_key:", "object_type", "reference_type"))
    ]
    return "; ".join(lines)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Merge the composed config into the typed schema and validate every value."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_omegaconf_message(err)) from None
    assert isinstance(run, RunConfig)  # noqa: S101 (narrows the type; -O dropping it is harmless)
    validate(run)
    return run


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if key:
        return f"bad value for {key}: {first}"
    return first


def validate(run: RunConfig) -> None:
    """Check values that types alone cannot; fill the derived study name."""
    s = run.study
    if s.n_trials < 1:
        raise ConfigError(f"study.n_trials must be >= 1, got {s.n_trials}")
    if s.timeout is not None and s.timeout <= 0:
        raise ConfigError(f"study.timeout must be > 0 seconds or null, got {s.timeout}")
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"unknown study.sampler {s.sampler!r}; known: {', '.join(SAMPLERS)}")
    if s.pruner not in PRUNERS:
        raise ConfigError(f"unknown study.pruner {s.pruner!r}; known: {', '.join(PRUNERS)}")
    if s.keep_top_k < 1:
        raise ConfigError(f"study.keep_top_k must be >= 1, got {s.keep_top_k}")
    if not 0 < s.max_failure_fraction <= 1:
        raise ConfigError(
            f"study.max_failure_fraction must be in (0, 1], got {s.max_failure_fraction}"
        )
    if s.failure_window < 1:
        raise ConfigError(f"study.failure_window must be >= 1, got {s.failure_window}")
    if s.converge_patience is not None and s.converge_patience < 1:
        raise ConfigError(
            f"study.converge_patience must be >= 1 or null, got {s.converge_patience}"
        )
    if not 0 <= s.converge_tolerance < 1:
        raise ConfigError(f"study.converge_tolerance must be in [0, 1), got {s.converge_tolerance}")
    if s.storage is not None and "://" not in s.storage:
        raise ConfigError(
            f"study.storage {mask_url(s.storage)!r} is not a database URL; use null for the "
            "default journal file, or for example postgresql+psycopg2://user:pw@host/db"
        )
    _validate_ensemble(run.ensemble, s)
    _validate_tracking(run.tracking, run.ui)
    t = run.trainer
    if t.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be >= 1, got {t.max_epochs}")
    if t.eval_batch_size < 1:
        raise ConfigError(f"trainer.eval_batch_size must be >= 1, got {t.eval_batch_size}")
    if t.threads is not None and t.threads < 1:
        raise ConfigError(f"trainer.threads must be >= 1 or null, got {t.threads}")
    d = run.data
    for key in ("val_fraction", "test_fraction"):
        value = getattr(d, key)
        if not 0 < value < 0.5:
            raise ConfigError(f"data.{key} must be in (0, 0.5), got {value}")
    _validate_data(d)
    if run.workers != "auto" and (
        isinstance(run.workers, bool) or not isinstance(run.workers, int) or run.workers < 1
    ):
        raise ConfigError(f"workers must be auto or an int >= 1, got {run.workers!r}")
    if run.trials_per_device < 1:
        raise ConfigError(f"trials_per_device must be >= 1, got {run.trials_per_device}")
    run.devices = _devices(run.devices)
    if not run.runs_dir:
        raise ConfigError("runs_dir must not be empty")
    if s.name is None:
        space = run.search_space_name or str(run.search_space.get("family") or "space")
        s.name = f"{d.name}-{space_stem(space)}"
    if not _STUDY_NAME.match(s.name):
        raise ConfigError(
            f"study.name {s.name!r} is not a valid name; use letters, digits, '.', '_' and '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )


def _validate_ensemble(e: EnsembleConfig, s: StudyConfig) -> None:
    if e.candidates < 1:
        raise ConfigError(f"ensemble.candidates must be >= 1, got {e.candidates}")
    if not 0 <= e.size <= e.candidates:
        raise ConfigError(
            f"ensemble.size must be in 0..{e.candidates} (0: no ensemble; at most "
            f"ensemble.candidates, the trials kept for it), got {e.size}"
        )
    if e.size:  # the candidates' weights must be on disk when the search ends
        s.keep_top_k = max(s.keep_top_k, e.candidates)


def _validate_tracking(t: TrackingConfig, ui: UiConfig) -> None:
    if t.uri is not None and not re.match(
        r"^(sqlite|postgresql|mysql|mssql|https?)[a-z0-9+]*://", t.uri
    ):
        raise ConfigError(
            f"tracking.uri {mask_url(t.uri)!r} is not a tracking store MLflow 3 accepts; use null "
            "(sqlite under runs_dir), sqlite:///path/mlflow.db, a database URL or http://host:5000"
        )
    if not _STUDY_NAME.match(t.experiment):
        raise ConfigError(
            f"tracking.experiment {t.experiment!r} is not a valid name; use letters, digits, "
            "'.', '_' and '-'"
        )
    if t.registered_model is not None and not _STUDY_NAME.match(t.registered_model):
        raise ConfigError(
            f"tracking.registered_model {t.registered_model!r} is not a valid name; use letters, "
            "digits, '.', '_' and '-', or null for the study name"
        )
    if not 1 <= ui.port <= 65535:
        raise ConfigError(f"ui.port must be in 1..65535, got {ui.port}")
    if not ui.host:
        raise ConfigError("ui.host must not be empty; for example 127.0.0.1")


def _validate_data(d: DataConfig) -> None:
    """The keys each source needs; the files themselves are checked when the data loads."""
    source = d.source_name
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; known: {', '.join(SOURCES)}")
    if d.task is not None and d.task not in DATA_TASKS:
        raise ConfigError(f"data.task must be null, {' or '.join(DATA_TASKS)}, got {d.task!r}")
    if d.target_transform not in TARGET_TRANSFORMS:
        raise ConfigError(
            f"data.target_transform must be {', '.join(TARGET_TRANSFORMS)}, "
            f"got {d.target_transform!r}"
        )
    needs = {"csv": ("path", "target"), "image_folder": ("path",)}.get(source, ())
    for key in needs:
        if not getattr(d, key):
            raise ConfigError(f"data={source} needs data.{key}=..., got {getattr(d, key)!r}")
    if source == "torchvision" and d.name not in TORCHVISION_SETS:
        raise ConfigError(
            f"data.name {d.name!r} is not a torchvision dataset automodel reads; known: "
            f"{', '.join(TORCHVISION_SETS)}"
        )
    _validate_reading(d)
    if d.image_size is not None and not 4 <= d.image_size <= 4096:
        raise ConfigError(f"data.image_size must be null or in [4, 4096], got {d.image_size}")
    if d.in_memory_mb < 0:
        raise ConfigError(f"data.in_memory_mb must be >= 0, got {d.in_memory_mb}")
    if d.loader_workers < 0:
        raise ConfigError(f"data.loader_workers must be >= 0, got {d.loader_workers}")
    if d.name is None:  # csv, image_folder: named after the file or folder
        d.name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(d.path).stem).strip("-._") or source


def _validate_reading(d: DataConfig) -> None:
    if d.delimiter in ("tab", "\\t"):
        d.delimiter = "\t"
    if d.delimiter is not None and (len(d.delimiter) != 1 or d.delimiter in '"\r\n'):
        raise ConfigError(
            f"data.delimiter must be one character such as ',' ';' '|' or tab, got {d.delimiter!r}"
        )
    try:
        codecs.lookup(d.encoding)
    except (LookupError, TypeError):
        raise ConfigError(
            f"data.encoding {d.encoding!r} is not an encoding Python knows; for example utf-8, "
            "latin-1, cp1252, utf-16"
        ) from None
    if d.decimal not in (None, ".", ","):
        raise ConfigError(f"data.decimal must be null, '.' or ',', got {d.decimal!r}")


def _devices(value: Any) -> str | list[int]:
    if value in ("auto", "cpu"):
        return value
    ids = list(value) if isinstance(value, (list, tuple)) else [value]
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        raise ConfigError(
            f"devices must be auto, cpu or a list of GPU ids such as [0,2], got {value!r}"
        )
    return ids


def space_stem(search_space: str) -> str:
    """The short name of a search space: `mlp` for `mlp` and for `path/to/mlp.yaml`."""
    return Path(search_space).stem if search_space.endswith((".yaml", ".yml")) else search_space


def is_space_path(search_space: str) -> bool:
    """Whether a search_space choice names a file (anything ending in .yaml, or with a /)."""
    return space_group.is_path(search_space)


def resolve_space_path(search_space: str) -> Path:
    """A space given by name lives in search_spaces/; anything ending in .yaml is a path."""
    try:
        return space_group.resolve(search_space, SPACES_DIR)
    except ValueError as err:
        raise ConfigError(str(err)) from None


# Anything URL-shaped in a text (a command line, an error message): scheme:// up to a space.
_URL = re.compile(r"[A-Za-z][\w+.-]*://\S+")
# Query parameter names that hold a secret (the names, not a secret: S105 is wrong here).
_SECRET_WORDS = "pass|pwd|secret|token|key"  # noqa: S105
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
# For what SQLAlchemy cannot parse, and for what it parses wrongly: a password with an
# unescaped @ (it splits at the first @), so match up to the last @ of the URL.
_USERINFO = re.compile(r"(://[^\s:/@]*:)\S*@")
_SECRET_PARAM = re.compile(
    rf"([?&;][^\s=&;#]*(?:{_SECRET_WORDS})[^\s=&;#]*=)[^\s&;#]*", re.IGNORECASE
)


def mask_url(text: str | None) -> str | None:
    """Hide the passwords of the URLs in `text` (one URL, or a command line that holds some):
    postgresql://user:***@host/db, and query parameters such as ?password=***."""
    if text is None:
        return None
    return _URL.sub(lambda m: _mask_one(m.group()), text)


def _mask_one(token: str) -> str:
    # Quotes and punctuation after a URL (a shlex-quoted argument, a sentence) stay as written.
    url = token.rstrip("'\")]},.;:")
    tail = token[len(url) :]
    from sqlalchemy.engine import make_url  # 0.2 s: only when there is a URL to mask
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not its form (mlflow-artifacts://), a bad port, ...
        pass
    else:
        query = {k: "***" if _SECRET_NAME.search(k) else v for k, v in parsed.query.items()}
        # Rendering re-escapes the whole URL (C: becomes C%3A): only for one with secrets.
        if parsed.password is not None or query != dict(parsed.query):
            url = parsed.set(query=query).render_as_string(hide_password=True)
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url)) + tail


def as_dict(run: RunConfig) -> dict:
    """Plain dict of the run settings, with secrets masked: what gets written to disk."""
    out = dataclasses.asdict(run)
    out["study"]["storage"] = mask_url(run.study.storage)
    out["tracking"]["uri"] = mask_url(run.tracking.uri)
    return out
