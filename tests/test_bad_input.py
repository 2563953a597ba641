"""The bad-input catalogue: every case is one line on stderr naming the problem, exit code 2,
no traceback and nothing written, whether it comes from the command line, a config group,
a search-space file or the data."""

from __future__ import annotations

import pytest

from automodel.__main__ import main
from tests.conftest import FAST, tree

MLP_OK = "family: mlp\nparams:\n  depth: {type: int, low: 1, high: 2}\n"

# (id, overrides, files written to tmp_path/{name}, expected fragment of the message)
CASES = [
    # command line and config groups
    ("unknown data", ["data=imagenet"], {}, "Could not find 'data/imagenet'"),
    (
        "unknown sampler",
        ["study.sampler=annealing"],
        {},
        "unknown study.sampler 'annealing'; known: tpe, random, cmaes, gp, qmc",
    ),
    ("unknown pruner", ["study.pruner=early"], {}, "unknown study.pruner 'early'; known: median"),
    ("zero trials", ["study.n_trials=0"], {}, "study.n_trials must be >= 1, got 0"),
    ("n_trials not int", ["study.n_trials=many"], {}, "bad value for study.n_trials"),
    (
        "timeout negative",
        ["study.timeout=-5"],
        {},
        "study.timeout must be > 0 seconds or null, got -5",
    ),
    (
        "unknown study key",
        ["study.nope=1"],
        {},
        "unknown key 'study.nope'; valid keys in study: name, n_trials, timeout",
    ),
    ("unknown top key", ["nope=1"], {}, "unknown key 'nope'; valid keys: data, study"),
    ("override syntax", ["bad override"], {}, "bad override"),
    ("epochs", ["trainer.max_epochs=-1"], {}, "trainer.max_epochs must be >= 1, got -1"),
    (
        "eval batch",
        ["trainer.eval_batch_size=0"],
        {},
        "trainer.eval_batch_size must be >= 1, got 0",
    ),
    ("threads", ["trainer.threads=0"], {}, "trainer.threads must be >= 1 or null, got 0"),
    (
        "val fraction",
        ["data.val_fraction=0.9"],
        {},
        "data.val_fraction must be in (0, 0.5), got 0.9",
    ),
    ("test fraction type", ["data.test_fraction=lots"], {}, "bad value for data.test_fraction"),
    ("study name", ["study.name=../escape"], {}, "study.name '../escape' is not a valid name"),
    # cross-validation folds: the largest that fits is named (a class of synthetic's 240
    # non-test rows has 79 of them)
    (
        "cv folds one",
        ["data.cv_folds=1"],
        {},
        "data.cv_folds=1 does not fit data synthetic; use 0 (one validation split), auto, or a "
        "number of folds from 2 to 79 (its class '1' has 79 non-test rows)",
    ),
    ("cv folds negative", ["data.cv_folds=-3"], {}, "data.cv_folds=-3 does not fit data"),
    ("cv folds too many", ["data.cv_folds=80"], {}, "data.cv_folds=80 does not fit data synthetic"),
    (
        "cv folds not a number",
        ["data.cv_folds=many"],
        {},
        "data.cv_folds='many' is not a number of folds; use 0 (one validation split), auto, or a "
        "number of folds from 2 to 79",
    ),
    ("devices", ["devices=[gpu]"], {}, "devices must be auto, cpu or a list of GPU ids"),
    ("missing gpu", ["devices=[3]"], {}, "devices: GPU 3 is not available"),
    ("workers", ["workers=0"], {}, "workers must be auto or an int >= 1, got 0"),
    ("keep_top_k", ["study.keep_top_k=0"], {}, "study.keep_top_k must be >= 1, got 0"),
    (
        "ensemble size negative",
        ["ensemble.size=-1"],
        {},
        "ensemble.size must be in 0..10 (0: no ensemble; at most ensemble.candidates",
    ),
    (
        "ensemble larger than its candidates",
        ["ensemble.size=6", "ensemble.candidates=4"],
        {},
        "ensemble.size must be in 0..4 (0: no ensemble; at most ensemble.candidates, the "
        "trials kept for it), got 6",
    ),
    (
        "failure fraction",
        ["study.max_failure_fraction=2"],
        {},
        "study.max_failure_fraction must be in (0, 1], got 2.0",
    ),
    (
        "storage not url",
        ["study.storage=notaurl"],
        {},
        "study.storage 'notaurl' is not a database URL",
    ),
    (
        "storage unreachable",
        ["study.storage=postgresql+psycopg2://u:hunter2@127.0.0.1:1/db"],
        {},
        "cannot open study.storage 'postgresql+psycopg2://u:***@127.0.0.1:1/db'",
    ),
    # a tracking store that cannot work: refused before a study folder or a trial exists
    (
        "tracking store not sqlite",
        ["tracking.enabled=true", "tracking.uri=sqlite:///{tmp}/notes.db"],
        {"notes.db": "not a database\n"},
        "notes.db is not a SQLite database (or turn MLflow off with tracking.enabled=false)",
    ),
    (
        "tracking store a folder",
        ["tracking.enabled=true", "tracking.uri=sqlite:///{tmp}"],
        {},
        "is a folder (or turn MLflow off",
    ),
    (
        "tracking server down",
        ["tracking.enabled=true", "tracking.uri=http://u:hunter2@127.0.0.1:1"],
        {},
        "tracking.uri 'http://u:***@127.0.0.1:1' does not answer",
    ),
    (
        "synthetic too small",
        ["data.n_samples=10"],
        {},
        "data.n_samples must be at least 10 per class (30), got 10",
    ),
    (
        "family vs data",
        ["search_space=cnn"],
        {},
        "family cnn needs sequences (C, L) or images (C, H, W)",
    ),
    (
        "unknown space",
        ["search_space=transformer"],
        {},
        "unknown search_space 'transformer'; known: cnn, mlp",
    ),
    (
        "missing space file",
        ["search_space=/does/not/exist.yaml"],
        {},
        "search_space file '/does/not/exist.yaml' does not exist",
    ),
    ("runs_dir is a file", ["runs_dir={tmp}/afile"], {"afile": "x"}, "is a file, not a folder"),
    # search-space files
    (
        "malformed yaml",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams: {depth: [\n"},
        "s.yaml: not valid YAML",
    ),
    (
        "space not a mapping",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "- mlp\n"},
        "a search space must be a mapping",
    ),
    (
        "empty space",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": ""},
        "s.yaml: the space is empty; it needs family: and params:",
    ),
    (
        "unknown family",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: rnn\nparams: {depth: 2}\n"},
        "family 'rnn' is unknown; known: mlp, cnn",
    ),
    (
        "unknown space key",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": MLP_OK + "extras: 1\n"},
        "unknown key 'extras'; valid: family, params, enqueue",
    ),
    (
        "low >= high",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams:\n  depth: {type: int, low: 3, high: 1}\n"},
        "params.depth: low must be < high, got low=3 high=1",
    ),
    (
        "log with low 0",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams:\n  lr: {type: float, low: 0, high: 0.1, log: true}\n"},
        "params.lr: log scale needs low > 0",
    ),
    (
        "wrong type of bound",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams:\n  depth: {type: int, low: one, high: 3}\n"},
        "params.depth.low must be an int, got 'one'",
    ),
    (
        "unknown param",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams:\n  layers: {type: int, low: 1, high: 3}\n"},
        "unknown param 'layers' for family mlp",
    ),
    (
        "unknown optimizer",
        ["search_space={tmp}/s.yaml"],
        {
            "s.yaml": "family: mlp\nparams:\n  optimizer: {type: categorical, choices: [adam, lbfgs]}\n"
        },
        "params.optimizer.choices 'lbfgs' is not valid; valid: adam, adamw, sgd, rmsprop",
    ),
    (
        "unknown activation",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams:\n  activation: swish\n"},
        "params.activation 'swish' is not valid; valid: relu, gelu",
    ),
    (
        "per_layer later param",
        ["search_space={tmp}/s.yaml"],
        {
            "s.yaml": "family: mlp\nparams:\n  width: {type: int, low: 8, high: 16, per_layer: depth}\n  depth: 2\n"
        },
        "params.width.per_layer: 'depth' must name an int param listed before 'width'",
    ),
    (
        "when missing param",
        ["search_space={tmp}/s.yaml"],
        {
            "s.yaml": "family: mlp\nparams:\n  momentum: {type: float, low: 0.8, high: 0.9, when: {optimizer: sgd}}\n"
        },
        "params.momentum.when: 'optimizer' must name a param listed before this one",
    ),
    (
        "no param applies to the data",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": "family: mlp\nparams:\n  loss: huber\n"},
        "search_space: no param applies to data synthetic (loss applies to regression only",
    ),
    # search-space entries overridden on the command line
    (
        "space entry unknown",
        ["search_space.params.nope=1"],
        {},
        "unknown key 'search_space.params.nope'; keys in search_space.params: depth, width",
    ),
    (
        "space entry bad value",
        ["search_space.params.depth.high=0"],
        {},
        "search_space.params.depth: low must be < high, got low=1 high=0",
    ),
    (
        "space entry added unknown param",
        ["+search_space.params.layers=2"],
        {},
        "search_space.params.layers: unknown param 'layers' for family mlp; known: depth",
    ),
    (
        "space override leaves the enqueued trial outside",
        ["search_space.params.lr.high=0.001"],
        {},
        "search_space.enqueue[0].lr: 0.002 is outside the space's range [0.0001, 0.001] (or drop "
        "the enqueued trials: ~search_space.enqueue)",
    ),
    (
        "space entry fixed out of range",
        ["search_space=resnet", "search_space.params.width=100000"],
        {},
        "search_space.params.width must be in",
    ),
    (
        "bad enqueue",
        ["search_space={tmp}/s.yaml"],
        {"s.yaml": MLP_OK + "enqueue:\n  - {depth: 7}\n"},
        "enqueue[0].depth: 7 is outside the space's range [1, 2]",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "files", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, overrides, files, fragment):
    # In-process for speed (a subprocess pays ~3 s of imports per case); test_cli.py runs the
    # same path in real subprocesses. An exception escaping main() would fail the test.
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    runs = tmp_path / "runs"
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    code = main(["search", *FAST, f"runs_dir={runs}", *overrides])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    err = err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert fragment in err, err
    assert "hunter2" not in err
    assert out == ""
    assert tree(runs) == []


def test_the_catalogue_is_large():
    assert len(CASES) >= 30
