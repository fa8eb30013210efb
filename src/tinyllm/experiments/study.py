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
    text = "\n".join(lines) + "\n"
    from ..io import atomic_write

    with atomic_write(out / "report.md") as f:
        f.write(text)
    _write_json(out / "report.json", tables)
    return text
