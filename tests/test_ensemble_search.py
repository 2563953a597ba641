"""Ensembles of the best trials: selected at the end of a real search, shipped as one generated
best_model.py, run as a user would run it (without automodel), rebuilt by the export verb.

Mirrors the single model's fidelity tests in tests/test_export.py.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import automodel.data
from automodel import config, ensemble, models, search, study_export
from automodel.__main__ import main
from automodel.checkpoint import Checkpoint
from automodel.data import folds
from automodel.export import ensemble as rendering
from automodel.search import ensembling
from tests.conftest import FAST
from tests.test_export import PROVENANCE, _checkpoint, _evaluated, _ruff, _script, _spec

SIZE = 4
ENSEMBLE = [
    "study.n_trials=6",
    "study.pruner=none",
    f"ensemble.size={SIZE}",
    "ensemble.candidates=5",
]
TASKS = {"classification": [], "regression": ["data.task=regression"]}


class Searched:
    """A finished tiny search with ensembles on; its export holds the selected ensemble."""

    def __init__(self, run: config.RunConfig, summary: dict):
        self.run = run
        self.summary = summary
        self.export = run.study_dir / "export"
        self.splits = automodel.data.load_raw_splits(run.data, run.seed)
        self.data = automodel.data.load(run.data, run.seed)
        self.metric = self.data.spec.metric

    def members(self) -> nn.Module:
        """The search's ensemble, built in-process from the members' kept checkpoints."""
        entry = self.summary["ensemble"]
        nets = [
            Checkpoint.load(self.run.study_dir / "trials" / str(n) / "model.pt").build_model()
            for n in entry["members"]
        ]
        return ensemble.Averaged(self.data.spec.task, nets, entry["weights"])

    def save(self, folder: Path, **arrays: np.ndarray) -> dict[str, Path]:
        paths = {}
        for name, array in arrays.items():
            paths[name] = folder / f"{name}.npy"
            np.save(paths[name], array)
        return paths


@pytest.fixture(scope="module", params=list(TASKS))
def searched(request, tmp_path_factory) -> Searched:
    runs = tmp_path_factory.mktemp(f"ens-{request.param}")
    cfg = config.compose([*FAST, f"runs_dir={runs}", *ENSEMBLE, *TASKS[request.param]])
    run = config.to_run_config(cfg)
    summary = search.search(run, "python -m automodel search")
    if summary["shipped"] != "ensemble":
        # Not better than the best trial on this seed's validation rows: the export verb
        # writes the same selection, so that the script's fidelity is tested either way.
        given = config.to_run_config(config.compose([*FAST, f"runs_dir={runs}", *ENSEMBLE]))
        study_export.export_study(given, "python -m automodel export", ensemble_given=True)
    return Searched(run, summary)


# ----------------------------------------------------------------------- the search's end


def test_the_search_selects_an_ensemble_of_kept_trials(searched, capsys):
    summary, study_dir = searched.summary, searched.run.study_dir
    assert json.loads((study_dir / "summary.json").read_text()) == summary
    entry = summary["ensemble"]
    assert set(entry) == {"members", "weights", "refit", "val", "test"}
    assert entry["refit"] is False  # study.refit=false: the trials as they trained
    assert sum(entry["weights"]) <= SIZE and all(w >= 1 for w in entry["weights"])
    kept = {int(p.name) for p in (study_dir / "trials").iterdir()}
    assert len(kept) == 5 and set(entry["members"]) <= kept  # keep_top_k raised to candidates
    assert set(entry["val"]) == set(summary["val"]) and set(entry["test"]) == set(summary["test"])
    # Each kept trial holds its validation outputs next to its weights.
    for n in kept:
        raw = torch.load(study_dir / "trials" / str(n) / "model.pt", weights_only=True)
        assert raw["val_outputs"].shape[0] == len(searched.data.y_val)
    # Shipped only when it ranks above the best trial on validation (metric, then loss).
    sign = 1 if searched.metric == "accuracy" else -1
    if summary["shipped"] == "ensemble":
        assert len(entry["members"]) >= 2
        assert sign * entry["val"][searched.metric] >= sign * summary["val"][searched.metric]
    search.print_summary(summary)
    out = capsys.readouterr().out
    assert f"ensemble of trials {entry['members'][0]} (x{entry['weights'][0]})" in out


def test_the_ensembles_validation_metric_is_its_averaged_outputs(searched):
    averaged = searched.members()
    with torch.inference_mode():
        outputs = averaged(searched.data.x_val)
    spec = searched.data.spec
    val = automodel.metrics.compute(spec.task, outputs, searched.data.y_val, spec.target_std)
    assert val == pytest.approx(searched.summary["ensemble"]["val"], abs=1e-6)


# ------------------------------------------------------------------- the generated script


def _script_and_members(found: Searched) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The exported script's namespace, and its model's and the in-process members' outputs
    on the raw test rows, which the script reads as the search's data holds them."""
    script = runpy.run_path(str(found.export / "best_model.py"))
    x = script["prepare"](found.splits["x_test"])
    assert torch.equal(x, found.data.x_test)
    with torch.inference_mode():
        return script, script["load_model"]()(x), found.members()(x)


def test_exported_ensemble_gives_the_in_process_outputs(searched):
    script, got, expected = _script_and_members(searched)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    entry = searched.summary["ensemble"]
    assert tuple(entry["weights"]) == script["Model"].MEMBER_WEIGHTS
    source = (searched.export / "best_model.py").read_text()
    trials = ", ".join(map(str, entry["members"]))
    assert source.startswith(f'"""Ensemble of trials {trials} of automodel study ')
    for i, n in enumerate(entry["members"]):
        assert f"class Member{i}(nn.Sequential):" in source
        assert f"# How trial {n} trained Member{i}" in source
    assert "import automodel" not in source and "from automodel" not in source
    assert sorted(p.name for p in searched.export.iterdir()) == ["best_model.py", "weights.pt"]


def test_evaluate_prints_the_ensembles_test_metrics_exactly(searched, blocker, tmp_path):
    s = searched.splits
    printed = _evaluated(searched.export, blocker, tmp_path, s["x_test"], s["y_test"])
    assert printed == searched.summary["ensemble"]["test"]  # every metric, to the last digit


def test_train_retrains_every_member_with_its_own_recipe(searched, blocker, tmp_path):
    s = searched.splits
    f = searched.save(tmp_path, x=s["x_train"], y=s["y_train"], xv=s["x_val"], yv=s["y_val"])
    out = tmp_path / "retrained.pt"
    res = _script(
        searched.export, blocker, "train", "--input", f["x"], "--labels", f["y"],
        "--val-input", f["xv"], "--val-labels", f["yv"], "--output", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split(f"best val_{searched.metric}")[1].split()[0])
    # The members trained again as the search trained them, averaged as it averaged them.
    assert best == pytest.approx(searched.summary["ensemble"]["val"][searched.metric], abs=1e-6)
    for i in range(len(searched.summary["ensemble"]["members"])):
        assert f"member {i}: epoch {searched.run.trainer.max_epochs}/" in res.stderr
    assert set(torch.load(out, weights_only=True)) == set(
        torch.load(searched.export / "weights.pt", weights_only=True)
    )


def test_the_script_is_ruff_clean_and_format_stable(searched):
    path = searched.export / "best_model.py"
    check = _ruff(path, "check")
    assert check.returncode == 0, check.stdout
    fmt = _ruff(path, "format", "--diff")
    assert fmt.returncode == 0, fmt.stdout


# ---------------------------------------------------------------------------- the verb


def test_export_verb_rebuilds_an_ensemble_without_retraining(searched, capsys):
    # In-process for speed: test_export.py runs the verb in subprocesses.
    study_dir = searched.run.study_dir
    trials = {p: p.stat().st_mtime_ns for p in (study_dir / "trials").rglob("model.pt")}
    args = [*(o for o in FAST if not o.startswith("ensemble.")), f"runs_dir={study_dir.parent}"]
    assert main(["export", *args, "ensemble.size=2", "quiet=false"]) == 0
    err = capsys.readouterr().err
    assert "retrain" not in err and "ensemble of trials" in err
    assert {p: p.stat().st_mtime_ns for p in (study_dir / "trials").rglob("model.pt")} == trials
    script = runpy.run_path(str(study_dir / "export" / "best_model.py"))
    assert sum(script["Model"].MEMBER_WEIGHTS) <= 2
    # More members than the trials kept for an ensemble: one line, nothing written.
    before = (study_dir / "export" / "best_model.py").read_bytes()
    assert main(["export", *args, "ensemble.size=7", "ensemble.candidates=9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ensemble.size=7 is more than the 5 trials study")
    assert "\n" not in err
    assert (study_dir / "export" / "best_model.py").read_bytes() == before
    # Without ensemble settings the verb writes what the study shipped.
    assert main(["export", *args]) == 0
    source = (study_dir / "export" / "best_model.py").read_text()
    shipped = searched.summary["shipped"] == "ensemble"
    assert source.startswith('"""Ensemble of trials') == shipped


# ------------------------------------------------- the defaults: folds, members refit

REFIT = [
    "data.cv_folds=3",
    "study.refit=true",
    "search_space.params.schedule=cosine",
    "~search_space.enqueue",
]


class Refitted(Searched):
    """A finished tiny search as the defaults run small data: k-fold trials, the ensemble's
    members (and the single model) refit on every non-test row."""

    def __init__(self, run: config.RunConfig, summary: dict):
        super().__init__(run, summary)
        self.data = folds.refit(run.data, run.seed)  # what refit members read

    def members(self) -> nn.Module:
        entry = self.summary["ensemble"]
        folder = self.run.study_dir / "ensemble"
        nets = [Checkpoint.load(folder / f"{n}.pt").build_model() for n in entry["members"]]
        return ensemble.Averaged(self.data.spec.task, nets, entry["weights"])


@pytest.fixture(scope="module", params=list(TASKS))
def refitted(request, tmp_path_factory) -> Refitted:
    runs = tmp_path_factory.mktemp(f"ens-refit-{request.param}")
    args = [*FAST, f"runs_dir={runs}", *ENSEMBLE, *REFIT, *TASKS[request.param]]
    run = config.to_run_config(config.compose(args))
    summary = search.search(run, "python -m automodel search")
    if summary["shipped"] != "ensemble":  # as `searched` does: the same selection, refit
        study_export.export_study(run, "python -m automodel export", ensemble_given=True)
    return Refitted(run, summary)


def test_refit_members_are_shipped_and_measured_on_the_rows_they_read(refitted, blocker, tmp_path):
    entry, study_dir = refitted.summary["ensemble"], refitted.run.study_dir
    assert entry["refit"] is True and refitted.summary["refit"] is True
    saved = {p.name for p in (study_dir / "ensemble").iterdir()}
    assert saved == {f"{n}.pt" for n in entry["members"]}
    for n in entry["members"]:
        raw = torch.load(study_dir / "ensemble" / f"{n}.pt", weights_only=True)
        assert raw["refit"] and raw["recipe"]["keep"] == "last"
    # The script reads raw rows the refit's way and gives the refit members' average.
    _, got, expected = _script_and_members(refitted)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    spec = refitted.data.spec
    assert automodel.metrics.for_spec(spec, expected, refitted.data.y_test) == pytest.approx(
        entry["test"], abs=1e-6
    )
    s = refitted.splits
    printed = _evaluated(refitted.export, blocker, tmp_path, s["x_test"], s["y_test"])
    assert printed == entry["test"]


def test_train_on_every_non_test_row_reproduces_the_refit_members(refitted, blocker, tmp_path):
    s = refitted.splits
    f = refitted.save(tmp_path, x=s["x_rest"], y=s["y_rest"])
    out = tmp_path / "retrained.pt"
    args = ("train", "--input", f["x"], "--labels", f["y"], "--output", out)
    res = _script(refitted.export, blocker, *args)
    assert res.returncode == 0, res.stderr
    shipped = torch.load(refitted.export / "weights.pt", weights_only=True)
    retrained = torch.load(out, weights_only=True)
    assert set(retrained) == set(shipped)
    assert all(torch.equal(retrained[k], shipped[k]) for k in shipped)


def test_export_verb_writes_the_refit_ensemble_again(refitted, capsys):
    """What the study shipped comes from the saved refit members, not refit again; a new
    selection (ensemble.size given) refits its members, here to the same bits."""
    study_dir = refitted.run.study_dir
    before = (study_dir / "export" / "weights.pt").read_bytes()
    args = [*(o for o in FAST if not o.startswith("ensemble.")), f"runs_dir={study_dir.parent}"]
    shipped = refitted.summary["shipped"] == "ensemble"
    again = [] if shipped else [f"ensemble.size={SIZE}", "ensemble.candidates=5"]
    assert main(["export", *args, *again, "quiet=false"]) == 0
    assert ("refitting the members" in capsys.readouterr().err) is not shipped
    assert (study_dir / "export" / "weights.pt").read_bytes() == before
    if not shipped:
        return
    # A saved member gone: one line naming it, nothing written.
    member = study_dir / "ensemble" / f"{refitted.summary['ensemble']['members'][0]}.pt"
    kept = member.read_bytes()
    member.unlink()
    try:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "cannot be read" in err and str(member) in err and "\n" not in err
        assert (study_dir / "export" / "weights.pt").read_bytes() == before
    finally:
        member.write_bytes(kept)


def test_members_of_folds_are_measured_on_the_data_they_read(tmp_path, blocker):
    """Without refit, k-fold members are their trials' first-fold models: the ensemble's test
    metrics are taken on the rows as that fold normalises them, which the script reads too
    (measured on the holdout split's normalisation instead, RMSE 174.1 against 168.2)."""
    args = [*FAST, f"runs_dir={tmp_path}", *ENSEMBLE, "data.cv_folds=3", "data.task=regression"]
    run = config.to_run_config(config.compose(args))
    summary = search.search(run, "python -m automodel search")
    if summary["shipped"] != "ensemble":
        study_export.export_study(run, "python -m automodel export", ensemble_given=True)
    s = automodel.data.load_raw_splits(run.data, run.seed)
    printed = _evaluated(run.study_dir / "export", blocker, tmp_path, s["x_test"], s["y_test"])
    assert printed == summary["ensemble"]["test"]


# ----------------------------------------------------------- every family, one fallback


@pytest.mark.parametrize(
    ("family", "params", "shape"),
    [
        ("resnet", {"stages": 2, "blocks": 1, "width": 8}, (1, 8, 8)),
        ("cnn", {"blocks": 1, "channels_l0": 4, "kernel_size": 3, "head_width": 8}, (1, 8, 8)),
    ],
)
def test_members_render_to_the_same_networks_with_blocks_written_once(
    family, params, shape, tmp_path
):
    spec = _spec(shape)
    members = [_checkpoint(family, params, spec), _checkpoint(family, params, spec)]
    members[1]["trial"] = 5
    with torch.no_grad():
        for tensor in members[1]["state_dict"].values():
            if tensor.is_floating_point():
                tensor.mul_(0.5)
    scores = {"val": {"accuracy": 0.5}, "test": {"accuracy": 0.25}}
    out = rendering.write(tmp_path, members, [2, 1], scores, PROVENANCE)  # checks the outputs
    source = (out / "best_model.py").read_text()
    if family == "resnet":
        assert source.count("class ResBlock(nn.Module):") == 1
    assert "class Member1(nn.Sequential):" in source and "# How trial 5 trained" in source
    assert _ruff(out / "best_model.py", "format", "--diff").returncode == 0


def test_an_ensemble_that_cannot_be_exported_ships_the_best_trial(make_run, monkeypatch):
    run = make_run()
    plan = search.prepare(run)
    search.write_run_files(plan)
    spec = plan.data.spec
    monkeypatch.setitem(
        models.FAMILIES,
        "prelu",
        models.Family({}, lambda p, s, n: nn.Sequential(nn.Linear(s[0], n), nn.PReLU())),
    )
    pairs = []
    for trial, family in enumerate(("mlp", "prelu")):
        torch.manual_seed(trial)
        net = models.create(family, {}, spec).eval()
        ckpt = Checkpoint(family, {}, spec, automodel.train.Recipe(), trial, {}, net.state_dict())
        ckpt.val = automodel.metrics.compute(spec.task, net(plan.data.x_val), plan.data.y_val)
        pairs.append((ckpt, net))
    (best, model), (other, other_model) = pairs
    chosen = ensembling.Ensemble(
        members=[best, other],
        models=[model, other_model],
        weights=[1, 1],
        val={"accuracy": 1.0, "f1_macro": 1.0},  # ranks above any single trial
        val_loss=0.0,
        module=ensemble.Averaged(spec.task, [model, other_model], [1, 1]),
        data=plan.data,
        test={"accuracy": 1.0, "f1_macro": 1.0},
    )
    summary: dict = {}
    shipped, _ = ensembling.ship(plan, chosen, best, model, summary, PROVENANCE)
    assert shipped is model and summary["shipped"] == "trial"
    assert summary["export_error"].startswith("ensemble: cannot export layer torch.nn")
    source = (run.study_dir / "export" / "best_model.py").read_text()
    assert source.startswith('"""Trial 0 of automodel study')
    assert summary["ensemble"]["members"] == [0, 1]


def test_the_parent_run_gets_the_ensembles_metrics_and_members(make_run):
    from automodel.tracking.parent import ParentRun

    run = make_run("tracking.enabled=true")
    parent = ParentRun(run)
    parent.attach()
    summary = {
        "val": {"accuracy": 0.9},
        "test": {"accuracy": 0.8},
        "counts": {"complete": 3, "pruned": 0, "failed": 0},
        "best_trial": 2,
        "wall_seconds": 1.0,
        "params": {},
        "ensemble": {
            "members": [2, 0],
            "weights": [2, 1],
            "val": {"accuracy": 0.95},
            "test": {"accuracy": 0.85},
        },
        "shipped": "ensemble",
    }
    parent.log_result(summary, 3)
    data = parent.client.get_run(parent.id).data
    assert data.metrics["ensemble_val_accuracy"] == 0.95
    assert data.metrics["ensemble_test_accuracy"] == 0.85
    assert data.tags["automodel.ensemble_members"] == "2,0"
    assert data.tags["automodel.ensemble_weights"] == "2,1"
    assert data.tags["automodel.shipped"] == "ensemble"


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    """A folder whose `automodel` package refuses to import: put first on PYTHONPATH."""
    root = tmp_path_factory.mktemp("blocker")
    (root / "automodel").mkdir()
    (root / "automodel" / "__init__.py").write_text(
        "raise ImportError('automodel is not importable here')\n"
    )
    return root
