"""Stage `evaluate`: accuracy of models/student per benchmark on `valid` (and `test` wherever
the source has it), by option likelihood and by generate-and-match; metrics to metrics/eval.json,
per-question predictions to eval/, and one MLflow run with params, metrics and lineage tags."""

import argparse
import contextlib
import csv
import json
import logging
import resource
import time

import _stage

from tinyllm.config import DataConfig, EvaluateConfig, from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/student")
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--metrics", default="metrics/eval.json")
    ap.add_argument("--plot", default="metrics/eval_accuracy.csv")
    ap.add_argument("--predictions", default="eval/predictions")
    ap.add_argument("--train-metrics", default="metrics/train.json")
    ap.add_argument("--train-log", default="metrics/train_log.tsv")
    ap.add_argument("--run-file", default="metrics/mlflow_run.json", help="the MLflow run distill started")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    args = ap.parse_args()
    root = _stage.ROOT
    all_params = _stage.params()
    cfg = from_dict(EvaluateConfig, all_params.get("evaluate"), "evaluate")
    data = from_dict(DataConfig, all_params.get("data"), "data")

    import torch

    from tinyllm.benchmarks import load_prepared
    from tinyllm.device import default_device, resolve_precision
    from tinyllm.evaluate import RULES, average, evaluate_records
    from tinyllm.io import write_json, write_jsonl
    from tinyllm.student import load_student

    t0 = time.perf_counter()
    run = open_mlflow_run(root, all_params, args)  # before the work: system metrics cover it
    device = default_device()
    precision = resolve_precision(cfg.precision, device, training=False)
    student = load_student(root / args.model)
    student.model.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    results, rows = {}, []
    from tinyllm.experiments.stats import majority_classes, summarize_split

    majority = majority_classes(root / args.prepared, data.benchmarks)  # train's majority answer per benchmark
    for split in cfg.splits:
        per, preds_by = {}, {}
        for b in data.benchmarks:
            records = load_prepared(root / args.prepared, b, split)
            if records is None:
                logging.info("%s: no %s split — not evaluated", b, split)
                continue
            if cfg.max_per_benchmark is not None:
                records = records[: cfg.max_per_benchmark]
            logging.info("evaluating %s/%s (%d questions)", b, split, len(records))
            with autocast:
                m, preds = evaluate_records(
                    student,
                    records,
                    max_input_tokens=cfg.max_input_tokens,
                    max_new_tokens=cfg.max_new_tokens,
                    batch_size=cfg.batch_size,
                    device=device,
                    headline=cfg.headline,
                    generate_limit=cfg.generate_per_benchmark,
                )
            write_jsonl(root / args.predictions / split / f"{b}.jsonl", preds)
            per[b], preds_by[b] = m, preds
            rows.append(
                {"split": split, "benchmark": b, "accuracy": m["accuracy"]}
                | {f"acc_{r}": m.get(f"acc_{r}") for r in RULES}
            )
            logging.info(
                "%s/%s: accuracy %.3f (%s; %s, unmatched %.2f)",
                b,
                split,
                m["accuracy"],
                cfg.headline,
                ", ".join(f"{r} {m[f'acc_{r}']:.3f}" for r in RULES if f"acc_{r}" in m),
                m.get("unmatched_generate", float("nan")),
            )
        if per:
            per["average"] = average(per)
            for key, extra in summarize_split(preds_by, majority, cfg.headline).items():
                per[key].update(extra)  # n, 95% CI, majority and chance rates (tinyllm.experiments.stats)
            results[split] = per
    wall = time.perf_counter() - t0
    results["eval_wall_s"] = wall
    results["bf16"] = int(precision == "bf16")
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(root / args.metrics, results)
    from tinyllm.io import atomic_write

    with atomic_write(root / args.plot) as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    log_to_mlflow(run, root, all_params, results, args, student)


def open_mlflow_run(root, all_params, args):
    """The run distill started, resumed (or a fresh one linked to the checkpoint: tinyllm.tracking)."""
    from tinyllm import tracking

    train = json.loads((root / args.train_metrics).read_text()) if (root / args.train_metrics).exists() else {}
    return tracking.open_evaluate_run(
        root,
        all_params,
        args.run_file,
        train_metrics=train.get("train"),
        train_log=root / args.train_log,
        student=args.model,
        enabled=not args.no_mlflow,
    )


def log_to_mlflow(run, root, all_params, results, args, student) -> None:
    from tinyllm import tracking

    track = all_params.get("tracking", {}) or {}
    distill = all_params.get("distill", {}) or {}
    teachers = sorted(t for t, a in (distill.get("alphas") or {}).items() if a)
    run.set_tags(
        tracking.dvc_hashes(root, ["data/raw", "data/prepared", "data/rationales", "models/base", "models/student"])
    )
    metrics = {}
    # rationale-cache quality (counts of ok/empty/missing/failed/filtered/truncated per teacher)
    released = root / "metrics" / "rationales_released.json"
    caches = json.loads(released.read_text()) if released.exists() else {}
    for f in sorted((root / "metrics" / "teachers").glob("*.json")):
        teacher, _, bench = f.stem.rpartition("_")
        caches.setdefault(teacher, {})[bench] = json.loads(f.read_text())
    used = set(teachers)
    metrics["rationales"] = {t: v for t, v in caches.items() if t in used}
    tracking.finish_evaluate_run(
        run,
        results,
        metrics,
        artifacts=[root / args.metrics, root / args.plot, root / args.train_metrics],
        eval_splits=[s for s in results if isinstance(results[s], dict)],
        model=student.model,
        tokenizer=student.tok,
        log_model=track.get("log_model", True),
        registered_model=track.get("registered_model", "tinyllm-student"),
        seq2seq=student.kind == "seq2seq",
        predictions=root / args.predictions,
    )


if __name__ == "__main__":
    main()
