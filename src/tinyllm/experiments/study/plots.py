"""The study's plots: accuracy with CIs per arm, training loss curves (mean over seeds), memory per step."""

from __future__ import annotations

import json
from pathlib import Path

from .config import StudyConfig
from .layout import _runs_done


def _read_train_log(path: Path) -> list[dict[str, float]]:
    """Rows of a ``train_log.tsv`` as floats (an empty or unparsable cell: NaN); [] if absent."""
    import csv

    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            row = {}
            for k, v in r.items():
                if k is None:  # cells beyond the header: ignored
                    continue
                try:
                    row[k] = float(v) if v not in (None, "") else float("nan")
                except (TypeError, ValueError):
                    row[k] = float("nan")
            rows.append(row)
    return rows


def _is_loss_column(key: str) -> bool:
    return key.startswith(("loss_", "valid_loss_"))


def mean_curves(logs: dict[str, list[list[dict[str, float]]]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per arm and loss column (``loss_<task>``, ``valid_loss_<task>``): the curve over steps of
    the mean, min and max over the arm's seeds. ``logs``: arm -> one list of train-log rows per
    seed. A seed missing a step, or with NaN there (the task was absent from that step's batch),
    is left out of that step; a step no seed has a value at is NaN (a gap in the line); a
    column with no value at all is dropped. Returns arm -> column -> {step, mean, min, max, seeds}."""
    nan = float("nan")
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for arm, seeds in logs.items():
        cols = list(dict.fromkeys(k for rows in seeds for r in rows for k in r if _is_loss_column(k)))
        per: dict[str, dict[str, list[float]]] = {}
        for col in cols:
            by_step: dict[float, list[float]] = {}
            for rows in seeds:
                for r in rows:
                    step, v = r.get("step", nan), r.get(col, nan)
                    if step == step:
                        by_step.setdefault(step, [])
                        if v == v:
                            by_step[step].append(v)
            if not any(by_step.values()):
                continue
            steps = sorted(by_step)
            vals = [by_step[s] for s in steps]
            per[col] = {
                "step": steps,
                "mean": [sum(v) / len(v) if v else nan for v in vals],
                "min": [min(v) if v else nan for v in vals],
                "max": [max(v) if v else nan for v in vals],
                "seeds": len(seeds),
            }
        if per:
            curves[arm] = per
    return curves


def loss_curves(cfg: StudyConfig, out: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """`mean_curves` of the finished runs' ``train_log.tsv``; arms trained for 0 steps (the
    untrained student) and runs without a train log are skipped."""
    logs: dict[str, list[list[dict[str, float]]]] = {}
    for arm, seeds in _runs_done(cfg, out).items():
        if {**cfg.distill, **cfg.arms.get(arm, {})}.get("steps") == 0:
            continue
        for _, d in sorted(seeds.items()):
            rows = _read_train_log(d / "train_log.tsv")
            if rows:
                logs.setdefault(arm, []).append(rows)
    return mean_curves(logs)


def _tasks(curves: dict[str, dict[str, dict]]) -> list[str]:
    """Task names of the loss columns: ``answer`` first, then the teachers as they appear."""
    names = dict.fromkeys(col.removeprefix("valid_").removeprefix("loss_") for per in curves.values() for col in per)
    return sorted(names, key=lambda t: t != "answer")


def answer_loss_differences(cfg: StudyConfig, out: Path) -> dict:
    """Per trained arm, its answer-task loss minus the reference arm's at every logged step, the
    two paired by seed (same seed: the same batches, so a step compares one to one): per step the
    mean, min and max over the seeds both have; and ``"seed-to-seed"``, the same difference between
    two seeds of the reference (the yardstick: what a change of batches alone moves)."""
    import math

    done = _runs_done(cfg, out)
    ref = cfg.reference
    if ref not in done:
        return {}

    def answer(arm: str, seed: int) -> dict[int, float]:
        rows = _read_train_log(done[arm][seed] / "train_log.tsv")
        return {int(r["step"]): r["loss_answer"] for r in rows if not math.isnan(r.get("loss_answer", math.nan))}

    def band(pairs: list[tuple[dict, dict]]) -> dict | None:
        steps = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))) if pairs else []
        if not steps:
            return None
        d = [[a[s] - b[s] for a, b in pairs] for s in steps]
        return {
            "step": steps,
            "mean": [sum(x) / len(x) for x in d],
            "min": [min(x) for x in d],
            "max": [max(x) for x in d],
            "pairs": len(pairs),
        }

    outd: dict = {}
    for arm, seeds in done.items():
        if arm in (ref, *cfg.deterministic_arms):
            continue
        common = sorted(set(seeds) & set(done[ref]))
        b = band([(answer(arm, s), answer(ref, s)) for s in common])
        if b:
            outd[arm] = b
    rs = sorted(done[ref])
    b = band([(answer(ref, s), answer(ref, t)) for s in rs for t in rs if s < t])
    if b and outd:
        outd["seed-to-seed"] = b
    return outd


def write_plots(cfg: StudyConfig, out: Path, tables: dict, rates: dict[str, dict]) -> list[tuple[str, str, str]]:
    """``accuracy_ci.png`` (each arm's accuracy with its 95% CI, one panel per benchmark and the
    average, majority-class and chance lines) and ``loss_curves.png`` (training loss per task,
    mean over seeds with a min..max band; validation loss dashed when logged) in ``out``.
    Returns (file name, alt text, caption) of the plots written; a plot with no data is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    color = {arm: f"C{i}" for i, arm in enumerate(cfg.arms)}
    made = [
        _accuracy_plot(plt, cfg, out, tables, rates, color),
        _loss_plot(plt, cfg, out, tables["summary"], color),
        _answer_diff_plot(plt, cfg, out, color),
        _rss_plot(plt, cfg, out),
    ]
    return [m for m in made if m is not None]


def _accuracy_plot(plt, cfg: StudyConfig, out: Path, tables: dict, rates: dict, color: dict) -> tuple | None:
    """``accuracy_ci.png``: a panel per benchmark and the average, a row per finished arm; None
    before any arm is finished."""
    summary = tables["summary"]
    arms = [a for a in cfg.arms if a in summary]
    if not arms:
        return None
    cols = cfg.benchmarks + ["average"]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 0.45 * len(arms) + 1.9), sharey=True)
    axes = list(axes) if len(cols) > 1 else [axes]
    ys = list(range(len(arms)))[::-1]
    for ax, b in zip(axes, cols, strict=True):
        _accuracy_panel(ax, cfg, b, arms, ys, summary, rates, color)
    axes[0].set_yticks(
        ys, [f"{a} ({len(tables['seeds'][a])} seed{'s' * (len(tables['seeds'][a]) != 1)})" for a in arms]
    )
    axes[0].set_ylim(-0.6, len(arms) - 0.4)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"Study {cfg.name}: accuracy (mean over seeds) with 95% CI per arm and benchmark", fontsize=11)
    fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 1))
    fig.savefig(out / "accuracy_ci.png", dpi=110)
    plt.close(fig)
    return (
        "accuracy_ci.png",
        "Accuracy with 95% CI per arm and benchmark",
        f"Accuracy % on {cfg.eval_split} per arm (dot: mean over seeds; bar: 95% CI, seeds pooled per "
        "question); dashed: majority class (train), dotted: chance.",
    )


def _accuracy_panel(ax, cfg: StudyConfig, b: str, arms, ys, summary: dict, rates: dict, color: dict) -> None:
    """One benchmark's (or the average's) panel: each arm's accuracy and CI, majority and chance lines."""
    for y, arm in zip(ys, arms, strict=True):
        s = summary[arm].get(b)
        if not s or s["accuracy"] != s["accuracy"]:
            continue
        acc = 100 * s["accuracy"]
        err = [[acc - 100 * s["ci_low"]], [100 * s["ci_high"] - acc]]
        ax.errorbar([acc], [y], xerr=err, fmt="o", ms=4, capsize=3, lw=1.2, color=color[arm])
    for key, style, label in (("majority", "--", "majority class (train)"), ("chance", ":", "chance")):
        vals = [rates.get(x, {}).get(key) for x in cfg.benchmarks]
        if b == "average":
            v = sum(vals) / len(vals) if vals and all(x is not None for x in vals) else None
        else:
            v = rates.get(b, {}).get(key)
        if v is not None and v == v:
            ax.axvline(100 * v, ls=style, color="grey", lw=1, label=label)
    ax.set_title(b, fontweight="bold" if b == "average" else None)
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"accuracy % on {cfg.eval_split}")
    ax.grid(axis="x", alpha=0.3)


def _loss_plot(plt, cfg: StudyConfig, out: Path, summary: dict, color: dict) -> tuple | None:
    """``loss_curves.png``: a panel per task (the answer, each teacher's rationale), a line per
    trained arm; None when no finished run has a train log."""
    curves = loss_curves(cfg, out)
    if not curves:
        return None
    tasks = _tasks(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        _loss_panel(ax, task, curves, color)
    fig.suptitle(f"Study {cfg.name}: training loss per task (band: min..max over seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    plt.close(fig)
    return ("loss_curves.png", "Training loss curves per task and arm", _loss_caption(cfg, summary, curves))


def _loss_panel(ax, task: str, curves: dict, color: dict) -> None:
    """One task's panel: per arm the mean training loss over seeds with a min..max band, and the
    validation loss dashed when logged."""
    for arm, per in curves.items():
        c = per.get(f"loss_{task}")
        if c:
            n = c["seeds"]
            ax.plot(c["step"], c["mean"], color=color.get(arm), lw=1.4, label=f"{arm} train (mean of {n})")
            if n > 1:
                ax.fill_between(c["step"], c["min"], c["max"], color=color.get(arm), alpha=0.2, lw=0)
        v = per.get(f"valid_loss_{task}")
        if v:
            ax.plot(v["step"], v["mean"], ls="--", marker="o", ms=3, color=color.get(arm), label=f"{arm} valid")
    ax.set_title("answer (label)" if task == "answer" else f"rationale of {task}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean token NLL)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _answer_diff_plot(plt, cfg: StudyConfig, out: Path, color: dict) -> tuple | None:
    """``answer_loss_diff.png``: each arm's answer loss minus the reference's, step by step."""
    diffs = answer_loss_differences(cfg, out)
    if not diffs:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    yard = diffs.get("seed-to-seed")
    if yard:
        ax.fill_between(yard["step"], yard["min"], yard["max"], color="grey", alpha=0.25, lw=0,
                        label=f"{cfg.reference} seed vs seed (range of {yard['pairs']} pairs)")  # fmt: skip
    for arm, d in diffs.items():
        if arm == "seed-to-seed":
            continue
        ax.plot(
            d["step"], d["mean"], color=color.get(arm), lw=1.3, label=f"{arm} − {cfg.reference} (mean of {d['pairs']})"
        )
        if d["pairs"] > 1:
            ax.fill_between(d["step"], d["min"], d["max"], color=color.get(arm), alpha=0.2, lw=0)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("answer loss difference (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Study {cfg.name}: does a rationale task move the answer loss?", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "answer_loss_diff.png", dpi=110)
    plt.close(fig)
    caption = (
        f"Answer-task training loss of each arm minus {cfg.reference}'s at the same step and seed (the same "
        "batches): line = mean over seeds, band = min..max; grey: two seeds of "
        f"{cfg.reference} against each other, what a change of batches alone moves."
    )
    return ("answer_loss_diff.png", "Answer-loss difference per step against the reference arm", caption)


def _loss_caption(cfg: StudyConfig, summary: dict, curves: dict) -> str:
    """The loss plot's caption: the arms without a curve, and why there is or is no validation loss."""
    skipped = [a for a in cfg.arms if a in summary and a not in curves]
    caption = (
        "Training losses (mean over the step's target tokens per task), per arm: line = mean over seeds, "
        "band = min..max over seeds"
    )
    if skipped:
        caption += f"; no curve for {', '.join(skipped)} (no training steps or no train log)"
    if any(col.startswith("valid_loss_") for per in curves.values() for col in per):
        caption += "; dashed: validation loss (mean over seeds)."
    elif all({**cfg.distill, **cfg.arms.get(a, {})}.get("valid_loss_per_benchmark") == 0 for a in curves):
        caption += ". The study profile set `valid_loss_per_benchmark: 0`, so no validation-loss curve was logged."
    else:
        caption += ". The train logs have no validation-loss column, so no validation-loss curve is drawn."
    return caption


def _rss_plot(plt, cfg: StudyConfig, out: Path) -> tuple | None:
    """``rss.png``: each finished run's resident set size per training step (its ``rss.json``);
    None when no run has one."""
    rss = {
        f"{arm}-s{seed}": json.loads((d / "rss.json").read_text())
        for arm, seeds in _runs_done(cfg, out).items()
        for seed, d in sorted(seeds.items())
        if (d / "rss.json").exists()
    }
    if not rss:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (run, rows) in enumerate(rss.items()):
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["rss_gb"] for r in rows], lw=1.2, color=f"C{i % 10}", label=run)
        if any("peak_gb" in r for r in rows):
            peaks = [r.get("peak_gb", float("nan")) for r in rows]
            ax.plot(steps, peaks, lw=0.6, ls="--", color=f"C{i % 10}", alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("resident set size (GB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Study {cfg.name}: memory of the study process per training step", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "rss.png", dpi=110)
    plt.close(fig)
    after = ", ".join(f"{run} {max(r['rss_gb'] for r in rows):.2f} GB" for run, rows in rss.items())
    within = [
        f"{run} {max(r['peak_gb'] for r in rows if 'peak_gb' in r):.2f} GB"
        for run, rows in rss.items()
        if any("peak_gb" in r for r in rows)
    ]
    unmeasured = [run for run, rows in rss.items() if not any("peak_gb" in r for r in rows)]
    caption = (
        "Resident set size of the study process after each optimizer step (solid; after "
        "`malloc_trim`, checkpoint evaluations included; rows padded to `pad_multiple` tokens bound "
        f"the kernel shapes). Highest after a step: {after}."
    )
    if within:
        caption += (
            " Dashed: the peak within each step (forward, backward and any checkpoint evaluation; "
            f"Linux VmHWM, reset every step). Highest peak: {', '.join(within)}."
        )
    if unmeasured:
        caption += f" Within-step peaks were not recorded for {', '.join(unmeasured)}."
    return ("rss.png", "Resident set size per training step", caption)
