"""Datasets: load by name, split (seeded, stratified), normalise with train statistics only.

`load(cfg, seed)` returns a `Dataset` of float32/int64 tensors shaped `(N, *spec.input_shape)`
plus a `DataSpec`, the plain description that models, training and export work from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from automodel.data import digits, mnist1d, synthetic
from automodel.data.source import Raw

SOURCES: dict[str, Callable[..., Raw]] = {
    "digits": digits.load,
    "mnist1d": mnist1d.load,
    "synthetic": synthetic.load,
}


@dataclass(frozen=True)
class DataSpec:
    """Everything about the data that a model, a trainer or an exported script needs.

    `mean`/`std` hold one value per channel for sequences and images (input_shape of 2 or 3
    dims) and one per feature for tables (1 dim): `x_model = (x_raw - mean) / std`.
    """

    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: str = "classification"
    metric: str = "accuracy"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["classes"] = list(self.classes)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
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

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on `device` (small data is held there whole: no loader per step)."""
        moved = {k: getattr(self, k).to(device) for k in _TENSORS}
        return Dataset(spec=self.spec, **moved)


_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load(cfg, seed: int) -> Dataset:
    """Load `cfg.name`, split it and normalise it. Raises ValueError on unusable data."""
    if cfg.name not in SOURCES:
        raise ValueError(f"unknown data {cfg.name!r}; known: {', '.join(SOURCES)}")
    raw = SOURCES[cfg.name](cfg)
    return prepare(raw, cfg.name, cfg.val_fraction, cfg.test_fraction, seed)


def load_raw_splits(cfg, seed: int) -> dict[str, np.ndarray]:
    """The same splits as `load`, as the source gives the rows (not reshaped or normalised).

    Keys x_train, y_train, x_val, y_val, x_test, y_test: what an exported script takes.
    """
    if cfg.name not in SOURCES:
        raise ValueError(f"unknown data {cfg.name!r}; known: {', '.join(SOURCES)}")
    raw = SOURCES[cfg.name](cfg)
    _check_labels(raw.y, len(raw.classes), cfg.name)
    splits = _split(raw, cfg.val_fraction, cfg.test_fraction, seed)
    return dict(zip(_TENSORS, splits, strict=True))


def _split(raw: Raw, val_fraction: float, test_fraction: float, seed: int) -> tuple:
    """(x_train, y_train, x_val, y_val, x_test, y_test): seeded and stratified."""
    from automodel.data.split import train_test_split

    if raw.x_test is None:
        x_rest, x_test, y_rest, y_test = train_test_split(
            raw.x, raw.y, test_size=test_fraction, stratify=raw.y, random_state=seed
        )
    else:
        x_rest, y_rest, x_test, y_test = raw.x, raw.y, raw.x_test, raw.y_test
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction, stratify=y_rest, random_state=seed
    )
    return x_train, y_train, x_val, y_val, x_test, y_test


def prepare(raw: Raw, name: str, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    _check_labels(raw.y, len(raw.classes), name)
    x_train, y_train, x_val, y_val, x_test, y_test = _split(raw, val_fraction, test_fraction, seed)
    shape = tuple(raw.input_shape)
    x_train, x_val, x_test = (
        np.asarray(a, np.float32).reshape(-1, *shape) for a in (x_train, x_val, x_test)
    )
    # Statistics from the training split only: validation and test stay unseen.
    axes = (0,) if len(shape) == 1 else tuple(i for i in range(x_train.ndim) if i != 1)
    mean = x_train.mean(axis=axes)
    std = x_train.std(axis=axes)
    std = np.where(std < 1e-8, 1.0, std)  # constant features (blank image corners) stay finite
    spec = DataSpec(
        name=name,
        input_shape=shape,
        n_classes=len(raw.classes),
        classes=tuple(raw.classes),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )
    m = mean.reshape(spec.stat_shape()).astype(np.float32)
    s = std.reshape(spec.stat_shape()).astype(np.float32)
    return Dataset(
        spec=spec,
        x_train=torch.from_numpy((x_train - m) / s),
        y_train=torch.from_numpy(np.asarray(y_train, np.int64)),
        x_val=torch.from_numpy((x_val - m) / s),
        y_val=torch.from_numpy(np.asarray(y_val, np.int64)),
        x_test=torch.from_numpy((x_test - m) / s),
        y_test=torch.from_numpy(np.asarray(y_test, np.int64)),
    )


def _check_labels(y: np.ndarray, n_classes: int, name: str) -> None:
    if len(y) == 0:
        raise ValueError(f"data {name!r} has no rows")
    counts = np.bincount(y, minlength=n_classes)
    if (counts > 0).sum() < 2:
        raise ValueError(f"data {name!r} has a single class; classification needs at least 2")
    if counts.min() < 4:
        raise ValueError(
            f"data {name!r}: class {int(counts.argmin())} has {int(counts.min())} rows; "
            "each class needs at least 4 to split into train, validation and test"
        )
