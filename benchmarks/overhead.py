"""Overhead per trial: what a trial spends outside training, against its training time.

Runs real searches in this process (one worker, one thread, 1-epoch trials, the default
storage on disk) with timers around the pieces of a trial, and reports per trial:

- training: `train.fit` (the epoch and its validation pass);
- sampling: `Space.sample` (the sampler, and the storage writes of each suggested param);
- model build: `models.create`;
- weights: keeping the top-k checkpoint (`Objective._keep_weights`);
- the rest: Optuna's ask and tell, trial reports, user attributes, the budget and failure
  checks, progress lines: everything between trials.

Side by side, each search also runs on Optuna's stock journal file backend, which fsyncs
every record (automodel's writes the same records without the fsync: automodel/study.py).
Start-up (imports, data, opening the study, spawning workers) is paid once per worker, not
per trial: benchmarks/startup.py measures it.

    python benchmarks/overhead.py            # 60 trials of digits/mlp, 20 of mnist1d/cnn, x3
    python benchmarks/overhead.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from collections import defaultdict

import sidebyside as sbs

from automodel import config, models, search, spaces, train

PIECES = {
    "training": (train, "fit"),
    "sampling": (spaces.Space, "sample"),
    "model build": (models, "create"),
    "weights": (search.Objective, "_keep_weights"),
}


@contextlib.contextmanager
def timers(totals: dict[str, float]):
    """Patch each piece of PIECES with a wrapper that adds its time to `totals`."""
    saved = {name: getattr(owner, attr) for name, (owner, attr) in PIECES.items()}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start

        return wrapper

    for name, (owner, attr) in PIECES.items():
        setattr(owner, attr, timed(name, saved[name]))
    try:
        yield
    finally:
        for name, (owner, attr) in PIECES.items():
            setattr(owner, attr, saved[name])


def measure(overrides: list[str], runs_dir: str) -> dict[str, float]:
    run = config.to_run_config(
        config.compose(
            [
                *overrides,
                "trainer.max_epochs=1",
                "workers=1",
                "trainer.threads=1",
                "quiet=true",
                "study.stop_when_converged=false",  # every case runs its trial count
                f"runs_dir={runs_dir}",
            ]
        )
    )
    plan = search.prepare(run)
    search.quiet_optuna()
    study = search.open_study(plan)
    for params in plan.space.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    device = search._device(search.devices.Slot(None, 1), pinned=False)
    _warm_up(plan)
    totals: dict[str, float] = defaultdict(float)
    with timers(totals):
        start = time.perf_counter()
        search.run_trials(plan, study, device)
        totals["wall"] = time.perf_counter() - start
    n = len(study.trials)
    out = {k: v / n for k, v in totals.items()}
    out["rest"] = out["wall"] - sum(out[k] for k in PIECES)
    out["overhead"] = (out["wall"] - out["training"]) / out["training"]
    out["trials"] = n
    return out


@contextlib.contextmanager
def stock_journal():
    """Optuna's own JournalFileBackend (an fsync per record) instead of automodel's."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    def stock(path: str) -> JournalFileBackend:
        lock = JournalFileOpenLock(path)
        return JournalFileBackend(path, lock)

    from automodel.study import storage

    saved = storage.journal_file
    storage.journal_file = stock
    try:
        yield
    finally:
        storage.journal_file = saved


def _warm_up(plan) -> None:
    """One throwaway fit: the first optimizer of a process imports torch._dynamo (seconds),
    a start-up cost that benchmarks/startup.py counts, not a per-trial one."""
    model = models.create(plan.space.family, {}, plan.data.spec)
    train.fit(model, plan.data, train.Recipe(epochs=1))


def _measure_in(overrides: list[str], storage) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp, storage():
        return measure(overrides, tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the trials, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    args = parser.parse_args()
    cases = {
        "digits/mlp": ["data=digits", "search_space=mlp", "study.n_trials=60"],
        "mnist1d/cnn": ["data=mnist1d", "search_space=cnn", "study.n_trials=20"],
    }
    if args.quick:
        cases = {
            "digits/mlp": ["data=digits", "search_space=mlp", "study.n_trials=15"],
            "mnist1d/cnn": ["data=mnist1d", "search_space=cnn", "study.n_trials=5"],
        }
        args.repeats = 1
    print(f"overhead per 1-epoch trial, 1 worker, 1 thread; {sbs.load()}\n", flush=True)
    headers = ["search", "trials", "training ms", *[k + " ms" for k in PIECES if k != "training"]]
    headers += ["rest ms", "wall ms", "overhead"]
    rows = []
    storages = {"automodel": contextlib.nullcontext, "stock journal": stock_journal}
    for name, overrides in cases.items():
        runs = {k: functools.partial(_measure_in, overrides, v) for k, v in storages.items()}
        res = sbs.interleaved(runs, args.repeats)
        for i, storage in enumerate(storages):
            r = {k: sbs.median(res[storage], k) for k in res[storage][0]}
            ms = [r[k] * 1000 for k in ("training", "sampling", "model build", "weights", "rest")]
            label = name if i == 0 else f"  ({storage})"
            rows.append([label, r["trials"], *ms, r["wall"] * 1000, f"{r['overhead']:.1%}"])
            print(sbs.table(headers, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(sbs.table(headers, rows))
    print(
        "\nper trial: means over a search's trials, medians over the repeats; overhead = "
        "(wall - training) / training. Training includes the epoch's validation pass; "
        "(stock journal): the same search on Optuna's fsync-per-record journal backend."
    )
    print(sbs.load())


if __name__ == "__main__":
    main()
