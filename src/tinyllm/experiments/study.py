"""A study: does TinyLLM beat label-only fine-tuning of the same student, with the same steps,
questions and batch order? Arms x seeds trained and evaluated in one resumable background job.

A profile (``experiments/study.yaml``) names the student checkpoint, the benchmarks, the train
questions, the ``distill`` settings shared by every arm, the arms (each a change of ``distill``:
``untrained`` = steps 0, ``ft`` = no teachers, ``tinyllm`` = the released teachers' rationales)
and the seeds. Every (arm, seed) is a *run*: train in this process, evaluate every question of
the selection split, write ``runs/<arm>-s<seed>/`` (predictions, metrics, train log) and a
``done.json`` last, atomically. A restarted job skips finished runs, so ``nohup`` + rerun
resumes after an interruption; ``progress.json`` says where it is.

Arms that compare are paired: the same seed gives the same questions in the same order
(``distill.batches`` orders by the question alone), and evaluation is batch-invariant.
Selection: nothing is tuned inside the study; every number is on ``eval_split`` (valid), the
split the profile was designed on, and is labelled so (``report``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


@dataclass
class StudyConfig:
    name: str
    benchmarks: list[str]
    seeds: list[int]
    arms: dict[str, dict]  # arm -> distill overrides (alphas, steps, ...)
    distill: dict = field(default_factory=dict)  # shared DistillConfig values
    base: str = "models/base"  # student checkpoint (the student_base stage's output)
    prepared: str = "data/prepared"
    rationales: str = "data/rationales"
    eval_split: str = "valid"
    eval_per_benchmark: int | None = None  # None: every question of the split
    eval_batch_size: int = 16
    eval_max_input_tokens: int = 128
    generate: bool = True  # also generate-and-match (slower); option likelihood is always computed
    deterministic_arms: list[str] = field(default_factory=lambda: ["untrained"])  # run with the first seed only
    reference: str = "ft"  # the arm every other arm is compared with
    headline_arm: str = "tinyllm"
    mlflow: bool = True  # one parent run per study, a child run per (arm, seed)
    experiment: str = "tinyllm"

    @classmethod
    def load(cls, path: Path) -> StudyConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def runs(self) -> list[tuple[str, int]]:
        return [
            (arm, seed)
            for seed in self.seeds
            for arm in self.arms
            if not (arm in self.deterministic_arms and seed != self.seeds[0])
        ]


def _write_json(path: Path, obj) -> None:
    from ..io import write_json

    write_json(path, obj)


def run_one(root: Path, cfg: StudyConfig, arm: str, seed: int, out: Path, progress: bool = False) -> dict:
    """Train and evaluate one (arm, seed); write its folder; return its metrics."""
    import torch

    from ..benchmarks import load_prepared
    from ..config import DistillConfig
    from ..distill import active_teachers, train
    from ..evaluate import average, evaluate_records
    from ..io import write_jsonl
    from ..student import load_student
    from ..trainset import build_examples

    run_dir = out / "runs" / f"{arm}-s{seed}"
    dcfg = DistillConfig(**{**cfg.distill, **cfg.arms[arm], "seed": seed})
    teachers = active_teachers(dcfg.alphas)
    examples, coverage = build_examples(
        root / cfg.prepared,
        root / cfg.rationales,
        cfg.benchmarks,
        teachers,
        dcfg.train_per_benchmark,
        seed,
        dcfg.drop_flags,
    )
    torch.manual_seed(seed)
    student = load_student(root / cfg.base)
    t0 = time.perf_counter()
    rows: list[dict] = []
    res = train(student, examples, dcfg, log_path=run_dir / "train_log.tsv", progress=progress, on_log=rows.append)
    res.pop("_is_main", None)
    train_s = time.perf_counter() - t0
    student.model.eval()
    per, t1 = {}, time.perf_counter()
    for b in cfg.benchmarks:
        records = load_prepared(root / cfg.prepared, b, cfg.eval_split)
        if records is None:
            raise FileNotFoundError(f"{root / cfg.prepared / b}: no {cfg.eval_split} split to evaluate on")
        if cfg.eval_per_benchmark:
            records = records[: cfg.eval_per_benchmark]
        with torch.no_grad():
            m, preds = evaluate_records(
                student,
                records,
                max_input_tokens=cfg.eval_max_input_tokens,
                max_new_tokens=None,
                batch_size=cfg.eval_batch_size,
                device="cpu",
                progress=False,
                generate=cfg.generate,
            )
        write_jsonl(run_dir / "predictions" / cfg.eval_split / f"{b}.jsonl", preds)
        per[b] = m
        log.info("  %s-s%d %s/%s: option likelihood %.3f (n=%d)", arm, seed, b, cfg.eval_split, m["acc_score"], m["n"])
    per["average"] = average(per)
    metrics = {
        "arm": arm,
        "seed": seed,
        "teachers": teachers,
        "train": res,
        "coverage": coverage,
        cfg.eval_split: per,
        "train_s": train_s,
        "eval_s": time.perf_counter() - t1,
    }
    _write_json(run_dir / "metrics.json", metrics)
    if cfg.mlflow:
        from .. import tracking

        flat_eval = {
            f"{cfg.eval_split}.{b}.{k}": v for b, m in per.items() for k, v in m.items() if isinstance(v, (int, float))
        }
        tracking.log_run(
            root,
            cfg.experiment,
            f"{cfg.name} {arm} s{seed}",
            {
                "study": cfg.name,
                "arm": arm,
                "distill": {**cfg.distill, **cfg.arms[arm], "seed": seed},
                "benchmarks": cfg.benchmarks,
            },
            {**flat_eval, "train_s": train_s},
            {"row": f"study:{arm}", "study": cfg.name, "arm": arm},
            step_rows=rows,
            artifacts=[run_dir / "metrics.json"],
        )
    _write_json(run_dir / "done.json", {"finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return metrics


def run_study(root: Path, cfg: StudyConfig, out: Path, progress: bool = False) -> None:
    """Every (arm, seed) not yet done, in order; then the report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.yaml").write_text(yaml.safe_dump(cfg.__dict__, sort_keys=False))
    todo = cfg.runs()
    t0 = time.perf_counter()
    parent = contextlib.nullcontext()
    if cfg.mlflow:
        from .. import tracking

        parent = tracking.parent_run(root, f"study {cfg.name}", cfg.experiment, {"study": cfg.name})
    with parent:
        _run_all(root, cfg, out, todo, t0, progress)
    _write_json(
        out / "progress.json",
        {"running": None, "done": len(todo), "of": len(todo), "elapsed_s": time.perf_counter() - t0},
    )
    write_report(root, cfg, out)


def _run_all(root, cfg, out, todo, t0, progress) -> None:
    for i, (arm, seed) in enumerate(todo, 1):
        run_dir = out / "runs" / f"{arm}-s{seed}"
        if (run_dir / "done.json").exists():
            log.info("[%d/%d] %s-s%d: done before, skipped", i, len(todo), arm, seed)
            continue
        _write_json(
            out / "progress.json",
            {"running": f"{arm}-s{seed}", "index": i, "of": len(todo), "elapsed_s": time.perf_counter() - t0},
        )
        log.info("[%d/%d] %s-s%d: training and evaluating", i, len(todo), arm, seed)
        m = run_one(root, cfg, arm, seed, out, progress)
        log.info(
            "[%d/%d] %s-s%d: average %.3f (train %.0f s, eval %.0f s)",
            i,
            len(todo),
            arm,
            seed,
            m[cfg.eval_split]["average"]["acc_score"],
            m["train_s"],
            m["eval_s"],
        )
        write_report(root, cfg, out)  # partial results as they come


# ----------------------------------------------------------------------------- report


def _runs_done(cfg: StudyConfig, out: Path) -> dict[str, dict[int, Path]]:
    done: dict[str, dict[int, Path]] = {}
    for arm, seed in cfg.runs():
        d = out / "runs" / f"{arm}-s{seed}"
        if (d / "done.json").exists():
            done.setdefault(arm, {})[seed] = d
    return done


def _read_preds(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def study_tables(cfg: StudyConfig, out: Path, rule: str = "score") -> dict:
    """Accuracy summaries per arm and paired comparisons, from the finished runs' predictions."""
    from .stats import accuracy_summary, paired_comparison, seed_matrix

    done = _runs_done(cfg, out)
    mats: dict[str, dict] = {}
    for arm, seeds in done.items():
        mats[arm] = {}
        for b in cfg.benchmarks:
            runs = [_read_preds(d / "predictions" / cfg.eval_split / f"{b}.jsonl") for _, d in sorted(seeds.items())]
            mats[arm][b] = seed_matrix(runs, rule)
    summary = {arm: accuracy_summary({b: m for b, (_, m) in per.items()}) for arm, per in mats.items()}
    comps = {}
    for arm in mats:
        if arm in cfg.deterministic_arms:
            continue  # the untrained student is a reference, not a treatment
        for ref in (cfg.reference, *cfg.deterministic_arms):
            if arm != ref and ref in mats:
                comps[f"{arm} - {ref}"] = paired_comparison(mats[arm], mats[ref])
    return {"summary": summary, "comparisons": comps, "seeds": {a: sorted(s) for a, s in done.items()}, "rule": rule}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def write_report(root: Path, cfg: StudyConfig, out: Path) -> str:
    """``report.md`` + ``report.json`` in ``out``: per arm and benchmark n, accuracy (mean ± sd
    over seeds) and a 95% CI; paired differences with bootstrap CIs and exact McNemar p."""
    from .stats import majority_classes, reference_rates

    tables = study_tables(cfg, out)
    summary, comps = tables["summary"], tables["comparisons"]
    cols = cfg.benchmarks + ["average"]
    lines = [
        f"# Study `{cfg.name}`",
        "",
        f"Split: **{cfg.eval_split}** ("
        f"{'every question' if not cfg.eval_per_benchmark else f'the first {cfg.eval_per_benchmark} questions'}"
        " per benchmark); decision rule: **option likelihood** (mean token log-likelihood of each option). "
        "Nothing was selected on this split: steps, learning rate, caps and alphas were fixed in the profile "
        "before any run (from the compute budget and the measured rationale lengths), and every arm is "
        "reported at its final step. The mirror has no test split, so these are validation numbers.",
        "",
        "Accuracy % (mean over seeds ± sd) [95% CI; seeds pooled per question], n questions:",
        "",
        "| arm | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for arm in cfg.arms:
        if arm not in summary:
            lines.append(f"| {arm} | pending | " + " | ".join("" for _ in cols) + " |")
            continue
        cells = []
        for b in cols:
            s = summary[arm][b]
            sd = "" if s["sd"] != s["sd"] else f" ± {_pct(s['sd'])}"
            cells.append(f"{_pct(s['accuracy'])}{sd} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}] n={s['n']}")
        lines.append(f"| {arm} | {len(tables['seeds'][arm])} | " + " | ".join(cells) + " |")
    # reference rates from the first finished run's predictions
    done = _runs_done(cfg, out)
    rates: dict[str, dict] = {}
    if done:
        first = next(iter(next(iter(done.values())).values()))
        maj = majority_classes(root / cfg.prepared, cfg.benchmarks)
        rates = {
            b: reference_rates(_read_preds(first / "predictions" / cfg.eval_split / f"{b}.jsonl"), maj.get(b))
            for b in cfg.benchmarks
        }
        for key, label in (("majority", "majority class (train)"), ("chance", "chance")):
            vals = [rates[b].get(key) for b in cfg.benchmarks]
            if all(v is not None for v in vals):
                avg = sum(vals) / len(vals)
                lines.append(f"| {label} | – | " + " | ".join(_pct(v) for v in vals + [avg]) + " |")
    lines += [
        "",
        "Paired differences (points) [95% paired-bootstrap CI], exact McNemar p (seeds: per-question "
        "majority vote), on the same questions:",
        "",
        "| comparison | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, c in comps.items():
        cells = [
            (
                f"{100 * c[b]['diff']:+.1f} [{100 * c[b]['ci_low']:+.1f}, {100 * c[b]['ci_high']:+.1f}] "
                f"p={c[b]['p_mcnemar']:.3g}"
            )
            if b in c
            else ""
            for b in cols
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    even = sorted(a for a, seeds in tables["seeds"].items() if len(seeds) % 2 == 0)
    if even:
        lines += [
            "",
            f"**Caution:** {', '.join(even)} ha{'s' if len(even) == 1 else 've'} an even number of finished "
            "seeds. McNemar's majority vote then counts a question that half the seeds got right as wrong, "
            "which biases p against the arm that is right on split questions: read the bootstrap CIs, not "
            "these p-values, until the study has an odd number of seeds (it resumes: `scripts/study.py run`).",
        ]
    key = f"{cfg.headline_arm} - {cfg.reference}"
    if key in comps and "average" in comps[key] and cfg.reference in summary:
        c, ref = comps[key]["average"], summary[cfg.reference]["average"]["accuracy"]
        rel = c["diff"] / ref if ref else float("nan")
        lines += [
            "",
            f"**{key}** on the average: {100 * c['diff']:+.2f} points "
            f"(95% CI [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}], "
            f"McNemar p = {c['p_mcnemar']:.3g}), "
            f"{100 * rel:+.1f}% relative to {cfg.reference}; CI half-width "
            f"{50 * (c['ci_high'] - c['ci_low']):.2f} points.",
        ]
    plots = write_plots(cfg, out, tables, rates)  # before report.md, so its links never dangle
    if plots:
        lines += ["", "## Plots"]
        for name, alt, caption in plots:
            lines += ["", f"![{alt}]({name})", "", caption]
    text = "\n".join(lines) + "\n"
    from ..io import atomic_write

    with atomic_write(out / "report.md") as f:
        f.write(text)
    _write_json(out / "report.json", tables)
    return text


# ----------------------------------------------------------------------------- plots


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


def write_plots(cfg: StudyConfig, out: Path, tables: dict, rates: dict[str, dict]) -> list[tuple[str, str, str]]:
    """``accuracy_ci.png`` (each arm's accuracy with its 95% CI, one panel per benchmark and the
    average, majority-class and chance lines) and ``loss_curves.png`` (training loss per task,
    mean over seeds with a min..max band; validation loss dashed when logged) in ``out``.
    Returns (file name, alt text, caption) of the plots written; a plot with no data is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = tables["summary"]
    color = {arm: f"C{i}" for i, arm in enumerate(cfg.arms)}
    made = []
    arms = [a for a in cfg.arms if a in summary]
    if arms:
        cols = cfg.benchmarks + ["average"]
        fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 0.45 * len(arms) + 1.9), sharey=True)
        axes = list(axes) if len(cols) > 1 else [axes]
        ys = list(range(len(arms)))[::-1]
        for ax, b in zip(axes, cols, strict=True):
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
        made.append(
            (
                "accuracy_ci.png",
                "Accuracy with 95% CI per arm and benchmark",
                f"Accuracy % on {cfg.eval_split} per arm (dot: mean over seeds; bar: 95% CI, seeds pooled per "
                "question); dashed: majority class (train), dotted: chance.",
            )
        )
    curves = loss_curves(cfg, out)
    if curves:
        tasks = _tasks(curves)
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
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
        fig.suptitle(f"Study {cfg.name}: training loss per task (band: min..max over seeds)", fontsize=11)
        fig.tight_layout()
        fig.savefig(out / "loss_curves.png", dpi=110)
        plt.close(fig)
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
        made.append(("loss_curves.png", "Training loss curves per task and arm", caption))
    return made
