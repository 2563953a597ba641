"""The model MLflow registers is the export, run as shipped (tracking/served.py).

Two real tracked searches on a sqlite store, run as a user runs them: digits (rows of 64
values), and a CSV table with a categorical column, a hashed one and gaps. Their registered
models are loaded by MLflow's own loaders in a subprocess where automodel cannot be imported,
and must give, from raw rows, what the exported best_model.py gives.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import Model

from automodel import config, tracking
from automodel import data as datalib
from automodel.tracking import registry
from tests.conftest import cli
from tests.test_csv import people
from tests.test_export import blocker  # noqa: F401 (a fixture)
from tests.test_tracking import TRACKED, _client

BASE = [o for o in TRACKED if not o.startswith(("data", "study.n_trials", "trainer.max_epochs"))]
BASE += ["study.n_trials=2", "trainer.max_epochs=2", "study.pruner=none"]


def _search(root: Path, study: str, *overrides: str, runs: int = 1) -> SimpleNamespace:
    """`python -m automodel search ...` into root/runs, `runs` times; what it registered."""
    args = [*BASE, f"runs_dir={root / 'runs'}", *overrides]
    for _ in range(runs):
        res = cli("search", *args)
        assert res.returncode == 0, res.stderr
        assert "warning: mlflow" not in res.stderr, res.stderr
    run = config.to_run_config(config.compose(args))
    export = root / "runs" / study / "export"
    return SimpleNamespace(
        run=run,
        study=study,
        runs=root / "runs",
        uri=f"sqlite:///{(root / 'runs').resolve() / 'mlflow.db'}",
        summary=json.loads((root / "runs" / study / "summary.json").read_text()),
        export=export,
        script=runpy.run_path(str(export / "best_model.py"), run_name="best_model"),
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    # Run twice: the rerun finds the study done, with the same best, so no new version.
    return _search(tmp_path_factory.mktemp("digits"), "digits-mlp", "data=digits", runs=2)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    path = people(root / "people.csv", n=300)
    overrides = ("data=csv", f"data.path={path}", "data.target=label")
    reg = _search(root, "people-tabular", *overrides)  # data=csv: the tabular family
    reg.csv = path
    return reg


def _served(reg, blocker: Path, tmp_path: Path, code: str, *args) -> dict:  # noqa: F811
    """Run `code` with `served` = the registered model loaded by mlflow.pyfunc, in a fresh
    process where automodel cannot be imported; it sets `result` (JSON), returned here."""
    prelude = (
        "import json, sys\n"
        "import mlflow, numpy as np, pandas as pd\n"
        f"mlflow.set_tracking_uri({reg.uri!r})\n"
        f"served = mlflow.pyfunc.load_model('models:/{reg.study}/1')\n"
    )
    check = (
        "assert not [m for m in sys.modules if m.split('.')[0] == 'automodel'], 'imported'\n"
        "try:\n    import automodel\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('automodel is importable: the test proves nothing')\n"
        f"open({str(tmp_path / 'result.json')!r}, 'w').write(json.dumps(result))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", prelude + code + check, *map(str, args)],
        cwd=tmp_path,  # not the checkout: its automodel must not be on the path
        env={**os.environ, "PYTHONPATH": str(blocker), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp_path / "result.json").read_text())


# What a served prediction frame becomes in JSON: its columns, labels and probabilities.
FRAME_JSON = (
    "def as_json(out):\n"
    "    p = out.drop(columns='prediction')\n"
    "    return {'columns': list(out.columns), 'labels': out['prediction'].tolist(),\n"
    "            'p': p.to_numpy().tolist()}\n"
)


def _assert_same(got: dict, script: dict, rows) -> None:
    labels, probabilities = script["predict"](rows)
    assert got["columns"] == ["prediction", *(f"p_{c}" for c in script["CLASSES"])]
    assert got["labels"] == labels
    np.testing.assert_allclose(np.array(got["p"]), probabilities, rtol=0, atol=1e-6)


def test_the_digits_model_takes_the_exported_scripts_raw_rows(digits, blocker, tmp_path):  # noqa: F811
    """64 raw values a row (not (N, 1, 8, 8) normalised tensors), as an array or a frame."""
    x = datalib.load_raw_splits(digits.run.data, digits.run.seed)["x_test"]
    assert x.shape[1] == 64
    np.save(tmp_path / "x.npy", x)
    code = FRAME_JSON + (
        "x = np.load(sys.argv[1])\n"
        "out = served.predict(x)\n"
        "assert out.equals(served.predict(pd.DataFrame(x)))\n"
        "assert out.equals(served.predict(x.astype(np.float32)))\n"
        "result = as_json(out)\n"
    )
    got = _served(digits, blocker, tmp_path, code, tmp_path / "x.npy")
    _assert_same(got, digits.script, x)


def test_a_table_model_takes_raw_cells_by_column_name(table, blocker, tmp_path):  # noqa: F811
    """The CSV's cells: text, numbers, gaps ('', NA, ?, None, NaN), the columns in any order
    and with others beside them (an id, free text, the target), as pandas reads the file."""
    with table.csv.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    names = [c[0] for c in table.script["COLUMNS"]]
    assert {"numeric", "onehot", "hash"} <= {c[1] for c in table.script["COLUMNS"]}
    assert sum("" in (r[header.index("age")], r[header.index("city")]) for r in rows) > 10
    code = FRAME_JSON + (
        "import csv\n"
        "with open(sys.argv[1], newline='') as f:\n"
        "    header, *rows = list(csv.reader(f))\n"
        "text = pd.DataFrame(rows, columns=header, dtype=object)\n"
        "out = served.predict(text[header[::-1]])\n"
        "assert out.equals(served.predict(pd.read_csv(sys.argv[1])))\n"
        "assert out.equals(served.predict(text.replace('', None)))\n"
        "result = as_json(out)\n"
    )
    got = _served(table, blocker, tmp_path, code, table.csv)
    _assert_same(got, table.script, [[r[header.index(n)] for n in names] for r in rows])


def test_mlflow_models_predict_serves_the_registered_model(digits, blocker, tmp_path):  # noqa: F811
    """Through MLflow's own command line, JSON rows of whole numbers as a user writes them."""
    x = datalib.load_raw_splits(digits.run.data, digits.run.seed)["x_test"][:8]
    (tmp_path / "in.json").write_text(json.dumps({"inputs": x.astype(int).tolist()}))
    res = subprocess.run(
        [
            *(sys.executable, "-m", "mlflow", "models", "predict", "-m", "models:/digits-mlp/1"),
            *("--env-manager", "local", "-i", str(tmp_path / "in.json"), "-t", "json"),
        ],
        env={**os.environ, "MLFLOW_TRACKING_URI": digits.uri, "PYTHONPATH": str(blocker)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    predictions = json.loads(res.stdout[res.stdout.index("{") :])["predictions"]
    classes = digits.script["CLASSES"]
    got = {
        "columns": list(predictions[0]),
        "labels": [p["prediction"] for p in predictions],
        "p": [[p[f"p_{c}"] for c in classes] for p in predictions],
    }
    _assert_same(got, digits.script, x)


def _model_id(version) -> str:
    """The logged model a registered version points at (its `model_id` reads None here)."""
    assert version.source.startswith("models:/m-"), version.source
    return version.source.removeprefix("models:/")


def _download(reg, tmp_path: Path) -> Path:
    """The folder of version 1's logged model, through our client (no global store)."""
    client = _client(reg.runs)
    model_id = _model_id(client.get_model_version(reg.study, "1"))
    location = client.get_logged_model(model_id).artifact_location
    return Path(mlflow.artifacts.download_artifacts(location, dst_path=str(tmp_path)))


def _undated(script: Path) -> list[str]:
    return [line for line in script.read_text().splitlines() if not line.startswith("exported: ")]


def test_the_logged_model_is_code_and_weights_not_a_pickle(digits, tmp_path):
    """MLflow stores served.py and the export folder; the weights load with weights_only."""
    local = _download(digits, tmp_path)
    files = [p for p in local.rglob("*") if p.is_file()]
    names = {p.relative_to(local).as_posix() for p in files}
    assert not [n for n in names if n.endswith((".pkl", ".pickle"))], names
    assert {"MLmodel", "served.py", "artifacts/export/best_model.py"} <= names
    flavor = Model.load(local).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(flavor["model_code_path"]).name == "served.py" and "python_model" not in flavor
    assert (local / "served.py").read_text() == registry.SERVED.read_text()
    copied = local / "artifacts" / "export"
    # The rerun wrote the export again, dated anew, and registered nothing new.
    assert _undated(copied / "best_model.py") == _undated(digits.export / "best_model.py")
    for path in files:
        if path.name != "weights.pt":  # a torch archive, read with weights_only=True
            assert not path.read_bytes().startswith(b"\x80"), f"{path} is a pickle"
    weights = torch.load(copied / "weights.pt", weights_only=True)
    expected = torch.load(digits.export / "weights.pt", weights_only=True)
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


def test_the_logged_model_documents_what_it_takes_and_gives(digits, table, tmp_path):
    """Signature, an input example of raw test rows, requirements, metadata."""
    for reg in (digits, table):
        local = _download(reg, tmp_path / reg.study)
        model = Model.load(local)
        classes = list(reg.script["CLASSES"])
        assert model.metadata == {"classes": classes, "trial": reg.summary["best_trial"]}
        outputs = model.signature.outputs
        assert outputs.input_names() == ["prediction", *(f"p_{c}" for c in classes)]
        requirements = (local / "requirements.txt").read_text().split()
        assert {r.split("==")[0] for r in requirements} == {"mlflow", "torch", "numpy", "pandas"}
        example = model.load_input_example(local)
        assert len(example) == registry.N_EXAMPLE_ROWS
        raw = datalib.load_raw_splits(reg.run.data, reg.run.seed)["x_test"][: len(example)]
        if reg is table:
            names = [c[0] for c in reg.script["COLUMNS"]]
            assert model.signature.inputs.input_names() == names == list(example.columns)
            assert example.to_numpy().tolist() == raw.tolist()  # the CSV's cells, as text
        else:
            assert len(model.signature.inputs.inputs) == 64
            np.testing.assert_allclose(np.asarray(example), raw, atol=1e-4)


def test_the_best_model_is_registered_once(digits):
    client = _client(digits.runs)
    versions = client.search_model_versions("name = 'digits-mlp'")
    assert len(versions) == 1, "the rerun did not improve: no new version"
    v = versions[0]
    assert v.run_id == digits.summary["mlflow_run_id"]
    assert v.tags[tracking.TRIAL_TAG] == str(digits.summary["best_trial"])
    assert float(v.tags[tracking.VALUE_TAG]) == pytest.approx(digits.summary["val"]["accuracy"])
    parent = client.get_run(v.run_id)
    assert parent.data.tags["automodel.registered"] == "digits-mlp/1"
    # The logged model is an output of the parent run (pyfunc.log_model takes no run).
    assert [m.model_id for m in parent.outputs.model_outputs] == [_model_id(v)]
