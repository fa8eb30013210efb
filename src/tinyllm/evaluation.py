"""Evaluating a student over benchmarks: the one per-benchmark loop, and the evaluate stage's outputs.

``evaluate.py`` turns one benchmark split's scores into predictions and accuracies
(``evaluate_records``); this module runs it over benchmarks and splits:

- ``prepared_questions``: the questions of one split per benchmark (``data/prepared``), cut to
  the first N.
- ``evaluate_each`` / ``evaluate_benchmarks``: ``evaluate_records`` on every benchmark, with the
  unweighted average (the loop the evaluate stage, the study (``experiments/study/``) and
  ``benchmarks/bench_eval.py`` share).
- ``evaluate_splits``: the evaluate stage's evaluation: every split of ``evaluate.splits``, with
  n, 95% CIs, majority and chance rates (``stats.summarize_split``).
- ``write_predictions``, ``write_accuracy_csv``, ``headline_metrics``, ``finish_run``: the stage's
  prediction files, its accuracy plot, its short headline metrics file (``dvc metrics show
  metrics/headline.json``) and what it logs into the MLflow run (through ``tinyllm.tracking``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from .evaluate import RULES, average, evaluate_records

log = logging.getLogger(__name__)


def prepared_questions(
    prepared: Path, benchmarks: list[str], split: str, limit: int | None = None, required: bool = False
) -> dict[str, list[dict]]:
    """{benchmark: the first ``limit`` questions of its ``split``} (None: all). A benchmark
    without that split is left out (logged), or with ``required`` an error."""
    from .benchmarks import load_prepared

    out = {}
    for b in benchmarks:
        records = load_prepared(Path(prepared), b, split)
        if records is None:
            if required:
                raise FileNotFoundError(f"{Path(prepared) / b}: no {split} split to evaluate on")
            log.info("%s: no %s split — not evaluated", b, split)
            continue
        if limit is not None:
            records = records[:limit]
        out[b] = records
    return out


def evaluate_each(
    student,
    questions: dict[str, list[dict]],
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    label: str | None = None,
    **kwargs,
) -> Iterator[tuple[str, dict, list[dict]]]:
    """``(benchmark, metrics, predictions)`` of ``evaluate_records(student, records, **kwargs)``
    for each benchmark of ``questions`` in turn, each run inside ``context()`` (autocast, no_grad,
    ...). ``label`` (the split's name): log each benchmark's start and accuracies."""
    for b, records in questions.items():
        if label is not None:
            log.info("evaluating %s/%s (%d questions)", b, label, len(records))
        with context():
            m, preds = evaluate_records(student, records, **kwargs)
        if label is not None:
            log.info(
                "%s/%s: accuracy %.3f (%s; %s, unmatched %.2f)",
                b,
                label,
                m["accuracy"],
                kwargs.get("headline", "score"),
                ", ".join(f"{r} {m[f'acc_{r}']:.3f}" for r in RULES if f"acc_{r}" in m),
                m.get("unmatched_generate", float("nan")),
            )
        yield b, m, preds


def evaluate_benchmarks(student, questions: dict[str, list[dict]], **kwargs) -> tuple[dict, dict]:
    """({benchmark: metrics} plus "average" (when any benchmark was evaluated), {benchmark:
    predictions}); ``kwargs`` as for ``evaluate_each``."""
    per, preds_by = {}, {}
    for b, m, preds in evaluate_each(student, questions, **kwargs):
        per[b], preds_by[b] = m, preds
    if per:
        per["average"] = average(per)
    return per, preds_by


def evaluate_splits(student, prepared: Path, benchmarks: list[str], cfg, device, precision: str, progress: bool = True):
    """The evaluate stage's evaluation under ``cfg`` (an ``EvaluateConfig``): (results, predictions),
    results = {split: {benchmark|"average": metrics with n, CI, majority and chance rates}} for
    every split some benchmark has, predictions = {split: {benchmark: predictions}}."""
    import torch

    from .benchmarks import select_half
    from .stats import majority_classes, summarize_split

    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    majority = majority_classes(prepared, benchmarks)  # train's majority answer per benchmark
    results, predictions = {}, {}
    for split in cfg.splits:
        questions = prepared_questions(prepared, benchmarks, split, cfg.max_per_benchmark)
        if split == "valid" and cfg.valid_half is not None:
            questions = {b: select_half(records, cfg.valid_half) for b, records in questions.items()}
        per, preds_by = evaluate_benchmarks(
            student,
            questions,
            context=lambda: autocast,
            label=split,
            progress=progress,
            max_input_tokens=cfg.max_input_tokens,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            device=device,
            headline=cfg.headline,
            generate_limit=cfg.generate_per_benchmark,
        )
        if per:
            for key, extra in summarize_split(preds_by, majority, cfg.headline).items():
                per[key].update(extra)  # n, 95% CI, majority and chance rates (tinyllm.stats)
            results[split], predictions[split] = per, preds_by
    return results, predictions


def write_predictions(folder: Path, predictions: dict[str, dict[str, list[dict]]]) -> None:
    """``<folder>/<split>/<benchmark>.jsonl``: one line per question."""
    from .io import write_jsonl

    for split, preds_by in predictions.items():
        for b, preds in preds_by.items():
            write_jsonl(Path(folder) / split / f"{b}.jsonl", preds)


# What a kept prediction holds (the fields the study's report reads): the compact file
# ``<benchmark>.jsonl.gz`` (checkpoints, study runs).
COMPACT_FIELDS = ("id", "label", "half", *(f"pred_{r}" for r in RULES))


def compact_prediction(p: dict) -> dict:
    """A prediction as kept: ``COMPACT_FIELDS``, the option count, and the generated text only
    where there is one."""
    from .stats import n_options

    out = {k: p[k] for k in COMPACT_FIELDS if k in p}
    out["n_options"] = n_options(p)
    if p.get("generated") is not None:
        out["generated"] = p["generated"]
    return out


def write_compact_predictions(path: Path, preds: list[dict]) -> Path:
    """``path`` (``.../<benchmark>.jsonl``) written compact as ``<benchmark>.jsonl.gz``, atomically
    and byte-reproducibly (gzip without a time stamp or name); returns the file written."""
    import gzip
    import io

    from .io import atomic_write

    text = "".join(json.dumps(compact_prediction(p), ensure_ascii=False) + "\n" for p in preds)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    out = Path(str(path) + ".gz") if not str(path).endswith(".gz") else Path(path)
    with atomic_write(out, "wb") as f:
        f.write(buf.getvalue())
    return out


def read_predictions(path: Path, half: str | None = None) -> list[dict]:
    """Predictions of one file (``<benchmark>.jsonl``, or its compact ``.jsonl.gz``); ``half``:
    only those of that half of valid."""
    import gzip

    path = Path(path)
    if path.exists():
        text = path.read_text()
    else:
        text = gzip.decompress(Path(str(path) + ".gz").read_bytes()).decode("utf-8")
    preds = [json.loads(line) for line in text.splitlines() if line.strip()]
    if half is not None:
        if any("half" not in p for p in preds):
            raise ValueError(f"{path}: predictions carry no 'half' (written before the dev/report split)")
        preds = [p for p in preds if p["half"] == half]
    return preds


def accuracy_rows(results: dict) -> list[dict]:
    """One row per (split, benchmark): the headline accuracy and each rule's (the plot's data)."""
    return [
        {"split": split, "benchmark": b, "accuracy": m["accuracy"]} | {f"acc_{r}": m.get(f"acc_{r}") for r in RULES}
        for split, per in results.items()
        if isinstance(per, dict)
        for b, m in per.items()
        if b != "average"
    ]


def write_accuracy_csv(path: Path, results: dict) -> None:
    import csv

    from .io import atomic_write

    rows = accuracy_rows(results)
    with atomic_write(path) as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def headline_metrics(results: dict, rule: str, answer_format: str) -> dict:
    """The short metrics file a person reads (``dvc metrics show metrics/headline.json``). DVC
    sorts its columns by the flattened key, so the file leads with ``average.<split>`` (the
    unweighted mean over benchmarks with the majority-class and chance rates), then ``format`` and
    ``rule``, then ``<split>.<benchmark>``: accuracy in percent, its 95% CI as two numbers (so
    ``dvc metrics diff`` diffs them) and n. Every number comes from ``results``
    (metrics/eval.json), rounded to 0.1."""

    def pct(x: float) -> float:
        return round(100 * x, 1)

    def row(m: dict) -> dict:
        return {"acc": pct(m["accuracy"]), "ci_low": pct(m["ci_low"]), "ci_high": pct(m["ci_high"]), "n": m["n"]}

    out: dict = {"average": {}, "format": answer_format, "rule": rule}
    for split, per in results.items():
        if not isinstance(per, dict):
            continue
        if "average" in per:
            m = per["average"]
            out["average"][split] = row(m) | {"majority": pct(m["majority"]), "chance": pct(m["chance"])}
        out[split] = {b: row(m) for b, m in per.items() if b != "average"}
    return out


def rationale_cache_metrics(metrics_dir: Path, teachers: list[str]) -> dict:
    """{teacher: {benchmark: cache counts}} of the teachers in ``teachers``: the released caches'
    (``rationales_released.json``) and the generated ones' (``teachers/<teacher>_<benchmark>.json``)."""
    released = Path(metrics_dir) / "rationales_released.json"
    caches = json.loads(released.read_text()) if released.exists() else {}
    for f in sorted((Path(metrics_dir) / "teachers").glob("*.json")):
        teacher, _, bench = f.stem.rpartition("_")
        caches.setdefault(teacher, {})[bench] = json.loads(f.read_text())
    used = set(teachers)
    return {t: v for t, v in caches.items() if t in used}


def finish_run(
    run, root: Path, results: dict, student, tracking_cfg, alphas: dict, artifacts: list[Path], predictions: Path
) -> None:
    """Log the evaluation into the MLflow ``run`` and end it: DVC hashes of the data and models,
    the metrics, the used teachers' rationale-cache counts, the metric files, the predictions and
    (``tracking.log_model``) the student as a registered model."""
    from . import tracking
    from .config import active_teachers

    teachers = sorted(active_teachers(alphas))
    run.set_tags(
        tracking.dvc_hashes(root, ["data/raw", "data/prepared", "data/rationales", "models/base", "models/student"])
    )
    # rationale-cache quality (counts of ok/empty/missing/failed/filtered/truncated per teacher)
    caches = rationale_cache_metrics(Path(root) / "metrics", teachers)
    tracking.finish_evaluate_run(
        run,
        results,
        {"rationales.json": caches},
        artifacts=artifacts,
        eval_splits=[s for s in results if isinstance(results[s], dict)],
        model=student.model,
        tokenizer=student.tok,
        log_model=tracking_cfg.log_model,
        registered_model=tracking_cfg.registered_model,
        seq2seq=student.kind == "seq2seq",
        predictions=predictions,
    )
