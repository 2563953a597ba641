"""MLflow tracking against real stores: a sqlite file on tmp_path, a real `mlflow server`.

One tracked search (a failed, a complete and a pruned trial) is shared by most tests and read
back with MlflowClient; the others run the command line as a user would (kill and resume, a
password in the tracking URL, the `ui` verb, a headless browser on the UI).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from automodel import config, models, search, tracking, ui
from automodel import study as studylib
from automodel.__main__ import main
from automodel.config import ConfigError
from automodel.tracking.writer import Writer, coalesce
from tests.conftest import FAST, POISONED, ROOT, cli, load_study, require_service, spawned

TRACKED = [o for o in FAST if not o.startswith("tracking.")] + ["tracking.enabled=true"]


def _client(runs: Path) -> MlflowClient:
    uri = f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(client: MlflowClient, experiment: str = "automodel") -> tuple[list, list]:
    """(parent runs, child runs) of an experiment."""
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get(tracking.ROLE_TAG) == "study"]
    children = [r for r in found if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    return parents, children


SPACE = """family: poisoned
params:
  poison: {type: categorical, choices: [true, false]}
  lr: {type: float, low: 1.0e-6, high: 0.1, log: true}
enqueue:
  - {poison: true, lr: 0.05}
  - {poison: false, lr: 0.05}
  - {poison: false, lr: 1.0e-6}
"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A search with one failed, one complete and one pruned trial, tracked into sqlite.

    As `search` does, the tracker opens the store in the background; here the opening is held
    until every trial has finished, so all their writes were queued before the store was open:
    the tests below read back that nothing was lost.
    """
    tmp = tmp_path_factory.mktemp("tracked")
    space = tmp / "poisoned.yaml"
    space.write_text(SPACE)
    gate = threading.Event()
    start_study = tracking.Tracker.start_study

    def held_start_study(self, *args, **kwargs):
        assert gate.wait(120), "the trials did not finish"
        return start_study(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.FAMILIES, "poisoned", POISONED)
        mp.setattr(tracking.Tracker, "start_study", held_start_study)
        # MLflow's fallback store is ./mlflow.db (or ./mlruns): a scratch cwd catches any use.
        (tmp / "cwd").mkdir()
        mp.chdir(tmp / "cwd")
        run = config.to_run_config(
            config.compose(
                [
                    *TRACKED,
                    f"runs_dir={tmp / 'runs'}",
                    f"search_space={space}",
                    "study.n_trials=2",
                    "study.name=states",
                ]
            )
        )
        plan = search.prepare(run)
        search.write_run_files(plan)
        # A real Optuna pruner: from epoch 2 on, any trial below 0.8 accuracy is pruned.
        study = optuna.create_study(
            study_name=run.study.name,
            storage=studylib.open_storage(None, run.study_dir),
            direction="maximize",
            pruner=optuna.pruners.ThresholdPruner(lower=0.8, n_warmup_steps=2),
        )
        for params in plan.space.enqueue:
            study.enqueue_trial(params)
        tracker = tracking.Tracker(run)
        tracker.open(plan, study)
        device = torch.device("cpu")
        search.run_trials(plan, study, device, tracker)
        assert tracker.parent_id is None and not (tmp / "runs" / "mlflow.db").exists()
        gate.set()
        summary = search.finish(plan, study, device, 1.0, "test", tracker)
        # A rerun of a finished study reports again: the best did not improve.
        search.finish(plan, study, device, 1.0, "test again", tracker)
        tracker.close()
    yield SimpleNamespace(run=run, plan=plan, study=study, summary=summary, runs=tmp / "runs")


def test_one_parent_and_one_child_per_trial_with_the_right_states(tracked):
    client = _client(tracked.runs)
    parents, children = _runs(client)
    assert len(parents) == 1
    assert tracked.summary["mlflow_run_id"] == parents[0].info.run_id
    assert parents[0].info.status == "FINISHED"
    trials = tracked.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED]
    assert len(children) == len(trials)
    by_trial = {int(r.data.tags[tracking.TRIAL_TAG]): r for r in children}
    expected = {0: ("failed", "FAILED"), 1: ("complete", "FINISHED"), 2: ("pruned", "FINISHED")}
    for number, (state, status) in expected.items():
        r = by_trial[number]
        assert (r.data.tags[tracking.STATE_TAG], r.info.status) == (state, status)
        assert r.data.tags[tracking.PARENT_TAG] == parents[0].info.run_id
        assert r.data.tags["automodel.device"] == "cpu"
        assert r.data.params == {k: str(v) for k, v in trials[number].params.items()}
        assert r.data.metrics["n_parameters"] == 16 * 3 + 3
        assert r.data.metrics["duration_seconds"] > 0
        assert r.info.end_time >= r.info.start_time
    assert by_trial[0].data.tags[tracking.REASON_TAG].startswith("NonFiniteLoss: training loss")
    assert by_trial[1].data.metrics["best_val_accuracy"] == pytest.approx(trials[1].value)
    assert by_trial[2].data.metrics["pruned_at_epoch"] == 2


def test_the_experiment_opens_in_the_model_training_view(tracked):
    """MLflow's UI picks its view from this tag: without it, the GenAI view."""
    exp = _client(tracked.runs).get_experiment_by_name("automodel")
    assert exp.tags[tracking.KIND_TAG] == tracking.KIND == "custom_model_development"


def test_an_existing_experiment_gets_the_view_unless_one_was_chosen(tmp_path):
    runs = tmp_path / "runs"
    client = _client(runs)
    client.create_experiment("plain")
    client.create_experiment("chosen", tags={tracking.KIND_TAG: "genai_development"})
    for name, kind in (("plain", tracking.KIND), ("chosen", "genai_development")):
        overrides = [*TRACKED, f"runs_dir={runs}", f"tracking.experiment={name}"]
        tracker = tracking.Tracker(config.to_run_config(config.compose(overrides)))
        tracker.attach()
        tracker.close()
        assert client.get_experiment_by_name(name).tags[tracking.KIND_TAG] == kind


def test_one_metric_point_per_reported_epoch(tracked):
    client = _client(tracked.runs)
    _, children = _runs(client)
    for r in children:
        trial = tracked.study.trials[int(r.data.tags[tracking.TRIAL_TAG])]
        history = client.get_metric_history(r.info.run_id, "val_accuracy")
        points = {m.step: m.value for m in history}
        assert len(history) == len(points) == len(trial.intermediate_values)
        assert points == pytest.approx(trial.intermediate_values)
        for key in ("train_loss", "val_loss", "lr", "epoch_seconds"):
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == sorted(trial.intermediate_values), key


def test_the_parent_holds_settings_result_and_plots(tracked):
    client = _client(tracked.runs)
    parent = client.get_run(tracked.summary["mlflow_run_id"])
    assert parent.data.tags[tracking.STUDY_TAG] == "states"
    assert parent.data.tags[tracking.STORAGE_TAG] == str(
        (tracked.run.study_dir / "study.journal").resolve()
    )
    assert parent.data.params["trainer.max_epochs"] == "3"
    assert parent.data.params["family"] == "poisoned"
    assert parent.data.tags["best.lr"] == "0.05"
    metrics = parent.data.metrics
    assert metrics["best_val_accuracy"] == pytest.approx(tracked.summary["val"]["accuracy"])
    assert metrics["test_accuracy"] == pytest.approx(tracked.summary["test"]["accuracy"])
    assert (metrics["n_complete"], metrics["n_pruned"], metrics["n_failed"]) == (1, 1, 1)
    assert metrics["cv_folds"] == 0 and parent.data.tags["automodel.refit"] == "false"
    base = tracked.summary["baseline"]  # gradient boosting beside the table's result
    assert metrics["baseline_val_f1_macro"] == pytest.approx(base["val"]["f1_macro"])
    assert metrics["baseline_test_accuracy"] == pytest.approx(base["test"]["accuracy"])
    assert parent.data.tags["automodel.stop_reason"] == tracked.summary["stop_reason"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "search_space.yaml", "summary.json", "best_params.json"} <= artifacts
    pictures = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "optimization_history.png",
        "parallel_coordinate.png",
        "learning_curves.png",
        "confusion_matrix.png",
    } <= pictures
    explained = client.list_artifacts(parent.info.run_id, "importance")
    assert {Path(a.path).name for a in explained} == {"importance.json", "columns.png"}
    # One searched param with one complete trial: importances cannot be computed, and say so.
    if "param_importances.png" not in pictures:
        assert "param_importances" in parent.data.tags["automodel.plots_skipped"]
    local = Path(client.download_artifacts(parent.info.run_id, "summary.json", str(tracked.runs)))
    assert json.loads(local.read_text())["mlflow_run_id"] == parent.info.run_id


def test_a_model_without_an_export_is_not_logged_and_a_tag_says_why(tracked):
    """The test-only family cannot be exported: there is no best_model.py to serve (the
    registered model is the export: tests/test_served.py)."""
    client = _client(tracked.runs)
    assert tracked.summary["export"] is None
    assert client.search_model_versions("name = 'states'") == []
    parent = client.get_run(tracked.summary["mlflow_run_id"])
    assert "was not exported" in parent.data.tags["automodel.model_not_logged"]
    assert "automodel.registered" not in parent.data.tags


def test_an_export_folder_goes_on_the_parent_run(tracked, tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "best_model.py").write_text("print('hi')\n")
    tracker = tracking.Tracker(tracked.run)
    tracker.log_export(tmp_path / "export")
    tracker.close()
    assert tracker.parent_id == tracked.summary["mlflow_run_id"]
    names = [a.path for a in _client(tracked.runs).list_artifacts(tracker.parent_id, "export")]
    assert names == ["export/best_model.py"]


def test_nothing_falls_back_to_mlflows_default_store(tracked):
    """Every MLflow call goes to our store: none to ./mlflow.db or the refused ./mlruns."""
    assert list((tracked.runs.parent / "cwd").iterdir()) == []
    assert not list(tracked.runs.parent.rglob("mlruns"))
    assert (tracked.runs / "mlartifacts").is_dir()


def test_a_killed_search_resumes_under_the_same_parent(tmp_path):
    """Curves grow while the trial runs; after SIGKILL the rerun ends the orphan run FAILED."""
    runs = tmp_path / "runs"
    # The trainer's settings are the study's identity: the rerun keeps max_epochs.
    args = [*TRACKED, f"runs_dir={runs}", "study.pruner=none", "trainer.max_epochs=1500"]
    live = None
    with spawned("search", *args, "study.n_trials=2", "quiet=false") as proc:
        # Read the store only once the search has created it ("mlflow: run ..." is printed).
        while not proc.stdout.readline().startswith("mlflow: run") and proc.poll() is None:
            pass
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            live = _running_child_with_points(runs, 3)
            if live is not None:
                break
        else:
            pytest.fail(f"no live curve seen; search stderr: {proc.stderr.read()[-2000:]}")
        # Leaving the block SIGKILLs the search.
    # One trial more at most: failed trials do not count against the budget.
    res = cli("search", *args, "study.n_trials=1")
    assert res.returncode == 0, res.stderr
    client = _client(runs)
    parents, children = _runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    killed = client.get_run(live)
    assert killed.info.status == "FAILED"
    assert killed.data.tags[tracking.STATE_TAG] == "failed"
    assert "died" in killed.data.tags[tracking.REASON_TAG]
    assert "RUNNING" not in {r.info.status for r in children}
    trials = load_study(runs / "synthetic-mlp").trials
    assert len(children) == len(trials)


def _running_child_with_points(runs: Path, n: int) -> str | None:
    """A child run with `n` points or more whose trial is still running: the run's status
    alone lags (the tracker writes behind the trainer), so Optuna's journal is asked last."""
    if not (runs / "mlflow.db").exists():
        return None
    try:
        client = _client(runs)
        if client.get_experiment_by_name("automodel") is None:
            return None
        _, children = _runs(client)
    except Exception:  # the database is being created
        return None
    for r in children:
        history = client.get_metric_history(r.info.run_id, "val_accuracy")
        if r.info.status == "RUNNING" and len(history) >= n:
            trial = int(r.data.tags[tracking.TRIAL_TAG])
            study = load_study(runs / "synthetic-mlp")
            if study.trials[trial].state == TrialState.RUNNING:
                return r.info.run_id
    return None


def test_tracking_disabled_never_imports_mlflow(tmp_path):
    code = (
        "import sys\n"
        "from automodel.__main__ import main\n"
        "assert main(['--help']) == 0\n"
        "rc = main(sys.argv[1:])\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "search", *FAST, f"runs_dir={tmp_path}", "study.n_trials=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_store_that_fails_to_open_stops_the_search_in_one_line(tmp_path, capsys):
    """Only opening the store shows that its experiment is deleted: that happens while the first
    trial trains, and the search stops with the error in one line, exit code 2, no run logged."""
    runs = tmp_path / "runs"
    client = _client(runs)  # creates runs/mlflow.db
    client.delete_experiment(client.create_experiment("gone"))
    overrides = [*TRACKED, f"runs_dir={runs}", "tracking.experiment=gone", "trainer.max_epochs=50"]
    assert main(["search", *overrides]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "tracking.experiment 'gone' is deleted" in err
    assert out == ""
    assert client.search_runs([client.get_experiment_by_name("gone").experiment_id]) == []
    storage = studylib.open_storage(None, runs / "synthetic-mlp")
    trials = optuna.load_study(study_name="synthetic-mlp", storage=storage).trials
    assert len(trials) < 4  # it did not run the whole budget first
    assert not (runs / "synthetic-mlp" / "summary.json").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("tracking.uri=file:./mlruns", "tracking.uri 'file:./mlruns' is not a tracking store"),
        ("tracking.uri=mlruns", "tracking.uri 'mlruns' is not a tracking store"),
        ("tracking.uri=ftp://u:hunter2@host/x", "tracking.uri 'ftp://u:***@host/x' is not"),
        ("tracking.experiment=a%b", "tracking.experiment 'a%b' is not a valid name"),
        ("tracking.registered_model=x%y", "tracking.registered_model 'x%y' is not a valid"),
        ("ui.port=0", "ui.port must be in 1..65535, got 0"),
    ],
)
def test_bad_tracking_settings_are_refused_in_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        config.to_run_config(config.compose([*FAST, override]))
    message = str(err.value)
    assert "\n" not in message and "hunter2" not in message
    assert fragment in message


def test_ui_refuses_a_tracking_server_without_showing_its_password(make_run):
    run = make_run("tracking.uri=http://me:hunter2@example.org:5000")
    with pytest.raises(ConfigError, match=r"tracking server http://me:\*\*\*@example.org:5000"):
        ui.serve(run)


def test_ui_passes_the_store_url_in_the_environment_not_in_argv(make_run):
    """`ps` shows every process's arguments to every user: no password there."""
    argv, env = ui.command(make_run("tracking.uri=postgresql://me:hunter2@db/mlflow"))
    assert "hunter2" not in " ".join(argv) and "--workers" in argv
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://me:hunter2@db/mlflow"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_ui_refuses_a_port_in_use(make_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            ui.serve(make_run(f"ui.port={port}"))


def test_queued_metrics_are_merged_per_trial_in_order():
    m, last = [("val_accuracy", 0.5, 0, 1)], [("best_val_accuracy", 0.5, 0, 0)]
    ops = [("start", 0, {}, []), ("metrics", 0, m), ("metrics", 1, m), ("metrics", 0, m)]
    ops += [("end", 0, {}, ("FINISHED", 0, {}, last)), ("metrics", 1, m), ("sync", None)]
    ops += [("metrics", 0, m), ("start", 0, {}, [])]
    assert coalesce(ops) == [
        ("start", 0, {}, []),
        ("end", 0, {}, ("FINISHED", 0, {}, m + m + last)),
        ("metrics", 1, m + m),
        ("sync", None),
        ("metrics", 0, m),
        ("start", 0, {}, []),
    ]


class _ListSink:
    """A writer sink that records what it is asked to write."""

    def __init__(self):
        self.calls = []

    def create(self, spec):
        self.calls.append(("create", spec["run_name"]))
        return spec["run_name"]

    def log(self, run_id, metrics, params):
        self.calls.append(("log", run_id, len(metrics)))

    def end(self, run_id, status, end_ms, tags, metrics):
        self.calls.append(("end", run_id, status))

    def abandon(self, run_id, status, reason):
        self.calls.append(("abandon", run_id, status))


@pytest.mark.parametrize("fails", [False, True])
def test_writes_queued_behind_a_call_wait_for_it_or_are_dropped_if_it_fails(fails):
    sink, warnings, gate = _ListSink(), [], threading.Event()

    def opening():
        assert gate.wait(30)
        if fails:
            raise RuntimeError("no store")

    writer = Writer(sink, warnings.append)
    writer.put(("call", opening))
    m = [("val_accuracy", 0.5, 0, 1)]
    writer.put(("start", 0, {"run_name": "trial-0"}, m))
    writer.put(("end", 0, {"run_name": "trial-0"}, ("FINISHED", 0, {}, m)))
    writer.put(("start", 1, {"run_name": "trial-1"}, []))
    assert not writer.flush(timeout=0.5) and sink.calls == []  # held behind the call
    gate.set()
    assert writer.flush(timeout=30)
    writer.close("KILLED", "stopped")
    if fails:
        assert sink.calls == [] and writer.failed
        assert warnings == ["pending writes not sent after 0 s"]  # the flush above, nothing else
    else:
        assert sink.calls == [
            ("create", "trial-0"),
            ("log", "trial-0", 1),
            ("end", "trial-0", "FINISHED"),
            ("create", "trial-1"),
            ("log", "trial-1", 0),
            ("abandon", "trial-1", "KILLED"),
        ]


# -- the `ui` verb over the shared store, a search through it, a headless browser on it ---------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tracked):
    """`python -m automodel ui` on the shared store; stopped with Ctrl-C at the end."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "automodel", "ui", f"runs_dir={tracked.runs}", f"ui.port={port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # printed once the server answers
    if f"http://127.0.0.1:{port}" not in line:
        _stop_ui(proc)
        pytest.fail(f"ui did not start: {line!r} {proc.stderr.read()[-2000:]}")
    url = f"http://127.0.0.1:{port}"
    yield SimpleNamespace(proc=proc, url=url, port=port, line=line, runs=tracked.runs)
    _stop_ui(proc)


def _stop_ui(proc: subprocess.Popen) -> None:
    """SIGTERM lets `ui` stop its server (SIGKILL would orphan it); kill only as a last resort."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _api(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def test_ui_serves_the_runs_over_rest(served, tracked):
    assert "sqlite:///" in served.line
    exp = _api(served.url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=automodel")
    exp_id = exp["experiment"]["experiment_id"]
    found = _api(served.url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})
    names = {r["info"]["run_name"] for r in found["runs"]}
    assert {"states", "trial-0", "trial-1", "trial-2"} <= names


def test_processes_racing_to_open_a_study_end_under_one_parent(served, tracked):
    """Through a server (no file lock), four trackers open a new study at once, each starts a
    trial; however the race went, reconcile leaves one parent with all four trials under it."""
    overrides = [*TRACKED, f"runs_dir={tracked.runs}", "study.name=race"]
    run = config.to_run_config(config.compose([*overrides, f"tracking.uri={served.url}"]))
    trackers = [tracking.Tracker(run) for _ in range(4)]

    def join(number: int) -> str:
        trackers[number].attach()
        trackers[number].trial_started(number, {"lr": 0.1}, "cpu", 10)
        trackers[number].flush()
        return trackers[number].parent_id

    with ThreadPoolExecutor(len(trackers)) as pool:
        chosen = set(pool.map(join, range(len(trackers))))
    keep = trackers[0].reconcile()
    for t in trackers:
        t.close()
    assert keep in chosen
    parents, children = _runs(MlflowClient(served.url))
    assert [r.info.run_id for r in parents if r.data.tags[tracking.STUDY_TAG] == "race"] == [keep]
    ours = [r for r in children if r.data.tags[tracking.STUDY_TAG] == "race"]
    assert len(ours) == 4 and {r.data.tags[tracking.PARENT_TAG] for r in ours} == {keep}


def test_a_password_in_the_tracking_url_is_never_written(served, tmp_path):
    """A search logs through the UI's server with user:password@ in the URL; none of it leaks."""
    runs = tmp_path / "runs"
    uri = f"http://me:hunter2@127.0.0.1:{served.port}"
    res = cli(
        "search",
        *TRACKED,
        f"runs_dir={runs}",
        f"tracking.uri={uri}",
        "tracking.experiment=remote",
        "study.n_trials=2",
        "trainer.max_epochs=2",
        "quiet=false",
    )
    assert res.returncode == 0, res.stderr
    assert "hunter2" not in res.stdout + res.stderr
    assert f"http://me:***@127.0.0.1:{served.port}" in res.stdout
    client = MlflowClient(served.url)
    parents, children = _runs(client, "remote")
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.params["tracking.uri"] == f"http://me:***@127.0.0.1:{served.port}"
    for r in parents + children:
        assert "hunter2" not in json.dumps([r.data.params, r.data.tags])
    for path in [*runs.rglob("*"), *served.runs.rglob("*")]:
        if path.is_file():
            assert b"hunter2" not in path.read_bytes(), path


@require_service("chromium", shutil.which("chromium") is not None, "apt-get install chromium")
def test_the_experiment_page_shows_the_study_in_a_headless_browser(served):
    exp = _api(served.url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=automodel")
    page = f"{served.url}/#/experiments/{exp['experiment']['experiment_id']}/runs"
    res = subprocess.run(
        [
            *("chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"),
            *("--virtual-time-budget=30000", "--dump-dom", page),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Training runs" in res.stdout or "Runs" in res.stdout
    assert ">states<" in res.stdout, "the parent run's name is not on the page"


def test_ctrl_c_stops_the_ui_and_its_server(served):
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=30) == 0
    assert "stopping the MLflow UI" in served.proc.stdout.read()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{served.url}/health", timeout=2)
