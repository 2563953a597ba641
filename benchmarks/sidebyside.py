"""Side-by-side measurement for the benchmarks: interleaved repeats, medians, ratios, a table.

The machines these run on are shared and noisy, so no benchmark compares against a figure
measured at another time: every candidate runs next to its baseline in the same process and
run, in alternating order (A B, B A, A B, ...), and the reports are medians of the repeats and
the ratio of those medians. The load average is printed with every table so a reader can
judge how quiet the machine was.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run from a checkout: import this worktree's automodel, not an installed copy.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def interleaved(runs: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Call each of `runs` `repeats` times, alternating the order every repeat.

    Each call returns a dict of measurements; the result lists them per name, in call order.
    """
    names = list(runs)
    out: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(runs[name]())
    return out


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def spread(results: list[dict], key: str) -> str:
    """min..max of a measurement over the repeats, to show how noisy the run was."""
    values = [r[key] for r in results]
    return f"{min(values):.4g}..{max(values):.4g}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} cores"


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table, numbers formatted short, columns right-aligned."""
    text = [[_cell(v) for v in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
