"""Worker processes: one per device slot, all asking the same study for trials.

Each worker is a long-lived process (it imports torch once, not per trial) pinned to its
slot: `CUDA_VISIBLE_DEVICES=<gpu>` (so it trains on cuda:0) or, on the CPU, an equal share of
the cores, because oversubscribed threads slow every worker down (benchmarks/parallel.py
measures workers against threads). Workers are asynchronous (no batches), share the budget
through the study, and seed their samplers differently. The search process itself works the
first slot, so the first trial starts without waiting for a new process to import torch.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import contextmanager

from automodel.config import ConfigError, mask_url
from automodel.devices import Slot
from automodel.errors import StorageError, interrupted, lost_database, reason
from automodel.processes import die_with_parent, stop_on_sigterm
from automodel.search.plan import Plan
from automodel.search.trial import SearchStopped, run_slot

# Seconds a worker gets after Ctrl-C to record its trial as failed and exit.
STOP_GRACE = 15


@contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_parallel(
    plan: Plan, slots: list[Slot], deadline: float, start: float, run_here: Callable[[], None]
) -> list[str]:
    """Run the first slot in this process (`run_here`) and one worker process per other slot,
    until the budget is met; returns problems to report.

    On Ctrl-C every worker records its trial as failed and exits; stragglers are killed after
    STOP_GRACE seconds, then KeyboardInterrupt propagates to the caller. An error of this
    process's slot is raised once the workers have finished.
    """
    procs = _start(plan, slots, deadline, start)
    error = None
    try:
        try:
            run_here()
        except ConfigError as err:  # a setting all share (a tracking store that will not open)
            error = err
            _stop(procs)
        except Exception as err:  # the others finish their trials; report it afterwards
            error = err
        pending = list(procs)
        while pending:  # reap each worker as soon as it exits
            ready = multiprocessing.connection.wait([p.sentinel for p in pending])
            for proc in [p for p in pending if p.sentinel in ready]:
                proc.join()
                pending.remove(proc)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    if error is not None:
        raise error
    return [
        f"worker {index} ({slots[index].label}) exited with code {proc.exitcode}"
        for index, proc in enumerate(procs, start=1)
        if proc.exitcode not in (0, None)
    ]


def _start(plan: Plan, slots: list[Slot], deadline: float, start: float) -> list:
    """One started worker process per slot after the first."""
    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's threads and CUDA state
    procs = []
    for index, slot in enumerate(slots[1:], start=1):
        # Set before start(): the child reads them when torch and CUDA initialise.
        with _environ(slot.environ()):
            proc = ctx.Process(
                target=worker_main,
                args=(plan, slot, index, deadline, start, os.getpid()),
                name=f"automodel-worker-{index}",
            )
            proc.start()
        procs.append(proc)
    return procs


def _stop(procs: list) -> None:
    """SIGTERM the workers (they treat it like Ctrl-C and record their trial as failed), then
    kill those still alive after STOP_GRACE seconds.

    Ctrl-C in a terminal reaches the workers too, a SIGINT sent to this process alone does not.
    """
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=STOP_GRACE)
    for proc in procs:
        if proc.is_alive():
            proc.kill()


def worker_main(
    plan: Plan, slot: Slot, index: int, deadline: float, start: float, parent_pid: int
) -> None:
    """Entry point of a worker process: attach to the study and run trials.

    `parent_pid` is the search process's pid: a worker outlives it by at most a signal, even
    when the search is PID 1 (a container's entrypoint).
    """
    stop_on_sigterm()
    try:
        die_with_parent(parent_pid)  # raises KeyboardInterrupt if the parent is already gone
        run_slot(plan, slot, index, deadline, start)
    except KeyboardInterrupt:
        sys.exit(130)
    except SearchStopped as err:
        print(f"worker {index}: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except ConfigError as err:  # one line, as the search process says it
        print(f"worker {index}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except StorageError as err:
        print(f"worker {index}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as err:
        if interrupted(err):  # stopped while Optuna recorded the trial: a stop all the same
            sys.exit(130)
        if lost_database(err) is not None:  # the search process says it too, in one line
            lost = mask_url(reason(lost_database(err)))
            print(f"worker {index}: error: lost the study's database ({lost})", file=sys.stderr)
            sys.exit(1)
        print(f"worker {index} crashed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
