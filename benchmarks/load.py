"""Load: many search processes of tiny trials on one study, the way a cluster hammers it.

Each worker is a real `python -m automodel search workers=1` process joining one study, as a
host of a Kubernetes Job or a SLURM array would: on the default journal (a file in the shared
study folder) or on one PostgreSQL database (`--postgres-url`, or a throwaway server that
scripts/throwaway_postgres.sh starts). The trials are tiny (a one-layer network, one epoch on
64 rows: a few milliseconds of training), so what is measured is the study's coordination:
asking for a trial (the budget counts, the sampler, creating it), recording it, and finishing.

Reported per storage and worker count, from the study itself:

- trials per minute between the first trial's start and the last trial's end;
- the median time a worker spends between two of its trials (reading the counts, sampling,
  creating the trial: mostly storage and sampler time) and the median trial duration
  (training plus writing its values);
- the checks that matter: the budget met exactly (finished trials == study.n_trials), no
  trial lost (none left RUNNING or FAIL), none run twice (the enqueued defaults trained
  once), no surplus trial trained (every trial marked surplus has no training record), and
  no error in any worker (exit code 0, no traceback or `error:` on stderr).

    python benchmarks/load.py                          # 16 and 32 workers, journal and PostgreSQL
    python benchmarks/load.py --workers 1,2,4,8,16,32 --trials 400
    python benchmarks/load.py --storages journal --quick
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sidebyside as sbs

SPACE = (
    "family: mlp\n"
    "params:\n"
    "  depth: 1\n  width: 8\n  activation: relu\n  dropout: 0.0\n  batch_size: 64\n"
    "  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
)
OVERRIDES = (
    "devices=cpu", "workers=1", "trainer.threads=1", "data=synthetic", "data.n_samples=100",
    "data.cv_folds=0", "trainer.max_epochs=1", "study.pruner=none",
    "study.stop_when_converged=false", "study.refit=false", "ensemble.size=0", "baseline=false",
    "explain=false", "tracking.enabled=false", "quiet=true",
)  # fmt: skip
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "throwaway_postgres.sh"


@contextlib.contextmanager
def throwaway_postgres():
    """A PostgreSQL server for this run; its URL."""
    out = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, check=True)
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    try:
        yield env["AUTOMODEL_TEST_POSTGRES_URL"]
    finally:
        subprocess.run([str(SCRIPT), "stop", env["PG_TMP"]], check=False)


def hammer(storage: str | None, workers: int, n_trials: int, tmp: Path, name: str) -> dict:
    """Start `workers` search processes on one new study; wait for all; check the study."""
    import optuna

    space = tmp / "tiny.yaml"
    space.write_text(SPACE)
    runs = tmp / name
    args = [*OVERRIDES, f"search_space={space}", f"study.n_trials={n_trials}"]
    args += [f"runs_dir={runs}", f"study.name={name}"]
    if storage:
        args.append(f"study.storage={storage}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "automodel", "search", *args]
    logs = [(tmp / f"{name}.{i}.out", tmp / f"{name}.{i}.err") for i in range(workers)]
    started = time.monotonic()
    procs = [
        subprocess.Popen(cmd, cwd=sbs.ROOT, env=env, stdout=out.open("w"), stderr=err.open("w"))
        for out, err in logs
    ]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - started
    errors = []
    for code, (_, err) in zip(codes, logs, strict=True):
        text = err.read_text()
        bad = [
            line
            for line in text.splitlines()
            if line.startswith(("error", "Traceback")) or "Error" in line
        ]
        if code != 0 or bad:
            errors.append(f"exit {code}: {(bad or ['(no message)'])[0][:160]}")

    if storage:
        study_storage = optuna.storages.RDBStorage(storage)
    else:
        from automodel import study as studylib

        study_storage = studylib.open_storage(None, runs / name)
    study = optuna.load_study(study_name=name, storage=study_storage)
    return {"wall": wall, "errors": errors, **check(study, n_trials)}


def check(study, n_trials: int) -> dict:
    from optuna.trial import TrialState

    from automodel.study import attrs

    trials = study.get_trials(deepcopy=False)
    surplus = [t for t in trials if attrs.is_surplus(t)]
    real = [t for t in trials if not attrs.is_surplus(t)]
    finished = [t for t in real if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = [t for t in trials if "trained_with" in t.user_attrs]
    enqueued = [t for t in trained if t.system_attrs.get("fixed_params")]
    gaps, durations = [], []
    by_worker: dict[str, list] = {}
    for t in finished:
        by_worker.setdefault(t.user_attrs.get("worker", "?"), []).append(t)
        durations.append((t.datetime_complete - t.datetime_start).total_seconds())
    for own in by_worker.values():
        own.sort(key=lambda t: t.datetime_start)
        gaps += [
            (b.datetime_start - a.datetime_complete).total_seconds()
            for a, b in itertools.pairwise(own)
        ]
    # The steady state: from the moment every worker has finished its first trial (process
    # start-up left out, as in benchmarks/parallel.py) to the last trial's end.
    steady = max((own[0].datetime_complete for own in by_worker.values()), default=None)
    ends = [t.datetime_complete for t in finished if steady and t.datetime_complete > steady]
    span = (max(ends) - steady).total_seconds() if ends else float("nan")
    return {
        "finished": len(finished),
        "budget_exact": len(finished) == n_trials,
        "lost": sum(t.state in (TrialState.RUNNING, TrialState.FAIL) for t in real),
        "lost_why": [
            f"#{t.number} {t.state.name}: {t.user_attrs.get('fail_reason', '?')}"[:160]
            for t in real
            if t.state in (TrialState.RUNNING, TrialState.FAIL)
        ],
        "run_twice": max(0, len(enqueued) - 1),
        "surplus": len(surplus),
        "surplus_trained": sum("trained_with" in t.user_attrs for t in surplus),
        "trained": len(trained),
        "per_minute": 60 * len(ends) / span if span > 0 else float("nan"),
        "gap_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
        "trial_ms": 1000 * statistics.median(durations) if durations else float("nan"),
        "active_workers": len(by_worker),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="16,32", help="worker counts, comma-separated")
    parser.add_argument("--trials", type=int, default=600, help="study.n_trials of each run")
    parser.add_argument("--storages", default="journal,postgresql")
    parser.add_argument("--postgres-url", help="an existing database (default: a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="4 and 8 workers, 60 trials")
    args = parser.parse_args()
    counts = [4, 8] if args.quick else [int(w) for w in args.workers.split(",")]
    n_trials = 60 if args.quick else args.trials
    storages = args.storages.split(",")
    print(f"load: {n_trials} tiny trials per run; {sbs.load()}; {os.cpu_count()} cores")

    rows = []
    with contextlib.ExitStack() as stack:
        url = args.postgres_url
        if "postgresql" in storages and url is None:
            url = stack.enter_context(throwaway_postgres())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="automodel-load-")))
        for storage in storages:
            for w in counts:
                name = f"load-{storage}-{w}"
                r = hammer(url if storage == "postgresql" else None, w, n_trials, tmp, name)
                rows.append([
                    storage, w, r["active_workers"], f"{r['per_minute']:.0f}",
                    f"{r['gap_ms']:.0f}", f"{r['trial_ms']:.0f}", f"{r['wall']:.0f}",
                    f"{r['finished']}/{n_trials}", r["lost"], r["run_twice"],
                    f"{r['surplus_trained']}/{r['surplus']}", len(r["errors"]),
                ])  # fmt: skip
                for e in r["errors"][:3] + r["lost_why"][:3]:
                    print(f"  {name}: {e}")
                print(sbs.table(HEADERS, rows[-1:]), flush=True)
    print()
    print(sbs.table(HEADERS, rows))
    print(f"\n{sbs.load()}")


HEADERS = [
    "storage", "workers", "ran trials", "trials/min", "between trials ms", "trial ms",
    "wall s", "finished/budget", "lost", "run twice", "surplus trained/surplus", "errors",
]  # fmt: skip

if __name__ == "__main__":
    main()
