"""Which split the table shows and which alpha is selected (on valid only, never test)."""

from __future__ import annotations

import numpy as np

SELECT_SPLIT = "valid"


def report_split(results: dict, requested: str = "auto") -> str:
    """The split the table shows: `requested`, or with `auto` test when every row's every run
    has test, else valid. Never used to select anything."""
    if requested != "auto":
        return requested
    runs = [r for res in results.values() for r in res["runs"].values()]
    return "test" if runs and all("test" in r["metrics"] for r in runs) else "valid"


def mean_average(res: dict | None, split: str) -> float | None:
    """The row's average accuracy on `split`, mean over its seeds (None if a seed lacks it)."""
    if not res:
        return None
    accs = [r["metrics"].get(split, {}).get("average", {}).get("accuracy") for r in res["runs"].values()]
    return float(np.mean(accs)) if accs and all(a is not None for a in accs) else None


def best_alpha(grid: list[dict], results: dict, split: str = SELECT_SPLIT) -> tuple[float, str, float] | None:
    """(alpha, row, average) of the alpha-grid row with the highest average on `split` (valid:
    selection never reads test); the first such row on ties."""
    pts = [
        (g["alpha"], g["row"], mean_average(results.get(g["row"]), split)) for g in grid if g.get("alpha") is not None
    ]
    pts = [p for p in pts if p[2] is not None]
    return max(pts, key=lambda p: p[2]) if pts else None


def selection_note(split: str, best: tuple | None, results: dict) -> str:
    """How selection and reporting relate, for the report's header."""
    has_test = any("test" in r["metrics"] for res in results.values() for r in res["runs"].values())
    what = (
        f"best alpha = {best[0]:g} (row `{best[1]}`, valid average {100 * best[2]:.2f})"
        if best
        else "nothing to select (no alpha rows with results)"
    )
    if split == "test":
        return (
            f"Selection on `valid` only: {what}. Every number in the tables is on `test`, for the rows as "
            "selected on valid; test never chose anything."
        )
    if has_test:
        return (
            f"Selection on `valid`: {what}; selected and reported on valid (test exists but `--split valid` was asked)."
        )
    return f"Selection on `valid`: {what}; selected and reported on valid (no test split)" + (
        ", so the selected row's number is optimistic." if best else "."
    )
