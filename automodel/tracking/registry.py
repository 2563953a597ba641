"""The best model on the parent run and in MLflow's model registry, a version per improvement.

The registered model (`Served`) takes raw features (it normalises with the training split's
statistics) and returns class probabilities or targets in their own units, so
`mlflow models predict` needs nothing from automodel.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from automodel.tracking.parent import ParentRun
from automodel.tracking.records import SCORE_TAG, STORAGE_TAG, STUDY_TAG, TRIAL_TAG, VALUE_TAG, text


class Served(torch.nn.Module):
    """What the registry serves: raw features in; class probabilities (or targets) out."""

    def __init__(self, model: torch.nn.Module, spec):
        super().__init__()
        self.model = model
        shape = spec.stat_shape()
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).reshape(shape))
        self.task = spec.task
        self.target_mean, self.target_std = float(spec.target_mean), float(spec.target_std)
        self.target_transform = spec.target_transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.mean) / self.std)
        if self.task == "regression":  # back to the target's own units
            out = out.squeeze(1) * self.target_std + self.target_mean
            return torch.expm1(out) if self.target_transform == "log1p" else out
        return torch.softmax(out, dim=1)

    def raw(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: the features as a user of the model would send them."""
        return x_normalised * self.std + self.mean


def registered_name(parent: ParentRun) -> str:
    return parent.settings.tracking.registered_model or parent.name


def log_model(parent: ParentRun, plan, model: torch.nn.Module, summary: dict) -> None:
    """Log the best model and register it, unless this study already registered as good."""
    import mlflow
    from mlflow.models import infer_signature

    metric = plan.data.spec.metric
    if plan.data.lazy:
        parent.client.set_tag(
            parent.id,
            "automodel.model_not_logged",
            "data read from files: use the export folder (best_model.py) to serve it",
        )
        return
    # Compare as "higher is better": rmse and the like are negated.
    sign = 1.0 if plan.data.spec.direction == "maximize" else -1.0
    score = sign * float(summary["val"][metric])
    name = registered_name(parent)
    if _registered_score(parent, name) >= score:
        return  # the best did not improve: no new version
    served = Served(copy.deepcopy(model), plan.data.spec).cpu().eval()
    example = served.raw(plan.data.x_test[:5].cpu()).numpy()
    with torch.inference_mode():
        output = served(torch.from_numpy(example)).numpy()
    trial = str(summary["best_trial"])
    logged = parent.client.create_logged_model(
        parent.experiment_id,
        name="best_model",
        source_run_id=parent.id,
        tags={STUDY_TAG: parent.name, TRIAL_TAG: trial},
        params={k: text(v) for k, v in summary["params"].items()},
    )
    with _global_tracking_uri(parent.store.uri):
        info = mlflow.pytorch.log_model(
            served,
            name="best_model",
            model_id=logged.model_id,
            run_id=parent.id,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={"classes": list(plan.data.spec.classes), "trial": int(trial)},
        )
        # The registry resolves `models:/<id>` through the global URI too.
        _register(parent, name, info, summary, metric, score)


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
            VALUE_TAG: repr(float(summary["val"][metric])),
            SCORE_TAG: repr(score),
            f"test_{metric}": repr(float(summary["test"][metric])),
        },
        description=f"trial {summary['best_trial']} of study {parent.name}",
    )
    client.set_tag(parent.id, "automodel.registered", f"{name}/{version.version}")


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
