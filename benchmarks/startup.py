"""Start-up: from `python -m automodel search ...` to the first trial's first optimizer step.

Each command runs in a fresh process, as a user would type it. A `sitecustomize` module, put
on the path of the measured processes only, marks the moment the first `optimizer.step()` of
`automodel.train` returns in any of them (the search process or its workers) and changes
nothing else. Side by side, interleaved, with repeats:

- `floor`: `python -c "import torch, optuna"`, what any torch+Optuna tool pays to begin;
- each command below on this checkout, and with `--ref REF` on the code of that git ref
  (exported with `git archive` to a temporary folder), for a before/after.

The mnist1d cache is cold once (its first run generates the data) and warm afterwards; the
table reports warm runs, and the cold run separately.

    python benchmarks/startup.py                 # 5 repeats
    python benchmarks/startup.py --ref HEAD~3    # against an older version
    python benchmarks/startup.py --quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sidebyside as sbs

SITECUSTOMIZE = '''
"""Benchmark hook: write the time of the first optimizer step of automodel.train."""
import importlib.abc, importlib.util, os, sys, time, types

_MARK = os.environ["AUTOMODEL_FIRST_STEP_MARK"]


def _mark():
    try:
        fd = os.open(_MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, repr(time.time()).encode())
    os.close(fd)


def _patch(train):
    make = train.make_optimizer
    marked = []

    def make_optimizer(*args, **kwargs):
        optimizer = make(*args, **kwargs)
        step = optimizer.step

        def first_step(self, *a, **k):
            out = step(*a, **k)
            if not marked:
                marked.append(True)
                _mark()
            return out

        # A bound method, as torch's LR schedulers expect (they wrap `step.__func__`): a plain
        # function here made every trial with a schedule fail, and the mark come from a later one.
        optimizer.step = types.MethodType(first_step, optimizer)
        return optimizer

    train.make_optimizer = make_optimizer


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "automodel.train":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
'''

COMMANDS = {
    "digits/mlp (default)": ["search"],
    "digits/mlp workers=1": ["search", "workers=1"],
    "mnist1d/cnn": ["search", "data=mnist1d"],
}
# Each measured search stops after one short trial.
SHORT = ["study.n_trials=1", "trainer.max_epochs=1", "quiet=true"]


def first_step_seconds(cmd: list[str], code: Path, hook: Path, env: dict) -> float:
    """Seconds from launching `cmd` to the first optimizer step (the mark), or to exit."""
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        mark = Path(tmp) / "mark"
        full_env = {
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join([str(hook), str(code)]),
            "AUTOMODEL_FIRST_STEP_MARK": str(mark),
        }
        args = [a.replace("{tmp}", tmp) for a in cmd]
        start = time.time()
        proc = subprocess.run(args, cwd=code, env=full_env, capture_output=True, text=True)
        end = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        return (float(mark.read_text()) if mark.exists() else end) - start


def export_ref(ref: str, into: Path) -> Path:
    """The tree of git `ref` in a folder, to run an older version side by side."""
    archive = subprocess.run(
        ["git", "archive", ref], cwd=sbs.ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref", help="also measure the code of this git ref")
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        tmp = Path(tmp)
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        cache = tmp / "cache"  # a private mnist1d cache: cold once, then warm
        env = {"AUTOMODEL_CACHE": str(cache)}
        versions = {"this checkout": sbs.ROOT}
        if args.ref:
            versions[args.ref] = export_ref(args.ref, Path(tempfile.mkdtemp(dir=tmp)))
        python = [sys.executable, "-m", "automodel"]
        runs = {"floor": lambda: {"s": _floor(hook, env)}}
        for label, code in versions.items():
            for name, cmd in COMMANDS.items():
                full = [*python, *cmd, *SHORT, "runs_dir={tmp}/runs"]
                runs[f"{name} [{label}]"] = lambda c=full, code=code: {
                    "s": first_step_seconds(c, code, hook, env)
                }
        print(f"start-up to the first step, {args.repeats} interleaved repeats; {sbs.load()}\n")
        cold = first_step_seconds(
            [*python, *COMMANDS["mnist1d/cnn"], *SHORT, "runs_dir={tmp}/runs"],
            sbs.ROOT,
            hook,
            env,
        )
        res = sbs.interleaved(runs, args.repeats)
    rows = [[name, sbs.median(r, "s"), sbs.spread(r, "s")] for name, r in res.items()]
    print(sbs.table(["command", "median s", "range s"], rows))
    print(f"\nmnist1d/cnn with a cold data cache (first run ever): {cold:.2f} s")
    print("commands: python -m automodel " + " | ".join(" ".join(c) for c in COMMANDS.values()))
    print(f"each with {' '.join(SHORT)} runs_dir=<tmp>; floor: python -c 'import torch, optuna'")
    print(sbs.load())


def _floor(hook: Path, env: dict) -> float:
    return first_step_seconds([sys.executable, "-c", "import torch, optuna"], sbs.ROOT, hook, env)


if __name__ == "__main__":
    main()
