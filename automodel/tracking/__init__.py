"""MLflow tracking: a parent run per study, a child run per trial, the best model registered.

    store(run)                   where runs go: sqlite:///<runs_dir>/mlflow.db unless tracking.uri
    Tracker(run)                 cheap: nothing imported or opened yet
      .open(plan, study)         start_study on the writer thread; .open() attach there (workers)
      .check() / .wait()         raise what opening met / wait for the parent run's id
      .start_study(plan, study)  find or create the study's parent run, log its settings, end
                                 child runs that a killed process left RUNNING
      .attach()                  a worker process: find the same parent (never a second one)
      .reconcile()               merge the duplicate parents a race between hosts left
      .trial_started / .epoch / .trial_finished    one child run per trial, its curves live
      .finish_study(...)         parent metrics, summary, plots, the best model and its version
      .close(error)              flush; end what this process left open

Only this module imports mlflow, and only once a Tracker opens the store: `tracking.enabled=false`
never loads it. Every write names its run id through one `MlflowClient` (never the fluent
active-run stack), so concurrent trials, threads and processes cannot mix runs up. Trial
writes go through a background thread (`writer.Writer`) that sends what queued up within
half a second as one `log_batch` per run: a trial pays for appending to a queue, and a user
watching the UI sees each epoch's point moments after the epoch ends.

Opening the store (importing mlflow, creating and migrating a new sqlite database, the parent
run) takes 2-7 s on a small machine: `open` does it on that same thread, first, so the first
trial trains meanwhile and its writes wait in the queue behind it. A store that cannot work
is refused before any trial where that is cheap to see (`check_store`); otherwise the error
stops the search at the end of the first epoch after it, as a ConfigError (exit code 2).

Every URL that reaches a param, a tag, an artifact or the console goes through
`config.mask_url` first.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from automodel import config, outputs, train
from automodel import study as studylib
from automodel.config import ConfigError, RunConfig
from automodel.tracking import plots, writer

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the parent-run race check still holds
    fcntl = None

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child run under its parent
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the run's description in the UI
ROLE_TAG = "automodel.role"  # "study" (parent) or "trial" (child)
STUDY_TAG = "automodel.study"
STORAGE_TAG = "automodel.storage"  # the Optuna storage, masked: same name + storage = same study
TRIAL_TAG = "automodel.trial"
STATE_TAG = "automodel.state"  # running, complete, pruned, failed
REASON_TAG = "automodel.fail_reason"
STOP_TAG = "automodel.stop_reason"  # on the parent: why the last invocation broke off
VALUE_TAG = "automodel.val"  # on a model version: the validation value it was registered with
SCORE_TAG = "automodel.score"  # the same value as "higher is better" (rmse negated)

# Optuna's final state -> (our state tag, MLflow run status)
_ENDINGS = {
    TrialState.COMPLETE: ("complete", "FINISHED"),
    TrialState.PRUNED: ("pruned", "FINISHED"),
    TrialState.FAIL: ("failed", "FAILED"),
}
# Config keys that say nothing about a study's result: not logged as parent params.
_NOT_SETTINGS = ("quiet", "trial", "ui")
_BATCH = 100  # MLflow accepts at most 100 params and 100 tags per log_batch
_FLUSH_SECONDS = writer.FLUSH_SECONDS
_SETTLE_SECONDS = 1.0  # a new parent run on a server: wait before checking for a racer
# `open` waits for the first epoch to end, but no longer than this, before opening the store.
_OPEN_DELAY_SECONDS = 10.0


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


def store(run: RunConfig) -> Store:
    """The tracking store of `run`: a server, a database, or sqlite under runs_dir by default.

    Artifacts of a database store live next to it in `<runs_dir>/mlartifacts` (absolute, so the
    UI and other processes find them from any working directory).
    """
    root = Path(run.runs_dir).resolve()
    uri = run.tracking.uri or f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith(("http://", "https://")):
        return Store(uri, None)
    return Store(uri, str(root / "mlartifacts"))


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
            raise _unusable(s, f"{path} is a folder")
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise _unusable(s, f"{path} is not a SQLite database")
    elif not s.uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        try:
            make_url(s.uri).get_dialect().import_dbapi()
        except Exception as err:  # the driver is missing; a malformed URL
            raise _unusable(s, _reason(err)) from None


def _probe_server(s: Store) -> None:
    # MLflow's REST client retries an unreachable server for minutes; ask once, briefly.
    url = s.uri.rstrip("/") + "/health"
    try:
        urllib.request.urlopen(_without_credentials(url), timeout=5).close()
    except (OSError, urllib.error.URLError) as err:
        raise ConfigError(
            f"tracking.uri {s.shown!r} does not answer ({_mask(_reason(err))}); "
            "start the server, fix the URL, or use tracking.enabled=false"
        ) from None


def _unusable(s: Store, reason: str) -> ConfigError:
    return ConfigError(
        f"cannot use tracking.uri {s.shown!r}: {_mask(reason)} "
        "(or turn MLflow off with tracking.enabled=false)"
    )


def storage_tag(run: RunConfig) -> str:
    """The Optuna storage as tagged on the parent run: masked URL or absolute journal path."""
    return config.mask_url(run.study.storage) or str((run.study_dir / "study.journal").resolve())


class Tracker:
    """One process's view of a study in MLflow: the parent run's id and a writer thread.

    Making one is cheap: mlflow is imported and the store opened by `open` (in the background)
    or by the first call that needs them (`start_study`, `attach`).
    """

    def __init__(self, run: RunConfig):
        _quiet_mlflow_env()  # here, not on the writer thread: it sets environment variables
        self.run = run
        self.store = store(run)
        self.storage = storage_tag(run)
        self.client = None  # an MlflowClient once the store is open
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.seconds_in_calls = 0.0  # time the trial thread spent in trial_* and epoch calls
        self._owner = False  # start_study was called here: this process ends the parent
        self._finished = False
        self._closed = False
        self._checked = False  # the store passed check_store
        self._warned: set[str] = set()
        self._attach_lock = threading.Lock()
        self._opened = threading.Event()  # set: no open() in flight
        self._opened.set()
        self._go = threading.Event()  # set: open() may start (the first trial is under way)
        self._error: ConfigError | None = None  # what open() met in the background
        self._writer = writer.Writer(_Sink(self), self._warn)
        atexit.register(self.close)

    # -- the study ---------------------------------------------------------------------------

    def open(self, plan=None, study: optuna.Study | None = None, on_open=None) -> None:
        """Open the store and the parent run on the writer thread, so trials need not wait.

        With `plan` and `study`: `start_study` (the search process); without: `attach` (a
        worker). What can be checked cheaply is checked here, before returning (`check_store`:
        raises ConfigError). The rest (importing mlflow, creating or migrating the database, the
        parent run) takes seconds: trials start meanwhile and their writes queue behind it, so
        none is lost. If it fails, trial calls and `wait` raise its ConfigError (`check`), and
        nothing is written. `on_open(self)` runs once the parent run is known.

        The opening starts once the first epoch has ended (or a trial, or after at most
        _OPEN_DELAY_SECONDS): it is seconds of Python, and in a thread it would hold the
        interpreter lock half the time while the first trial starts up, which is Python too
        (torch imports its compiler stack at the first optimizer), gaining nothing.
        """
        self._check_store()
        # Trials that end from now on have a live writer that ends their runs: only those
        # finished before this search began can have runs a killed process left RUNNING.
        finished = (
            None
            if study is None
            else {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        )
        self._opened.clear()
        self._writer.put(("call", lambda: self._open(plan, study, finished, on_open)))

    def _open(self, plan, study, finished: set[int] | None, on_open) -> None:
        self._go.wait(_OPEN_DELAY_SECONDS)
        try:
            try:
                if plan is None:
                    self.attach()
                else:
                    self.start_study(plan, study, finished)
            except Exception as err:
                self._error = err if isinstance(err, ConfigError) else self._unusable(err)
                raise self._error from None
            if on_open is not None:
                on_open(self)  # before `wait` returns: its line comes before the summary
        finally:
            self._opened.set()

    def check(self) -> None:
        """Raise the ConfigError that opening the store in the background met, if any."""
        if self._error is not None:
            raise ConfigError(str(self._error)) from None

    def wait(self) -> str:
        """The parent run's id, once `open` is done. Raises its ConfigError if it failed."""
        self._go.set()
        self._opened.wait()
        self.check()
        return self.attach()

    def _unusable(self, err: BaseException) -> ConfigError:
        return _unusable(self.store, _reason(err))

    def _check_store(self) -> None:
        if not self._checked:
            check_store(self.store)
            self._checked = True

    def start_study(self, plan, study: optuna.Study, finished: set[int] | None = None) -> str:
        """Open the study's parent run (a rerun reopens the same one) and log its settings.

        Called once by the process that starts a search (`open` calls it in the background).
        Child runs left RUNNING by a killed process are ended here, from the state Optuna
        recorded (of the trials in `finished`, if given). Returns the parent run id. Raises
        ConfigError when the store cannot be reached.
        """
        self.attach()
        self._owner = True
        pid = self.reconcile()
        self.client.update_run(pid, status="RUNNING")
        self._log_settings(plan)
        study_dir = plan.run.study_dir
        for name in ("config.yaml", "search_space.yaml"):
            if (study_dir / name).is_file():
                self.client.log_artifact(pid, str(study_dir / name))
        self.end_stale_children(study, finished)
        return pid

    def attach(self, study_name: str | None = None) -> str:
        """Find the study's parent run, creating it only if no process has yet. Returns its id.

        Safe when processes race: on a sqlite store a file lock serialises them; on a server
        each creates, waits a second for a racer's run to land, searches again and keeps the
        oldest, deleting its own if it lost. A racer slower than that second can still leave
        two parents for a moment; `reconcile` (at the start and the end of every search)
        merges them.
        """
        if self.parent_id is not None:
            return self.parent_id
        name = study_name or self.run.study.name
        with self._attach_lock:  # concurrent trials of this process: one of them attaches
            if self.parent_id is not None:
                return self.parent_id
            try:
                self._check_store()
                self._connect()
                with _store_lock(self.store):
                    self.experiment_id = self._experiment()
                    self.parent_id = self._find_or_create_parent(name)
            except ConfigError:
                raise
            except Exception as err:
                raise self._unusable(err) from None
        return self.parent_id

    def _connect(self) -> None:
        if self.client is not None:
            return
        from mlflow import MlflowClient

        _quiet_mlflow_logs()  # after the import, which sets mlflow's own levels
        # A new sqlite store is created and migrated here: hold the lock (see _store_lock).
        with _store_lock(self.store):
            self.client = MlflowClient(tracking_uri=self.store.uri, registry_uri=self.store.uri)

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.run.tracking.experiment
        if self.store.artifacts is not None:
            Path(self.run.runs_dir).mkdir(parents=True, exist_ok=True)
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=self.store.artifacts)
            except MlflowException:  # another process created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise ConfigError(
                f"tracking.experiment {name!r} is deleted in {self.store.shown}; restore it in the "
                "MLflow UI or choose another tracking.experiment"
            )
        return found.experiment_id

    def _parents(self, name: str) -> list:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'study'",
            max_results=1000,
        )
        # Compare the storage here rather than in the filter: a path may hold quotes.
        ours = [r for r in runs if r.data.tags.get(STORAGE_TAG) == self.storage]
        return sorted(ours, key=lambda r: (r.info.start_time, r.info.run_id))

    def _find_or_create_parent(self, name: str) -> str:
        found = self._parents(name)
        if found:
            return found[0].info.run_id
        tags = {
            ROLE_TAG: "study",
            STUDY_TAG: name,
            STORAGE_TAG: self.storage,
            NOTE_TAG: (
                f"automodel study `{name}` (Optuna storage `{self.storage}`). Each nested run is "
                "one trial; the best model, plots and summary.json are artifacts of this run."
            ),
        }
        mine = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        if not _lockable(self.store):
            # A racer may have stamped its run earlier but not committed it yet: let it land.
            time.sleep(_SETTLE_SECONDS)
        oldest = self._parents(name)[0].info.run_id
        if oldest != mine:  # lost a race with another process: use its parent
            self.client.delete_run(mine)
        return oldest

    def reconcile(self) -> str:
        """Keep the oldest parent of the study, delete the others, re-parent their trials.

        Child runs record their parent in a tag, which can change: so whatever a race did,
        the study ends up under one parent. Returns (and from now on uses) that parent's id.
        """
        self.attach()
        name = self.run.study.name
        parents = self._parents(name)
        if not parents:
            return self.parent_id
        keep = parents[0].info.run_id
        for duplicate in parents[1:]:
            self.client.delete_run(duplicate.info.run_id)
        strays = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'trial' "
            f"and tags.`{PARENT_TAG}` != '{keep}'",
            max_results=10000,
        )
        for r in strays:
            if r.data.tags.get(STORAGE_TAG) == self.storage:
                self.client.set_tag(r.info.run_id, PARENT_TAG, keep)
        self.parent_id = keep
        return keep

    def _log_settings(self, plan) -> None:
        """Settings as params; a rerun that changes one records the new value as a tag.

        MLflow params cannot change once logged, so the params are the settings the study
        started with and `latest.<key>` tags hold what a later invocation changed.
        """
        from mlflow.entities import Param, RunTag

        settings = {
            k: v
            for k, v in _flatten(config.as_dict(plan.run)).items()
            if k.split(".")[0] not in _NOT_SETTINGS
        }
        settings["family"] = plan.space.family
        logged = self.client.get_run(self.parent_id).data
        params = [Param(k, v) for k, v in settings.items() if k not in logged.params]
        changed = {k: v for k, v in settings.items() if logged.params.get(k, v) != v}
        tags = [RunTag(f"latest.{k}", v) for k, v in changed.items()]
        tags += [
            RunTag("automodel.family", plan.space.family),
            RunTag("automodel.data", plan.run.data.name),
        ]
        _log_batch(self.client, self.parent_id, params=params, tags=tags)
        for key in logged.tags:
            stale = key.startswith("latest.") and key[len("latest.") :] not in changed
            if stale or key == STOP_TAG:  # a rerun: the previous stop is history
                self.client.delete_tag(self.parent_id, key)

    def end_stale_children(
        self, study: optuna.Study, finished: set[int] | None = None
    ) -> list[int]:
        """End child runs left RUNNING whose trial Optuna shows as finished (or gone).

        A process killed mid-trial cannot end its run; once `study.fail_dead_local_trials`
        (or the RDB heartbeat) has failed the trial, its run ends FAILED with the reason.
        Runs of trials still RUNNING in Optuna belong to live workers and are left alone, and
        so are those of trials not in `finished` (when given): a live writer ends them.
        Returns the trial numbers whose runs were ended.
        """
        running = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}' and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        ended = []
        for r in running:
            number = int(r.data.tags.get(TRIAL_TAG, "-1"))
            trial = trials.get(number)
            live = finished is not None and number not in finished
            if trial is not None and (live or not trial.state.is_finished()):
                continue
            if trial is None:
                _end_run(self.client, r.info.run_id, "KILLED", None, {STATE_TAG: "failed"}, [])
            else:
                _end_run(self.client, r.info.run_id, *_ending(trial))
            ended.append(number)
        return sorted(ended)

    # -- trials (called from the trial's thread: queue only) -----------------------------------

    def trial_started(self, number: int, params: dict, device: str, n_parameters: int) -> None:
        """Open the trial's child run: every param, device, worker, parameter count.

        Like `epoch`, raises the ConfigError of a store that failed to open (`check`).
        """
        started = time.perf_counter()
        self.check()
        now = _now_ms()
        tags = self._trial_tags(number, device)
        metrics = [("n_parameters", float(n_parameters), now, 0)]
        self._writer.put(("start", number, self._run_spec(number, now, params, tags), metrics))
        self.seconds_in_calls += time.perf_counter() - started

    def epoch(self, number: int, epoch: train.Epoch) -> None:
        """Queue one epoch's metrics at step=epoch; the writer sends them within moments."""
        started = time.perf_counter()
        self.check()  # a store that failed to open stops the search at the epoch's end
        self._go.set()
        now = _now_ms()
        metrics = [
            *((f"val_{name}", value, now, epoch.epoch) for name, value in epoch.val.items()),
            ("val_loss", epoch.val_loss, now, epoch.epoch),
            ("train_loss", epoch.train_loss, now, epoch.epoch),
            ("lr", epoch.lr, now, epoch.epoch),
            ("epoch_seconds", epoch.seconds, now, epoch.epoch),
        ]
        self._writer.put(("metrics", number, metrics))
        self.seconds_in_calls += time.perf_counter() - started

    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        """End the trial's child run with Optuna's verdict (opening it first if it never was).

        Called as a study callback: a store that failed to open stops the search here.
        """
        started = time.perf_counter()
        self.check()
        self._go.set()
        start_ms = _ms(trial.datetime_start) or _now_ms()
        device = str(trial.user_attrs.get("device", ""))
        spec = self._run_spec(
            trial.number, start_ms, trial.params, self._trial_tags(trial.number, device)
        )
        self._writer.put(("end", trial.number, spec, _ending(trial)))
        self.seconds_in_calls += time.perf_counter() - started

    def _trial_tags(self, number: int, device: str) -> dict:
        tags = {  # and PARENT_TAG: the sink adds it when it creates the run
            ROLE_TAG: "trial",
            STUDY_TAG: self.run.study.name,
            STORAGE_TAG: self.storage,
            TRIAL_TAG: str(number),
            STATE_TAG: "running",
            "automodel.worker": studylib.worker_id(),
        }
        if device:
            tags["automodel.device"] = device
        return tags

    def _run_spec(self, number: int, start_ms: int, params: dict, tags: dict) -> dict:
        return {  # the sink adds the experiment: it may not be known yet
            "run_name": f"trial-{number}",
            "start_time": start_ms,
            "params": {k: _text(v) for k, v in params.items()},
            "tags": tags,
        }

    # -- the end of a search -------------------------------------------------------------------

    def finish_study(
        self, plan, study: optuna.Study, summary: dict, model: torch.nn.Module, checkpoint: dict
    ) -> None:
        """Log the result on the parent run and end it FINISHED.

        Metrics (best validation and test values, counts) are logged at step = trials in the
        study, so reruns draw the study's progress. A part that fails (a plot, the registry) is
        a warning: the search's own outputs are already on disk. `checkpoint` (the best trial's,
        as saved in best_model.pt) is not needed yet: the model is logged from `model`.
        """
        self.wait()
        self._writer.flush(_FLUSH_SECONDS)
        self._try("merging duplicate parent runs", self.reconcile)
        pid, study_dir = self.parent_id, plan.run.study_dir
        if summary.get("mlflow_run_id") not in (None, pid):  # a race was merged meanwhile
            summary["mlflow_run_id"] = pid
            outputs.write_json(study_dir / "summary.json", summary)
        self._try("logging the result", self._log_result, summary, len(study.trials))
        for name in ("summary.json", "best_params.json"):
            if (study_dir / name).is_file():
                self._try(f"logging {name}", self.client.log_artifact, pid, str(study_dir / name))
        self._try("logging plots", self._log_plots, plan, study, model, summary)
        self._try("logging the best model", self._log_model, plan, model, summary)
        self._try("ending the study's run", self.client.set_terminated, pid, "FINISHED")
        self._finished = True

    def log_export(self, folder: Path) -> None:
        """Put an exported model folder (best_model.py and its files) on the parent run."""
        self.wait()
        self._try(
            "logging the export", self.client.log_artifacts, self.parent_id, str(folder), "export"
        )

    def _log_result(self, summary: dict, step: int) -> None:
        from mlflow.entities import Metric, RunTag

        now = _now_ms()
        values = {f"best_val_{k}": v for k, v in summary["val"].items()}
        values |= {f"test_{k}": v for k, v in summary["test"].items()}
        values |= {f"n_{k}": v for k, v in summary["counts"].items()}
        values |= {"best_trial": summary["best_trial"], "wall_seconds": summary["wall_seconds"]}
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        tags = [RunTag(f"best.{k}", _text(v)) for k, v in summary["params"].items()]
        tags.append(RunTag("automodel.best_trial", str(summary["best_trial"])))
        if summary.get("command"):
            tags.append(RunTag("automodel.command", _mask(summary["command"])))
        _log_batch(self.client, self.parent_id, metrics=metrics, tags=tags)

    def _log_plots(self, plan, study: optuna.Study, model: torch.nn.Module, summary: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "plots"
            _, skipped = plots.study_plots(study, out)
            spec = plan.data.spec
            # A confusion matrix needs classes, and test tensors to predict in one go.
            if spec.task == "classification" and not plan.data.lazy:
                device = next(model.parameters()).device
                logits = train.predict_logits(
                    model, plan.data.x_test.to(device), plan.run.trainer.eval_batch_size
                )
                plots.confusion_matrix(
                    plan.data.y_test,
                    logits.argmax(1),
                    list(spec.classes),
                    out,
                    f"trial {summary['best_trial']} on the test split: "
                    f"{spec.metric} {summary['test'][spec.metric]:.4f}",
                )
            self.client.log_artifacts(self.parent_id, str(out), "plots")
        if skipped:
            text = "; ".join(f"{k}: {v}" for k, v in skipped.items())
            self.client.set_tag(self.parent_id, "automodel.plots_skipped", text[:5000])

    def registered_name(self) -> str:
        return self.run.tracking.registered_model or self.run.study.name

    def _log_model(self, plan, model: torch.nn.Module, summary: dict) -> None:
        """Log the best model and register it, unless this study already registered as good.

        The registered model takes raw features (it normalises with the training split's
        statistics) and returns class probabilities, so `mlflow models predict` needs nothing
        from automodel.
        """
        import mlflow
        from mlflow.models import infer_signature

        metric = plan.data.spec.metric
        if plan.data.lazy:
            self.client.set_tag(
                self.parent_id,
                "automodel.model_not_logged",
                "data read from files: use the export folder (best_model.py) to serve it",
            )
            return
        # Compare as "higher is better": rmse and the like are negated.
        sign = 1.0 if plan.data.spec.direction == "maximize" else -1.0
        value = sign * float(summary["val"][metric])
        name = self.registered_name()
        if self._registered_value(name) >= value:
            return  # the best did not improve: no new version
        served = Served(copy.deepcopy(model), plan.data.spec).cpu().eval()
        example = served.raw(plan.data.x_test[:5].cpu()).numpy()
        with torch.inference_mode():
            output = served(torch.from_numpy(example)).numpy()
        trial = str(summary["best_trial"])
        logged = self.client.create_logged_model(
            self.experiment_id,
            name="best_model",
            source_run_id=self.parent_id,
            tags={STUDY_TAG: self.run.study.name, TRIAL_TAG: trial},
            params={k: _text(v) for k, v in summary["params"].items()},
        )
        with _global_tracking_uri(self.store.uri):
            info = mlflow.pytorch.log_model(
                served,
                name="best_model",
                model_id=logged.model_id,
                run_id=self.parent_id,
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=_pip_requirements(),
                metadata={"classes": list(plan.data.spec.classes), "trial": int(trial)},
            )
            # The registry resolves `models:/<id>` through the global URI too.
            self._register(name, info, summary, metric, value)

    def _registered_value(self, name: str) -> float:
        """The best validation value this study has registered under `name` (-inf: none)."""
        versions = self.client.search_model_versions(f"name = '{name}'")
        values = [
            float(v.tags.get(SCORE_TAG, v.tags.get(VALUE_TAG, "-inf")))
            for v in versions
            if v.tags.get(STUDY_TAG) == self.run.study.name
            and v.tags.get(STORAGE_TAG) == self.storage
        ]
        return max(values, default=-float("inf"))

    def _register(self, name: str, info, summary: dict, metric: str, score: float) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # exists already (or a racing process made it)
            self.client.create_registered_model(
                name, description="Best models of automodel searches, one version per improvement."
            )
        version = self.client.create_model_version(
            name,
            source=info.model_uri,
            run_id=self.parent_id,
            model_id=info.model_id,
            tags={
                STUDY_TAG: self.run.study.name,
                STORAGE_TAG: self.storage,
                TRIAL_TAG: str(summary["best_trial"]),
                VALUE_TAG: repr(float(summary["val"][metric])),
                SCORE_TAG: repr(score),
                f"test_{metric}": repr(float(summary["test"][metric])),
            },
            description=f"trial {summary['best_trial']} of study {self.run.study.name}",
        )
        self.client.set_tag(self.parent_id, "automodel.registered", f"{name}/{version.version}")

    # -- closing -------------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Flush every queued write; end runs this process left open.

        `error` is what stopped the search, if anything: trials still open end KILLED
        (Ctrl-C) or FAILED, and so does the parent when this process started the study and
        did not finish it.
        """
        if self._closed:
            return
        self._closed = True
        self._go.set()
        interrupted = isinstance(error, KeyboardInterrupt)
        reason = "interrupted (Ctrl-C)" if interrupted else (_reason(error) if error else None)
        status = "KILLED" if interrupted else "FAILED"
        self._writer.close(status, reason or "the search ended before the trial did")
        if self._owner and not self._finished and error is not None and self.parent_id:
            self._try(
                "ending the study's run",
                _end_run,
                self.client,
                self.parent_id,
                status,
                None,
                {STOP_TAG: _mask(reason)[:5000]},
                [],
            )
        atexit.unregister(self.close)

    def writer_seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds the background thread spent writing (for the benchmark)."""
        return self._writer.seconds, self._writer.cpu_seconds

    def flush(self, timeout: float = _FLUSH_SECONDS) -> None:
        self._writer.flush(timeout)

    def _try(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:
            self._warn(f"{what} failed: {_reason(err)}")

    def _warn(self, message: str) -> None:
        message = _mask(message)
        if message not in self._warned:
            self._warned.add(message)
            print(f"warning: mlflow: {message}", file=sys.stderr, flush=True)


class Served(torch.nn.Module):
    """What the registry serves: raw features in, class probabilities out."""

    def __init__(self, model: torch.nn.Module, spec):
        super().__init__()
        self.model = model
        shape = spec.stat_shape()
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).reshape(shape))
        self.task = spec.task
        self.target_mean, self.target_std = float(spec.target_mean), float(spec.target_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.mean) / self.std)
        if self.task == "regression":  # back to the target's own units
            return out.squeeze(1) * self.target_std + self.target_mean
        return torch.softmax(out, dim=1)

    def raw(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: the features as a user of the model would send them."""
        return x_normalised * self.std + self.mean


class _Sink:
    """The MLflow writes the background writer makes, one child run at a time.

    A child run's experiment and parent are filled in when it is created: trials queue their
    runs before the store is open, and `reconcile` may change the parent meanwhile.
    """

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    @property
    def client(self):
        return self.tracker.client

    def create(self, spec: dict) -> str:
        t = self.tracker
        tags = {PARENT_TAG: t.attach(), **spec["tags"]}
        run = self.client.create_run(t.experiment_id, spec["start_time"], tags, spec["run_name"])
        return run.info.run_id

    def log(self, run_id: str, metrics: list, params: dict) -> None:
        from mlflow.entities import Metric, Param

        _log_batch(
            self.client,
            run_id,
            [Metric(*m) for m in metrics],
            [Param(k, v) for k, v in params.items()],
        )

    def end(self, run_id: str, status: str, end_ms: int | None, tags: dict, metrics: list):
        _end_run(self.client, run_id, status, end_ms, tags, metrics)

    def abandon(self, run_id: str, status: str, reason: str) -> None:
        tags = {STATE_TAG: "failed", REASON_TAG: _mask(reason)[:5000]}
        _end_run(self.client, run_id, status, None, tags, [])


# -- small helpers -----------------------------------------------------------------------------


def _ending(trial: optuna.trial.FrozenTrial) -> tuple[str, int | None, dict, list]:
    """(MLflow status, end time, tags, metrics) for a trial Optuna has finished."""
    state, status = _ENDINGS.get(trial.state, ("failed", "KILLED"))
    end_ms = _ms(trial.datetime_complete) or _now_ms()
    tags = {STATE_TAG: state}
    metrics = []
    if trial.state == TrialState.FAIL:
        tags[REASON_TAG] = _mask(str(trial.user_attrs.get(studylib.FAIL_ATTR, "unknown error")))[
            :5000
        ]
    if trial.state == TrialState.PRUNED and trial.last_step is not None:
        metrics.append(("pruned_at_epoch", float(trial.last_step), end_ms, 0))
    if trial.value is not None:
        metric = trial.user_attrs.get(studylib.METRIC_ATTR, "value")
        metrics.append((f"best_val_{metric}", float(trial.value), end_ms, 0))
    if "best_epoch" in trial.user_attrs:
        metrics.append(("best_epoch", float(trial.user_attrs["best_epoch"]), end_ms, 0))
    if trial.duration is not None:
        metrics.append(("duration_seconds", trial.duration.total_seconds(), end_ms, 0))
    return status, end_ms, tags, metrics


def _end_run(
    client, run_id: str, status: str, end_ms: int | None, tags: dict, metrics: list
) -> None:
    from mlflow.entities import Metric, RunTag

    _log_batch(
        client,
        run_id,
        [Metric(*m) for m in metrics],
        [],
        [RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run_id, status, end_ms)


def _log_batch(client, run_id: str, metrics=(), params=(), tags=()) -> None:
    """log_batch within MLflow's per-call limits (1000 metrics, 100 params, 100 tags)."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        client.log_batch(
            run_id,
            metrics=metrics[: 10 * _BATCH],
            params=params[:_BATCH],
            tags=tags[:_BATCH],
            synchronous=True,
        )
        metrics, params, tags = metrics[10 * _BATCH :], params[_BATCH:], tags[_BATCH:]


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = _text(v)
    return out


def _text(value: Any) -> str:
    """A param or tag value: JSON-like for lists, within MLflow's 6000-character limit."""
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return _mask(text)[:6000]


def _mask(text: str | None) -> str:
    """Mask every URL password in free text (error messages, command lines)."""
    return config.mask_url(text) or ""


def _without_credentials(url: str) -> str:
    """The URL without user:password@ (urllib cannot send them that way; /health needs none)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


def _ms(when) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pip_requirements() -> list[str]:
    """Pinned, explicit requirements: inferring them would import and trace the model (slow)."""
    import mlflow
    import numpy

    torch_version = torch.__version__.split("+")[0]  # drop local labels such as +cpu
    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch_version}",
        f"numpy=={numpy.__version__}",
    ]


def _lockable(s: Store) -> bool:
    return s.uri.startswith("sqlite:///") and fcntl is not None


@contextlib.contextmanager
def _store_lock(s: Store):
    """Hold an exclusive lock on a sqlite store's `.lock` file (no-op for other stores).

    MLflow creates and migrates a new sqlite database on first use; two processes doing it at
    once corrupt the migration ("table _alembic_tmp_... already exists"). Holding the lock
    while opening the store and the parent run also keeps processes on one host from racing
    to create the parent at all.
    """
    if not _lockable(s):
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


@contextlib.contextmanager
def _global_tracking_uri(uri: str):
    """`log_model` and the registry read the global tracking URI: point it at ours meanwhile."""
    import mlflow

    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _quiet_mlflow_logs() -> None:
    import logging

    # MLflow's INFO lines (database migrations, artifact downloads) would drown our progress.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _quiet_mlflow_env() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run ... at <tracking URL>" when a run ends on a server: with the
    # URL's password in clear, and on stdout, which quiet=true keeps for summary.json alone.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
