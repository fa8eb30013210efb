"""Table 1 as rows (dicts) in report order: the paper's teachers, local teachers, reference
rates, then each grid row with the paper's row beside it; paired comparisons and option shares."""

from __future__ import annotations

from pathlib import Path

from tinyllm.params import load_teachers

from ... import stats
from ..rows import ROOT
from .columns import AVERAGE, BENCHMARKS, blank
from .paper import PAPER, PAPER_LABEL, PAPER_STUDENTS, PAPER_TEACHERS
from .predictions import Predictions
from .rownumbers import reference_rows, row_numbers
from .selection import best_alpha

REFERENCES = ("full_ft", "inference")  # every row is compared with these (paired)


def rel_gain(avg: float | None, ref: float | None) -> float | None:
    return None if avg is None or not ref else 100.0 * (avg - ref) / ref


def build_table(
    grid: list[dict], results: dict, split: str, root: Path | None = None, preds: Predictions | None = None
) -> tuple[list[dict], str | None]:
    """Table rows (dicts) in report order, and the paper's student size when it matches.
    With `root`, rows whose `needs` caches are missing there say so instead of "not run yet"."""
    preds = preds or Predictions(root or ROOT)
    students = {r["student"] for r in results.values() if r.get("student")}
    size = PAPER_STUDENTS.get(next(iter(students))) if len(students) == 1 else None
    numbers = {g["row"]: row_numbers(results.get(g["row"]), split, preds) for g in grid}
    ref = numbers.get("full_ft", {}).get("values", blank())[AVERAGE]
    best = best_alpha(grid, results)
    table = []
    for t, (label, nums) in PAPER_TEACHERS.items():
        table.append(
            {
                "row": f"teacher_{t}",
                "group": "teacher",
                "label": label,
                "source": "paper",
                "student": "",
                "run_id": "",
                "values": list(nums),
                "rel_gain": None,
                "seeds": 0,
                "note": "the paper's reported accuracy; not computable from the release (rationales only)",
            }
        )
    table += _local_teacher_rows(root, results, numbers.get("inference"), ref)
    if root is not None and results:
        table += reference_rows(root, results, split, preds)
    for g in grid:
        res, num = results.get(g["row"]), numbers[g["row"]]
        note = "; ".join(num["notes"]) if res else _why_empty(g, root)
        if best and g["row"] == best[1]:
            note = "selected on valid (best alpha)" + (f"; {note}" if note else "")
        table.append(
            {
                "row": g["row"],
                "group": g["group"],
                "label": g["label"],
                "source": "ours",
                "alpha": g.get("alpha"),
                "student": (res or {}).get("student", ""),
                "run_id": (res or {}).get("run_id", ""),
                **{k: num[k] for k in ("values", "ci", "sd", "n", "seeds", "paired")},
                "rel_gain": rel_gain(num["values"][AVERAGE], ref),
                "note": note,
            }
        )
        if size and g.get("paper") in PAPER[size]:
            nums = PAPER[size][g["paper"]]
            table.append(
                {
                    "row": g["row"],
                    "group": g["group"],
                    "label": f"paper {size} {PAPER_LABEL[g['paper']]}",
                    "source": "paper",
                    "student": next(iter(students)),
                    "run_id": "",
                    "values": list(nums),
                    "seeds": 0,
                    "rel_gain": rel_gain(nums[AVERAGE], PAPER[size]["full_ft"][AVERAGE]),
                    "note": "",
                }
            )
    return table, size


def _local_teacher_rows(root: Path | None, results: dict, inference: dict | None, ref: float | None) -> list[dict]:
    """Local teachers that run on the student's own base weights (`model: models/base`, the
    default smollm2_135m and its prompt ablations): answering without the gold answer they are
    the untrained student, so their accuracy is the `inference` row's run, shown as such."""
    if root is None or not (root / "params.yaml").exists():
        return []
    teachers = load_teachers(root / "params.yaml")
    shared = [n for n, t in teachers.items() if t.model.rstrip("/") == "models/base"]
    if not shared:
        return []
    res = results.get("inference")
    num = inference or {"values": blank()}
    return [
        {
            "row": "teacher_local",
            "group": "teacher",
            "source": "ours",
            "label": f"Local teacher{'s' if len(shared) > 1 else ''} {', '.join(shared)} (models/base)",
            "student": (res or {}).get("student", ""),
            "run_id": (res or {}).get("run_id", ""),
            **{k: num.get(k) for k in ("values", "ci", "sd", "n", "seeds")},
            "rel_gain": rel_gain(num["values"][AVERAGE], ref),
            "note": "same weights as the untrained student: its answers are the `inference` row's run"
            + ("" if res else " (not run yet)"),
        }
    ]


def comparisons(table: list[dict]) -> list[dict]:
    """Every row with predictions against each reference row that has them: stats.paired_comparison
    per benchmark and average, as {row, reference, benchmark, diff, ci_low, ci_high, p_mcnemar, n, b, c}."""
    ours = {t["row"]: t for t in table if t["source"] == "ours" and t.get("paired") and t["group"] != "reference"}
    out = []
    for ref in REFERENCES:
        if ref not in ours:
            continue
        for name, t in ours.items():
            if name == ref:
                continue
            for b, c in stats.paired_comparison(t["paired"], ours[ref]["paired"]).items():
                out.append({"row": name, "reference": ref, "benchmark": b, **c})
    return out


def shares(table: list[dict], results: dict, split: str, preds: Predictions) -> list[dict]:
    """Share of predictions per option position (seeds pooled) and the gold share, per row and benchmark."""
    out = []
    for t in table:
        res = results.get(t["row"]) if t["source"] == "ours" and t["group"] in ("baseline", "ablation") else None
        if not res:
            continue
        for b in BENCHMARKS:
            pooled = [p for r in res["runs"].values() for p in preds.get(r, split).get(b) or []]
            if pooled:
                rule = res.get("headline") or "score"
                out.append({"row": t["row"], "benchmark": b, **stats.option_shares(pooled, rule)})
    return out


def _why_empty(row: dict, root: Path | None) -> str:
    missing = [n for n in row.get("needs") or [] if root and not (root / "data" / "rationales" / n).is_dir()]
    if missing:
        return f"skipped: local teacher cache data/rationales/{', '.join(missing)} not generated yet"
    return "not run yet (python scripts/grid.py status)"
