"""Where a default training step spends its time: torch.profiler table of the top operators for
one fused bf16 step of the default student on a real batch (evidence for what bounds speed).

    python benchmarks/profile_train_step.py [--rows 12]
"""

from __future__ import annotations

import argparse
import random

from _common import ROOT, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--rows", type=int, default=12)
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tinyllm.config import DistillConfig, from_dict, load_params
    from tinyllm.distill import collate_causal, encode_example, step_loss
    from tinyllm.trainset import build_examples
    from tinyllm.modeling import load_student

    params = load_params(ROOT / "params.yaml")
    cfg = from_dict(DistillConfig, params["distill"], "distill")
    teachers = [t for t, a in cfg.alphas.items() if a > 0]
    examples, _ = build_examples(ROOT / "data/prepared", ROOT / "data/rationales", params["data"]["benchmarks"],
                                 teachers, 8, 0, cfg.drop_flags)
    model, tok, s2s = load_student(args.model)
    enc = [encode_example(tok, ex, teachers, cfg, s2s) for ex in examples]
    random.Random(0).shuffle(enc)
    seqs = [s for ex in enc[: cfg.batch_size] for s in ex]
    b = collate_causal(seqs, tok.pad_token_id)
    real, padded = int(b["attention_mask"].sum()), b["attention_mask"].numel()
    w = torch.tensor([cfg.answer_weight] + [float(cfg.alphas[t]) for t in teachers])

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = step_loss(model, seqs, w, s2s, tok.pad_token_id, True, "cpu")
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"machine: {machine()}")
    print(f"batch: {len(seqs)} sequences, padded {padded} positions, real {real} ({real / padded:.0%}), "
          f"logits for the last {b['keep']} columns")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
