"""Training step: the authors' way (one student forward per task, fp32) against this repo's
(all tasks in one padded forward/backward, bf16 autocast where supported), on the same real
batches of the default student. Prints s/step, target+prompt tokens/s, ratios, and the loss
difference between paths (speed must not change results).

    python benchmarks/bench_train_step.py [--model models/base] [--batches 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random

from _common import ROOT, machine, table, timeit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--batches", type=int, default=3, help="distinct batches timed per variant")
    ap.add_argument("--batch-size", type=int, default=4, help="questions per batch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from tinyllm.config import DistillConfig, from_dict, load_params
    from tinyllm.distill import encode_example, step_loss
    from tinyllm.trainset import build_examples
    from tinyllm.modeling import load_student

    params = load_params(ROOT / "params.yaml")
    cfg = from_dict(DistillConfig, params["distill"], "distill")
    teachers = [t for t, a in cfg.alphas.items() if a > 0]
    examples, _ = build_examples(ROOT / "data/prepared", ROOT / "data/rationales", params["data"]["benchmarks"],
                                 teachers, 8, 0, cfg.drop_flags)
    model, tok, seq2seq = load_student(args.model)
    model.train()
    enc = [encode_example(tok, ex, teachers, cfg, seq2seq) for ex in examples]
    random.Random(0).shuffle(enc)
    batches = [[s for ex in enc[i * args.batch_size:(i + 1) * args.batch_size] for s in ex] for i in range(args.batches)]
    tokens = sum(len(s.input_ids) + len(s.target_ids) for b in batches for s in b)
    w = torch.tensor([cfg.answer_weight] + [float(cfg.alphas[t]) for t in teachers])

    def run(fused: bool, bf16: bool):
        losses = []

        def go():
            losses.clear()
            for b in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss, _ = step_loss(model, b, w, seq2seq, tok.pad_token_id, fused, "cpu")
                loss.backward()
                model.zero_grad(set_to_none=True)
                losses.append(loss.item())
        med, _ = timeit(go, args.repeats)
        return med / len(batches), list(losses)

    print(f"machine: {machine()}")
    print(f"student: {args.model}; {len(batches)} batches x {args.batch_size} questions, "
          f"{sum(map(len, batches))} sequences, {tokens} real tokens; teachers {teachers}; median of {args.repeats}")
    variants = [("per-task fp32 (authors')", False, False), ("fused fp32", True, False),
                ("per-task bf16", False, True), ("fused bf16 (default)", True, True)]
    rows, ref = [], None
    for name, fused, bf16 in variants:
        s, losses = run(fused, bf16)
        if ref is None:
            ref = (s, losses)
        diff = max(abs(a - b) for a, b in zip(losses, ref[1]))
        rows.append({"variant": name, "s/step": f"{s:.2f}", "tokens/s": f"{tokens / len(batches) / s:.0f}",
                     "speed-up": f"{ref[0] / s:.2f}x", "max |loss - ref|": f"{diff:.2e}"})
    print(table(rows, ["variant", "s/step", "tokens/s", "speed-up", "max |loss - ref|"]))


if __name__ == "__main__":
    main()
