"""Running a study: every (arm, seed) trained and evaluated in this process, resumable, with a
checkpoint hook (memory per step, predictions every ``checkpoint_every`` steps), the saved
students tracked with DVC and every run logged to MLflow; the report rewritten after each run."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...train_state import remove_state
from .config import StudyConfig
from .layout import _write_json, write_preds
from .report import write_report
from .tables import conclusion, conclusion_tables

log = logging.getLogger(__package__)  # the name the log lines had before study.py became a package


def eval_records(root: Path, cfg: StudyConfig) -> dict[str, list[dict]]:
    """The questions every run is evaluated on: per benchmark, ``eval_split`` (first
    ``eval_per_benchmark``), then ``eval_half`` of it."""
    from ...benchmarks import select_half
    from ...evaluation import prepared_questions

    questions = prepared_questions(
        root / cfg.prepared, cfg.benchmarks, cfg.eval_split, cfg.eval_per_benchmark or None, required=True
    )
    return {b: select_half(records, cfg.eval_half) for b, records in questions.items()}


def evaluate_student(student, cfg: StudyConfig, questions: dict[str, list[dict]], generate: bool | None = None):
    """({benchmark: metrics} with the average, {benchmark: predictions}); each prediction carries
    its ``half`` of valid."""
    import torch

    from ...benchmarks import valid_half
    from ...evaluation import evaluate_benchmarks

    @contextlib.contextmanager
    def fp32_no_grad():
        with torch.no_grad(), _fp32_forward(student.model):
            yield

    e = cfg.evaluation()  # the evaluate stage's settings (its typed section), fp32
    student.model.eval()
    per, preds_by = evaluate_benchmarks(
        student,
        questions,
        context=fp32_no_grad,
        max_input_tokens=e.max_input_tokens,
        max_new_tokens=e.max_new_tokens,
        batch_size=e.batch_size,
        device="cpu",
        progress=False,
        generate=e.generate_per_benchmark != 0 if generate is None else generate,
        generate_limit=e.generate_per_benchmark,
        headline=e.headline,
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
    run_dir = out / "runs" / f"{arm}-s{seed}"
    t = _train(root, cfg, arm, seed, run_dir, progress)
    t1 = time.perf_counter()
    per = _evaluate_and_write(cfg, t.student, t.questions, run_dir, f"{arm}-s{seed}")
    tested = _evaluate_test(root, cfg, t.student, run_dir, f"{arm}-s{seed}")
    if cfg.save_models:
        _save_model(root, cfg, f"{arm}-s{seed}", t)
    metrics = {
        "arm": arm,
        "seed": seed,
        "teachers": t.teachers,
        "train": t.result,
        "coverage": t.coverage,
        cfg.eval_split: per,
        **({TEST_SPLIT: tested} if tested else {}),
        "train_s": t.train_s,
        "eval_s": time.perf_counter() - t1,  # the saved student's write and DVC add included
    }
    _write_json(run_dir / "metrics.json", metrics)
    if cfg.mlflow:
        _log_run(root, cfg, arm, seed, run_dir, per, t)
    _write_json(run_dir / "done.json", {"finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    remove_state(train_state_dir(root, cfg, f"{arm}-s{seed}"))
    return metrics


@dataclass
class _Trained:
    """One (arm, seed) after training: what its evaluation, saving and logging need."""

    student: Any
    distill: Any  # the run's DistillConfig
    teachers: list[str]
    coverage: dict
    questions: dict[str, list[dict]]  # the evaluation questions (eval_records)
    result: dict  # train()'s summary
    log_rows: list[dict]  # the train log's rows (MLflow step metrics)
    train_s: float


def _train(root: Path, cfg: StudyConfig, arm: str, seed: int, run_dir: Path, progress: bool) -> _Trained:
    """The student trained under the arm's ``distill`` settings with the seed; every arm of a seed
    sees the same questions in the same order. The checkpoint hook writes ``rss.json`` and the
    checkpoints' predictions in ``run_dir``."""
    import torch

    from ...config import active_teachers
    from ...distill import train
    from ...student import load_student
    from ...trainset import build_examples

    dcfg = cfg.params(arm, seed).distill  # the profile as a params overlay, validated as the stages'
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
    rss = _read_rss(run_dir)  # a resumed run's memory curve so far
    on_step = _checkpoint_hook(student, cfg, questions, run_dir, dcfg.steps, rss)
    res = train(
        student,
        examples,
        dcfg,
        log_path=run_dir / "train_log.tsv",
        progress=progress,
        on_log=rows.append,
        on_step=on_step,
        state_dir=train_state_dir(root, cfg, run_dir.name),
        state_every=cfg.checkpoint_every or max(1, dcfg.steps // 4),
    )
    res.pop("_is_main", None)
    # resumed: the training loop's seconds over all the processes that ran it
    train_s = res["train_wall_s"] if res.get("resumed_at_step") else time.perf_counter() - t0
    if rss:
        _write_json(run_dir / "rss.json", rss)
    return _Trained(student, dcfg, teachers, coverage, questions, res, rows, train_s)


def _evaluate_and_write(
    cfg: StudyConfig, student, questions, run_dir: Path, run: str, split: str | None = None
) -> dict:
    """The trained student's metrics per benchmark; its predictions in ``run_dir/predictions/<split>/``."""
    split = split or cfg.eval_split
    per, preds_by = evaluate_student(student, cfg, questions)
    for b, preds in preds_by.items():
        write_preds(run_dir / "predictions" / split / f"{b}.jsonl", preds)
        m = per[b]
        log.info("  %s %s/%s: %s %.3f (n=%d)", run, b, split, cfg.rule, m["accuracy"], m["n"])
    return per


TEST_SPLIT = "test"


def _evaluate_test(root: Path, cfg: StudyConfig, student, run_dir: Path, run: str) -> dict | None:
    """The final student scored on ``test`` too, with the same code, wherever the data source has
    one (the offline mirror has none: then None); nothing is ever selected on it."""
    from ...evaluation import prepared_questions

    if cfg.eval_split == TEST_SPLIT:
        return None
    questions = prepared_questions(root / cfg.prepared, cfg.benchmarks, TEST_SPLIT, cfg.eval_per_benchmark or None)
    if not questions:
        return None
    return _evaluate_and_write(cfg, student, questions, run_dir, run, TEST_SPLIT)


def _save_model(root: Path, cfg: StudyConfig, run: str, t: _Trained) -> None:
    """The trained student in ``<save_models>/<study>/<run>/``, tracked with DVC."""
    from ...distill import config_dict
    from ...student import save_student

    student = t.student
    model_dir = root / cfg.save_models / cfg.name / run
    save_student(
        student.model,
        student.tok,
        model_dir,
        {"teachers": t.teachers, "kind": student.kind, "distill": config_dict(t.distill), **student.format_meta()},
    )
    _dvc_add(root, model_dir)


def _log_run(root: Path, cfg: StudyConfig, arm: str, seed: int, run_dir: Path, per: dict, t: _Trained) -> None:
    """The run as an MLflow child run: settings, evaluation metrics, train-log steps, metrics.json."""
    from ... import tracking

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
        {**flat_eval, "train_s": t.train_s},
        {"row": f"study:{arm}", "study": cfg.name, "arm": arm},
        step_rows=t.log_rows,
        artifacts=[run_dir / "metrics.json"],
    )


def _dvc_add(root: Path, path: Path) -> None:
    """Track a saved student with DVC (``<run>.dvc`` beside it: commit it, ``dvc push`` the
    weights from its DVC repository, ``models/study``), so it can be re-evaluated on another machine
    without retraining. A failure (no
    DVC, a lock held by a running ``dvc repro``) is a warning naming the command to run."""
    import subprocess
    import sys

    repo = _dvc_repo_of(path, root)
    cmd = ["dvc", "add", "--quiet", str(path.relative_to(repo) if path.is_relative_to(repo) else path)]
    try:  # this interpreter's DVC: a job started as `.venv/bin/python ...` has no `dvc` on PATH
        done = subprocess.run([sys.executable, "-m", *cmd], cwd=repo, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not track %s with DVC (%s); run: %s", path, e, " ".join(cmd))
        return
    if done.returncode:
        log.warning("`%s` failed (%s); run it again later", " ".join(cmd), done.stderr.strip()[-300:])


def _dvc_repo_of(path: Path, root: Path) -> Path:
    """The DVC repository that tracks ``path``: the nearest folder above it with a ``.dvc`` folder
    (``models/study`` is a DVC subrepo, so the pipeline's ``dvc status`` never lists study students
    a clone has not pulled: docs/sharing.md), else ``root``."""
    for d in Path(path).resolve().parents:
        if (d / ".dvc").is_dir():
            return d
        if d == Path(root).resolve():
            break
    return Path(root)


def train_state_dir(root: Path, cfg: StudyConfig, run: str) -> Path:
    """Where a run's training state is saved every ``checkpoint_every`` steps (weights and AdamW
    moments, ~12 bytes a parameter; not in git): a killed study resumes the run from its last
    save on this machine, and removes the folder once the run is done."""
    return root / (cfg.save_models or "models/study") / cfg.name / ".train-state" / run


def study_status(root: Path, cfg: StudyConfig, out: Path) -> dict:
    """Where the study stands: ``progress.json``, the finished runs, and each unfinished run's
    last saved training state (the step a restart continues from)."""
    import json

    from ...train_state import saved_step

    p = out / "progress.json"
    states = {}
    for arm, seed in cfg.trained_runs():
        run = f"{arm}-s{seed}"
        step = saved_step(train_state_dir(root, cfg, run))
        if step is not None and not (out / "runs" / run / "done.json").exists():
            states[run] = step
    done = [f"{a}-s{s}" for a, s in cfg.runs() if (cfg.run_dir(out, a, s) / "done.json").exists()]
    return {
        "progress": json.loads(p.read_text()) if p.exists() else None,
        "done": done,
        "of": len(cfg.runs()),
        "resumes_at_step": states,
    }


def _read_rss(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "rss.json"
    return json.loads(path.read_text()) if path.exists() and not (run_dir / "done.json").exists() else []


def _step_peak_gb() -> float | None:
    """The highest resident set size since the last call (Linux: ``VmHWM``, then reset through
    ``/proc/self/clear_refs``): the step's forward/backward and any checkpoint evaluation, which
    the size after the step (``_rss_gb``, after ``malloc_trim``) does not show. None elsewhere."""
    import re

    try:
        status = Path("/proc/self/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 2**20
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return None
    return peak


def _rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _checkpoint_hook(student, cfg: StudyConfig, questions, run_dir: Path, steps: int, rss: list[dict]):
    """``train``'s ``on_step``: the resident set size after every step and its peak within the
    step (``rss.json``: a long run must
    stay flat) and, every ``checkpoint_every`` steps before the last, the predictions of the
    model so far in ``checkpoints/step<N>/`` (a finished checkpoint is kept on resume)."""

    restarted = bool(rss)

    def hook(step: int) -> None:
        nonlocal restarted
        while rss and rss[-1]["step"] >= step:  # logged after the training state this run resumed from
            rss.pop()
        peak = _step_peak_gb()
        rss.append(
            {
                "step": step,
                "rss_gb": round(_rss_gb(), 4),
                **({"peak_gb": round(peak, 4)} if peak is not None else {}),
                **({"resumed": True} if restarted else {}),
            }
        )
        restarted = False
        if not cfg.checkpoint_every or step % cfg.checkpoint_every or step == steps:
            return
        _write_json(run_dir / "rss.json", rss)  # so far: a resumed run keeps its curve
        ck = run_dir / "checkpoints" / f"step{step}"
        per, preds_by = evaluate_student(student, cfg, questions, generate=False)
        for b, preds in preds_by.items():
            write_preds(ck / "predictions" / cfg.eval_split / f"{b}.jsonl", preds)
        _write_json(ck / "metrics.json", {"step": step, cfg.eval_split: per})
        log.info("  checkpoint step %d: %s %.3f", step, cfg.rule, per["average"]["accuracy"])

    return hook


def check_inputs(root: Path, cfg: StudyConfig) -> None:
    """Fail before any run when something the study reads is absent (a fresh clone has only its
    DVC entries): one error naming every missing path and how to make it."""
    from ...config import DistillConfig, active_teachers

    teachers = dict.fromkeys(
        t for a in cfg.arms.values() for t in active_teachers(DistillConfig(**{**cfg.distill, **a}).alphas)
    )
    need = [root / cfg.base / "config.json"]
    need += [
        root / cfg.prepared / b / f"{s}.jsonl" for b in cfg.benchmarks for s in dict.fromkeys(("train", cfg.eval_split))
    ]
    need += [root / cfg.rationales / t / b for t in teachers for b in cfg.benchmarks]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"study {cfg.name!r}: {len(missing)} input(s) missing: {', '.join(missing)}. Make them with "
            "`dvc repro prepare import_rationales student_base` (a local teacher's rationales: "
            "`dvc repro generate_rationales`), or `dvc pull` them from the team's remote"
        )
    problems = _unusable_inputs(root, cfg)
    if problems:
        raise ValueError(
            f"study {cfg.name!r}: {len(problems)} input(s) cannot serve its runs: {'; '.join(problems)}. Rebuild "
            "them with `dvc repro prepare import_rationales student_base` (or `dvc pull`)"
        )


def _unusable_inputs(root: Path, cfg: StudyConfig) -> list[str]:
    """What is there but cannot serve a run: an unreadable or weightless base checkpoint, an empty
    prepared split or one with fewer questions than an arm trains on, an arm whose teacher has no
    usable rationale for any of its training questions (which fails only when that arm starts)."""
    import json

    from ...benchmarks import DataError, load_prepared
    from ...config import DistillConfig, active_teachers
    from ...trainset import build_examples

    problems = []
    base = root / cfg.base
    try:
        json.loads((base / "config.json").read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{base / 'config.json'} is not a model config ({type(e).__name__})")
    if not any(p.stat().st_size for p in base.glob("*.safetensors")) and not any(
        p.stat().st_size for p in base.glob("*.bin")
    ):
        problems.append(f"{base} holds no model weights (*.safetensors)")
    arms = {arm: DistillConfig(**{**cfg.distill, **a}) for arm, a in cfg.arms.items() if arm not in cfg.reuse}
    for b in cfg.benchmarks:
        for split in dict.fromkeys(("train", cfg.eval_split)):
            try:
                n = len(load_prepared(root / cfg.prepared, b, split) or [])
            except DataError as e:
                problems.append(str(e))
                continue
            want = max([d.train_per_benchmark or 1 for d in arms.values()] if split == "train" else [1])
            if n < want:
                problems.append(
                    f"{root / cfg.prepared / b / f'{split}.jsonl'} has {n} question(s), the study needs {want}"
                )
    if problems:
        return problems
    checked = set()
    for arm, d in arms.items():
        teachers = active_teachers(d.alphas)
        key = (tuple(teachers), d.train_per_benchmark, tuple(d.drop_flags))
        if not teachers or key in checked:
            continue
        checked.add(key)
        examples, _ = build_examples(
            root / cfg.prepared, root / cfg.rationales, cfg.benchmarks, teachers, d.train_per_benchmark, 0, d.drop_flags
        )
        for t in teachers:
            if not any(t in ex["rationales"] for ex in examples):
                problems.append(
                    f"arm {arm!r}: teacher {t!r} has no usable rationale for its {len(examples)} training questions "
                    f"in {root / cfg.rationales / t} (empty, stale or all dropped by {d.drop_flags})"
                )
    return problems


def run_study(root: Path, cfg: StudyConfig, out: Path, progress: bool = False, first: Sequence[str] = ()) -> None:
    """Every (arm, seed) not yet done, in order (``first``: these runs before the rest, see
    ``StudyConfig.runs``); the report after each."""
    todo = cfg.trained_runs(first)
    cfg.check_reuse(out)
    if any(not (out / "runs" / f"{arm}-s{seed}" / "done.json").exists() for arm, seed in todo):
        check_inputs(root, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.yaml").write_text(yaml.safe_dump(cfg.__dict__, sort_keys=False))
    t0 = time.perf_counter()
    parent = contextlib.nullcontext()
    if cfg.mlflow:
        from ... import tracking

        parent = tracking.parent_run(
            root, f"study {cfg.name}", cfg.experiment, {"study": cfg.name}, f"study:{cfg.name}"
        )
    with parent as parent_id:

        def report() -> None:
            """The report, and its one-sentence conclusion as the MLflow parent run's description."""
            write_report(root, cfg, out)
            if parent_id:
                from ... import tracking

                sentence = conclusion(cfg, conclusion_tables(cfg, out))
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
