"""Stage `distill`: train the student on the answer task plus each teacher's rationales
(TinyLLM), or on answers alone (empty alphas: label-only fine-tuning; with `lora`: LoRA),
and save it with save_pretrained to models/student. Runs unchanged under
`accelerate launch stages/distill.py` for several GPUs/processes. Resumable: the training state is
saved every `distill.state_every` steps to --state-dir, and a killed stage run again continues from
it (a save of another run, or a damaged one, is discarded with one log line)."""

import argparse
import logging
import resource
import time

import _stage

from tinyllm.config import DistillConfig, StudentConfig, from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--trainset", default="data/trainset", help="the trainset stage's output (examples)")
    ap.add_argument("--out", default="models/student")
    ap.add_argument("--metrics", default="metrics/train.json")
    ap.add_argument("--log", default="metrics/train_log.tsv")
    ap.add_argument("--run-file", default="metrics/mlflow_run.json", help="MLflow run id, for evaluate to resume")
    ap.add_argument(
        "--checkpoints", default="metrics/checkpoints",
        help="memory per step (memory.json) and, with distill.checkpoint_every, the student scored "
        "every N steps on valid's distill.checkpoint_half (step<N>/metrics.json and predictions)",
    )  # fmt: skip
    ap.add_argument("--prepared", default="data/prepared", help="the questions checkpoints are scored on")
    ap.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    ap.add_argument(
        "--state-dir", default=".train-state/distill",
        help="the training state (weights, AdamW moments, schedule, RNG; not in git or DVC): a killed "
        "stage started again (`dvc repro`) continues from its last save; removed once the student is saved",
    )  # fmt: skip
    args = ap.parse_args()
    root = _stage.ROOT
    cfg = from_dict(DistillConfig, _stage.params("distill"), "distill")
    student = from_dict(StudentConfig, _stage.params("student"), "student")

    from tinyllm import tracking
    from tinyllm.checkpoints import Checkpoints, checkpoint_evaluation, checkpoint_questions
    from tinyllm.distill import distill_student
    from tinyllm.io import write_json

    t0 = time.perf_counter()
    try:  # a tracking server that does not answer is reported in seconds, before any training
        run = tracking.start_distill_run(root, _stage.params(), enabled=not args.no_mlflow)  # rank 0 only
    except tracking.TrackingUnavailable as e:
        raise SystemExit(f"distill: {e}") from None
    checkpoints = Checkpoints(root / args.checkpoints, cfg.checkpoint_every)
    if cfg.checkpoint_every:
        benchmarks = _stage.sections().data.benchmarks
        checkpoints.questions = checkpoint_questions(root / args.prepared, benchmarks, cfg.checkpoint_half)
        checkpoints.evaluation = checkpoint_evaluation(cfg)
    out = distill_student(
        root / args.base, root / args.trainset, root / args.out, cfg, student.kind, root / args.log, run.log_row,
        state_dir=root / args.state_dir if cfg.state_every else None, state_every=cfg.state_every,
        checkpoints=checkpoints,
    )  # fmt: skip
    if out is None:  # not the main process of a distributed run
        return
    if not checkpoints.memory_path.exists():  # nothing trained (steps 0): the output is there all the same
        write_json(checkpoints.memory_path, [])
    out["train"]["stage_wall_s"] = time.perf_counter() - t0
    out["train"]["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(root / args.metrics, out)
    tracking.finish_distill_run(run, root, out["train"], args.run_file)
    logging.info("saved student to %s (%.0f s)", args.out, out["train"]["stage_wall_s"])


if __name__ == "__main__":
    main()
