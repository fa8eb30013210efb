"""Stage `evaluate`: accuracy of models/student per benchmark on `valid` (and `test` wherever
the source has it), by option likelihood and by generate-and-match; metrics to metrics/eval.json,
per-question predictions to eval/, and one MLflow run with params, metrics and lineage tags."""

import argparse
import resource
import time

import _stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/student")
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--metrics", default="metrics/eval.json")
    ap.add_argument("--headline", default="metrics/headline.json", help="accuracy, CI and n per benchmark")
    ap.add_argument("--plot", default="metrics/eval_accuracy.csv")
    ap.add_argument("--predictions", default="eval/predictions")
    ap.add_argument("--train-metrics", default="metrics/train.json")
    ap.add_argument("--train-log", default="metrics/train_log.tsv")
    ap.add_argument("--run-file", default="metrics/mlflow_run.json", help="the MLflow run distill started")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    args = ap.parse_args()
    root, cfg = _stage.ROOT, _stage.sections()

    from tinyllm.device import default_device, resolve_precision
    from tinyllm.evaluation import evaluate_splits, finish_run, headline_metrics, write_accuracy_csv, write_predictions
    from tinyllm.io import write_json
    from tinyllm.student import load_student

    t0 = time.perf_counter()
    run = open_mlflow_run(root, _stage.params(), args)  # before the work: system metrics cover it
    device = default_device()
    precision = resolve_precision(cfg.evaluate.precision, device, training=False)
    student = load_student(root / args.model)
    student.model.to(device).eval()
    results, predictions = evaluate_splits(
        student, root / args.prepared, cfg.data.benchmarks, cfg.evaluate, device, precision
    )
    write_predictions(root / args.predictions, predictions)
    results["eval_wall_s"] = time.perf_counter() - t0
    results["bf16"] = int(precision == "bf16")
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(root / args.metrics, results)
    write_json(root / args.headline, headline_metrics(results, cfg.evaluate.headline, student.answer_format))
    write_accuracy_csv(root / args.plot, results)
    artifacts = [root / args.headline, root / args.metrics, root / args.plot, root / args.train_metrics]
    finish_run(run, root, results, student, cfg.tracking, cfg.distill.alphas, artifacts, root / args.predictions)


def open_mlflow_run(root, all_params, args):
    """The run distill started, resumed (or a fresh one linked to the checkpoint: tinyllm.tracking)."""
    from tinyllm import tracking

    return tracking.open_evaluate_run(
        root,
        all_params,
        args.run_file,
        train_log=root / args.train_log,
        student=args.model,
        enabled=not args.no_mlflow,
    )


if __name__ == "__main__":
    main()
