"""Running a study: every (arm, seed) is the pipeline under the arm's params overlay
(``StudyConfig.params``), through the stages' own entry points: the ``trainset`` stage's
``make_trainset``, the ``distill`` stage's ``distill_student`` (resumable; memory per step and
the student scored every ``checkpoint_every`` steps: ``tinyllm.checkpoints``) and the
``evaluate`` stage's ``evaluate_splits``. What is the study's own: the arm x seed schedule, a run's
folder (``done.json`` last), the saved students tracked with DVC, the MLflow child runs and the
report rewritten after each run."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from .config import StudyConfig
from .inputs import check_inputs
from .layout import _write_json, dvc_add, train_state_dir, write_run_predictions
from .report import write_report
from .tables import conclusion, conclusion_tables

log = logging.getLogger(__package__)  # the name the log lines had before study.py became a package

TEST_SPLIT = "test"


def run_one(root: Path, cfg: StudyConfig, arm: str, seed: int, out: Path, progress: bool = False) -> dict:
    """Train and evaluate one (arm, seed) as the pipeline's stages would under its overlay; write
    its folder (predictions, checkpoints, train log, memory curve, metrics); return its metrics."""
    import torch

    from ...checkpoints import Checkpoints
    from ...config import active_teachers
    from ...distill import distill_student
    from ...evaluation import evaluate_splits
    from ...student import load_student
    from ...trainset import make_trainset

    run, p = f"{arm}-s{seed}", cfg.params(arm, seed)
    run_dir = out / "runs" / run
    with tempfile.TemporaryDirectory(prefix=f"study-{run}-") as tmp:
        trainset = Path(tmp) / "trainset"
        make_trainset(root / cfg.prepared, root / cfg.rationales, trainset, p)
        model_dir = root / cfg.save_models / cfg.name / run if cfg.save_models else Path(tmp) / "student"
        checkpoints = Checkpoints(
            run_dir / "checkpoints",
            cfg.checkpoint_every,
            cfg.eval_questions(root) if cfg.checkpoint_every else {},
            cfg.evaluation(),
            cfg.eval_split,
            memory=run_dir / "rss.json",
        )
        rows: list[dict] = []
        t0 = time.perf_counter()
        trained = distill_student(
            root / cfg.base, trainset, model_dir, p.distill, log_path=run_dir / "train_log.tsv", on_log=rows.append,
            state_dir=train_state_dir(root, cfg, run), state_every=cfg.checkpoint_every or max(1, p.distill.steps // 4),
            checkpoints=checkpoints, progress=progress,
        )  # fmt: skip
        res = trained["train"]
        # resumed: the training loop's seconds over all the processes that ran it
        train_s = res["train_wall_s"] if res.get("resumed_at_step") else time.perf_counter() - t0
        t1 = time.perf_counter()
        results, predictions = evaluate_splits(
            load_student(model_dir), root / cfg.prepared, cfg.benchmarks, p.evaluate, torch.device("cpu"),
            p.evaluate.precision, progress=False,
        )  # fmt: skip
    write_run_predictions(run_dir, predictions)
    for split, per in results.items():
        log.info("  %s %s: %s %.3f (n=%d)", run, split, cfg.rule, per["average"]["accuracy"], per["average"]["n"])
    if cfg.save_models:
        dvc_add(root, model_dir)
    metrics = {
        "arm": arm,
        "seed": seed,
        "teachers": active_teachers(p.distill.alphas),
        "train": res,
        "coverage": trained["coverage"],
        **results,
        "train_s": train_s,
        "eval_s": time.perf_counter() - t1,  # the saved student's DVC add included
    }
    _write_json(run_dir / "metrics.json", metrics)
    if cfg.mlflow:
        _log_run(root, cfg, arm, seed, run_dir, results[cfg.eval_split], rows, train_s)
    _write_json(run_dir / "done.json", {"finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return metrics


def _log_run(
    root: Path, cfg: StudyConfig, arm: str, seed: int, run_dir: Path, per: dict, rows: list[dict], train_s: float
) -> None:
    """The run as an MLflow child run: settings, evaluation metrics, train-log steps, metrics.json."""
    from ... import tracking

    flat_eval = tracking.eval_metrics({cfg.eval_split: per})  # accuracy/<split>/<b>, percent
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
