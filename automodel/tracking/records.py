"""What a run record holds and how it reaches MLflow: tag names, value text, batched writes.

Every write names its run id through one `MlflowClient` (never the fluent active-run stack),
so concurrent trials, threads and processes cannot mix runs up. Every value that reaches a
param or a tag goes through `text` (or `mask`): no URL password is ever written.
"""

from __future__ import annotations

import json
import time
from typing import Any

from automodel import config

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a child run under its parent
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the run's description in the UI
KIND_TAG = "mlflow.experimentKind"  # MLflow's own, on the experiment: which view the UI opens
KIND = "custom_model_development"  # the model-training view (not the GenAI one)
ROLE_TAG = "automodel.role"  # "study" (parent) or "trial" (child)
STUDY_TAG = "automodel.study"
STORAGE_TAG = "automodel.storage"  # the Optuna storage, masked: same name + storage = same study
TRIAL_TAG = "automodel.trial"
STATE_TAG = "automodel.state"  # running, complete, pruned, failed
REASON_TAG = "automodel.fail_reason"
STOP_TAG = "automodel.stop_reason"  # on the parent: why the last invocation broke off
VALUE_TAG = "automodel.val"  # on a model version: the validation value it was registered with
SCORE_TAG = "automodel.score"  # the same value as "higher is better" (rmse negated)

_BATCH = 100  # MLflow accepts at most 100 params and 100 tags per log_batch
TAG_LIMIT = 5000  # the longest free text (a reason, a list) we put in one tag
_VALUE_LIMIT = 6000  # MLflow's limit on a param value


def log_batch(client, run_id: str, metrics=(), params=(), tags=()) -> None:
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


def end_run(client, run_id: str, status: str, end_ms: int | None, tags: dict, metrics: list):
    """Log a run's last tags and metrics ((key, value, timestamp_ms, step) tuples), end it."""
    from mlflow.entities import Metric, RunTag

    log_batch(
        client,
        run_id,
        [Metric(*m) for m in metrics],
        [],
        [RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run_id, status, end_ms)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as `a.b.c` keys with their values as text."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = text(v)
    return out


def text(value: Any) -> str:
    """A param or tag value: JSON-like for lists, within MLflow's 6000-character limit."""
    shown = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return mask(shown)[:_VALUE_LIMIT]


def mask(message: str | None) -> str:
    """Mask every URL password in free text (error messages, command lines)."""
    return config.mask_url(message) or ""


def ms(when) -> int | None:
    """A datetime as MLflow's milliseconds since the epoch (None stays None)."""
    return int(when.timestamp() * 1000) if when is not None else None


def now_ms() -> int:
    return int(time.time() * 1000)
