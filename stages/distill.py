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
    args = ap.parse_args()
    root = _stage.ROOT
    cfg = from_dict(DistillConfig, _stage.params("distill"), "distill")
    data = from_dict(DataConfig, _stage.params("data"), "data")
    student = from_dict(StudentConfig, _stage.params("student"), "student")

    import torch

    from tinyllm.distill import apply_lora, config_dict, save_student, train
    from tinyllm.trainset import load_trainset
    from tinyllm.io import write_json
    from tinyllm.modeling import load_student

    t0 = time.perf_counter()
    teachers = [t for t, a in cfg.alphas.items() if a > 0]
    # written by the trainset stage: current rationales of these teachers only (counts: metrics/trainset.json)
    examples, coverage = load_trainset(root / args.trainset, teachers)
    logging.info("%d training questions; teachers %s; coverage %s", len(examples), teachers, coverage)
    torch.manual_seed(cfg.seed)
    model, tok, seq2seq = load_student(root / args.base, student.kind)
    if cfg.lora:
        model = apply_lora(model, cfg.lora, seq2seq)
    if cfg.steps == 0:  # the untrained student ("inference" baseline): same stages, no update
        from tinyllm.io import atomic_write

        with atomic_write(root / args.log) as f:
            f.write("step\tloss\n")
        result, is_main = {"steps": 0, "examples": len(examples)}, True
    else:
        result = train(model, tok, seq2seq, examples, teachers, cfg, log_path=root / args.log)
        model, is_main = result.pop("_model"), result.pop("_is_main")
    if not is_main:
        return
    save_student(model, tok, root / args.out, {"teachers": teachers, "seq2seq": seq2seq,
                                                "distill": config_dict(cfg)})
    result["stage_wall_s"] = time.perf_counter() - t0
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json(root / args.metrics, {"train": result, "coverage": coverage})
    logging.info("saved student to %s (%.0f s)", args.out, result["stage_wall_s"])


if __name__ == "__main__":
    main()
