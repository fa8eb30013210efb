"""Writing the table: Markdown (reports/table1.md), CSV (table1.csv, stats.csv) and the flat
metrics of the MLflow report run."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from .columns import AVERAGE, BENCHMARKS, HEADER, NAMES, blank
from .paper import PAPER, PAPER_LABEL, RELEASE_NOTE
from .table import REFERENCES, rel_gain


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _gain(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f}%"


def _cell(t: dict, i: int) -> str:
    v = t["values"][i]
    if v is None:
        return "–"
    sd = (t.get("sd") or blank())[i]
    ci = (t.get("ci") or blank())[i]
    if t["source"] != "ours":
        return _fmt(v)
    s = f"{v:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")
    return s + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and ci[0] is not None else "")


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


GROUP_TITLE = {"teacher": "Teachers", "reference": "Reference rates", "baseline": "Baselines", "ablation": "Ablations"}


def write_markdown(
    path: Path,
    table: list[dict],
    size: str | None,
    split: str,
    results: dict,
    compare_url: str | None,
    source: str,
    selection: str,
    comps: list[dict],
    option_shares: list[dict],
) -> None:
    students = sorted({r["student"] for r in results.values() if r.get("student")}) or ["(no runs)"]
    headlines = sorted({r["headline"] for r in results.values() if r.get("headline")}) or ["?"]
    lines = [
        f"# Table 1: accuracy (%) on `{split}`",
        "",
        f"Student: {', '.join(students)}. Decision rule: {', '.join(headlines)} "
        f"(`evaluate.headline`). Source: {source}. Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "by `scripts/report.py` (tinyllm.experiments.report).",
        "",
        f"**Selection.** {selection}",
        "",
        "Cells: accuracy [95% CI] (Wilson per benchmark; bootstrap over questions within each benchmark for "
        "the unweighted average); rows over several seeds: mean ± sd over seeds, CI of the seed-averaged "
        "per-question correctness.",
        "",
        "| Row | Setting | seeds | " + " | ".join(HEADER) + " | Δ Avg vs full FT |",
        "|---|---|---:|" + "---:|" * (len(HEADER) + 1),
    ]
    group = None
    for t in table:
        if t["group"] != group:
            group = t["group"]
            lines.append(f"| **{GROUP_TITLE[group]}** |" + " |" * (len(HEADER) + 3))
        name = t["row"] if t["source"] == "ours" else f"↳ {t['row']}" if t["group"] != "teacher" else t["row"]
        label = t["label"] + (f" — *{t['note']}*" if t["note"] else "")
        seeds = str(t.get("seeds") or "") if t["source"] == "ours" and t["group"] != "reference" else ""
        lines.append(
            f"| {name} | {label} | {seeds} | "
            + " | ".join(_cell(t, i) for i in range(len(NAMES)))
            + f" | {_gain(t['rel_gain'])} |"
        )
    lines += ["", f"Teachers: {RELEASE_NOTE}"]
    if size:
        lines.append(f"↳ rows: the paper's FLAN-T5 {size} student in the same setting (paper v1, Table 1).")
    lines += _paired_section(comps, split) + _shares_section(option_shares, split)
    if not size:
        lines += [
            "",
            f"## Paper's Table 1 (reference only: students FLAN-T5 small/base/large, not {', '.join(students)})",
            "",
            "| Student | Row | " + " | ".join(HEADER) + " | Δ Avg vs full FT |",
            "|---|---|" + "---:|" * (len(HEADER) + 1),
        ]
        for sz, rows in PAPER.items():
            for k, nums in rows.items():
                lines.append(
                    f"| {sz} | {PAPER_LABEL[k]} | "
                    + " | ".join(map(_fmt, nums))
                    + f" | {_gain(rel_gain(nums[AVERAGE], rows['full_ft'][AVERAGE]))} |"
                )
    lines += [
        "",
        "Δ Avg vs full FT = (Avg − Avg of full fine-tuning) / Avg of full fine-tuning, as in the paper.",
        "– = not evaluated (benchmark not in `data.benchmarks`, row not run, or its teacher cache missing).",
    ]
    if compare_url:
        lines += ["", f"MLflow compare page for these runs: <{compare_url}>"]
    path.write_text("\n".join(lines) + "\n")


def _paired_section(comps: list[dict], split: str) -> list[str]:
    if not comps:
        return ["", "Paired tests: none (no per-question predictions for the reference rows full_ft / inference)."]
    out = [
        "",
        f"## Paired tests on `{split}` (row − reference, accuracy points)",
        "",
        "Δ [paired-bootstrap 95% CI] and the exact McNemar p-value on the questions both rows answered. Average: "
        "the unweighted mean over benchmarks, bootstrap within each benchmark; its McNemar pools the discordant "
        "pairs of all benchmarks. Seeds pooled per question (bootstrap: seed-averaged correctness; McNemar: "
        "majority vote over seeds).",
    ]
    by = {(c["row"], c["reference"], c["benchmark"]): c for c in comps}
    for ref in REFERENCES:
        rows = list(dict.fromkeys(c["row"] for c in comps if c["reference"] == ref))
        if not rows:
            continue
        out += ["", f"vs `{ref}`:", "", "| Row | " + " | ".join(HEADER) + " |", "|---|" + "---:|" * len(HEADER)]
        for r in rows:
            cells = []
            for b in NAMES:
                c = by.get((r, ref, b))
                cells.append(
                    "–"
                    if c is None
                    else f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, "
                    f"{100 * c['ci_high']:+.1f}] p={_p(c['p_mcnemar'])}"
                )
            out.append(f"| {r} | " + " | ".join(cells) + " |")
    return out


def _shares_section(option_shares: list[dict], split: str) -> list[str]:
    if not option_shares:
        return []
    out = [
        "",
        f"## Predicted option position vs gold on `{split}` (% of questions for options a/b/c/...)",
        "",
        "| Row | " + " | ".join(HEADER[:-1]) + " |",
        "|---|" + "---:|" * (len(HEADER) - 1),
    ]
    by = {(s["row"], s["benchmark"]): s for s in option_shares}
    first = {}
    for s in option_shares:
        first.setdefault(s["benchmark"], s)

    def fmt(v):
        return "/".join(f"{100 * x:.0f}" for x in v)

    out.append("| *gold* | " + " | ".join(fmt(first[b]["gold"]) if b in first else "–" for b in BENCHMARKS) + " |")
    for r in dict.fromkeys(s["row"] for s in option_shares):
        cells = []
        for b in BENCHMARKS:
            s = by.get((r, b))
            cells.append(
                "–"
                if s is None
                else fmt(s["pred"]) + (f" (+{100 * s['unmatched']:.0f} unmatched)" if s["unmatched"] else "")
            )
        out.append(f"| {r} | " + " | ".join(cells) + " |")
    return out


def write_csv(path: Path, table: list[dict], split: str) -> None:
    cols = [f"{b}_acc_pct" for b in NAMES]
    extra = [f"{b}_{k}" for b in NAMES for k in ("ci_low_pct", "ci_high_pct", "sd_pct", "n")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "row",
                "group",
                "label",
                "source",
                "student",
                "run_id",
                "split",
                *cols,
                "rel_gain_vs_full_ft_pct",
                "note",
                "seeds",
                *extra,
            ]
        )
        for t in table:
            ci, sd, n = t.get("ci") or blank(), t.get("sd") or blank(), t.get("n") or blank()
            more = []
            for i in range(len(NAMES)):
                more += [
                    "" if not ci[i] else repr(ci[i][0]),
                    "" if not ci[i] else repr(ci[i][1]),
                    "" if sd[i] is None else repr(sd[i]),
                    "" if n[i] is None else str(n[i]),
                ]
            w.writerow(
                [
                    t["row"],
                    t["group"],
                    t["label"],
                    t["source"],
                    t["student"],
                    t["run_id"],
                    split,
                    *["" if v is None else repr(v) for v in t["values"]],
                    "" if t["rel_gain"] is None else repr(t["rel_gain"]),
                    t["note"],
                    t.get("seeds") or "",
                    *more,
                ]
            )


def write_stats_csv(path: Path, comps: list[dict], option_shares: list[dict], split: str) -> None:
    """Long format: paired tests (kind=paired) and option shares (kind=share), one line each."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "kind",
                "split",
                "row",
                "reference",
                "benchmark",
                "position",
                "value",
                "ci_low",
                "ci_high",
                "p_mcnemar",
                "n",
                "b",
                "c",
                "gold_share",
            ]
        )
        for c in comps:
            w.writerow(
                [
                    "paired",
                    split,
                    c["row"],
                    c["reference"],
                    c["benchmark"],
                    "",
                    c["diff"],
                    c["ci_low"],
                    c["ci_high"],
                    c["p_mcnemar"],
                    c["n"],
                    c["b"],
                    c["c"],
                    "",
                ]
            )
        for s in option_shares:
            for j, (p, g) in enumerate(zip(s["pred"], s["gold"], strict=True)):
                w.writerow(["share", split, s["row"], "", s["benchmark"], j, p, "", "", "", "", "", "", g])


def report_metrics(table: list[dict], comps: list[dict]) -> dict[str, float]:
    """Numbers for the MLflow report run: per row accuracy/CI/n, per comparison diff/CI/p."""
    out = {}
    for t in table:
        if t["source"] != "ours" or t["group"] == "teacher":
            continue
        for i, b in enumerate(NAMES):
            if t["values"][i] is None:
                continue
            out[f"{t['row']}.{b}.accuracy"] = t["values"][i] / 100
            ci = (t.get("ci") or blank())[i]
            if ci and ci[0] is not None:
                out[f"{t['row']}.{b}.ci_low"], out[f"{t['row']}.{b}.ci_high"] = ci[0] / 100, ci[1] / 100
            if (t.get("n") or blank())[i]:
                out[f"{t['row']}.{b}.n"] = t["n"][i]
    for c in comps:
        k = f"{c['row']}.vs_{c['reference']}.{c['benchmark']}"
        out.update(
            {
                f"{k}.diff": c["diff"],
                f"{k}.ci_low": c["ci_low"],
                f"{k}.ci_high": c["ci_high"],
                f"{k}.p_mcnemar": c["p_mcnemar"],
            }
        )
    return out
