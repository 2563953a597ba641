"""The MLflow backend store: where runs go, refusing one that cannot work, opening it.

    store(settings)          sqlite:///<runs_dir>/mlflow.db unless tracking.uri says otherwise
    check_store(store)       refuse, quickly and without mlflow, a store that cannot work
    connect(store)           an MlflowClient (a new sqlite database is created here, locked)
    open_experiment(...)     the experiment's id, created on first use

Nothing here imports mlflow until `connect`: `tracking.enabled=false` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from automodel import config, errors
from automodel.config import ConfigError, RunConfig
from automodel.tracking.records import KIND, KIND_TAG, mask

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the parent-run race check still holds
    fcntl = None


@dataclass(frozen=True)
class Store:
    """Where runs go. `uri` may hold a password: show `shown`, never `uri`."""

    uri: str
    artifacts: str | None  # artifact root of a new experiment; None: the tracking server decides

    @property
    def shown(self) -> str:
        return config.mask_url(self.uri)

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    @property
    def lockable(self) -> bool:
        """A sqlite file on this host: processes serialise on a lock file next to it."""
        return self.uri.startswith("sqlite:///") and fcntl is not None


def store(settings: RunConfig) -> Store:
    """The tracking store of `settings`: a server, a database, or sqlite under runs_dir.

    Artifacts of a database store live next to it in `<runs_dir>/mlartifacts` (absolute, so the
    UI and other processes find them from any working directory).
    """
    root = Path(settings.runs_dir).resolve()
    uri = settings.tracking.uri or f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith(("http://", "https://")):
        return Store(uri, None)
    return Store(uri, str(root / "mlartifacts"))


def storage_tag(settings: RunConfig) -> str:
    """The Optuna storage as tagged on the parent run: masked URL or absolute journal path."""
    journal = settings.study_dir / "study.journal"
    return config.mask_url(settings.study.storage) or str(journal.resolve())


def check_store(s: Store) -> None:
    """Refuse, quickly and without mlflow, a store that cannot work: a server that does not
    answer, a file that is not a SQLite database, a database driver that is not installed.

    Raises ConfigError. A database that refuses the connection shows only once it is opened.
    """
    if s.is_server:
        _probe_server(s)
    elif s.uri.startswith("sqlite:///"):
        path = Path(s.uri[len("sqlite:///") :].split("?")[0])
        if path.is_dir():
            raise unusable(s, f"{path} is a folder")
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise unusable(s, f"{path} is not a SQLite database")
    elif not s.uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        try:
            make_url(s.uri).get_dialect().import_dbapi()
        except Exception as err:  # the driver is missing; a malformed URL
            raise unusable(s, errors.reason(err)) from None


def unusable(s: Store, why: str) -> ConfigError:
    """The one-line error of a store that cannot be used, password masked."""
    return ConfigError(
        f"cannot use tracking.uri {s.shown!r}: {mask(why)} "
        "(or turn MLflow off with tracking.enabled=false)"
    )


def _probe_server(s: Store) -> None:
    # MLflow's REST client retries an unreachable server for minutes; ask once, briefly.
    url = s.uri.rstrip("/") + "/health"
    try:
        urllib.request.urlopen(_without_credentials(url), timeout=5).close()
    except (OSError, urllib.error.URLError) as err:
        raise ConfigError(
            f"tracking.uri {s.shown!r} does not answer ({mask(errors.reason(err))}); "
            "start the server, fix the URL, or use tracking.enabled=false"
        ) from None


def _without_credentials(url: str) -> str:
    """The URL without user:password@ (urllib cannot send them that way; /health needs none)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def connect(s: Store):
    """An MlflowClient on the store (tracking and registry): the first import of mlflow."""
    from mlflow import MlflowClient

    # After the import, which sets mlflow's own levels: its INFO lines (database migrations,
    # artifact downloads) would drown our progress.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A new sqlite store is created and migrated here: hold the lock (see `store_lock`).
    with store_lock(s):
        return MlflowClient(tracking_uri=s.uri, registry_uri=s.uri)


def open_experiment(client, s: Store, settings: RunConfig) -> str:
    """The id of experiment `tracking.experiment`, created (tagged for the UI) on first use.

    Raises ConfigError for an experiment deleted in the store.
    """
    from mlflow.exceptions import MlflowException

    name = settings.tracking.experiment
    if s.artifacts is not None:
        Path(settings.runs_dir).mkdir(parents=True, exist_ok=True)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            kind = {KIND_TAG: KIND}
            return client.create_experiment(name, artifact_location=s.artifacts, tags=kind)
        except MlflowException:  # another process created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise ConfigError(
            f"tracking.experiment {name!r} is deleted in {s.shown}; restore it in the "
            "MLflow UI or choose another tracking.experiment"
        )
    if KIND_TAG not in found.tags:  # a kind chosen in the UI stays as it is
        client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
    return found.experiment_id


@contextlib.contextmanager
def store_lock(s: Store):
    """Hold an exclusive lock on a sqlite store's `.lock` file (no-op for other stores).

    MLflow creates and migrates a new sqlite database on first use; two processes doing it at
    once corrupt the migration ("table _alembic_tmp_... already exists"). Holding the lock
    while opening the store and the parent run also keeps processes on one host from racing
    to create the parent at all.
    """
    if not s.lockable:
        yield
        return
    path = Path(s.uri[len("sqlite:///") :].split("?")[0] + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def quiet_mlflow_env() -> None:
    """Environment settings for mlflow: set before it is imported, on the caller's thread."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run ... at <tracking URL>" when a run ends on a server: with the
    # URL's password in clear, and on stdout, which quiet=true keeps for summary.json alone.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
