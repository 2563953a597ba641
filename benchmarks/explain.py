"""What explaining the shipped model costs: the importance step against the search it ends.

Two real searches with the default settings, in this process: the embedded digits (images:
saliency maps) and a CSV table (noisy_classes: 3,000 rows, 30 numeric columns, 5 of them
informative; permutation importance). Each is timed end to end, beside the importance step
that ends it (importance.json's `seconds`) and the drawing of its pictures for MLflow
(`tracking.importance_plots.draw`). Target: the step under 10% of a typical search's wall
time. Then, on the CSV search's model, the choice of `REPEATS`: the step's time and how many
of the five most important columns it names agree with a 20-shuffle reference.

    python benchmarks/explain.py            # default searches (100 trials each)
    python benchmarks/explain.py --quick    # 20 trials of at most 10 epochs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import sidebyside as sbs
import tables

from automodel import config, data, importance, search
from automodel.checkpoint import Checkpoint
from automodel.runtime import importance as runtime
from automodel.tracking import importance_plots

SEARCHES = {
    "digits (default)": [],
    "csv noisy_classes": ["data=csv", "data.target=target"],
}


def timed_search(overrides: list[str], runs_dir: str) -> dict:
    run = config.to_run_config(config.compose([*overrides, f"runs_dir={runs_dir}", "quiet=true"]))
    start = time.perf_counter()
    summary = search.search(run)
    wall = time.perf_counter() - start
    report = json.loads((run.study_dir / importance.FILE).read_text())
    start = time.perf_counter()
    importance_plots.draw(run.study_dir, Path(runs_dir) / "pictures")
    drawn = time.perf_counter() - start
    return {
        "run": run,
        "wall": wall,
        "explain": report["seconds"],
        "draw": drawn,
        "rows": report["rows"],
        "method": report["method"],
        "test": summary["test"],
    }


def repeats_choice(run: config.RunConfig) -> list[list]:
    """The permutation step on the CSV model with 1, 3, 5, 10 shuffles: time, and agreement
    of its top five with a 20-shuffle reference."""
    dataset = data.load(run.data, run.seed)
    model = Checkpoint.load(run.study_dir / "best_model.pt").build_model()
    groups = importance.feature_groups(dataset.spec.columns, dataset.spec.input_shape[0])

    def report(repeats: int) -> tuple[float, set[str]]:
        start = time.perf_counter()
        out = runtime.permutation_report(
            model, dataset.x_test, dataset.y_test, dataset.spec.task, groups, repeats=repeats
        )
        return time.perf_counter() - start, {c["name"] for c in out["columns"][:5]}

    _, reference = report(20)
    rows = []
    for repeats in (1, 3, 5, 10):
        seconds, top = report(repeats)
        rows.append([repeats, seconds, f"{len(top & reference)} of 5"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 trials of at most 10 epochs")
    args = parser.parse_args()
    quick = ["study.n_trials=20", "trainer.max_epochs=10"] if args.quick else []
    csv_path = tables.path("noisy_classes")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in SEARCHES.items():
            extra = [f"data.path={csv_path}"] if "csv" in name else []
            results[name] = timed_search([*overrides, *extra, *quick], f"{tmp}/{name[:3]}")
            print(f"{name}: done ({sbs.load()})", flush=True)
        choice = repeats_choice(results["csv noisy_classes"]["run"])
    headers = ["search", "method", "rows", "search s", "importance s", "share", "pictures s"]
    rows = [
        [name, r["method"], r["rows"], r["wall"], r["explain"],
         f"{100 * r['explain'] / r['wall']:.2f}%", r["draw"]]
        for name, r in results.items()
    ]  # fmt: skip
    print(f"\n{sbs.load()}\n")
    print(sbs.table(headers, rows))
    print("\nshuffles per column on the CSV model (top five against 20 shuffles):\n")
    print(sbs.table(["repeats", "seconds", "top five agree"], choice))


if __name__ == "__main__":
    main()
