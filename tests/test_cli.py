"""The command line as a user meets it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from optuna.trial import TrialState

from tests.conftest import FAST, ROOT, cli, digits_args, load_study, poll_study, spawned, tree


def test_search_end_to_end(tmp_path):
    runs = tmp_path / "runs"
    res = cli("search", *FAST, f"runs_dir={runs}", "quiet=false", "study.n_trials=4")
    assert res.returncode == 0, res.stderr
    assert "best trial" in res.stdout and "test accuracy" in res.stdout
    summary = json.loads((runs / "synthetic-mlp" / "summary.json").read_text())
    assert summary["study"] == "synthetic-mlp"
    assert set(summary["counts"]) == {"complete", "pruned", "failed"}
    assert sum(summary["counts"].values()) == 4
    assert str(runs / "synthetic-mlp") in res.stdout


def test_status_lists_studies_and_top_trials(tmp_path):
    runs = tmp_path / "runs"
    assert cli("search", *FAST, f"runs_dir={runs}").returncode == 0
    res = cli("status", f"runs_dir={runs}")
    assert res.returncode == 0, res.stderr
    assert "synthetic-mlp" in res.stdout
    res = cli("status", f"runs_dir={runs}", "study.name=synthetic-mlp")
    assert res.returncode == 0, res.stderr
    assert "  1. trial" in res.stdout and "val=" in res.stdout


def test_cfg_job_and_help():
    res = cli("search", "--cfg", "job", "study.n_trials=7")
    assert res.returncode == 0, res.stderr
    assert "n_trials: 7" in res.stdout and "search_space_name: mlp" in res.stdout
    assert "search_space:\n  family: mlp\n  params:\n    depth:" in res.stdout  # the space itself
    res = cli("search", "--help")
    assert res.returncode == 0
    assert "data={csv, digits, image_folder, mnist1d, synthetic, torchvision}" in res.stdout
    assert "study.n_trials" in res.stdout
    shipped = sorted(p.stem for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert "tabular" in shipped
    assert f"search_space={{{', '.join(shipped)}}}" in res.stdout


def test_unknown_verb_and_no_verb():
    res = cli("train")
    assert (
        res.returncode == 2 and "unknown verb 'train'; known: search, worker, status" in res.stderr
    )
    res = cli()
    assert res.returncode == 2 and "usage: python -m automodel" in res.stdout


def test_bad_space_file_leaves_an_existing_study_untouched(tmp_path):
    runs = tmp_path / "runs"
    assert cli("search", *FAST, f"runs_dir={runs}").returncode == 0
    before = {p: (runs / p).read_bytes() for p in tree(runs) if (runs / p).is_file()}
    bad = tmp_path / "mlp.yaml"
    bad.write_text("family: mlp\nparams:\n  depth: {type: int, low: 5, high: 2}\n")
    res = cli("search", *FAST, f"runs_dir={runs}", f"search_space={bad}")
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {bad}: params.depth: low must be < high, got low=5 high=2"
    after = {p: (runs / p).read_bytes() for p in tree(runs) if (runs / p).is_file()}
    assert after == before


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_search_then_rerun_resumes(tmp_path, workers):
    runs = tmp_path / "runs"
    args = ["search", *digits_args(runs, workers)]
    study_dir = runs / "digits-mlp"

    def three_done_others_running(trials):
        complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        return (complete, running) if len(complete) >= 3 and running else None

    # Kill once a few trials are done and others are in flight: leaving the block SIGKILLs it.
    with spawned(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        seen = poll_study(three_done_others_running, study_dir)
        if seen is None:
            pytest.fail("the search never reached three finished trials")
    complete_before, running = seen
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    trials = load_study(study_dir).get_trials()
    states = {t.number: t.state for t in trials}
    assert TrialState.RUNNING not in states.values()
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states.values()) == 12
    assert complete_before <= {n for n, s in states.items() if s == TrialState.COMPLETE}
    # What was in flight at the kill was either just finishing or is now a failed trial.
    assert all(states[n] in (TrialState.FAIL, TrialState.COMPLETE) for n in running)
    failed = [n for n, s in states.items() if s == TrialState.FAIL]
    assert failed, "the kill should have cost at least the trial in flight"
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["counts"] == {"complete": 12, "pruned": 0, "failed": len(failed)}


@pytest.mark.parametrize("config_yaml", ["stale", "corrupt"])
def test_export_retrains_a_trial_as_the_study_recorded_it(tmp_path, config_yaml):
    """config.yaml says what the latest command said (or was damaged): exporting a trial that
    kept no weights retrains it with the settings the study and the trial recorded."""
    runs = tmp_path / "runs"
    assert cli("search", *FAST, f"runs_dir={runs}", "study.n_trials=3").returncode == 0
    study_dir = runs / "synthetic-mlp"
    trials = load_study(study_dir).get_trials()
    kept = {int(p.name) for p in (study_dir / "trials").iterdir()}
    trial = next(t for t in trials if t.state == TrialState.COMPLETE and t.number not in kept)
    text = (study_dir / "config.yaml").read_text()
    if config_yaml == "stale":
        text = text.replace("max_epochs: 3", "max_epochs: 7").replace("seed: 0", "seed: 5")
    else:
        text = text[: len(text) // 2] + "\n  - ]{"
    (study_dir / "config.yaml").write_text(text)
    res = cli("export", f"runs_dir={runs}", "study.name=synthetic-mlp", f"trial={trial.number}")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    ckpt = torch.load(study_dir / "trials" / str(trial.number) / "model.pt", weights_only=True)
    assert ckpt["recipe"]["epochs"] == 3
    assert ckpt["val"][trial.user_attrs["metric"]] == trial.value
