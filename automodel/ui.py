"""`python -m automodel ui`: the MLflow UI over this machine's tracking store.

Runs `mlflow server` as a child in its own process group, with the lightest settings that
still serve everything a search logs: one worker and no job runner (MLflow starts a huey job
consumer by default; we run no jobs). The URL is printed once the server answers; Ctrl-C
(or SIGTERM) stops the whole group and waits for it, and on Linux the server also gets
SIGTERM if this command is killed outright: no server outlives the command.
The server's own log goes to `<runs_dir>/mlflow-ui.log`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from automodel import tracking
from automodel.config import ConfigError, RunConfig
from automodel.processes import die_with_parent

START_SECONDS = 120.0  # a cold start (imports, first database migration) on a busy machine
STOP_SECONDS = 10.0


def command(settings: RunConfig) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and its environment for the store of `settings`.

    The store's URL travels in the environment, not on the command line, where `ps` would
    show any password in it to every user of the machine.
    """
    s = tracking.store(settings)
    argv = [sys.executable, "-m", "mlflow", "server", "--host", settings.ui.host]
    argv += ["--port", str(settings.ui.port), "--workers", "1"]
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": s.uri,
        "MLFLOW_DEFAULT_ARTIFACT_ROOT": s.artifacts or "",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no huey job runner: we run no jobs
    }
    return argv, env


def serve(settings: RunConfig) -> int:
    """Start the UI, print its URL, and wait until Ctrl-C. Returns the exit code."""
    s = tracking.store(settings)
    if s.is_server:
        raise ConfigError(
            f"tracking.uri is the tracking server {s.shown}: open that address in a browser; "
            "`ui` serves local stores only"
        )
    _check_port(settings.ui.host, settings.ui.port)
    runs_dir = Path(settings.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    log_path = runs_dir / "mlflow-ui.log"
    argv, env = command(settings)
    url = f"http://{_shown_host(settings.ui.host)}:{settings.ui.port}"
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Linux: SIGTERM the server if this command dies, even by SIGKILL. The server runs
            # in its own session so that Ctrl-C reaches only us and we stop it in order; this
            # covers the one case where we cannot (`mlflow server` forwards it to uvicorn).
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        try:
            if not _wait_ready(proc, url):
                print(
                    f"error: the MLflow UI did not start (exit code {proc.poll()}): "
                    f"{_last_line(log_path)} (full log: {log_path})",
                    file=sys.stderr,
                )
                return 1
            print(f"MLflow UI for {s.shown} at {url}  (Ctrl-C stops it)", flush=True)
            code = proc.wait()
            print(f"error: the MLflow UI exited with code {code}; see {log_path}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping the MLflow UI", flush=True)
            return 0
        finally:
            _stop(proc)
            signal.signal(signal.SIGTERM, previous)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({err.strerror}); choose another ui.port or ui.host"
            ) from None


def _wait_ready(proc: subprocess.Popen, url: str) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after a while."""
    if proc.poll() is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)  # a worker the server left behind, if any


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _shown_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"
