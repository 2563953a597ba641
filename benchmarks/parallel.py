"""Parallel workers: trials per minute with workers=1 against workers=2 (or more), side by side.

Each run is `python -m automodel search` in a fresh process on a search space whose trials
all cost the same (a fixed architecture; only the learning rate is searched, no pruning), so
the two settings run the same work. Throughput is counted from the study itself: trials
finished per minute between the moment every worker has finished its first trial and the
last trial's end, so process start-up and first-trial costs are left out
(benchmarks/startup.py measures those).

With `--gpu`, the runs use GPU 0 (`devices=[0]`) and compare `trials_per_device` values
instead, while `nvidia-smi` samples the GPU's utilisation during the trials
(scripts/gpu_check.sh runs that).

    python benchmarks/parallel.py                # workers 1 vs 2, 3 interleaved repeats
    python benchmarks/parallel.py --workers 1,2,4 --repeats 1
    python benchmarks/parallel.py --gpu --workers 1,2,4 --repeats 1
    python benchmarks/parallel.py --quick
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import sidebyside as sbs

SPACES = {
    "digits/mlp": (
        "data=digits",
        "family: mlp\n"
        "params:\n"
        "  depth: 2\n  width: 128\n  activation: relu\n  dropout: 0.1\n"
        "  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n",
    ),
    "mnist1d/cnn": (
        "data=mnist1d",
        "family: cnn\n"
        "params:\n"
        "  blocks: 2\n  channels: 32\n  kernel_size: 5\n  head_width: 64\n"
        "  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n",
    ),
}


def trials_per_minute(
    case: str, parallel: list[str], n_trials: int, epochs: int, tmp: Path, gpu: bool
) -> dict:
    import optuna

    data, space = SPACES[case]
    space_file = tmp / f"{case.replace('/', '-')}.yaml"
    space_file.write_text(space)
    runs = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [
        *(sys.executable, "-m", "automodel", "search", data, f"search_space={space_file}"),
        *(*parallel, f"study.n_trials={n_trials}", f"trainer.max_epochs={epochs}"),
        *("study.pruner=none", "quiet=true", f"runs_dir={runs}", "study.name=bench"),
        "study.stop_when_converged=false",  # throughput over a fixed trial count
    ]
    env = {**os.environ, "PYTHONPATH": str(sbs.ROOT)}
    with (tmp / "smi.csv").open("w") as samples:
        smi = _sample_gpu(samples) if gpu else None
        try:
            proc = subprocess.run(cmd, cwd=sbs.ROOT, env=env, capture_output=True, text=True)
        finally:
            if smi is not None:
                smi.terminate()
                smi.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    from automodel import study as studylib

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name="bench", storage=studylib.open_storage(None, runs / "bench")
    )
    done = [t for t in study.trials if t.state in studylib.FINISHED]
    # Count from the moment every worker has finished its first trial (which pays one-time
    # costs: the first optimizer of a process imports torch._dynamo) to the last trial's end.
    firsts: dict[str, object] = {}
    for t in done:
        owner = t.user_attrs[studylib.WORKER_ATTR]
        firsts[owner] = min(firsts.get(owner, t.datetime_complete), t.datetime_complete)
    first = max(firsts.values())
    last = max(t.datetime_complete for t in done)
    counted = sum(t.datetime_complete > first for t in done)
    out = {"per_min": counted / (last - first).total_seconds() * 60, "trials": len(done)}
    if gpu:
        out["util"] = _mean_utilisation(tmp / "smi.csv", first, last)
    return out


def _sample_gpu(out) -> subprocess.Popen:
    """nvidia-smi writing `timestamp, utilization %` to `out` every 200 ms until terminated."""
    query = "--query-gpu=timestamp,utilization.gpu"
    return subprocess.Popen(
        ["nvidia-smi", "-i", "0", query, "--format=csv,noheader,nounits", "-lms", "200"],
        stdout=out,
        stderr=subprocess.DEVNULL,
    )


def _mean_utilisation(path: Path, first, last) -> float:
    """Mean GPU utilisation (%) over the samples taken while trials ran."""
    from datetime import datetime

    values = []
    for line in path.read_text().splitlines():
        try:
            stamp, util = (f.strip() for f in line.split(","))
            when = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f")
            value = float(util)
        except ValueError:
            continue
        if first <= when <= last:
            values.append(value)
    return sum(values) / len(values) if values else float("nan")


def settings_for(counts: list[int], gpu: bool) -> dict[str, list[str]]:
    """The compared settings, by label. On the CPU a single worker takes every core's thread
    by default; the same worker with one thread shows what the threads alone give."""
    if gpu:
        return {f"trials_per_device={w}": ["devices=[0]", f"trials_per_device={w}"] for w in counts}
    settings = {}
    for w in counts:
        settings[f"workers={w}"] = [f"workers={w}"]
        if w == 1:
            settings["workers=1, 1 thread"] = ["workers=1", "trainer.threads=1"]
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40, help="trials per run")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 12 trials")
    parser.add_argument(
        "--gpu", action="store_true", help="GPU 0; --workers are then trials_per_device values"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.trials = 1, 12
    counts = [int(w) for w in args.workers.split(",")]
    print(
        f"trials per minute, {args.trials} trials of {args.epochs} epochs per run, "
        f"{args.repeats} interleaved repeats; {sbs.load()}\n",
        flush=True,
    )
    settings = settings_for(counts, args.gpu)
    base = [k for k in settings if k.split(",")[0].endswith(f"={counts[0]}")]
    others = [k for k in settings if k not in base]
    headers = ["search", *[f"{k}: trials/min" for k in settings]]
    headers += [f"{o} / {b}" for o in others for b in base]
    if args.gpu:
        headers += [f"GPU util % ({k})" for k in settings]
    rows = []
    with tempfile.TemporaryDirectory(prefix="parallel-") as tmp:
        for case in SPACES:
            trials = args.trials if case == "digits/mlp" else max(4, args.trials // 2)
            runs = {
                k: functools.partial(
                    trials_per_minute, case, overrides, trials, args.epochs, Path(tmp), args.gpu
                )
                for k, overrides in settings.items()
            }
            res = sbs.interleaved(runs, args.repeats)
            med = {k: sbs.median(res[k], "per_min") for k in settings}
            rows.append([case, *med.values(), *[med[o] / med[b] for o in others for b in base]])
            if args.gpu:
                rows[-1] += [sbs.median(res[k], "util") for k in settings]
            print(sbs.table(headers, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(sbs.table(headers, rows))
    where = "GPU 0" if args.gpu else "workers=auto is one per core"
    print(f"\n{os.cpu_count()} cores; {where}. {sbs.load()}")


if __name__ == "__main__":
    main()
