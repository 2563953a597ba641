"""Child processes that end with their parent: workers of a search, the MLflow UI server."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies, even by SIGKILL.

    `parent_pid` is the pid the parent had when it started us: comparing `getppid()` with it
    (not with 1) works when the parent is PID 1 itself, as a container's entrypoint is.
    Raises KeyboardInterrupt when the parent died before the request took effect, so callers
    put this call inside the handling that turns Ctrl-C into a clean exit.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:
        raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Treat SIGTERM (kill, SLURM or Kubernetes preemption) like Ctrl-C: the running trial is
    recorded as failed and the process exits, instead of vanishing with the trial RUNNING."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
