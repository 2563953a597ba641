"""The offline table suite shared by the table benchmarks (tabular, small_data, ensemble).

Every table ships with scikit-learn or is generated, so the suite needs no network. Each is
written once as a CSV file (with a header and a `target` column) into a cache folder.

    python benchmarks/tables.py            # write them and print their sizes
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".tables"

# name -> (task, what it is)
SUITE = {
    "iris": ("classification", "150 rows, 4 numbers, 3 classes (scikit-learn)"),
    "wine": ("classification", "178 rows, 13 numbers, 3 classes (scikit-learn)"),
    "breast_cancer": ("classification", "569 rows, 30 numbers, 2 classes (scikit-learn)"),
    "digits_table": ("classification", "1,797 rows, 64 pixel columns, 10 classes (scikit-learn)"),
    "diabetes": ("regression", "442 rows, 10 numbers (scikit-learn)"),
    "mixed": ("classification", "1,500 rows, numbers with gaps and categories (generated)"),
    "noisy_classes": (
        "classification",
        "3,000 rows, 5 informative of 30 columns (make_classification)",
    ),
    "friedman1": ("regression", "2,000 rows, 5 informative of 10 columns (make_friedman1)"),
}
SMALL = ("iris", "wine", "breast_cancer", "diabetes", "digits_table", "mixed")


def frame(name: str):
    """The table as a DataFrame with a `target` column."""
    import pandas as pd
    from sklearn import datasets

    if name in ("iris", "wine", "breast_cancer", "diabetes"):
        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        out = bunch.frame.rename(columns={"target": "target"})
        if name != "diabetes":
            out["target"] = [str(bunch.target_names[i]) for i in bunch.target]
        return out
    if name == "digits_table":
        bunch = datasets.load_digits(as_frame=True)
        return bunch.frame
    if name == "noisy_classes":
        x, y = datasets.make_classification(
            3000, 30, n_informative=5, n_redundant=5, n_classes=3, flip_y=0.03, random_state=0
        )
        return pd.DataFrame(x, columns=[f"f{i}" for i in range(30)]).assign(target=y)
    if name == "friedman1":
        x, y = datasets.make_friedman1(2000, 10, noise=1.0, random_state=0)
        return pd.DataFrame(x, columns=[f"f{i}" for i in range(10)]).assign(target=y)
    if name == "mixed":
        return _mixed()
    raise KeyError(f"unknown table {name!r}; known: {', '.join(SUITE)}")


def _mixed(n: int = 1500, seed: int = 0):
    """Numbers with gaps, a category with a few levels, one with many, a non-linear target."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    income = rng.lognormal(3.5, 0.5, n)
    city = rng.choice(["Paris", "Rome", "Oslo", "Lima"], n)
    shop = rng.choice([f"s{i}" for i in range(40)], n)
    shop_effect = dict(zip([f"s{i}" for i in range(40)], rng.normal(0, 1, 40), strict=True))
    score = (
        np.sin(age / 10)
        + np.log(income) / 2
        + (city == "Oslo")
        - (city == "Lima")
        + np.vectorize(shop_effect.get)(shop) / 2
        + rng.normal(0, 0.5, n)
    )
    age[rng.random(n) < 0.1] = np.nan
    income[rng.random(n) < 0.05] = np.nan
    target = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return pd.DataFrame(
        {"age": age, "income": income.round(2), "city": city, "shop": shop, "target": target}
    ).assign(target=lambda d: np.array(["low", "mid", "high"])[d["target"]])


def path(name: str) -> Path:
    """The table's CSV file, written on first use."""
    out = CACHE / f"{name}.csv"
    if not out.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        frame(name).to_csv(tmp, index=False)
        tmp.replace(out)
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or SUITE:
        p = path(name)
        rows = sum(1 for _ in p.open()) - 1
        print(f"{name:15} {SUITE[name][0]:15} {rows:6} rows  {p}")
