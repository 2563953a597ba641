"""MLflow tracking: a parent run per study, a child run per trial, the best model registered.

    store(settings)              where runs go: sqlite:///<runs_dir>/mlflow.db unless tracking.uri
    Tracker(settings)            cheap: nothing imported or opened yet
      .open(plan, study)         start_study on the writer thread; .open() attach there (workers)
      .check() / .wait()         raise what opening met / wait for the parent run's id
      .trial_started / .epoch / .trial_finished    one child run per trial, its curves live
      .settle()                  the end of a search: writes flushed, duplicate parents merged
      .finish_study(...)         parent metrics, plots, the best model and its version
      .close(error)              flush; end what this process left open

The package, one job a module:

    backend.py    the store: resolved, checked before any trial, opened
    parent.py     the study's parent run: found or created once, settings, result, plots
    runs.py       a child run per trial: the ops a trial queues, the writes they become
    writer.py     the background thread that makes those writes, in batches
    registry.py   the best model, logged and registered: the export, served by served.py
    records.py    tag names, value text, batched writes within MLflow's limits
    plots/        pictures of a study: PNG (matplotlib) and interactive HTML (plotly)
    importance_plots.py    what the best model relies on: bars (tables), heat maps (images)

Only this package imports mlflow, and only once a Tracker opens the store:
`tracking.enabled=false` never loads it. Trial writes go through the writer thread, which
sends what queued up within half a second as one `log_batch` per run: a trial pays for
appending to a queue, and a user watching the UI sees each epoch's point moments after the
epoch ends. A store that cannot work is refused before any trial where that is cheap to see
(`check_store`); otherwise the error stops the search at the end of the first epoch after
it, as a ConfigError (exit code 2). The tracker never writes in the study folder.
"""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path

import optuna
import torch

from automodel import errors
from automodel.config import ConfigError, RunConfig
from automodel.tracking import importance_plots, registry, runs
from automodel.tracking.backend import Store, check_store, quiet_mlflow_env, storage_tag, store
from automodel.tracking.parent import ParentRun
from automodel.tracking.records import (
    KIND,
    KIND_TAG,
    NOTE_TAG,
    PARENT_TAG,
    REASON_TAG,
    ROLE_TAG,
    SCORE_TAG,
    STATE_TAG,
    STOP_TAG,
    STORAGE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    VALUE_TAG,
    mask,
)
from automodel.tracking.writer import FLUSH_SECONDS, Writer

__all__ = [
    "KIND",
    "KIND_TAG",
    "NOTE_TAG",
    "PARENT_TAG",
    "REASON_TAG",
    "ROLE_TAG",
    "SCORE_TAG",
    "STATE_TAG",
    "STOP_TAG",
    "STORAGE_TAG",
    "STUDY_TAG",
    "TRIAL_TAG",
    "VALUE_TAG",
    "Store",
    "Tracker",
    "check_store",
    "storage_tag",
    "store",
]


class Tracker:
    """One process's view of a study in MLflow: its parent run and its writer thread.

    Making one is cheap: mlflow is imported and the store opened by `open` (in the background)
    or by the first call that needs them (`start_study`, `attach`).
    """

    def __init__(self, settings: RunConfig):
        quiet_mlflow_env()  # here, not on the writer thread: it sets environment variables
        self.settings = settings
        self.parent = ParentRun(settings)
        self.seconds_in_calls = 0.0  # time the trial thread spent in trial_* and epoch calls
        self._owner = False  # start_study was called here: this process ends the parent
        self._finished = False
        self._closed = False
        self._warned: set[str] = set()
        self._writer = Writer(runs.Sink(self.parent), self._warn)
        # A process that exits without `close` (an uncaught error) still sends what it queued.
        atexit.register(self.close)

    @property
    def run(self) -> RunConfig:
        """The settings, under the name the search reads them by."""
        return self.settings

    @property
    def store(self) -> Store:
        return self.parent.store

    @property
    def parent_id(self) -> str | None:
        return self.parent.id

    # -- opening -----------------------------------------------------------------------------

    def open(self, plan=None, study: optuna.Study | None = None, on_open=None) -> None:
        """Open the store and the parent run on the writer thread, so trials need not wait.

        With `plan` and `study`: `start_study` (the search process); without: `attach` (a
        worker). What can be checked cheaply is checked here, before returning (`check_store`:
        raises ConfigError). The rest (importing mlflow, creating or migrating the database, the
        parent run) takes seconds: trials start meanwhile and their writes queue behind it, so
        none is lost. If it fails, trial calls and `wait` raise its ConfigError (`check`), and
        nothing is written. `on_open(self)` runs once the parent run is known. The opening
        starts once the first epoch has ended (see `Writer.open`).
        """
        self.parent.check_store()
        # Trials that end from now on have a live writer that ends their runs: only those
        # finished before this search began can have runs a killed process left RUNNING.
        finished = (
            None
            if study is None
            else {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        )
        self._writer.open(lambda: self._open(plan, study, finished, on_open))

    def _open(self, plan, study, finished: set[int] | None, on_open) -> None:
        try:
            if plan is None:
                self.attach()
            else:
                self.start_study(plan, study, finished)
        except ConfigError:
            raise
        except Exception as err:
            raise self.parent.unusable(err) from None
        if on_open is not None:
            on_open(self)  # before `wait` returns: its line comes before the summary

    def check(self) -> None:
        """Raise the ConfigError that opening the store in the background met, if any."""
        if self._writer.error is not None:
            raise ConfigError(str(self._writer.error)) from None

    def wait(self) -> str:
        """The parent run's id, once `open` is done. Raises its ConfigError if it failed."""
        self._writer.wait_opened()
        self.check()
        return self.attach()

    def start_study(self, plan, study: optuna.Study, finished: set[int] | None = None) -> str:
        """Open the study's parent run (a rerun reopens the same one) and log its settings.

        Called once by the process that starts a search (`open` calls it in the background).
        Child runs left RUNNING by a killed process are ended here, from the state Optuna
        recorded (of the trials in `finished`, if given). Returns the parent run id. Raises
        ConfigError when the store cannot be reached.
        """
        self.attach()
        self._owner = True
        self.parent.start(plan)
        runs.end_stale(self.parent, study, finished)
        return self.parent.id

    def attach(self) -> str:
        """Find the study's parent run, creating it only if no process has yet (see
        `ParentRun.attach`). Returns its id; raises ConfigError if the store cannot be used."""
        return self.parent.attach()

    def reconcile(self) -> str:
        """Merge the duplicate parents a race between hosts left; returns the one kept."""
        return self.parent.reconcile()

    # -- trials (called from the trial's thread: queue only) ---------------------------------

    def trial_started(self, number: int, params: dict, device: str, n_parameters: int) -> None:
        """Open the trial's child run: every param, device, worker, parameter count.

        Like `epoch`, raises the ConfigError of a store that failed to open (`check`).
        """
        started = time.perf_counter()
        self.check()
        self._writer.put(runs.start_op(self.parent, number, params, device, n_parameters))
        self.seconds_in_calls += time.perf_counter() - started

    def epoch(self, number: int, epoch) -> None:
        """Queue one epoch's metrics (a `train.Epoch`); the writer sends them within moments."""
        started = time.perf_counter()
        self.check()  # a store that failed to open stops the search at the epoch's end
        self._writer.allow_open()
        self._writer.put(runs.epoch_op(number, epoch))
        self.seconds_in_calls += time.perf_counter() - started

    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        """End the trial's child run with Optuna's verdict (opening it first if it never was).

        Called as a study callback: a store that failed to open stops the search here.
        """
        started = time.perf_counter()
        self.check()
        self._writer.allow_open()
        self._writer.put(runs.end_op(self.parent, trial))
        self.seconds_in_calls += time.perf_counter() - started

    # -- the end of a search -----------------------------------------------------------------

    def settle(self) -> str:
        """Wait for the store, send every queued write, merge duplicate parent runs.

        Returns the parent run's final id: the search writes it into summary.json and the
        export's provenance, then calls `finish_study`.
        """
        self.wait()
        self._writer.flush(FLUSH_SECONDS)
        self._try("merging duplicate parent runs", self.parent.reconcile)
        return self.parent.id

    def finish_study(
        self,
        plan,
        study: optuna.Study,
        summary: dict,
        model: torch.nn.Module,
        test_outputs: torch.Tensor,
    ) -> None:
        """Log the result on the parent run (after `settle`) and end it FINISHED.

        Metrics (best validation and test values, counts) are logged at step = trials in the
        study, so reruns draw the study's progress. `test_outputs` are the model's raw
        outputs on the test split (for the confusion matrix). The model logged and
        registered is the export folder (`summary["export"]`, written before this call), not
        `model`. A part that fails (a plot, the registry) is a warning: the search's own
        outputs are already on disk.
        """
        self.wait()
        parent = self.parent
        self._try("logging the result", parent.log_result, summary, len(study.trials))
        for name in ("summary.json", "best_params.json"):
            self._try(f"logging {name}", parent.log_files, plan.run.study_dir, (name,))
        self._try("logging plots", parent.log_plots, plan, study, test_outputs, summary)
        self._try("logging the importance", importance_plots.log, parent, plan.run.study_dir)
        self._try("logging the best model", registry.log_model, parent, plan, summary)
        self._try("ending the study's run", parent.client.set_terminated, parent.id, "FINISHED")
        self._finished = True

    def log_export(self, folder: Path) -> None:
        """Put an exported model folder (best_model.py and its files) on the parent run."""
        self.wait()
        self._try(
            "logging the export",
            self.parent.client.log_artifacts,
            self.parent.id,
            str(folder),
            "export",
        )

    # -- closing -----------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Flush every queued write; end runs this process left open.

        `error` is what stopped the search, if anything: trials still open end KILLED
        (Ctrl-C) or FAILED, and so does the parent when this process started the study and
        did not finish it.
        """
        if self._closed:
            return
        self._closed = True
        interrupted = isinstance(error, KeyboardInterrupt)
        why = "interrupted (Ctrl-C)" if interrupted else (errors.reason(error) if error else None)
        status = "KILLED" if interrupted else "FAILED"
        self._writer.close(status, why or "the search ended before the trial did")
        if self._owner and not self._finished and error is not None and self.parent.id:
            self._try("ending the study's run", self.parent.end, status, why)
        atexit.unregister(self.close)

    def writer_seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds the background thread spent writing (for the benchmark)."""
        return self._writer.seconds, self._writer.cpu_seconds

    def flush(self, timeout: float = FLUSH_SECONDS) -> None:
        self._writer.flush(timeout)

    def _try(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:
            self._warn(f"{what} failed: {errors.reason(err)}")

    def _warn(self, message: str) -> None:
        message = mask(message)
        if message not in self._warned:
            self._warned.add(message)
            print(f"warning: mlflow: {message}", file=sys.stderr, flush=True)
