"""The best model on the parent run and in MLflow's model registry, a version per improvement.

The logged model is the export itself: best_model.py and weights.pt, served by the code in
`served.py` (an MLflow pyfunc model from code). It takes what the exported script takes (a
table's raw cells by column name, other data as rows of raw values) and gives the same labels
and probabilities, with nothing from automodel installed and nothing pickled.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from automodel.tracking.parent import ParentRun
from automodel.tracking.records import SCORE_TAG, STORAGE_TAG, STUDY_TAG, TRIAL_TAG, VALUE_TAG, text

SERVED = Path(__file__).with_name("served.py")  # the code MLflow logs and runs
NOT_LOGGED_TAG = "automodel.model_not_logged"
N_EXAMPLE_ROWS = 5


def registered_name(parent: ParentRun) -> str:
    return parent.settings.tracking.registered_model or parent.name


def log_model(parent: ParentRun, plan, summary: dict) -> None:
    """Log the export as the study's model and register it, unless this study already
    registered one as good. Nothing is logged without an export (a tag says why)."""
    import mlflow

    spec = plan.data.spec
    why = _not_servable(plan, summary)
    if why is not None:
        parent.client.set_tag(parent.id, NOT_LOGGED_TAG, why)
        return
    # Compare as "higher is better": rmse and the like are negated.
    sign = 1.0 if spec.direction == "maximize" else -1.0
    score = sign * float(_shipped(summary)["val"][spec.metric])
    name = registered_name(parent)
    if _registered_score(parent, name) >= score:
        return  # the best did not improve: no new version
    trial = str(summary["best_trial"])
    logged = parent.client.create_logged_model(
        parent.experiment_id,
        name="best_model",
        source_run_id=parent.id,
        tags={STUDY_TAG: parent.name, TRIAL_TAG: trial},
        params={k: text(v) for k, v in summary["params"].items()},
    )
    with _global_tracking_uri(parent.store.uri):
        info = mlflow.pyfunc.log_model(
            name="best_model",
            python_model=str(SERVED),
            artifacts={"export": str(summary["export"])},
            model_id=logged.model_id,
            signature=_signature(spec),
            input_example=example_rows(plan),
            pip_requirements=_pip_requirements(spec),
            metadata={"classes": list(spec.classes), "trial": int(trial)},
        )
        # pyfunc.log_model takes no run: name the parent run as the model's source here.
        parent.client.log_outputs(
            parent.id, [mlflow.entities.LoggedModelOutput(info.model_id, step=0)]
        )
        # The registry resolves `models:/<id>` through the global URI too.
        _register(parent, name, info, summary, spec.metric, score)


def _not_servable(plan, summary: dict) -> str | None:
    """Why the study's model cannot be logged, or None when it can."""
    if plan.data.lazy:
        return "data read from files: use the export folder (best_model.py) to serve it"
    if not summary.get("export"):
        error = summary.get("export_error", "unknown error")
        return f"the best model was not exported ({error}): there is no best_model.py to serve"
    return None


def example_rows(plan):
    """A few test rows as a user would send them: a table's raw cells by column name (read
    again from the file: the search holds them encoded), else the values with the
    normalisation undone, one flat row per sample."""
    import pandas as pd

    spec = plan.data.spec
    if spec.columns is not None:
        from automodel.data import load_raw_splits

        cells = load_raw_splits(plan.run.data, plan.run.seed)["x_test"][:N_EXAMPLE_ROWS]
        names = [c["name"] for c in spec.columns]
        return pd.DataFrame(np.asarray(cells, dtype=object).tolist(), columns=names)
    shape = spec.stat_shape()
    std = torch.tensor(spec.std, dtype=torch.float32).reshape(shape)
    mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(shape)
    x = plan.data.x_test[:N_EXAMPLE_ROWS].cpu() * std + mean
    return x.reshape(len(x), -1).double().numpy()


def _signature(spec):
    """Input: a table's columns by name, each of any type (a cell may be text, a number or a
    gap: best_model.py reads them all); else one double per raw value, by position. Output:
    `prediction` and, for a classifier, `p_<class>` per class (see served.py)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    if spec.columns is not None:
        inputs = Schema([ColSpec(AnyType(), c["name"]) for c in spec.columns])
    else:
        inputs = Schema([ColSpec("double") for _ in range(int(np.prod(spec.input_shape)))])
    if spec.task == "regression":
        outputs = Schema([ColSpec("double", "prediction")])
    else:
        probabilities = [ColSpec("double", f"p_{c}") for c in spec.classes]
        outputs = Schema([ColSpec("string", "prediction"), *probabilities])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _registered_score(parent: ParentRun, name: str) -> float:
    """The best score this study has registered under `name` (-inf: none)."""
    versions = parent.client.search_model_versions(f"name = '{name}'")
    scores = [
        float(v.tags.get(SCORE_TAG, v.tags.get(VALUE_TAG, "-inf")))
        for v in versions
        if v.tags.get(STUDY_TAG) == parent.name and v.tags.get(STORAGE_TAG) == parent.storage
    ]
    return max(scores, default=-float("inf"))


def _register(parent: ParentRun, name: str, info, summary: dict, metric: str, score: float):
    from mlflow.exceptions import MlflowException

    client = parent.client
    with contextlib.suppress(MlflowException):  # exists already (or a racing process made it)
        client.create_registered_model(
            name, description="Best models of automodel searches, one version per improvement."
        )
    version = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=parent.id,
        model_id=info.model_id,
        tags={
            STUDY_TAG: parent.name,
            STORAGE_TAG: parent.storage,
            TRIAL_TAG: str(summary["best_trial"]),
            VALUE_TAG: repr(float(_shipped(summary)["val"][metric])),
            SCORE_TAG: repr(score),
            f"test_{metric}": repr(float(_shipped(summary)["test"][metric])),
            "automodel.shipped": summary.get("shipped", "trial"),
        },
        description=f"{_what(summary)} of study {parent.name}",
    )
    client.set_tag(parent.id, "automodel.registered", f"{name}/{version.version}")


def _pip_requirements(spec) -> list[str]:
    """Pinned, explicit requirements: inferring them would load and trace the model (slow).
    Pillow only for images: best_model.py needs it to read image files."""
    import mlflow
    import pandas

    torch_version = torch.__version__.split("+")[0]  # drop local labels such as +cpu
    needs = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch_version}",
        f"numpy=={np.__version__}",
        f"pandas=={pandas.__version__}",
    ]
    if spec.image_mode is not None:
        import PIL

        needs.append(f"pillow=={PIL.__version__}")
    return needs


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


def _shipped(summary: dict) -> dict:
    """The metrics of what the study ships: the ensemble's when it is shipped."""
    return summary["ensemble"] if summary.get("shipped") == "ensemble" else summary


def _what(summary: dict) -> str:
    if summary.get("shipped") == "ensemble":
        return "ensemble of trials " + ", ".join(map(str, summary["ensemble"]["members"]))
    return f"trial {summary['best_trial']}"
