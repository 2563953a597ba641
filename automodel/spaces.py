"""Search spaces: YAML -> validated `Space` -> `sample(trial)` -> params.

A space file names a model family and lists its params in sampling order, one entry per
Optuna `suggest_*` call::

    family: mlp
    params:
      depth: {type: int, low: 1, high: 4}
      width: {type: int, low: 16, high: 512, log: true, per_layer: depth}  # width_l0..
      activation: {type: categorical, choices: [relu, gelu]}
      optimizer: {type: categorical, choices: [adam, sgd]}
      momentum: {type: float, low: 0.8, high: 0.99, when: {optimizer: sgd}}
      label_smoothing: 0.1                                                   # fixed value
    enqueue:                                  # optional: trials to run first on a new study
      - {depth: 2, width_l0: 256, width_l1: 256, activation: relu, optimizer: adam}

Every entry is checked, before any training, against the rules that the family and the
trainer declare (`hparams.Param`); errors name the file, the key and the valid values.
This is the only module that calls `trial.suggest_*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from automodel import models, train
from automodel.hparams import Param

TYPES = ("int", "float", "categorical")
_ENTRY_KEYS = {
    "int": {"type", "low", "high", "log", "step", "per_layer", "when"},
    "float": {"type", "low", "high", "log", "step", "per_layer", "when"},
    "categorical": {"type", "choices", "per_layer", "when"},
}
_TOP_KEYS = ("family", "params", "enqueue")
_FIXED = object()


@dataclass(frozen=True)
class Entry:
    name: str
    type: str  # int, float, categorical, or "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    value: Any = None  # for fixed entries
    per_layer: str | None = None
    when: dict[str, tuple] = field(default_factory=dict)


@dataclass(frozen=True)
class Space:
    family: str
    entries: tuple[Entry, ...]
    enqueue: tuple[dict, ...] = ()
    source: dict = field(default_factory=dict)  # the validated YAML, for storage and comparison

    def sample(self, trial) -> dict:
        """Suggest every entry in order on an Optuna trial; return all params incl. fixed."""
        params: dict[str, Any] = {}
        for e in self.entries:
            if not _active(e, params):
                continue
            for name in _names(e, params):
                params[name] = e.value if e.type == "fixed" else _suggest(trial, name, e)
        return params

    def complete(self, trial_params: dict) -> dict:
        """The full params of a finished trial: its sampled values plus this space's fixed ones."""
        params: dict[str, Any] = {}
        for e in self.entries:
            if not _active(e, params):
                continue
            for name in _names(e, params):
                params[name] = e.value if e.type == "fixed" else trial_params[name]
        return params


def _active(e: Entry, params: dict) -> bool:
    return all(params.get(k, _FIXED) in values for k, values in e.when.items())


def _names(e: Entry, params: dict) -> list[str]:
    if e.per_layer is None:
        return [e.name]
    return [f"{e.name}_l{i}" for i in range(int(params[e.per_layer]))]


def _suggest(trial, name: str, e: Entry):
    if e.type == "int":
        return trial.suggest_int(name, int(e.low), int(e.high), step=int(e.step or 1), log=e.log)
    if e.type == "float":
        return trial.suggest_float(name, e.low, e.high, step=e.step, log=e.log)
    return trial.suggest_categorical(name, list(e.choices))


def known_params(family: str) -> dict[str, Param]:
    """Every param a space for `family` may set: the family's and the trainer's."""
    return {**models.get(family).params, **train.RECIPE_PARAMS}


def load(path: str | Path) -> Space:
    """Read and validate a space file. Raises ValueError naming the file, key and value."""
    path = Path(path)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except FileNotFoundError:
        raise ValueError(f"search space file {str(path)!r} does not exist") from None
    except (OmegaConfBaseException, Exception) as err:  # YAML syntax errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not valid YAML: {first}") from None
    try:
        return parse(raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def parse(raw: Any) -> Space:
    """Validate a space given as plain data (what the YAML file holds)."""
    if raw is None or raw == {}:
        raise ValueError("the space is empty; it needs family: and params:")
    if not isinstance(raw, dict):
        raise ValueError(f"a search space must be a mapping with keys {', '.join(_TOP_KEYS)}")
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid: {', '.join(_TOP_KEYS)}")
    family = raw.get("family")
    if family not in models.FAMILIES:
        raise ValueError(f"family {family!r} is unknown; known: {', '.join(models.FAMILIES)}")
    rules = known_params(family)
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty mapping of name -> entry")
    entries: list[Entry] = []
    seen: dict[str, Entry] = {}
    for name, spec in params.items():
        entry = _entry(str(name), spec, rules, seen, family)
        entries.append(entry)
        seen[entry.name] = entry
    space = Space(family=family, entries=tuple(entries), source=raw)
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list):
        raise ValueError("enqueue must be a list of param mappings")
    for i, fixed in enumerate(enqueue):
        _check_enqueued(i, fixed, space, rules)
    return Space(family=family, entries=tuple(entries), enqueue=tuple(enqueue), source=raw)


def _entry(
    name: str, spec: Any, rules: dict[str, Param], seen: dict[str, Entry], family: str
) -> Entry:
    where = f"params.{name}"
    if name not in rules:
        raise ValueError(
            f"{where}: unknown param {name!r} for family {family}; known: {', '.join(rules)}"
        )
    if name in seen:
        raise ValueError(f"{where}: listed twice")
    rule = rules[name]
    if not isinstance(spec, dict):  # a plain value: fixed, not searched
        rule.check(where, spec)
        return Entry(name=name, type="fixed", value=spec)
    kind = spec.get("type")
    if kind not in TYPES:
        raise ValueError(f"{where}.type: {kind!r} is not valid; valid: {', '.join(TYPES)}")
    unknown = sorted(set(spec) - _ENTRY_KEYS[kind])
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} for type {kind}; valid: "
            f"{', '.join(sorted(_ENTRY_KEYS[kind]))}"
        )
    per_layer = spec.get("per_layer")
    when = _when(where, spec.get("when"), seen)
    if per_layer is not None:
        count = seen.get(per_layer)
        if count is None:
            raise ValueError(
                f"{where}.per_layer: {per_layer!r} must name an int param listed before {name!r}"
            )
        if count.type not in ("int", "fixed") or rules[per_layer].kind != "int":
            raise ValueError(f"{where}.per_layer: {per_layer!r} is not an int param")
        if not rule.layered:
            layered = [k for k, r in rules.items() if r.layered]
            raise ValueError(
                f"{where}.per_layer: {name!r} is not a per-layer param; per-layer params: "
                f"{', '.join(layered)}"
            )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}.choices must be a non-empty list, got {choices!r}")
        if len({repr(c) for c in choices}) != len(choices):
            raise ValueError(f"{where}.choices has duplicates: {choices!r}")
        for c in choices:
            rule.check(f"{where}.choices", c)
        return Entry(name, kind, choices=tuple(choices), per_layer=per_layer, when=when)
    if rule.kind not in ("int", "float") or (kind == "float" and rule.kind == "int"):
        want = "int" if rule.kind == "int" else ("float" if rule.kind == "float" else "categorical")
        raise ValueError(f"{where}.type: {name!r} must be searched as {want}, got {kind}")
    low, high = spec.get("low"), spec.get("high")
    for key, value in (("low", low), ("high", high)):
        numeric = int if kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise ValueError(
                f"{where}.{key} must be {'an int' if kind == 'int' else 'a number'}, got {value!r}"
            )
    if low >= high:
        raise ValueError(f"{where}: low must be < high, got low={low} high={high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"{where}: log scale needs low > 0, got low={low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ValueError(f"{where}.step must be a positive number, got {step!r}")
        if kind == "int" and not isinstance(step, int):
            raise ValueError(f"{where}.step must be an int for type int, got {step!r}")
        if log:
            raise ValueError(
                f"{where}: step and log cannot be combined (Optuna does not support it)"
            )
    rule.check(f"{where}.low", low)
    rule.check(f"{where}.high", high)
    return Entry(name, kind, low=low, high=high, log=log, step=step, per_layer=per_layer, when=when)


def _when(where: str, when: Any, seen: dict[str, Entry]) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise ValueError(f"{where}.when must be a mapping such as {{optimizer: sgd}}, got {when!r}")
    out = {}
    for key, values in when.items():
        if key not in seen:
            raise ValueError(f"{where}.when: {key!r} must name a param listed before this one")
        values = tuple(values) if isinstance(values, list) else (values,)
        target = seen[key]
        possible = target.choices if target.type == "categorical" else None
        if possible is not None:
            for v in values:
                if v not in possible:
                    raise ValueError(
                        f"{where}.when.{key}: {v!r} is never sampled; choices: "
                        f"{', '.join(map(str, possible))}"
                    )
        out[key] = values
    return out


def _check_enqueued(i: int, fixed: Any, space: Space, rules: dict[str, Param]) -> None:
    """An enqueued trial must be a point of the space, or Optuna would quietly resample it."""
    where = f"enqueue[{i}]"
    if not isinstance(fixed, dict):
        raise ValueError(f"{where} must be a mapping of param -> value")
    sampled = {e.name: e for e in space.entries if e.type != "fixed"}
    for key, value in fixed.items():
        base, _, layer = key.rpartition("_l")
        if not (base and layer.isdigit() and base in sampled):
            base = key
        entry = sampled.get(base)
        if entry is None or (base != key) != (entry.per_layer is not None):
            raise ValueError(f"{where}.{key}: not a sampled param of this space")
        rules[base].check(f"{where}.{key}", value)
        if entry.type == "categorical" and value not in entry.choices:
            raise ValueError(
                f"{where}.{key}: {value!r} is not one of the space's choices "
                f"{', '.join(map(str, entry.choices))}"
            )
        if entry.type in ("int", "float") and not entry.low <= value <= entry.high:
            raise ValueError(
                f"{where}.{key}: {value!r} is outside the space's range [{entry.low}, {entry.high}]"
            )


def fit_to_data(raw: dict, n_train: int) -> tuple[dict, list[str]]:
    """The space as it can apply to `n_train` training rows, and a notice per change.

    A batch size above the training rows cannot apply: such choices are dropped and ranges
    clipped; when none is left the whole training split becomes the one batch. Enqueued
    trials follow (their batch size becomes the largest one left below it). Only a copy of
    `raw` is changed: the study keeps the space as written, so the same space on other data
    is still the same study.
    """
    params = raw.get("params")
    if not isinstance(params, dict) or "batch_size" not in params:
        return raw, []
    entry = params["batch_size"]
    fitted, notice = _fit_batch_size(entry, n_train)
    if notice is None:
        return raw, []
    out = {**raw, "params": {**params, "batch_size": fitted}}
    out["enqueue"] = [_refit_enqueued(e, fitted) for e in raw.get("enqueue") or []]
    return out, [notice]


def without(raw: dict, names: set[str]) -> dict:
    """A copy of space `raw` without the params `names`, the entries that depend on them
    (`when` or `per_layer`: never sampled without them), and their values in enqueued trials."""
    gone, params = set(names), {}
    for name, entry in raw.get("params", {}).items():
        spec = entry if isinstance(entry, dict) else {}
        when = spec.get("when") if isinstance(spec.get("when"), dict) else {}
        if name in gone or gone & set(when) or spec.get("per_layer") in gone:
            gone.add(name)
        else:
            params[name] = entry
    out = {**raw, "params": params}
    if isinstance(raw.get("enqueue"), list):
        out["enqueue"] = [
            {k: v for k, v in t.items() if _param_of(k) not in gone} if isinstance(t, dict) else t
            for t in raw["enqueue"]
        ]
    return out


def _param_of(key: str) -> str:
    """The param an enqueued key sets: `width` for `width_l0`, else the key itself."""
    base, _, layer = key.rpartition("_l")
    return base if base and layer.isdigit() else key


def _fit_batch_size(entry: Any, n: int) -> tuple[Any, str | None]:
    def too_big(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > n

    if not isinstance(entry, dict):
        if too_big(entry):
            return n, f"batch_size {entry} is more than the {n} training rows: using {n}"
        return entry, None
    if entry.get("type") == "categorical" and isinstance(entry.get("choices"), list):
        choices = entry["choices"]
        dropped = [c for c in choices if too_big(c)]
        if not dropped:
            return entry, None
        kept = [c for c in choices if c not in dropped]
        if not kept:
            return n, (
                f"batch_size choices {choices} are all more than the {n} training rows: "
                f"each trial trains on the whole split as one batch of {n}"
            )
        return {**entry, "choices": kept}, (
            f"batch_size: dropped {', '.join(map(str, dropped))} (more than the {n} "
            f"training rows); searching {', '.join(map(str, kept))}"
        )
    if entry.get("type") == "int" and too_big(entry.get("high")):
        if entry.get("low", 1) >= n:
            return n, f"batch_size range is above the {n} training rows: using {n}"
        return {**entry, "high": n}, f"batch_size: high clipped to the {n} training rows"
    return entry, None


def _refit_enqueued(trial: Any, entry: Any) -> Any:
    """An enqueued trial's batch size moved into the fitted entry (dropped when fixed)."""
    if not isinstance(trial, dict) or not isinstance(trial.get("batch_size"), int):
        return trial
    if not isinstance(entry, dict):
        return {k: v for k, v in trial.items() if k != "batch_size"}
    return {**trial, "batch_size": _nearest(trial["batch_size"], entry)}


def _nearest(value: int, entry: dict) -> int:
    if entry.get("type") == "int":
        return min(max(value, entry["low"]), entry["high"])
    below = [c for c in entry["choices"] if c <= value]
    return max(below) if below else min(entry["choices"])
