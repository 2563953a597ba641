"""The study's parent run: found or created (never twice), its settings, its result.

A parent run per study holds the settings as params, the result as metrics and tags, the
plots, the best model and the export; each trial is a child run nested under it
(`runs.py`). Processes that run the same study (workers, other hosts, a rerun) find the same
parent by its tags: study name and Optuna storage.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import optuna
import torch

from automodel import config, errors
from automodel.config import ConfigError, RunConfig
from automodel.tracking.backend import (
    check_store,
    connect,
    open_experiment,
    storage_tag,
    store,
    store_lock,
    unusable,
)
from automodel.tracking.plots import prediction_plots, study_plots
from automodel.tracking.records import (
    NOTE_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STOP_TAG,
    STORAGE_TAG,
    STUDY_TAG,
    TAG_LIMIT,
    end_run,
    flatten,
    log_batch,
    mask,
    now_ms,
    text,
)

# Config keys that say nothing about a study's result: not logged as parent params. The space
# is the artifact search_space.yaml (and search_space_name a param), not a param per entry.
_NOT_SETTINGS = ("quiet", "trial", "ui", "search_space")
_SETTLE_SECONDS = 1.0  # a new parent run on a server: wait before checking for a racer


def _selection_values(summary: dict) -> dict[str, float]:
    """`cv_folds` (0: one validation split) and, with folds, `cv_std_<metric>`: the spread
    of the folds behind the best_val_ values (which are then the folds' mean)."""
    cv = summary.get("cv")
    if not cv:
        return {"cv_folds": 0}
    return {"cv_folds": cv["folds"], **{f"cv_std_{k}": v for k, v in cv["std"].items()}}


class ParentRun:
    """One process's handle on the study's parent run: the client, the experiment, the id.

    Nothing is opened until `attach`; `client`, `experiment_id` and `id` are None until then.
    """

    def __init__(self, settings: RunConfig):
        self.settings = settings
        self.name = settings.study.name
        self.store = store(settings)
        self.storage = storage_tag(settings)
        self.client = None  # an MlflowClient once the store is open
        self.experiment_id: str | None = None
        self.id: str | None = None
        self._checked = False  # the store passed check_store
        self._attach_lock = threading.Lock()

    def check_store(self) -> None:
        """`backend.check_store`, once per process: raises ConfigError."""
        if not self._checked:
            check_store(self.store)
            self._checked = True

    def unusable(self, err: BaseException) -> ConfigError:
        return unusable(self.store, errors.reason(err))

    def attach(self) -> str:
        """Find the study's parent run, creating it only if no process has yet. Returns its id.

        Safe when processes race: on a sqlite store a file lock serialises them; on a server
        each creates, waits a second for a racer's run to land, searches again and keeps the
        oldest, deleting its own if it lost. A racer slower than that second can still leave
        two parents for a moment; `reconcile` (at the start and the end of every search)
        merges them. Raises ConfigError when the store cannot be used.
        """
        if self.id is not None:
            return self.id
        with self._attach_lock:  # concurrent trials of this process: one of them attaches
            if self.id is not None:
                return self.id
            try:
                self.check_store()
                if self.client is None:
                    self.client = connect(self.store)
                with store_lock(self.store):
                    self.experiment_id = open_experiment(self.client, self.store, self.settings)
                    self.id = self._find_or_create()
            except ConfigError:
                raise
            except Exception as err:
                raise self.unusable(err) from None
        return self.id

    def _parents(self) -> list:
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{self.name}' and tags.`{ROLE_TAG}` = 'study'",
            max_results=1000,
        )
        # Compare the storage here rather than in the filter: a path may hold quotes.
        ours = [r for r in found if r.data.tags.get(STORAGE_TAG) == self.storage]
        return sorted(ours, key=lambda r: (r.info.start_time, r.info.run_id))

    def _find_or_create(self) -> str:
        found = self._parents()
        if found:
            return found[0].info.run_id
        tags = {
            ROLE_TAG: "study",
            STUDY_TAG: self.name,
            STORAGE_TAG: self.storage,
            NOTE_TAG: (
                f"automodel study `{self.name}` (Optuna storage `{self.storage}`). Each nested "
                "run is one trial; the best model, plots and summary.json are artifacts of this "
                "run."
            ),
        }
        created = self.client.create_run(self.experiment_id, run_name=self.name, tags=tags)
        mine = created.info.run_id
        if not self.store.lockable:
            # A racer may have stamped its run earlier but not committed it yet: let it land.
            time.sleep(_SETTLE_SECONDS)
        oldest = self._parents()[0].info.run_id
        if oldest != mine:  # lost a race with another process: use its parent
            self.client.delete_run(mine)
        return oldest

    def reconcile(self) -> str:
        """Keep the oldest parent of the study, delete the others, re-parent their trials.

        Child runs record their parent in a tag, which can change: so whatever a race did,
        the study ends up under one parent. Returns (and from now on uses) that parent's id.
        """
        self.attach()
        parents = self._parents()
        if not parents:
            return self.id
        keep = parents[0].info.run_id
        for duplicate in parents[1:]:
            self.client.delete_run(duplicate.info.run_id)
        strays = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{self.name}' and tags.`{ROLE_TAG}` = 'trial' "
            f"and tags.`{PARENT_TAG}` != '{keep}'",
            max_results=10000,
        )
        for r in strays:
            if r.data.tags.get(STORAGE_TAG) == self.storage:
                self.client.set_tag(r.info.run_id, PARENT_TAG, keep)
        self.id = keep
        return keep

    def start(self, plan) -> None:
        """Merge duplicates, mark the parent RUNNING, log the settings and the run files."""
        self.reconcile()
        self.client.update_run(self.id, status="RUNNING")
        self._log_settings(plan)
        self.log_files(plan.run.study_dir, ("config.yaml", "search_space.yaml"))

    def _log_settings(self, plan) -> None:
        """Settings as params; a rerun that changes one records the new value as a tag.

        MLflow params cannot change once logged, so the params are the settings the study
        started with and `latest.<key>` tags hold what a later invocation changed.
        """
        from mlflow.entities import Param, RunTag

        settings = {
            k: v
            for k, v in flatten(config.as_dict(plan.run)).items()
            if k.split(".")[0] not in _NOT_SETTINGS
        }
        settings["family"] = plan.space.family
        logged = self.client.get_run(self.id).data
        params = [Param(k, v) for k, v in settings.items() if k not in logged.params]
        changed = {k: v for k, v in settings.items() if logged.params.get(k, v) != v}
        tags = [RunTag(f"latest.{k}", v) for k, v in changed.items()]
        tags += [
            RunTag("automodel.family", plan.space.family),
            RunTag("automodel.data", plan.run.data.name),
        ]
        log_batch(self.client, self.id, params=params, tags=tags)
        for key in logged.tags:
            stale = key.startswith("latest.") and key[len("latest.") :] not in changed
            if stale or key == STOP_TAG:  # a rerun: the previous stop is history
                self.client.delete_tag(self.id, key)

    def log_files(self, folder: Path, names: tuple[str, ...]) -> None:
        """Put the files of `folder` named `names` that exist on the parent run."""
        for name in names:
            if (folder / name).is_file():
                self.client.log_artifact(self.id, str(folder / name))

    def log_result(self, summary: dict, step: int) -> None:
        """Best validation and test values, counts, the baseline's values and the best
        params, at step `step`."""
        from mlflow.entities import Metric, RunTag

        now = now_ms()
        values = {f"best_val_{k}": v for k, v in summary["val"].items()}
        values |= {f"test_{k}": v for k, v in summary["test"].items()}
        values |= {f"n_{k}": v for k, v in summary["counts"].items()}
        values |= {"best_trial": summary["best_trial"], "wall_seconds": summary["wall_seconds"]}
        values |= _selection_values(summary)
        chosen = summary.get("ensemble")  # null when ensembles are off
        for split in ("val", "test") if chosen else ():
            values |= {f"ensemble_{split}_{k}": v for k, v in (chosen[split] or {}).items()}
        base = summary.get("baseline") or {}  # gradient boosting beside a table's result
        for split in ("val", "test"):
            values |= {f"baseline_{split}_{k}": v for k, v in base.get(split, {}).items()}
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        tags = [RunTag(f"best.{k}", text(v)) for k, v in summary["params"].items()]
        tags.append(RunTag("automodel.best_trial", str(summary["best_trial"])))
        tags.append(RunTag("automodel.refit", str(bool(summary.get("refit"))).lower()))
        tags.append(RunTag("automodel.shipped", summary.get("shipped", "trial")))
        if chosen:
            tags.append(RunTag("automodel.ensemble_members", ",".join(map(str, chosen["members"]))))
            tags.append(RunTag("automodel.ensemble_weights", ",".join(map(str, chosen["weights"]))))
        if summary.get("stop_reason"):
            tags.append(RunTag("automodel.stop_reason", summary["stop_reason"]))
        if summary.get("command"):
            tags.append(RunTag("automodel.command", mask(summary["command"])))
        log_batch(self.client, self.id, metrics=metrics, tags=tags)

    def log_plots(
        self, plan, study: optuna.Study, test_outputs: torch.Tensor, summary: dict
    ) -> None:
        """The study's plots and the best model's on the test split, under `plots/`.

        A plot that cannot be drawn is named with its reason in the `automodel.plots_skipped`
        tag; the others are logged all the same.
        """
        spec = plan.data.spec
        title = _shipped_title(summary)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "plots"
            _, skipped = study_plots(study, out)
            _, more = prediction_plots(spec, test_outputs, plan.data.y_test, out, title)
            self.client.log_artifacts(self.id, str(out), "plots")
        skipped |= more
        if skipped:
            listed = "; ".join(f"{k}: {v}" for k, v in skipped.items())
            self.client.set_tag(self.id, "automodel.plots_skipped", listed[:TAG_LIMIT])

    def end(self, status: str, why: str | None) -> None:
        """End the parent with `status` and the reason the search broke off."""
        end_run(self.client, self.id, status, None, {STOP_TAG: mask(why)[:TAG_LIMIT]}, [])


def _shipped_title(summary: dict) -> str:
    """What the test-split plots show: the shipped ensemble's or the best trial's metrics."""
    if summary.get("shipped") == "ensemble":
        trials = ", ".join(map(str, summary["ensemble"]["members"]))
        what, test = f"ensemble of trials {trials}", summary["ensemble"]["test"]
    else:
        what, test = f"trial {summary['best_trial']}", summary["test"]
    return f"{what} on the test split: " + ", ".join(f"{k} {v:.4g}" for k, v in test.items())
