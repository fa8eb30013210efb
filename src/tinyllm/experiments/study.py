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

Selection: the validation split is cut into two fixed halves (``benchmarks.valid_half``):
pilots and every choice use ``dev``; the study's numbers come from ``report_half`` (``report``)
and are labelled so. ``eval_half: dev`` makes a pilot evaluate the dev half only, so a pilot
never sees a report number. ``checkpoint_every: N`` evaluates each arm every N steps: the
report gives the checkpoint selected on dev beside the best-over-checkpoints number on report
(what the authors' protocol of evaluating every checkpoint on the reported split gives).
Every prediction carries every decision rule; ``rule`` is the headline one.
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
    rule: str = "score"  # the headline decision rule (tinyllm.evaluate.RULES); every rule is recorded
    eval_half: str | None = None  # evaluate only this half of valid ("dev" for pilots); None: all
    report_half: str | None = None  # the half the report's numbers come from ("report"); None: all evaluated
    checkpoint_every: int = 0  # also evaluate every N steps (dev selection vs best-on-report)
    pmi: bool = True  # score options after the answer tag alone too (the pmi rule)
    save_models: str | None = None  # folder for each run's trained student (e.g. models/study); None: not kept
    notes: str = ""  # what this profile is for, shown in the report

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


def eval_records(root: Path, cfg: StudyConfig) -> dict[str, list[dict]]:
    """The questions every run is evaluated on: per benchmark, ``eval_split`` (first
    ``eval_per_benchmark``), then ``eval_half`` of it."""
    from ..benchmarks import select_half
    from ..evaluation import prepared_questions

    questions = prepared_questions(
        root / cfg.prepared, cfg.benchmarks, cfg.eval_split, cfg.eval_per_benchmark or None, required=True
    )
    return {b: select_half(records, cfg.eval_half) for b, records in questions.items()}


def evaluate_student(student, cfg: StudyConfig, questions: dict[str, list[dict]], generate: bool | None = None):
    """({benchmark: metrics} with the average, {benchmark: predictions}); each prediction carries
    its ``half`` of valid."""
    import torch

    from ..benchmarks import valid_half
    from ..evaluation import evaluate_benchmarks

    @contextlib.contextmanager
    def fp32_no_grad():
        with torch.no_grad(), _fp32_forward(student.model):
            yield

    student.model.eval()
    per, preds_by = evaluate_benchmarks(
        student,
        questions,
        context=fp32_no_grad,
        max_input_tokens=cfg.eval_max_input_tokens,
        max_new_tokens=None,
        batch_size=cfg.eval_batch_size,
        device="cpu",
        progress=False,
        generate=cfg.generate if generate is None else generate,
        headline=cfg.rule,
        pmi=cfg.pmi,
    )
    for b, records in questions.items():
        for p, r in zip(preds_by[b], records, strict=True):
            p["half"] = valid_half(r)
    return per, preds_by


@contextlib.contextmanager
def _fp32_forward(model):
    """During training, Accelerate's bf16 mixed precision wraps ``model.forward`` in autocast;
    a checkpoint is evaluated with the original fp32 forward (batch-invariant), then rewrapped."""
    wrapped = model.__dict__.get("forward")
    original = getattr(model, "_original_forward", None)
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


def run_one(root: Path, cfg: StudyConfig, arm: str, seed: int, out: Path, progress: bool = False) -> dict:
    """Train and evaluate one (arm, seed); write its folder; return its metrics."""
    import torch

    from ..config import DistillConfig
    from ..distill import active_teachers, config_dict, train
    from ..io import write_jsonl
    from ..student import load_student, save_student
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
    questions = eval_records(root, cfg)
    t0 = time.perf_counter()
    rows: list[dict] = []
    rss: list[dict] = []
    on_step = _checkpoint_hook(student, cfg, questions, run_dir, dcfg.steps, rss)
    res = train(
        student,
        examples,
        dcfg,
        log_path=run_dir / "train_log.tsv",
        progress=progress,
        on_log=rows.append,
        on_step=on_step,
    )
    res.pop("_is_main", None)
    train_s = time.perf_counter() - t0
    if rss:
        _write_json(run_dir / "rss.json", rss)
    t1 = time.perf_counter()
    per, preds_by = evaluate_student(student, cfg, questions)
    for b, preds in preds_by.items():
        write_jsonl(run_dir / "predictions" / cfg.eval_split / f"{b}.jsonl", preds)
        m = per[b]
        log.info("  %s-s%d %s/%s: %s %.3f (n=%d)", arm, seed, b, cfg.eval_split, cfg.rule, m["accuracy"], m["n"])
    if cfg.save_models:
        model_dir = root / cfg.save_models / cfg.name / f"{arm}-s{seed}"
        save_student(
            student.model,
            student.tok,
            model_dir,
            {"teachers": teachers, "kind": student.kind, "distill": config_dict(dcfg), **student.format_meta()},
        )
        _dvc_add(root, model_dir)
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

        flat_eval = tracking.eval_metrics({cfg.eval_split: per})  # acc/<split>/<b> first in the UI
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


def _dvc_add(root: Path, path: Path) -> None:
    """Track a saved student with DVC (``<run>.dvc`` beside it: commit it, ``dvc push`` the
    weights), so it can be re-evaluated on another machine without retraining. A failure (no
    DVC, a lock held by a running ``dvc repro``) is a warning naming the command to run."""
    import subprocess

    cmd = ["dvc", "add", "--quiet", str(path.relative_to(root) if path.is_relative_to(root) else path)]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not track %s with DVC (%s); run: %s", path, e, " ".join(cmd))
        return
    if done.returncode:
        log.warning("`%s` failed (%s); run it again later", " ".join(cmd), done.stderr.strip()[-300:])


def _rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _checkpoint_hook(student, cfg: StudyConfig, questions, run_dir: Path, steps: int, rss: list[dict]):
    """``train``'s ``on_step``: the resident set size every step (``rss.json``: a long run must
    stay flat) and, every ``checkpoint_every`` steps before the last, the predictions of the
    model so far in ``checkpoints/step<N>/`` (a finished checkpoint is kept on resume)."""
    from ..io import write_jsonl

    def hook(step: int) -> None:
        rss.append({"step": step, "rss_gb": round(_rss_gb(), 4)})
        if not cfg.checkpoint_every or step % cfg.checkpoint_every or step == steps:
            return
        ck = run_dir / "checkpoints" / f"step{step}"
        per, preds_by = evaluate_student(student, cfg, questions, generate=False)
        for b, preds in preds_by.items():
            write_jsonl(ck / "predictions" / cfg.eval_split / f"{b}.jsonl", preds)
        _write_json(ck / "metrics.json", {"step": step, cfg.eval_split: per})
        log.info("  checkpoint step %d: %s %.3f", step, cfg.rule, per["average"]["accuracy"])

    return hook


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
    with parent as parent_id:

        def report() -> None:
            """The report, and its one-sentence conclusion as the MLflow parent run's description."""
            write_report(root, cfg, out)
            if parent_id:
                from .. import tracking

                sentence = conclusion(cfg, study_tables(cfg, out))
                tracking.describe_run(root, parent_id, sentence, {"conclusion": sentence})

        report()  # what earlier jobs finished, before this one adds to it
        _run_all(root, cfg, out, todo, t0, progress, report)
    _write_json(
        out / "progress.json",
        {"running": None, "done": len(todo), "of": len(todo), "elapsed_s": time.perf_counter() - t0},
    )


def _run_all(root, cfg, out, todo, t0, progress, report) -> None:
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
            m[cfg.eval_split]["average"]["accuracy"],
            m["train_s"],
            m["eval_s"],
        )
        report()  # partial results as they come


# ----------------------------------------------------------------------------- report


def _runs_done(cfg: StudyConfig, out: Path) -> dict[str, dict[int, Path]]:
    done: dict[str, dict[int, Path]] = {}
    for arm, seed in cfg.runs():
        d = out / "runs" / f"{arm}-s{seed}"
        if (d / "done.json").exists():
            done.setdefault(arm, {})[seed] = d
    return done


def _read_preds(path: Path, half: str | None = None) -> list[dict]:
    """Predictions of one file; ``half``: only those of that half of valid."""
    preds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if half is not None:
        if any("half" not in p for p in preds):
            raise ValueError(f"{path}: predictions carry no 'half' (written before the dev/report split)")
        preds = [p for p in preds if p["half"] == half]
    return preds


def study_tables(cfg: StudyConfig, out: Path, rule: str | None = None, half: str | None = "profile") -> dict:
    """Accuracy summaries per arm and paired comparisons, from the finished runs' predictions
    under ``rule`` (default: the profile's) on ``half`` (default: the profile's report half)."""
    from .stats import accuracy_summary, paired_comparison, seed_matrix

    rule = rule or cfg.rule
    half = cfg.report_half if half == "profile" else half
    done = _runs_done(cfg, out)
    mats: dict[str, dict] = {}
    for arm, seeds in done.items():
        mats[arm] = {}
        for b in cfg.benchmarks:
            runs = [
                _read_preds(d / "predictions" / cfg.eval_split / f"{b}.jsonl", half) for _, d in sorted(seeds.items())
            ]
            mats[arm][b] = seed_matrix(runs, rule)
    summary = {arm: accuracy_summary({b: m for b, (_, m) in per.items()}) for arm, per in mats.items()}
    comps = {}
    for arm in mats:
        if arm in cfg.deterministic_arms:
            continue  # the untrained student is a reference, not a treatment
        for ref in (cfg.reference, *cfg.deterministic_arms):
            if arm != ref and ref in mats:
                comps[f"{arm} - {ref}"] = paired_comparison(mats[arm], mats[ref])
    seeds = {a: sorted(s) for a, s in done.items()}
    return {"summary": summary, "comparisons": comps, "seeds": seeds, "rule": rule, "half": half}


def checkpoint_table(cfg: StudyConfig, out: Path) -> list[dict]:
    """Per finished run with checkpoints: the step selected on ``dev`` (highest dev accuracy
    under the profile's rule, ties to the later step) and its accuracy on the report half, beside
    the best accuracy over the checkpoints on the report half (the authors' protocol) and the
    gap, with the paired-bootstrap CI of the gap's two predictions sets (questions resampled)."""
    from .stats import accuracy_summary, paired_comparison, seed_matrix

    rows = []
    for arm, seeds in _runs_done(cfg, out).items():
        for seed, d in sorted(seeds.items()):
            steps = sorted(int(p.name[4:]) for p in (d / "checkpoints").glob("step*") if (p / "metrics.json").exists())
            if not steps:
                continue
            final = json.loads((d / "metrics.json").read_text())["train"].get("steps", 0)
            folders = {s: d / "checkpoints" / f"step{s}" for s in steps} | {final: d}

            def mats(folder, half, rule=cfg.rule):
                return {
                    b: seed_matrix(
                        [_read_preds(folder / "predictions" / cfg.eval_split / f"{b}.jsonl", half)], cfg.rule
                    )
                    for b in cfg.benchmarks
                }

            def average(folder, half):
                return accuracy_summary({b: m for b, (_, m) in mats(folder, half).items()}, n_resamples=200)["average"][
                    "accuracy"
                ]

            acc = {h: {s: average(f, h) for s, f in folders.items()} for h in ("dev", cfg.report_half or "report")}
            rep_half = cfg.report_half or "report"
            chosen = max(folders, key=lambda s: (acc["dev"][s], s))
            best = max(folders, key=lambda s: (acc[rep_half][s], s))
            gap = paired_comparison(mats(folders[best], rep_half), mats(folders[chosen], rep_half))["average"]
            rows.append(
                {
                    "run": f"{arm}-s{seed}",
                    "steps": sorted(folders),
                    "dev_selected_step": chosen,
                    "dev_selected_report": acc[rep_half][chosen],
                    "final_report": acc[rep_half][final],
                    "best_step_on_report": best,
                    "best_on_report": acc[rep_half][best],
                    "gap": gap["diff"],
                    "gap_ci_low": gap["ci_low"],
                    "gap_ci_high": gap["ci_high"],
                }
            )
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def write_report(root: Path, cfg: StudyConfig, out: Path) -> str:
    """``report.md`` + ``report.json`` in ``out``: per arm and benchmark n, accuracy (mean ± sd
    over seeds) and a 95% CI; paired differences with bootstrap CIs and exact McNemar p."""
    from ..evaluate import RULES
    from .stats import majority_classes, reference_rates

    tables = study_tables(cfg, out)
    summary, comps = tables["summary"], tables["comparisons"]
    cols = cfg.benchmarks + ["average"]
    fmt = {**cfg.distill}.get("answer_format", "listed")
    scope = "every question" if not cfg.eval_per_benchmark else f"the first {cfg.eval_per_benchmark} questions"
    half = {
        None: "all of them",
        "dev": "their **dev** half (a pilot: choices are made here)",
        "report": "their **report** half (fixed by a hash before any pilot; nothing was selected on it)",
    }[tables["half"]]
    lines = [
        f"# Study `{cfg.name}`",
        "",
        *([cfg.notes.strip(), ""] if cfg.notes.strip() else []),
        f"**Conclusion so far:** {conclusion(cfg, tables)}",
        "",
        f"Split: **{cfg.eval_split}**, {scope} per benchmark, {half}. Answer format: **{fmt}**; "
        f"decision rule: **{cfg.rule}** ({RULE_TEXT.get(cfg.rule, cfg.rule)}). Every arm is reported at its "
        "final step; steps, learning rate, caps and alphas were fixed in the profile before its runs. "
        "The mirror has no test split, so these are validation numbers.",
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
            b: reference_rates(
                _read_preds(first / "predictions" / cfg.eval_split / f"{b}.jsonl", tables["half"]), maj.get(b)
            )
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
    lines += _rules_table(cfg, out, tables, RULES)
    lines += _checkpoint_lines(cfg, out)
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


def conclusion(cfg: StudyConfig, tables: dict) -> str:
    """The study's result in one sentence with its numbers: the positive control (the reference
    arm against the untrained student) and the headline arm against the reference."""
    summary, comps = tables["summary"], tables["comparisons"]
    half = f"{tables['half']} half of " if tables["half"] else ""
    n = summary.get(cfg.reference, {}).get("average", {}).get("n")
    where = f"{', '.join(cfg.benchmarks)} ({half}{cfg.eval_split}, n={n}, rule {cfg.rule})"

    def diff(key):
        c = comps.get(key, {}).get("average")
        if not c:
            return None
        return (
            f"{100 * c['diff']:+.1f} points [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}], "
            f"McNemar p = {c['p_mcnemar']:.2g}"
        )

    control = next((diff(f"{cfg.reference} - {a}") for a in cfg.deterministic_arms), None)
    head = diff(f"{cfg.headline_arm} - {cfg.reference}")
    seeds = tables["seeds"].get(cfg.headline_arm, [])
    if control is None:
        return f"On {where}: the positive control ({cfg.reference} against the untrained student) is not finished."
    text = f"On {where}: {cfg.reference} − untrained = {control}"
    if head is None:
        return text + f"; {cfg.headline_arm} is not finished."
    return text + f"; {cfg.headline_arm} − {cfg.reference} = {head} ({len(seeds)} seed{'s' * (len(seeds) != 1)})."


RULE_TEXT = {
    "score": "mean token log-likelihood of option + EOS",
    "sum": "summed log-likelihood of the option text",
    "norm": "summed log-likelihood per character, lm-evaluation-harness acc_norm",
    "pmi": "summed log-likelihood minus the option's after the answer tag alone",
    "generate": "greedy generation matched to an option",
}


def _rules_table(cfg: StudyConfig, out: Path, tables: dict, rules) -> list[str]:
    """Average accuracy [95% CI] of each arm under every decision rule the predictions carry,
    and the headline comparison under each (same half as the main table)."""
    done = _runs_done(cfg, out)
    if not done:
        return []
    first = next(iter(next(iter(done.values())).values()))
    sample = _read_preds(first / "predictions" / cfg.eval_split / f"{cfg.benchmarks[0]}.jsonl")
    have = [r for r in rules if r != "generate" and sample and f"pred_{r}" in sample[0]]
    if len(have) < 2:
        return []
    per_rule = {r: study_tables(cfg, out, rule=r) for r in have}
    lines = [
        "",
        "Average accuracy % under each decision rule [95% CI] (same questions and half; the headline "
        f"rule, **{cfg.rule}**, was fixed in the profile):",
        "",
        "| arm | " + " | ".join(have) + " |",
        "|---|" + "---|" * len(have),
    ]
    for arm in cfg.arms:
        if arm not in tables["summary"]:
            continue
        cells = []
        for r in have:
            s = per_rule[r]["summary"][arm]["average"]
            cells.append(f"{_pct(s['accuracy'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for name in tables["comparisons"]:
        cells = []
        for r in have:
            c = per_rule[r]["comparisons"].get(name, {}).get("average")
            cells.append(
                f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] p={c['p_mcnemar']:.2g}"
                if c
                else ""
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _checkpoint_lines(cfg: StudyConfig, out: Path) -> list[str]:
    rows = checkpoint_table(cfg, out)
    if not rows:
        return []
    _write_json(out / "checkpoints.json", rows)
    lines = [
        "",
        f"Checkpoints (average accuracy %, rule {cfg.rule}): the step selected on **dev** and its **report** "
        "accuracy, against the best step chosen on report itself (the authors' protocol: every checkpoint "
        "evaluated on the reported split); gap = best-on-report − dev-selected [95% paired-bootstrap CI]:",
        "",
        "| run | steps evaluated | dev-selected step | its report acc | final step's | best step on report "
        "| best-on-report acc | gap (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {', '.join(map(str, r['steps']))} | {r['dev_selected_step']} | "
            f"{_pct(r['dev_selected_report'])} | {_pct(r['final_report'])} | {r['best_step_on_report']} | "
            f"{_pct(r['best_on_report'])} | {100 * r['gap']:+.1f} [{100 * r['gap_ci_low']:+.1f}, "
            f"{100 * r['gap_ci_high']:+.1f}] |"
        )
    return lines


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
    rss = {
        f"{arm}-s{seed}": json.loads((d / "rss.json").read_text())
        for arm, seeds in _runs_done(cfg, out).items()
        for seed, d in sorted(seeds.items())
        if (d / "rss.json").exists()
    }
    if rss:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for i, (run, rows) in enumerate(rss.items()):
            ax.plot([r["step"] for r in rows], [r["rss_gb"] for r in rows], lw=1.2, color=f"C{i % 10}", label=run)
        ax.set_xlabel("step")
        ax.set_ylabel("resident set size (GB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax.set_title(f"Study {cfg.name}: memory of the study process per training step", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=110)
        plt.close(fig)
        peaks = ", ".join(f"{run} {max(r['rss_gb'] for r in rows):.2f} GB" for run, rows in rss.items())
        made.append(
            (
                "rss.png",
                "Resident set size per training step",
                "Resident set size of the study process after each optimizer step (checkpoint evaluations "
                f"included; rows padded to `pad_multiple` tokens bound the kernel shapes). Peaks: {peaks}.",
            )
        )
    return made
