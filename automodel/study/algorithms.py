"""Samplers and pruners by name: the tables behind study.sampler and study.pruner."""

from __future__ import annotations

import importlib.util
import warnings

import optuna


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
