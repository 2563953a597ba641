"""Datasets: load by name, split (seeded, stratified), normalise with train statistics only.

`load(cfg, seed)` returns a `Dataset` of float32/int64 tensors shaped `(N, *spec.input_shape)`
plus a `DataSpec`, the plain description that models, training and export work from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from automodel.data import digits, images, lazy, mnist1d, synthetic, table
from automodel.data.source import Raw
from automodel.metrics import TASKS
from automodel.runtime.evaluation import from_units

SOURCES: dict[str, Callable[..., Raw]] = {
    "digits": digits.load,
    "mnist1d": mnist1d.load,
    "synthetic": synthetic.load,
    "csv": table.load,
    "image_folder": images.load_folder,
    "torchvision": images.load_torchvision,
}


@dataclass(frozen=True)
class DataSpec:
    """Everything about the data that a model, a trainer or an exported script needs.

    `mean`/`std` hold one value per channel for sequences and images (input_shape of 2 or 3
    dims) and one per feature for tables (1 dim): `x_model = (x_raw - mean) / std`.
    `task` is classification (`classes` names the model's outputs) or regression (one output,
    no classes; the model learns `(t(y) - target_mean) / target_std`, where t is
    `target_transform`: the identity, or log1p for a positive right-skewed target).
    """

    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: str = "classification"
    metric: str = "accuracy"
    target_mean: float = 0.0
    target_std: float = 1.0
    target_transform: str = "none"  # none or log1p: see choose_target_transform
    # A CSV's feature columns and how each is encoded (see data.table), and its target column.
    columns: tuple[dict, ...] | None = None
    target: str | None = None
    # Images: the Pillow mode their files are read in (L or RGB); None for other data.
    image_mode: str | None = None

    @property
    def direction(self) -> str:
        """maximize (accuracy) or minimize (rmse): how the search ranks trials."""
        return TASKS[self.task][1]

    @property
    def n_outputs(self) -> int:
        return 1 if self.task == "regression" else self.n_classes

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["classes"] = list(self.classes)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        if self.columns is not None:
            out["columns"] = [
                {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()}
                for c in self.columns
            ]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        return cls(
            name=d["name"],
            input_shape=tuple(d["input_shape"]),
            n_classes=int(d["n_classes"]),
            classes=tuple(d["classes"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            task=d.get("task", "classification"),
            metric=d.get("metric", "accuracy"),
            target_mean=d.get("target_mean", 0.0),
            target_std=d.get("target_std", 1.0),
            target_transform=d.get("target_transform", "none"),
            columns=None if d.get("columns") is None else tuple(d["columns"]),
            target=d.get("target"),
            image_mode=d.get("image_mode"),
        )

    def stat_shape(self) -> tuple[int, ...]:
        """Shape that broadcasts mean/std against one sample."""
        if len(self.input_shape) == 1:
            return self.input_shape
        return (self.input_shape[0],) + (1,) * (len(self.input_shape) - 1)


@dataclass
class Dataset:
    spec: DataSpec
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    warnings: tuple[str, ...] = ()  # for the user: columns dropped, rows skipped

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on `device` (small data is held there whole: no loader per step)."""
        moved = {k: _to(getattr(self, k), device) for k in _TENSORS}
        return Dataset(spec=self.spec, **moved, warnings=self.warnings)

    @property
    def lazy(self) -> bool:
        """Read batch by batch by a DataLoader (data.lazy.Rows), not held as tensors."""
        return not isinstance(self.x_train, torch.Tensor)


def _to(x, device):
    return x.to(device) if isinstance(x, torch.Tensor) else x  # Rows are read per batch


_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load(cfg, seed: int) -> Dataset:
    """Load `cfg.name`, split it and normalise it. Raises ValueError on unusable data."""
    workers = getattr(cfg, "loader_workers", 2)
    transform = getattr(cfg, "target_transform", "auto")
    return prepare(
        _raw(cfg), cfg.name, cfg.val_fraction, cfg.test_fraction, seed, workers, transform
    )


def load_raw_splits(cfg, seed: int) -> dict[str, np.ndarray]:
    """The same splits as `load`, as the source gives the rows (not reshaped or normalised).

    Keys x_train, y_train, x_val, y_val, x_test, y_test: what an exported script takes (for
    images read batch by batch, x_* hold the items: file paths or row numbers); x_rest,
    y_rest: every non-test row, in the order cross-validation folds and a refit use them.
    """
    raw = _raw(cfg)
    _check_targets(raw, cfg.name)
    splits = _split(raw, cfg.val_fraction, cfg.test_fraction, seed)
    x_rest, y_rest, _, _ = rest_and_test(raw, cfg.test_fraction, seed)
    return {**dict(zip(_TENSORS, splits, strict=True)), "x_rest": x_rest, "y_rest": y_rest}


def _raw(cfg) -> Raw:
    source = cfg.source_name
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; known: {', '.join(SOURCES)}")
    raw = SOURCES[source](cfg)
    task = getattr(cfg, "task", None)
    if task is not None and task != raw.task:
        raise ValueError(
            f"data {cfg.name!r} is a {raw.task} dataset; data.task={task} does not fit it"
        )
    return raw


def _seeded_split(raw: Raw, x, y, fraction: float, seed: int) -> list:
    from automodel.data.split import train_test_split

    stratify = y if raw.task == "classification" else None
    if stratify is not None:
        # A tiny table: the held-out part needs a row of every class, even if that takes
        # more than `fraction` (larger data never gets here: its fraction already does).
        fraction = max(fraction, len(np.unique(y)) / len(y))
    return train_test_split(x, y, test_size=fraction, stratify=stratify, random_state=seed)


def rest_and_test(raw: Raw, test_fraction: float, seed: int) -> tuple:
    """(x_rest, y_rest, x_test, y_test): the test split (the source's own, or seeded and
    stratified) and every other row, in a fixed order that validation splits, folds and a
    refit all draw from."""
    if raw.x_test is not None:
        return raw.x, raw.y, raw.x_test, raw.y_test
    x_rest, x_test, y_rest, y_test = _seeded_split(raw, raw.x, raw.y, test_fraction, seed)
    return x_rest, y_rest, x_test, y_test


def _split(raw: Raw, val_fraction: float, test_fraction: float, seed: int) -> tuple:
    """(x_train, y_train, x_val, y_val, x_test, y_test): seeded, stratified for classification."""
    x_rest, y_rest, x_test, y_test = rest_and_test(raw, test_fraction, seed)
    x_train, x_val, y_train, y_val = _seeded_split(raw, x_rest, y_rest, val_fraction, seed)
    return x_train, y_train, x_val, y_val, x_test, y_test


def prepare(
    raw: Raw,
    name: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    workers: int = 2,
    target_transform: str = "auto",
) -> Dataset:
    """Split `raw`, fit the encoding and the statistics on the training split, normalise."""
    _check_targets(raw, name)
    splits = _split(raw, val_fraction, test_fraction, seed)
    return build(raw, name, splits, workers, target_transform)


def build(
    raw: Raw, name: str, splits: tuple, workers: int = 2, target_transform: str = "auto"
) -> Dataset:
    """A Dataset of `splits` (x_train, y_train, x_val, y_val, x_test, y_test: rows of `raw`),
    its encoding and statistics fitted on x_train alone. x_val may be empty (a refit)."""
    x_train, y_train, x_val, y_val, x_test, y_test = splits
    targets = _Targets(raw.task, np.asarray(y_train), target_transform)
    shape, columns = tuple(raw.input_shape), None
    if raw.reader is not None:  # read batch by batch: x_* hold items, not rows
        mean, std = lazy.channel_stats(x_train, raw.reader, shape, workers)
        spec = _spec(raw, name, shape, mean, std, targets, None)

        def rows(items):
            return lazy.Rows(items, raw.reader, shape, mean, std, workers)

        x_train, x_val, x_test = rows(x_train), rows(x_val), rows(x_test)
        return Dataset(spec, x_train, targets(y_train), x_val, targets(y_val), x_test,
                       targets(y_test), warnings=tuple(raw.warnings))  # fmt: skip
    if raw.columns is not None:  # CSV cells: encoded with settings fitted on the train split
        columns = table.fit(raw.columns, x_train)
        x_train, x_val, x_test = (table.encode(columns, a) for a in (x_train, x_val, x_test))
        shape = (x_train.shape[1],)
    x_train, x_val, x_test = (
        np.asarray(a, np.float32).reshape(-1, *shape) for a in (x_train, x_val, x_test)
    )
    # Statistics from the training split only: validation and test stay unseen.
    axes = (0,) if len(shape) == 1 else tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes)
    std = x_train.std(axis=axes)
    std = np.where(std < 1e-8, 1.0, std)  # constant features (blank image corners) stay finite
    spec = _spec(raw, name, shape, mean, std, targets, columns)
    m = mean.reshape(spec.stat_shape()).astype(np.float32)
    s = std.reshape(spec.stat_shape()).astype(np.float32)
    return Dataset(
        spec=spec,
        x_train=torch.from_numpy((x_train - m) / s),
        y_train=targets(y_train),
        x_val=torch.from_numpy((x_val - m) / s),
        y_val=targets(y_val),
        x_test=torch.from_numpy((x_test - m) / s),
        y_test=targets(y_test),
        warnings=tuple(raw.warnings),
    )


def _spec(raw: Raw, name: str, shape, mean, std, targets: _Targets, columns) -> DataSpec:
    return DataSpec(
        name=name,
        input_shape=shape,
        n_classes=len(raw.classes),
        classes=tuple(raw.classes),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        task=raw.task,
        metric=TASKS[raw.task][0],
        target_mean=targets.mean,
        target_std=targets.std,
        target_transform=targets.transform,
        columns=None if columns is None else tuple(columns),
        target=raw.target,
        image_mode=raw.image_mode,
    )


class _Targets:
    """Class indices as int64; regression targets as float32 `(t(y) - mean) / std`, with the
    transform t chosen on the training split and its mean and std (the exported script
    normalises labels the same way)."""

    def __init__(self, task: str, y_train: np.ndarray, transform: str = "auto"):
        self.task, self.transform = task, "none"
        self.mean, self.std = 0.0, 1.0
        if task == "regression":
            y = np.asarray(y_train, np.float64)
            self.transform = choose_target_transform(y) if transform == "auto" else transform
            y = from_units(y, self.transform)
            self.mean = float(y.mean())
            self.std = float(y.std()) or 1.0

    def __call__(self, y) -> torch.Tensor:
        if self.task == "classification":
            return torch.from_numpy(np.asarray(y, np.int64))
        y = from_units(np.asarray(y, np.float64), self.transform)
        y = (y - self.mean) / self.std
        return torch.from_numpy(y.astype(np.float32))


# A target at least this skewed to the right (and never negative) is learned as log1p(y).
LOG_SKEWNESS = 1.0


def choose_target_transform(y_train: np.ndarray) -> str:
    """log1p for a positive target with a long right tail (skewness above LOG_SKEWNESS, as
    prices, counts and durations often have) that log1p makes more symmetric; else none.

    On the training split only. A squared error on such a target is ruled by its few largest
    values; on log1p(y) the model's errors count in proportion to the target's size.
    """
    if len(y_train) < 3 or y_train.min() < 0:
        return "none"
    skew = _skewness(y_train)
    if skew > LOG_SKEWNESS and abs(_skewness(np.log1p(y_train))) < skew:
        return "log1p"
    return "none"


def _skewness(y: np.ndarray) -> float:
    centred = y - y.mean()
    var = float((centred**2).mean())
    return float((centred**3).mean()) / var**1.5 if var > 0 else 0.0


MIN_REGRESSION_ROWS = 10


def _check_targets(raw: Raw, name: str) -> None:
    if len(raw.y) == 0:
        raise ValueError(f"data {name!r} has no rows")
    if raw.task == "regression":
        n = len(raw.y) + (0 if raw.y_test is None else len(raw.y_test))
        if n < MIN_REGRESSION_ROWS:
            raise ValueError(
                f"data {name!r} has {n} rows; regression needs at least {MIN_REGRESSION_ROWS} "
                "to split into train, validation and test"
            )
        if np.ptp(np.asarray(raw.y, np.float64)) == 0:
            raise ValueError(f"data {name!r}: the target is constant; there is nothing to learn")
        return
    counts = np.bincount(raw.y, minlength=len(raw.classes))
    if (counts > 0).sum() < 2:
        only = raw.classes[int(counts.argmax())] if len(raw.classes) else "?"
        raise ValueError(
            f"data {name!r} has a single class ({only!r}); classification needs at least 2"
        )
    if counts.min() < 4:
        small = int(counts.argmin())
        raise ValueError(
            f"data {name!r}: class {raw.classes[small]!r} has {int(counts.min())} rows; "
            "each class needs at least 4 to split into train, validation and test"
        )
