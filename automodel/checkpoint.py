"""A trained candidate on disk: its weights plus everything that rebuilds, retrains and exports it.

`Checkpoint` is the one place a trained model is rebuilt (`build_model`). On disk it is a plain
dict of values and tensors (`to_dict`), so it loads with `torch.load(weights_only=True)` and
needs no automodel class to be read.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from automodel import models, outputs, train
from automodel.data import DataSpec
from automodel.errors import first_line


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not describe a model."""


_REQUIRED = ("family", "params", "spec", "recipe", "trial", "val", "state_dict")


@dataclass
class Checkpoint:
    family: str
    params: dict
    spec: DataSpec
    recipe: train.Recipe
    trial: int  # the Optuna trial number
    val: dict[str, float]  # every validation metric at the kept epoch
    state_dict: dict[str, torch.Tensor]
    test: dict[str, float] | None = None  # measured once, at the end of the search
    extra: dict = field(default_factory=dict)  # fields written by later versions, kept as read

    @classmethod
    def from_fit(
        cls,
        family: str,
        params: dict,
        spec: DataSpec,
        recipe: train.Recipe,
        trial: int,
        result: train.FitResult,
    ) -> Checkpoint:
        state = {k: v.detach().cpu() for k, v in result.best_state.items()}
        return cls(family, dict(params), spec, recipe, trial, dict(result.best_metrics), state)

    @classmethod
    def from_dict(cls, raw: dict) -> Checkpoint:
        if isinstance(raw, Checkpoint):
            return raw
        if not isinstance(raw, dict):
            raise CheckpointError(f"a checkpoint is a dict, got {type(raw).__name__}")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise CheckpointError(f"the checkpoint has no {missing[0]!r}")
        for key in ("params", "recipe", "val", "state_dict"):  # a damaged or foreign file
            if not isinstance(raw[key], dict):
                raise CheckpointError(
                    f"the checkpoint's {key!r} is a {type(raw[key]).__name__}, not a mapping"
                )
        known = {f.name for f in dataclasses.fields(train.Recipe)}
        recipe = train.Recipe(**{k: v for k, v in raw["recipe"].items() if k in known})
        spec = raw["spec"] if isinstance(raw["spec"], DataSpec) else DataSpec.from_dict(raw["spec"])
        extra = {k: v for k, v in raw.items() if k not in (*_REQUIRED, "test")}
        return cls(
            family=raw["family"],
            params=dict(raw["params"]),
            spec=spec,
            recipe=recipe,
            trial=raw["trial"],
            val=dict(raw["val"]),
            state_dict=raw["state_dict"],
            test=None if raw.get("test") is None else dict(raw["test"]),
            extra=extra,
        )

    def to_dict(self) -> dict:
        out = {
            **self.extra,
            "family": self.family,
            "params": dict(self.params),
            "spec": self.spec.to_dict(),
            "recipe": self.recipe.to_dict(),
            "trial": self.trial,
            "val": dict(self.val),
            "state_dict": self.state_dict,
        }
        if self.test is not None:
            out["test"] = dict(self.test)
        return out

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The trained module, in eval mode. Raises CheckpointError if the weights do not fit."""
        model = models.create(self.family, self.params, self.spec)
        try:
            model.load_state_dict(self.state_dict)
        except (RuntimeError, TypeError) as err:  # TypeError: values that are not tensors
            raise CheckpointError(
                f"the checkpoint's weights do not fit its model: {first_line(err)}"
            ) from None
        return model.to(device).eval()

    def save(self, path: Path) -> None:
        """Written to a temporary name, fsynced and renamed: a crash leaves the old file or
        the new one."""
        buffer = io.BytesIO()
        torch.save(self.to_dict(), buffer)
        outputs.write_atomic(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Raises CheckpointError (naming the file) for an empty, torn or foreign file."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # torch raises many types for a torn or foreign file
            raise CheckpointError(
                f"{path} is not a readable checkpoint: {first_line(err)[:200]}"
            ) from None
        try:
            return cls.from_dict(raw)
        except (CheckpointError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path} is not a checkpoint of automodel: {err}") from None
