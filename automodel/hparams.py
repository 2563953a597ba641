"""Rules for the hyperparameters that families and the trainer read from `params`.

Each consumer (a model family, the training recipe) declares the names it reads with a
`Param` rule: its kind, its valid range or choices and the default used when a search space
leaves it out. `spaces.py` checks every space against these rules before the first trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One hyperparameter: `kind` is int, float, choice, bool or text (any non-empty string,
    such as a path; it can be fixed or chosen among categorical choices, never ranged).

    `low`/`high` bound int and float values (inclusive); `choices` lists valid choice values.
    `layered` params may be given once for all layers (`width`) or per layer
    (`width_l0`, `width_l1`, ... with `per_layer:` in the space).
    """

    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    layered: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError naming `name` when `value` breaks the rule."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return
        if self.kind == "text":
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
            return
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(
                    f"{name} {value!r} is not valid; valid: {', '.join(map(str, self.choices))}"
                )
            return
        numeric = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise ValueError(
                f"{name} must be {'an int' if self.kind == 'int' else 'a number'}, got {value!r}"
            )
        if not self.low <= value <= self.high:
            raise ValueError(f"{name} must be in [{self.low}, {self.high}], got {value!r}")


def layer_value(params: dict, name: str, i: int, default: Any) -> Any:
    """The value of layered param `name` for layer `i`: `name_l{i}`, else `name`, else default."""
    return params.get(f"{name}_l{i}", params.get(name, default))
