"""What MLflow tracking costs a trial: logging time per trial against training time per trial.

    python benchmarks/tracking.py                       # 20 trials of digits, 10 epochs each
    python benchmarks/tracking.py --trials 40 --epochs 5 --data synthetic

Runs the real trial loop (`search.run_trials`) twice on the same seeds, without and with a
Tracker writing to a fresh sqlite store, and prints per trial:

- train ms:     Optuna's trial duration (the work itself), tracking off and on
- blocking ms:  time the trial's thread spent inside Tracker calls (trial_started, every
                epoch, trial_finished): what tracking adds to a trial. Target: < 50 ms
- writer ms:    time the background thread spent writing to MLflow (overlaps training),
                and its CPU part: what it takes from training when cores are scarce
- loop ms:      wall time of the whole loop divided by trials, off and on
- flush ms:     waiting at close() for the last queued writes (once per search)

Not a timed test: figures depend on the machine and its load; read them, don't assert them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from automodel import config, search, tracking


def loop(runs_dir: Path, args, tracked: bool) -> dict:
    overrides = [
        f"data={args.data}",
        f"study.n_trials={args.trials}",
        f"trainer.max_epochs={args.epochs}",
        "study.pruner=none",  # every trial runs every epoch: the most logging per trial
        "study.stop_when_converged=false",  # the same trial count with and without
        "trainer.threads=1",
        "quiet=true",
        f"tracking.enabled={str(tracked).lower()}",
        f"runs_dir={runs_dir}",
    ]
    run = config.to_run_config(config.compose(overrides))
    plan = search.prepare(run)
    search.quiet_optuna()
    study = search.open_study(plan)
    search.write_run_files(plan)
    torch.set_num_threads(1)
    tracker = None
    if tracked:
        tracker = tracking.Tracker(run)
        tracker.start_study(plan, study)
    started = time.perf_counter()
    search.run_trials(plan, study, torch.device("cpu"), tracker)
    wall = time.perf_counter() - started
    out = {"loop": wall, "train": sum(t.duration.total_seconds() for t in study.trials)}
    if tracker is not None:
        started = time.perf_counter()
        tracker.close()
        out["flush"] = time.perf_counter() - started
        out["blocking"] = tracker.seconds_in_calls
        out["writer"], out["writer_cpu"] = tracker.writer_seconds()
    out["n"] = len(study.trials)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", default="digits", choices=["digits", "mnist1d", "synthetic"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        off = loop(Path(tmp) / "off", args, tracked=False)
        on = loop(Path(tmp) / "on", args, tracked=True)
    n = on["n"]
    ms = 1000.0 / n
    print(f"{n} trials x {args.epochs} epochs of {args.data}, 1 thread, sqlite store")
    print(f"  train ms/trial     off {off['train'] * ms:8.1f}   on {on['train'] * ms:8.1f}")
    print(f"  loop ms/trial      off {off['loop'] * ms:8.1f}   on {on['loop'] * ms:8.1f}")
    print(f"  blocking ms/trial  {on['blocking'] * ms:8.2f}   (target < 50)")
    print(
        f"  writer ms/trial    {on['writer'] * ms:8.1f}   (background thread; "
        f"{on['writer_cpu'] * ms:.1f} ms of it on the CPU)"
    )
    print(f"  flush at close     {on['flush'] * 1000:8.1f} ms (once per search)")


if __name__ == "__main__":
    main()
