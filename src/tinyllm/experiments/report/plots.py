"""The report's plots: long-format points (CSV for DVC plots) and matplotlib PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .columns import HEADER, NAMES, blank


def plot_data(grid: list[dict], table: list[dict]) -> tuple[list[dict], list[dict]]:
    """Long-format points: per-benchmark accuracy with CI (baseline rows) and the alpha curve."""
    by = {t["row"]: t for t in table if t["source"] == "ours"}
    bars, alpha = [], []
    for g in grid:
        t = by.get(g["row"])
        if not t:
            continue
        for i, b in enumerate(NAMES):
            x = t["values"][i]
            if x is None:
                continue
            ci = (t.get("ci") or blank())[i] or (None, None)
            pt = {
                "accuracy": round(x, 4),
                "ci_low": None if ci[0] is None else round(ci[0], 4),
                "ci_high": None if ci[1] is None else round(ci[1], 4),
            }
            if g["group"] == "baseline":
                bars.append({"row": g["row"], "benchmark": b, **pt})
            if g.get("alpha") is not None:
                alpha.append({"alpha": float(g["alpha"]), "benchmark": b, **pt})
    return bars, sorted(alpha, key=lambda p: (p["benchmark"], p["alpha"]))


def write_points(path: Path, points: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(points[0]))
        w.writeheader()
        w.writerows(points)


def _yerr(pts: list[dict]) -> np.ndarray:
    lo = [p["accuracy"] - p["ci_low"] if p.get("ci_low") is not None else 0 for p in pts]
    hi = [p["ci_high"] - p["accuracy"] if p.get("ci_high") is not None else 0 for p in pts]
    return np.array([lo, hi])


def write_pngs(out: Path, bars: list[dict], alpha: list[dict], table: list[dict], split: str) -> list[Path]:
    """accuracy.png (baseline bars with CI), accuracy_ci.png (every row, CI bars, one panel per
    benchmark, majority/chance lines), alpha.png (alpha curve with CI on the average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if bars:
        rows = list(dict.fromkeys(p["row"] for p in bars))
        benches = list(dict.fromkeys(p["benchmark"] for p in bars))
        val = {(p["row"], p["benchmark"]): p for p in bars}
        fig, ax = plt.subplots(figsize=(11, 4.5))
        w = 0.8 / len(rows)
        for i, r in enumerate(rows):
            pts = [val.get((r, b), {"accuracy": 0}) for b in benches]
            ax.bar(
                [j + i * w for j in range(len(benches))],
                [p["accuracy"] for p in pts],
                w,
                label=r,
                yerr=_yerr(pts),
                capsize=2,
                error_kw={"lw": 0.8},
            )
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(benches))], benches)
        ax.set_ylabel(f"accuracy on {split} (%), 95% CI")
        ax.set_title("Baselines per benchmark")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        plt.close(fig)
        made.append(out / "accuracy.png")
    made += _ci_panels(plt, out, table, split)
    if alpha:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b in dict.fromkeys(p["benchmark"] for p in alpha):
            pts = [p for p in alpha if p["benchmark"] == b]
            if b == "average":
                ax.errorbar(
                    [p["alpha"] for p in pts],
                    [p["accuracy"] for p in pts],
                    yerr=_yerr(pts),
                    marker="o",
                    lw=2.5,
                    capsize=3,
                    label="average (95% CI)",
                )
            else:
                ax.plot([p["alpha"] for p in pts], [p["accuracy"] for p in pts], marker="o", lw=1.2, label=b)
        ax.set_xscale("log")
        ax.set_xlabel("alpha (every teacher)")
        ax.set_ylabel(f"accuracy on {split} (%)")
        ax.set_title("Alpha grid {0.01, 0.1, 0.5, 1, 2, 3}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "alpha.png", dpi=110)
        plt.close(fig)
        made.append(out / "alpha.png")
    return made


def _ci_panels(plt, out: Path, table: list[dict], split: str) -> list[Path]:
    rows = [
        t
        for t in table
        if t["source"] == "ours" and t["group"] in ("baseline", "ablation") and any(v is not None for v in t["values"])
    ]
    if not rows:
        return []
    ref = {t["row"]: t["values"] for t in table if t["group"] == "reference"}
    cols = [i for i in range(len(NAMES)) if any(t["values"][i] is not None for t in rows)]
    fig, axes = plt.subplots(1, len(cols), figsize=(3 * len(cols), 0.32 * len(rows) + 1.6), sharey=True, squeeze=False)
    for ax, i in zip(axes[0], cols, strict=True):
        b = HEADER[i]
        ys = list(range(len(rows)))[::-1]
        pts = []
        for t in rows:
            ci = (t.get("ci") or blank())[i] or (None, None)
            v = t["values"][i]
            pts.append({"accuracy": np.nan if v is None else v, "ci_low": ci[0], "ci_high": ci[1]})
        ax.errorbar([p["accuracy"] for p in pts], ys, xerr=_yerr(pts), fmt="o", ms=3, capsize=2, lw=0.8)
        for name, style in (("majority", "--"), ("chance", ":")):
            if ref.get(name) and ref[name][i] is not None:
                ax.axvline(ref[name][i], ls=style, color="grey", lw=0.8, label=name)
        ax.set_title(b)
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"% on {split}")
        if i == cols[0]:
            ax.set_yticks(ys, [t["row"] for t in rows], fontsize=8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Accuracy with 95% CI per row and benchmark (dashed: majority class, dotted: chance)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "accuracy_ci.png", dpi=110)
    plt.close(fig)
    return [out / "accuracy_ci.png"]
