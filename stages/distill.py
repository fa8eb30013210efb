"""Stage `distill`: train the student on the answer task plus each teacher's rationales
(TinyLLM), or on answers alone (empty alphas: label-only fine-tuning; with `lora`: LoRA),
and save it with save_pretrained to models/student. Runs unchanged under
`accelerate launch stages/distill.py` for several GPUs/processes."""

import argparse
import logging
import resource
import time

import _stage

from tinyllm.config import DataConfig, DistillConfig, StudentConfig, from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--trainset", default="data/trainset", help="the trainset stage's output (examples)")
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--rationales", default="data/rationales")
    ap.add_argument("--out", default="models/student")
    ap.add_argument("--metrics", default="metrics/train.json")
    ap.add_argument("--log", default="metrics/train_log.tsv")
    ap.add_argument("--run-file", default="metrics/mlflow_run.json", help="MLflow run id, for evaluate to resume")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    args = ap.parse_args()
    root = _stage.ROOT
    cfg = from_dict(DistillConfig, _stage.params("distill"), "distill")
    data = from_dict(DataConfig, _stage.params("data"), "data")
    student = from_dict(StudentConfig, _stage.params("student"), "student")

    import torch

    from tinyllm.distill import active_teachers, apply_lora, config_dict, train
    from tinyllm.io import write_json
    from tinyllm.student import load_student, save_student
    from tinyllm.trainset import load_trainset

    t0 = time.perf_counter()
    teachers = active_teachers(cfg.alphas)
    # written by the trainset stage: current rationales of these teachers only (counts: metrics/trainset.json)
    examples, coverage = load_trainset(root / args.trainset, teachers)
    logging.info("%d training questions; teachers %s; coverage %s", len(examples), teachers, coverage)
    from tinyllm import tracking

    try:  # a tracking server that does not answer is reported in seconds, before any training
        run = tracking.start_distill_run(root, _stage.params(), enabled=not args.no_mlflow)  # rank 0 only
    except tracking.TrackingUnavailable as e:
        raise SystemExit(f"distill: {e}") from None
    torch.manual_seed(cfg.seed)
    model = load_student(root / args.base, student.kind)
    if cfg.lora:
        apply_lora(model, cfg.lora)
    result = train(
        model,
        examples,
        cfg,
        log_path=root / args.log,
        on_log=run.log_row,
        valid_examples=_valid_examples(root, args, data, teachers, cfg),
    )
    is_main, cut = result.pop("_is_main"), result.pop("cut_targets")
    if not is_main:
        return
    save_student(
        model.model,
        model.tok,
        root / args.out,
        {"teachers": teachers, "kind": model.kind, "distill": config_dict(cfg), **model.format_meta()},
    )
    result["stage_wall_s"] = time.perf_counter() - t0
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(root / args.metrics, {"train": result, "coverage": coverage, "cut_targets": cut})
    tracking.finish_distill_run(run, root, result, args.run_file)
    logging.info("saved student to %s (%.0f s)", args.out, result["stage_wall_s"])


def _valid_examples(root, args, data, teachers, cfg):
    """The first ``valid_loss_per_benchmark`` valid questions per benchmark with their teachers'
    valid rationales where a cache has them: the per-task validation-loss curve."""
    from tinyllm.trainset import load_trainset

    # written by the trainset stage (first valid_loss_per_benchmark valid questions, current rationales)
    return load_trainset(root / args.trainset, teachers, "valid")[0]


if __name__ == "__main__":
    main()
