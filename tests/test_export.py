"""Export: the generated best_model.py against the trained model, run as a user would run it.

Real (tiny) searches per model family; the script runs in subprocesses where automodel cannot
be imported, from its own folder.
"""

from __future__ import annotations

import ast
import csv
import inspect
import itertools
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import automodel.data
from automodel import config, export, models, search, study_export, train
from automodel.data import DataSpec
from tests.conftest import FAST, at_once, checkpoint, cli
from tests.test_models import ACCEPTS, SHAPES, option_grid

# The data each family searches in the fidelity tests. A new family adds its line here.
FAMILY_DATA = {
    "mlp": ["data=synthetic", "data.n_samples=300", "search_space=mlp"],
    "cnn": ["data=digits", "search_space=cnn", "trainer.max_epochs=2"],
    "resnet": ["data=digits", "search_space=resnet", "trainer.max_epochs=2"],
    "pretrained": ["data=digits", "search_space=pretrained", "trainer.max_epochs=1"],
    "tabular": ["data=synthetic", "data.n_samples=300", "search_space=tabular"],
}
HOSTILE = [
    "__import__('os').system('touch pwned')",
    'x"""\n__import__("os").system("touch pwned")\n"""',
    "a'b\"c\\",
    "line\nbreak\r\ttab",
    "\u202eevil\u2066 %(prog)s {0} é",
    "'''",
]


def test_every_family_has_fidelity_data():
    assert set(FAMILY_DATA) == set(models.FAMILIES)


# ------------------------------------------------------------------------ helpers


def _run_config(runs_dir: Path, *overrides: str) -> config.RunConfig:
    fast = [o for o in FAST if not o.startswith(("data=", "data.n_"))]
    cfg = config.compose([*fast, f"runs_dir={runs_dir}", "study.n_trials=2", *overrides])
    return config.to_run_config(cfg)


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    """A folder whose `automodel` package refuses to import: put first on PYTHONPATH."""
    root = tmp_path_factory.mktemp("blocker")
    (root / "automodel").mkdir()
    (root / "automodel" / "__init__.py").write_text(
        "raise ImportError('automodel is not importable here')\n"
    )
    return root


def _evaluated(export_dir: Path, blocker: Path, folder: Path, x, y, *more: str) -> dict:
    """Every metric `best_model.py evaluate` prints for rows `x` and labels `y` (saved as
    .npy files in `folder`), without automodel; `more`: further options (--weights)."""
    np.save(folder / "evaluate_x.npy", x)
    np.save(folder / "evaluate_y.npy", y)
    files = ("--input", folder / "evaluate_x.npy", "--labels", folder / "evaluate_y.npy")
    res = _script(export_dir, blocker, "evaluate", *files, *more)
    assert res.returncode == 0, res.stderr
    return {name: float(value) for name, value in map(str.split, res.stdout.splitlines())}


def _script(export_dir: Path, blocker: Path, *args: str, timeout: float = 300):
    """`python best_model.py ...` from the export folder, without automodel."""
    env = {
        **os.environ,
        "PYTHONPATH": str(blocker),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "best_model.py", *args],
        cwd=export_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ruff(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--isolated", str(path)],
        capture_output=True,
        text=True,
    )


class Searched:
    """A finished tiny search of one family, with its raw splits."""

    def __init__(self, run: config.RunConfig, summary: dict):
        self.run = run
        self.summary = summary
        self.export = Path(summary["export"])
        self.splits = automodel.data.load_raw_splits(run.data, run.seed)
        self.data = automodel.data.load(run.data, run.seed)

    def save(self, folder: Path, **arrays: np.ndarray) -> dict[str, Path]:
        folder.mkdir(exist_ok=True)
        paths = {}
        for name, array in arrays.items():
            paths[name] = folder / f"{name}.npy"
            np.save(paths[name], array)
        return paths


@pytest.fixture(scope="module", params=list(models.FAMILIES))
def searched(request, tmp_path_factory) -> Searched:
    runs = tmp_path_factory.mktemp(f"runs-{request.param}")
    run = _run_config(runs, *FAMILY_DATA[request.param])
    return Searched(run, search.search(run, f"python -m automodel search {request.param}"))


# --------------------------------------------------------------- fidelity per family


def test_search_writes_the_export(searched):
    study_dir = searched.run.study_dir
    assert searched.export == study_dir / "export"
    assert sorted(p.name for p in searched.export.iterdir()) == ["best_model.py", "weights.pt"]
    assert not [p for p in study_dir.iterdir() if p.name.startswith(("export.tmp", "export.old"))]
    assert json.loads((study_dir / "summary.json").read_text())["export"] == str(searched.export)
    source = (searched.export / "best_model.py").read_text()
    trial = searched.summary["best_trial"]
    assert f"Trial {trial} of automodel study {searched.run.study.name}" in source
    assert f"test accuracy: {searched.summary['test']['accuracy']!r}" in source
    assert "import automodel" not in source and "from automodel" not in source
    state = torch.load(searched.export / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_exported_model_gives_the_trained_models_outputs(searched):
    script = runpy.run_path(str(searched.export / "best_model.py"))
    x = script["prepare"](searched.splits["x_test"])
    assert torch.equal(x, searched.data.x_test)  # raw rows normalised exactly as the search did
    ckpt = torch.load(searched.run.study_dir / "best_model.pt", weights_only=True)
    trained = models.create(ckpt["family"], ckpt["params"], searched.data.spec)
    trained.load_state_dict(ckpt["state_dict"])
    with torch.inference_mode():
        expected = trained.eval()(searched.data.x_test)
        got = script["load_model"]()(x)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert list(script["CLASSES"]) == list(searched.data.spec.classes)


def test_evaluate_reproduces_the_test_metric_exactly(searched, blocker, tmp_path):
    s = searched.splits
    printed = _evaluated(searched.export, blocker, tmp_path, s["x_test"], s["y_test"])
    assert printed == searched.summary["test"]  # every metric, to the last digit


def test_train_reproduces_the_validation_metric(searched, blocker, tmp_path):
    s = searched.splits
    f = searched.save(tmp_path, x=s["x_train"], y=s["y_train"], xv=s["x_val"], yv=s["y_val"])
    out = tmp_path / "retrained.pt"
    res = _script(
        searched.export, blocker, "train", "--input", f["x"], "--labels", f["y"],
        "--val-input", f["xv"], "--val-labels", f["yv"], "--output", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = float(res.stdout.split("best val_accuracy")[1].split()[0])
    assert best == searched.summary["val"]["accuracy"]  # the same training, to the bit
    assert f"epoch {searched.run.trainer.max_epochs}/" in res.stderr
    assert set(torch.load(out, weights_only=True)) == set(
        torch.load(searched.export / "weights.pt", weights_only=True)
    )


def test_explain_gives_the_searchs_importance_for_the_same_rows_and_seed(
    searched, blocker, tmp_path
):
    """Tables: the permutation importance of importance.json, to the last digit; images:
    its per-class saliency maps (float32 gradients, which a memory layout may reorder)."""
    s = searched.splits
    files = searched.save(tmp_path, x=s["x_test"], y=s["y_test"])
    study_dir = searched.run.study_dir
    expected = json.loads((study_dir / "importance.json").read_text())
    out = tmp_path / ("report.json" if expected["method"] == "permutation" else "maps.npy")
    args = ("explain", "--input", files["x"], "--labels", files["y"], "--output", out)
    res = _script(searched.export, blocker, *args)
    assert res.returncode == 0, res.stderr
    assert searched.summary["importance"]["top"][0]["name"] in res.stdout
    if expected["method"] == "permutation":
        del expected["seconds"]
        assert json.loads(out.read_text()) == expected
    else:
        maps = np.load(study_dir / expected["by_class"])
        assert maps.shape == (len(searched.data.spec.classes), *searched.data.spec.input_shape)
        np.testing.assert_allclose(np.load(out), maps, rtol=1e-5, atol=1e-7)


def test_train_reproduces_a_refit_model(tmp_path, blocker):
    """study.refit ships the best params trained on every non-test row for the best epoch
    count, keeping the last weights (KEEP "last"): the script's train on those rows gives the
    shipped weights to the bit, with or without validation rows, and so the test metrics."""
    runs = tmp_path / "runs"
    # A cosine: the refit stops inside the schedule its trials ran (SCHEDULE_EPOCHS).
    cosine = ("search_space.params.schedule=cosine", "~search_space.enqueue")
    run = _run_config(runs, *FAMILY_DATA["mlp"], "data.cv_folds=3", "study.refit=true", *cosine)
    refit = Searched(run, search.search(run, "python -m automodel search study.refit=true"))
    s = refit.splits
    f = refit.save(
        tmp_path / "rows",
        x=s["x_rest"],
        y=s["y_rest"],
        xv=s["x_val"],
        yv=s["y_val"],
    )
    shipped = torch.load(refit.export / "weights.pt", weights_only=True)
    epochs = torch.load(run.study_dir / "best_model.pt", weights_only=True)["recipe"]["epochs"]
    for val in ([], ["--val-input", f["xv"], "--val-labels", f["yv"]]):
        out = tmp_path / f"retrained{len(val)}.pt"
        args = ("train", "--input", f["x"], "--labels", f["y"], *val, "--output", out)
        res = _script(refit.export, blocker, *args)
        assert res.returncode == 0, res.stderr
        assert (
            f"epoch {epochs}/{epochs} " in res.stderr and f"epoch {epochs + 1}/" not in res.stderr
        )
        retrained = torch.load(out, weights_only=True)
        assert all(torch.equal(retrained[k], shipped[k]) for k in shipped)
    printed = _evaluated(
        refit.export, blocker, tmp_path, s["x_test"], s["y_test"], "--weights", out
    )
    assert printed == refit.summary["test"]


def test_help_and_predict_to_csv_without_automodel(searched, blocker, tmp_path):
    sanity = subprocess.run(
        [sys.executable, "-c", "import automodel"],
        env={**os.environ, "PYTHONPATH": str(blocker)},
        cwd=searched.export,
        capture_output=True,
        text=True,
    )
    assert "automodel is not importable here" in sanity.stderr
    res = _script(searched.export, blocker, "--help")
    assert res.returncode == 0, res.stderr
    assert all(verb in res.stdout for verb in ("predict", "evaluate", "train", "explain"))
    # A CSV of raw rows with a header, as a user would have it.
    rows = searched.splits["x_test"][:7]
    x_csv = tmp_path / "x.csv"
    header = ",".join(f"v{i}" for i in range(rows.shape[1]))
    np.savetxt(x_csv, rows, delimiter=",", header=header, comments="", fmt="%.9g")
    out = tmp_path / "p.csv"
    res = _script(searched.export, blocker, "predict", "--input", x_csv, "--output", out)
    assert res.returncode == 0, res.stderr
    table = list(csv.reader(out.open()))
    classes = list(searched.data.spec.classes)
    assert table[0] == ["label", *classes] and len(table) == 1 + len(rows)
    script = runpy.run_path(str(searched.export / "best_model.py"))
    labels, probs = script["predict"](rows)
    assert [r[0] for r in table[1:]] == labels
    np.testing.assert_allclose(np.array([r[1:] for r in table[1:]], float), probs, atol=1e-5)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


# ------------------------------------------------------- every family, every option


def _spec(shape: tuple[int, ...], classes=("a", "b", "c", "d")) -> DataSpec:
    n = shape[0]
    return DataSpec("t", shape, len(classes), tuple(classes), (0.5,) * n, (2.0,) * n)


def _checkpoint(family: str, params: dict, spec: DataSpec, **recipe) -> dict:
    torch.manual_seed(0)
    model = models.create(family, params, spec)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that they are checked too
        for name, buf in model.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    return checkpoint(
        family,
        params,
        spec,
        model,
        recipe=train.Recipe(**recipe),
        trial=3,
        val={"accuracy": 0.5},
        test={"accuracy": 0.25},
    )


PROVENANCE = export.provenance("s", "python -m automodel search")


@pytest.mark.parametrize(
    ("family", "shape"),
    [(f, s) for f, s in itertools.product(models.FAMILIES, SHAPES) if s in ACCEPTS[f]],
)
def test_every_option_of_every_family_renders_to_the_same_network(family, shape):
    spec = _spec(SHAPES[shape])
    for params in option_grid(family):
        ckpt = _checkpoint(family, params, spec)
        source = export.render(ckpt, PROVENANCE)
        scope: dict = {"__name__": "best_model", "__file__": "best_model.py"}
        exec(compile(source, "best_model.py", "exec"), scope)
        exported = scope["Model"]()
        exported.load_state_dict(ckpt["state_dict"])  # strict: the same names and shapes
        trained = models.create(family, params, spec)
        trained.load_state_dict(ckpt["state_dict"])
        x = torch.randn(6, *spec.input_shape)
        with torch.inference_mode():
            assert torch.allclose(exported.eval()(x), trained.eval()(x), atol=1e-6), params
        assert "for " not in source.split("class Model")[1].split("HERE =")[0], params


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_script_defines_the_names_its_runtime_reads(task):
    """The runtime copied into the script reads constants the exporter writes; in the package
    automodel.runtime.placeholders stands in for each of them."""
    from automodel.export import verbatim

    spec = _spec((5,))
    if task == "regression":
        spec = DataSpec("t", (5,), 0, (), (0.5,) * 5, (2.0,) * 5, task, "rmse", 1.0, 3.0)
    source = export.render(_checkpoint("mlp", {"depth": 1}, spec), PROVENANCE)
    scope: dict = {"__name__": "best_model", "__file__": "best_model.py"}
    exec(compile(source, "best_model.py", "exec"), scope)
    assert set(scope) >= verbatim.GENERATED


@pytest.mark.parametrize(
    ("optimizer", "schedule"), itertools.product(train.OPTIMIZERS, train.SCHEDULES)
)
def test_each_recipe_is_written_as_literals_and_ruff_clean(tmp_path, optimizer, schedule):
    spec = _spec((5,))
    ckpt = _checkpoint("mlp", {"depth": 1}, spec, optimizer=optimizer, schedule=schedule, lr=0.01)
    out = export.write(tmp_path, ckpt, PROVENANCE) / "best_model.py"
    source = out.read_text()
    assert "LR = 0.01\n" in source and f'SCHEDULE = "{schedule}"' in source
    assert {"adam": "Adam(", "adamw": "AdamW(", "sgd": "SGD(", "rmsprop": "RMSprop("}[
        optimizer
    ] in source
    check = _ruff(out, "check")
    assert check.returncode == 0, check.stdout
    fmt = _ruff(out, "format", "--diff")
    assert fmt.returncode == 0, fmt.stdout


def test_layers_are_written_with_literal_sizes():
    spec = _spec((1, 40))
    params = {"blocks": 2, "channels_l0": 8, "channels_l1": 16, "kernel_size": 5, "head_width": 32}
    source = export.render(_checkpoint("cnn", params, spec), PROVENANCE)
    assert "nn.Unflatten(1, (1, 1)),  # -> (1, 1, 40)" in source
    assert (
        "nn.Conv2d(1, 8, kernel_size=(1, 5), padding=(0, 2), bias=False),  # -> (8, 1, 40)"
        in source
    )
    assert "nn.MaxPool2d((1, 2)),  # -> (8, 1, 20)" in source
    assert "nn.Linear(160, 32),  # -> (32,)" in source


# ----------------------------------------------------------- custom blocks, unknown layers


class Residual(nn.Module):
    """x + f(x): a custom block, written into the script once as a class."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.relu(self.linear(x))


def _family(monkeypatch, build) -> None:
    monkeypatch.setitem(models.FAMILIES, "toy", models.Family({}, build))


def test_a_custom_block_appears_once_as_a_class(monkeypatch, tmp_path):
    _family(
        monkeypatch,
        lambda p, shape, n: nn.Sequential(
            nn.Linear(shape[0], 16), Residual(16), Residual(16), nn.Linear(16, n)
        ),
    )
    source_of = inspect.getsource(Residual)
    monkeypatch.setitem(export.LAYERS, Residual, export.Layer(("width",), source=source_of))
    ckpt = _checkpoint("toy", {}, _spec((5,)))
    out = export.write(tmp_path, ckpt, PROVENANCE) / "best_model.py"  # write checks outputs
    source = out.read_text()
    assert source.count("class Residual(nn.Module):") == 1
    assert source.count("            Residual(16),  # -> (16,)") == 2
    assert _ruff(out, "check").returncode == 0


def test_an_unknown_layer_is_a_clear_error(monkeypatch):
    _family(monkeypatch, lambda p, shape, n: nn.Sequential(nn.Linear(shape[0], n), nn.PReLU()))
    with pytest.raises(
        export.ExportError,
        match=r"cannot export layer torch\.nn\.modules\.activation\.PReLU: it is not in "
        r"automodel\.export\.LAYERS; a model family that uses it must teach the exporter",
    ):
        export.render(_checkpoint("toy", {}, _spec((5,))), PROVENANCE)


def test_a_model_that_is_not_sequential_is_refused(monkeypatch):
    _family(monkeypatch, lambda p, shape, n: Residual(shape[0]))
    with pytest.raises(export.ExportError, match="builds a Residual; the exporter writes"):
        export.render(_checkpoint("toy", {}, _spec((5,), ("a", "b", "c", "d", "e"))), PROVENANCE)


# ------------------------------------------------------------------------------ safety


def _hostile_checkpoint() -> tuple[dict, dict]:
    spec = DataSpec(HOSTILE[0], (5,), len(HOSTILE), tuple(HOSTILE), (0.0,) * 5, (1.0,) * 5)
    ckpt = _checkpoint("mlp", {"depth": 1, "width": 4}, spec)
    prov = export.provenance(HOSTILE[1], HOSTILE[1], mlflow_run_id=HOSTILE[3])
    prov.update(automodel=HOSTILE[2], torch=HOSTILE[4], date=HOSTILE[5])
    return ckpt, prov


def test_hostile_strings_stay_inert_data(tmp_path, monkeypatch, blocker):
    monkeypatch.chdir(tmp_path)  # `touch pwned` would land here (write runs the script)
    ckpt, prov = _hostile_checkpoint()
    export_dir = export.write(tmp_path, ckpt, prov)
    source = (export_dir / "best_model.py").read_text()
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "__import__" not in names and "system" not in attrs
    doc = ast.get_docstring(tree, clean=False)
    for text in (HOSTILE[1], HOSTILE[3], HOSTILE[2], HOSTILE[4]):
        assert text.rstrip() in doc  # escaped in the file, the same text once parsed
    assert not any("__import__" in line.split("#")[0].split('"')[0] for line in source.splitlines())
    script = runpy.run_path(str(export_dir / "best_model.py"))
    assert script["CLASSES"] == tuple(HOSTILE)
    rows = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", rows)
    res = _script(
        export_dir, blocker, "predict", "--input", tmp_path / "x.npy", "--output", "p.csv"
    )
    assert res.returncode == 0, res.stderr
    table = list(csv.reader((export_dir / "p.csv").open(newline="")))
    assert table[0] == ["label", *HOSTILE] and all(r[0] in HOSTILE for r in table[1:])
    assert _ruff(export_dir / "best_model.py", "check").returncode == 0
    assert _ruff(export_dir / "best_model.py", "format", "--diff").returncode == 0
    assert not list(tmp_path.rglob("pwned"))


def _numeric(*names: str) -> list[dict]:
    return [{"name": n, "kind": "numeric", "fill": 0.5, "indicator": False} for n in names]


REJECTED = [
    (("family",), HOSTILE[0], "family"),
    (("recipe", "optimizer"), HOSTILE[0], "optimizer"),
    (("recipe", "schedule"), "cosine'); import os; ('", "schedule"),
    (("recipe", "lr"), HOSTILE[0], "lr must be a number"),
    (("recipe", "lr"), float("nan"), "lr must be finite"),
    (("recipe", "batch_size"), "64", "batch_size must be an int"),
    (("recipe", "seed"), True, "seed must be an int"),
    (("recipe", "extra"), HOSTILE[0], "training recipe field 'extra' is not handled"),
    (("spec", "metric"), HOSTILE[0], "metric"),
    (("spec", "task"), HOSTILE[0], "task"),
    (("spec", "mean"), [HOSTILE[0]] * 5, "mean must be a number"),
    (("spec", "std"), [float("inf")] * 5, "std must be finite"),
    (("spec", "input_shape"), [HOSTILE[0]], "input_shape must be an int"),
    (("spec", "classes"), [1, 2, 3, 4], "expected a string"),
    (("spec", "encoder"), HOSTILE[0], "data spec field 'encoder' is not handled"),
    (("spec", "columns"), [HOSTILE[0]] * 5, "columns must name the features"),
    (("spec", "columns"), _numeric("a", "b", "c", "d"), "encode 4 features, the model reads 5"),
    (("spec", "columns"), _numeric("a", "a", "c", "d", "e"), "column names must be unique"),
    (("spec", "columns"), [{"name": "a", "kind": HOSTILE[0]}] * 5, "column kind"),
    (("spec", "image_mode"), HOSTILE[0], "image_mode"),
    (("spec", "target_std"), 0.0, "target_std must be > 0"),
    (("recipe", "loss"), HOSTILE[0], "loss"),
    (("recipe", "augment"), HOSTILE[0], "augment"),
    (("trial",), HOSTILE[0], "trial must be an int"),
    (("val",), {HOSTILE[0]: 0.5}, "metric"),
    (("test",), {"accuracy": HOSTILE[0]}, "must be a number"),
]


@pytest.mark.parametrize(("path", "value", "message"), REJECTED, ids=lambda v: str(v)[:24])
def test_config_values_that_reach_code_are_allowlisted_or_refused(path, value, message):
    ckpt = _checkpoint("mlp", {"depth": 1}, _spec((5,)))
    target = ckpt
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(export.ExportError, match=message):
        export.render(ckpt, PROVENANCE)


def test_column_names_are_written_as_literals(tmp_path, blocker):
    ckpt = _checkpoint("mlp", {"depth": 1}, _spec((3,)))
    ckpt["spec"]["columns"] = _numeric("age", HOSTILE[0], "b,c")
    export_dir = export.write(tmp_path, ckpt, PROVENANCE)
    script = runpy.run_path(str(export_dir / "best_model.py"))
    assert [c[0] for c in script["COLUMNS"]] == ["age", HOSTILE[0], "b,c"]
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    path = tmp_path / "x.csv"
    with path.open("w", newline="") as f:  # columns in another order, plus one more
        w = csv.writer(f)
        w.writerow(["b,c", "extra", HOSTILE[0], "age"])
        w.writerows([[r[2], 9.0, r[1], r[0]] for r in rows])
    _, read, _ = script["read_input"](path)
    assert np.array_equal(script["encode"](read), np.array(rows))


def test_a_hostile_study_name_is_refused_by_the_config(make_run):
    run = make_run()
    for name in HOSTILE:
        run.study.name = name
        with pytest.raises(config.ConfigError, match="is not a valid name"):
            config.validate(run)


# ------------------------------------------------------------------------- atomicity


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _tiny() -> dict:
    return _checkpoint("mlp", {"depth": 1, "width": 3}, _spec((4,)))


def test_a_failed_render_leaves_the_previous_export(tmp_path, monkeypatch):
    old = _files(export.write(tmp_path, _tiny(), PROVENANCE))

    def broken(*args):
        raise export.ExportError("render failed")

    monkeypatch.setattr(export, "render", broken)
    with pytest.raises(export.ExportError, match="render failed"):
        export.write(tmp_path, _tiny(), PROVENANCE)
    assert _files(tmp_path / "export") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.lock"]


def test_a_write_that_fails_midway_leaves_the_previous_export(tmp_path, monkeypatch):
    old = _files(export.write(tmp_path, _tiny(), PROVENANCE))

    def half_written(path, state):
        path.write_bytes(b"\x80\x02 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(export.files, "save_weights", half_written)
    with pytest.raises(OSError, match="disk full"):
        export.write(tmp_path, _checkpoint("mlp", {"depth": 2}, _spec((4,))), PROVENANCE)
    assert _files(tmp_path / "export") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.lock"]


def test_processes_exporting_one_study_at_once_take_turns(tmp_path):
    """Every host of a cluster finishes the study and exports it into the shared folder at
    about the same moment: one's recovery of a killed export deleted another's temporary
    folder mid-write (`No such file or directory`, found by benchmarks/load.py)."""

    def host():
        for _ in range(3):
            export.write(tmp_path, _tiny(), PROVENANCE)

    assert at_once(host, 6) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.lock"]
    export.check(tmp_path / "export", export._built(_tiny()))


def test_a_kill_between_the_renames_is_recovered(tmp_path):
    old = _files(export.write(tmp_path, _tiny(), PROVENANCE))
    # The state a kill leaves after "old -> backup" and before "new -> export".
    os.replace(tmp_path / "export", tmp_path / "export.old")
    (tmp_path / "export.tmp-x1").mkdir()
    (tmp_path / "export.tmp-x1" / "best_model.py").write_text("# half")
    export.recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.lock"]
    assert _files(tmp_path / "export") == old
    # And a kill after "new -> export" but before the backup was dropped.
    (tmp_path / "export.old").mkdir()
    export.write(tmp_path, _tiny(), PROVENANCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.lock"]


# ----------------------------------------------------------------------- the CLI verb


def test_export_verb_best_and_other_trials(make_run):
    run = make_run("study.n_trials=3", "study.keep_top_k=1", "study.pruner=none")
    summary = search.search(run, "python -m automodel search")
    export_dir = Path(summary["export"])
    (export_dir / "best_model.py").unlink()
    res = cli("export", *FAST, f"runs_dir={run.runs_dir}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(export_dir / "best_model.py")
    source = (export_dir / "best_model.py").read_text()
    assert f"Trial {summary['best_trial']} of" in source
    assert "searched with: python -m automodel search" in source
    other = next(n for n in range(3) if n != summary["best_trial"])
    assert not (run.study_dir / "trials" / str(other)).exists()
    res = cli("export", *FAST, f"runs_dir={run.runs_dir}", f"trial={other}", "quiet=false")
    assert res.returncode == 0, res.stderr
    assert f"trial {other} kept no weights" in res.stderr
    source = (export_dir / "best_model.py").read_text()
    assert f"Trial {other} of" in source and "test accuracy: " in source
    with pytest.raises(config.ConfigError, match=r"has no trial 7; its trials are 0\.\.2"):
        study_export.export_study(make_run("trial=7"))


def test_export_verb_unknown_study_is_one_line_exit_2(tmp_path):
    res = cli("export", *FAST, f"runs_dir={tmp_path}", "study.name=nope")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: no study 'nope' under ")
    assert "\n" not in res.stderr.strip() and not list(tmp_path.iterdir())
