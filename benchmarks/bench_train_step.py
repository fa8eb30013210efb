"""Training step: the authors' way (one student forward per task, full logits, fp32) against
the fused path (one padded row per (question, task), target logits only) and the shared-question
path (each question encoded once, tasks branching from it, questions packed into rows, chunked
cross-entropy), on the same real batches. Each variant runs in its own process, so its peak RSS
is its own. Prints s/step, tokens/s (tokens of the per-task layout, the same work for every
variant), speed-up over the first variant, peak RSS and the loss difference to the reference.

    python benchmarks/bench_train_step.py [--model models/base] [--batch-size 4] [--batches 2]
        [--max-rationale-tokens 48] [--benchmarks obqa arc] [--teachers flan_t5_xl llama2_7b]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
from pathlib import Path

from _common import ROOT, machine, table, timeit

VARIANTS = {
    "per-task fp32 (authors')": dict(forward="per_task", precision="fp32"),
    "fused bf16 (before)": dict(forward="fused", precision="bf16"),
    "shared fp32": dict(forward="shared", precision="fp32"),
    "shared bf16": dict(forward="shared", precision="bf16"),
    "shared fp32, one question per row": dict(forward="shared", precision="fp32", pack_tokens=0),
    "label-only shared fp32": dict(forward="shared", precision="fp32", label_only=True),
    "label-only shared bf16": dict(forward="shared", precision="bf16", label_only=True),
}


def run_variant(args, spec: dict) -> dict:
    """Time ``spec`` on the benchmark's batches in this process; return the numbers."""
    import torch

    from tinyllm.config import DistillConfig, load_params
    from tinyllm.distill import encode_examples
    from tinyllm.loss import multitask_loss
    from tinyllm.student import load_student
    from tinyllm.trainset import build_examples

    params = load_params(ROOT / "params.yaml")
    teachers = [] if spec.get("label_only") else args.teachers
    cfg = DistillConfig(
        alphas={t: 1.0 for t in teachers},
        max_input_tokens=args.max_input_tokens,
        max_answer_tokens=args.max_answer_tokens,
        max_rationale_tokens=args.max_rationale_tokens,
        drop_flags=params["distill"]["drop_flags"],
    )
    examples, _ = build_examples(
        args.data / "prepared",
        args.data / "rationales",
        args.benchmarks,
        args.teachers,
        args.batch_size * args.batches,
        0,
        cfg.drop_flags,
    )
    random.Random(0).shuffle(examples)
    student = load_student(args.model)
    student.model.train()
    if args.gradient_checkpointing:
        student.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    enc = encode_examples(student, examples, teachers, cfg)
    batches = [enc[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.batches)]
    k = 1 + len(teachers)
    w = torch.ones(k)
    losses: list[float] = []
    pack = spec.get("pack_tokens", args.pack_tokens)

    def go():
        losses.clear()
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["precision"] == "bf16"):
                part = student.losses(student.model, b, k, spec["forward"], pack, args.ce_chunk, "cpu")
                loss = multitask_loss(part.sums, w, part.counts)
            loss.backward()
            student.model.zero_grad(set_to_none=True)
            losses.append(loss.item())

    med, _ = timeit(go, args.repeats)
    # tokens of the per-task layout (question repeated per task): the same work unit for every variant
    tokens = sum(
        len(e.prefix_ids) + len(br.tag_ids) + len(br.target_ids) for b in batches for e in b for br in e.branches
    )
    return {
        "s_per_step": med / len(batches),
        "tokens_per_step": tokens / len(batches),
        "losses": losses,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "sequences": sum(len(e.branches) for b in batches for e in b),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="holding prepared/ and rationales/")
    ap.add_argument("--batches", type=int, default=2, help="distinct batches timed per variant")
    ap.add_argument("--batch-size", type=int, default=4, help="questions per batch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--benchmarks", nargs="+", default=["obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"])
    ap.add_argument("--teachers", nargs="+", default=["flan_t5_xl", "llama2_7b"])
    ap.add_argument("--max-input-tokens", type=int, default=128)
    ap.add_argument("--max-answer-tokens", type=int, default=32)
    ap.add_argument("--max-rationale-tokens", type=int, default=48)
    ap.add_argument("--pack-tokens", type=int, default=512)
    ap.add_argument("--ce-chunk", type=int, default=1024)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names of VARIANTS to run")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # run one variant, print JSON (the child process)
    args = ap.parse_args()

    if args.only:
        print(json.dumps(run_variant(args, VARIANTS[args.only])))
        return
    print(f"machine: {machine()}")
    print(
        f"student: {args.model}; {args.batches} batches x {args.batch_size} questions from {args.benchmarks}; "
        f"teachers {args.teachers}; caps input {args.max_input_tokens} / answer {args.max_answer_tokens} / "
        f"rationale {args.max_rationale_tokens}; pack {args.pack_tokens}; median of {args.repeats}"
    )
    rows, res = [], {}
    for name in args.variants:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--only", name]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ref = res.get(args.variants[0])
    for name, r in res.items():
        same_tasks = len(r["losses"]) == len(ref["losses"]) and r["sequences"] == ref["sequences"]
        diff = max(abs(a - b) for a, b in zip(r["losses"], ref["losses"], strict=True)) if same_tasks else float("nan")
        rows.append(
            {
                "variant": name,
                "s/step": f"{r['s_per_step']:.2f}",
                "tokens/s": f"{r['tokens_per_step'] / r['s_per_step']:.0f}",
                "speed-up": f"{ref['s_per_step'] / r['s_per_step']:.2f}x",
                "peak RSS GB": f"{r['peak_rss_gb']:.2f}",
                "max |loss - ref|": "other tasks" if not same_tasks else f"{diff:.1e}",
            }
        )
    print(table(rows, ["variant", "s/step", "tokens/s", "speed-up", "peak RSS GB", "max |loss - ref|"]))
    if "shared bf16" in res and "fused bf16 (before)" in res:
        ratio = res["fused bf16 (before)"]["s_per_step"] / res["shared bf16"]["s_per_step"]
        print(f"shared bf16 vs fused bf16: {ratio:.2f}x")
    for arm in ("fp32", "bf16"):
        a, b = res.get(f"shared {arm}"), res.get(f"label-only shared {arm}")
        if a and b:
            print(f"TinyLLM step / label-only step ({arm}): {a['s_per_step'] / b['s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
