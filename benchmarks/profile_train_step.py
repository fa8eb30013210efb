"""Where a default training step spends its time: torch.profiler table of the top operators for
one step of the default student (its `distill.forward` path) on a real batch: evidence for
what bounds speed.

    python benchmarks/profile_train_step.py [--rows 12] [--bf16]
"""

from __future__ import annotations

import argparse
import random

from _common import ROOT, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tinyllm.config import DistillConfig, from_dict, load_params
    from tinyllm.distill import active_teachers, encode_examples
    from tinyllm.loss import multitask_loss
    from tinyllm.student import load_student
    from tinyllm.trainset import build_examples

    params = load_params(ROOT / "params.yaml")
    cfg = from_dict(DistillConfig, params["distill"], "distill")
    teachers = active_teachers(cfg.alphas)
    examples, _ = build_examples(
        ROOT / "data/prepared", ROOT / "data/rationales", params["data"]["benchmarks"], teachers, 8, 0, cfg.drop_flags
    )
    student = load_student(args.model)
    enc = encode_examples(student, examples, teachers, cfg)
    random.Random(0).shuffle(enc)
    batch = enc[: cfg.batch_size]
    b = student.collate_shared(batch, cfg.pack_tokens)
    real, padded = sum(e.n_tokens() for e in batch), b["input_ids"].numel()
    w = torch.tensor([cfg.answer_weight] + [float(cfg.alphas[t]) for t in teachers])

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            part = student.losses(student.model, batch, len(w), cfg.forward, cfg.pack_tokens, cfg.ce_chunk_tokens)
            loss = multitask_loss(part.sums, w, part.counts)
        loss.backward()
        student.model.zero_grad(set_to_none=True)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"machine: {machine()}")
    print(
        f"batch: {len(batch)} questions in {len(b['input_ids'])} packed rows, {padded} positions, "
        f"real {real} ({real / padded:.0%}); {cfg.forward} forward, {'bf16' if args.bf16 else 'fp32'}"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
