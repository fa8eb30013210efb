"""Evaluation speed and exactness.

Paths table (same questions for all): option scoring one (prompt + option) pair at a time,
batched pairs, and the default KV-cached scorer (one prompt pass per question, all options from
its cache); greedy generation one question at a time against batched. Speed-ups are against the
one-at-a-time path; exactness is the largest score difference and the number of identical
predictions / texts (batch invariance).

``--full``: the whole evaluation as the evaluate stage runs it (both decision rules) on every
valid question of the chosen benchmarks, with its wall time: the default path (greedy answers read
off option scoring where they follow an option, the rest decoded) and, with ``--reference``, the
reference path (option scoring, then every question decoded) side by side, with the number of
identical generated texts and option-scoring predictions.

    python benchmarks/bench_eval.py [--model models/base] [--questions 24] [--benchmark arc] [--precision fp32]
    python benchmarks/bench_eval.py --full [--reference] [--benchmarks obqa arc piqa riddle pubmedqa bioasq]
    python benchmarks/bench_eval.py --roofline   # the arithmetic bound of scoring every valid question

``--roofline``: tokens through the student when every valid question is scored (prompts once,
options from the prompt's cache), the matrix-multiply FLOPs that takes, this CPU's measured fp32
and bf16 GEMM rates at the student's shapes, and so the least time scoring can take here.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from _common import ROOT, machine, table, timeit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="holding prepared/")
    ap.add_argument("--benchmark", default="arc")
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-input-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--full", action="store_true", help="time the full evaluation of every valid question")
    ap.add_argument("--reference", action="store_true", help="--full: also time the reference path")
    ap.add_argument("--roofline", action="store_true", help="the arithmetic bound of scoring every valid question")
    ap.add_argument("--benchmarks", nargs="+", default=["obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"])
    args = ap.parse_args()

    import torch

    from tinyllm.student import load_student

    student = load_student(args.model)
    student.model.eval()
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    print(f"machine: {machine()}")
    if args.full:
        full(args, student, amp)
        return
    if args.roofline:
        roofline(args, student)
        return

    compare_paths(args, student, amp)


def compare_paths(args, student, amp) -> None:
    """Each scoring and generation path on the first N questions: time, speed-up, exactness."""
    from tinyllm.benchmarks import load_prepared

    mi, bs = args.max_input_tokens, args.batch_size
    recs = load_prepared(args.data / "prepared", args.benchmark, "valid")[: args.questions]
    n = len(recs)
    results = {}

    def bench(name, fn):
        with amp():
            med, _ = timeit(lambda: results.__setitem__(name, fn()), args.repeats)
        return med

    rows = []
    t1 = bench("pairs b1", lambda: student.score_options_pairwise(recs, mi, 1, "cpu"))
    t2 = bench("pairs b16", lambda: student.score_options_pairwise(recs, mi, bs, "cpu"))
    t3 = bench("kv b16", lambda: student.score_options(recs, mi, bs, "cpu"))
    t4 = bench("kv b1", lambda: student.score_options(recs, mi, 1, "cpu"))
    # every path returns scoring.OptionScores: compare the mean (rule score) and the summed
    # (rules sum/norm/pmi) log-likelihoods, each against one pair at a time
    ref = results["pairs b1"]

    def argmaxes(key):
        return [max(range(len(s)), key=s.__getitem__) for s in results[key].mean]

    def max_diff(key):
        return max(
            abs(a - b)
            for field in ("mean", "total")
            for x, y in zip(getattr(results[key], field), getattr(ref, field), strict=True)
            for a, b in zip(x, y, strict=True)
        )

    for name, key, t in (
        ("score: one pair at a time", "pairs b1", t1),
        (f"score: pairs batched ({bs})", "pairs b16", t2),
        ("score: KV-cached prompt, one question at a time", "kv b1", t4),
        (f"score: KV-cached prompt, batched ({bs}) [default]", "kv b16", t3),
    ):
        diff = max_diff(key)
        same = sum(a == b for a, b in zip(argmaxes(key), argmaxes("pairs b1"), strict=True))
        rows.append(
            {
                "path": name,
                "s": f"{t:.2f}",
                "questions/s": f"{n / t:.1f}",
                "speed-up": f"{t1 / t:.2f}x",
                "exactness vs one at a time": f"max |score diff| {diff:.1e}; {same}/{n} predictions identical",
            }
        )
    g1 = bench("gen b1", lambda: student.generate(recs, mi, None, 1, "cpu"))
    g2 = bench("gen b16", lambda: student.generate(recs, mi, None, bs, "cpu"))
    same = sum(a == b for a, b in zip(results["gen b1"], results["gen b16"], strict=True))
    rows.append(
        {
            "path": "generate: one question at a time",
            "s": f"{g1:.2f}",
            "questions/s": f"{n / g1:.1f}",
            "speed-up": "1.00x",
            "exactness vs one at a time": "",
        }
    )
    rows.append(
        {
            "path": f"generate: batched ({bs}), left-padded [default]",
            "s": f"{g2:.2f}",
            "questions/s": f"{n / g2:.1f}",
            "speed-up": f"{g1 / g2:.2f}x",
            "exactness vs one at a time": f"{same}/{n} texts identical",
        }
    )
    print(f"student: {args.model}; {n} {args.benchmark} valid questions, {args.precision}, median of {args.repeats}")
    print(table(rows, ["path", "s", "questions/s", "speed-up", "exactness vs one at a time"]))


def full(args, student, amp) -> None:
    from tinyllm.evaluate import average
    from tinyllm.evaluation import evaluate_each, prepared_questions

    paths = {"default": True, "reference": False} if args.reference else {"default": True}
    per = {p: {} for p in paths}
    preds = {p: {} for p in paths}
    secs = {p: {} for p in paths}
    questions = prepared_questions(args.data / "prepared", args.benchmarks, "valid", required=True)
    for path, reuse in paths.items():
        t = time.perf_counter()
        for b, m, p in evaluate_each(
            student,
            questions,
            context=amp,
            max_input_tokens=args.max_input_tokens,
            max_new_tokens=None,
            batch_size=args.batch_size,
            device="cpu",
            progress=False,
            reuse_scores=reuse,
        ):
            secs[path][b], t = time.perf_counter() - t, time.perf_counter()
            per[path][b], preds[path][b] = m, p
            print(
                f"{b} [{path}]: {m['n']} questions, {secs[path][b]:.1f} s, score {m['acc_score']:.3f}, "
                f"generate {m['acc_generate']:.3f}, unmatched {m['unmatched_generate']:.3f}, "
                f"decoded {m['n_decoded']}",
                flush=True,
            )
    rows = []
    for b in [*args.benchmarks, "all"]:
        bs = args.benchmarks if b == "all" else [b]
        row = {"benchmark": b, "n": sum(per["default"][x]["n"] for x in bs)}
        row["decoded"] = sum(per["default"][x]["n_decoded"] for x in bs)
        for path in paths:
            row[f"{path} s"] = f"{sum(secs[path][x] for x in bs):.0f}"
        if args.reference:
            pairs = [(p, q) for x in bs for p, q in zip(preds["default"][x], preds["reference"][x], strict=True)]
            row["speed-up"] = f"{float(row['reference s']) / float(row['default s']):.2f}x"
            row["identical texts"] = f"{sum(p['generated'] == q['generated'] for p, q in pairs)}/{len(pairs)}"
            row["identical score preds"] = f"{sum(p['pred_score'] == q['pred_score'] for p, q in pairs)}/{len(pairs)}"
        rows.append(row)
    wall = sum(secs["default"].values())
    avg = average(per["default"])
    print(
        f"student: {args.model}; every valid question, both rules, {args.precision}, batch {args.batch_size}: "
        f"default path {wall:.0f} s ({avg['n'] / wall:.1f} questions/s)"
    )
    print(table(rows, list(rows[0])))


def roofline(args, student) -> None:
    """Matmul FLOPs of scoring every valid question (2 x parameters per token through the body,
    + the output layer at option positions) against this CPU's GEMM rate."""
    import torch

    from tinyllm.benchmarks import load_prepared

    model = student.model
    head = model.get_output_embeddings().weight
    emb = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - emb.numel()  # tied head: counted once below
    if head.data_ptr() != emb.data_ptr():
        body -= head.numel()
    rows, prompt_tok, option_tok = [], 0, 0
    for b in args.benchmarks:
        recs = load_prepared(args.data / "prepared", b, "valid")
        p = sum(len(student.answer_prompt(r, args.max_input_tokens)) for r in recs)
        o = sum(len(o) for r in recs for o in student.option_ids(r["choices"], 1 << 30))
        rows.append({"benchmark": b, "n": len(recs), "prompt tokens": p, "option tokens": o})
        prompt_tok, option_tok = prompt_tok + p, option_tok + o
    rows.append(
        {"benchmark": "all", "n": sum(r["n"] for r in rows), "prompt tokens": prompt_tok, "option tokens": option_tok}
    )
    flops = 2 * body * (prompt_tok + option_tok) + 2 * head.numel() * option_tok
    d = emb.shape[1]
    ff = getattr(model.config, "intermediate_size", 4 * d)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, w = torch.randn(1024, d, dtype=dtype), torch.randn(d, ff, dtype=dtype)
        med, _ = timeit(lambda a=a, w=w: a @ w, repeats=10, warmup=3)
        rates[dtype] = 2 * 1024 * d * ff / med
    print(f"student: {args.model}; body {body / 1e6:.0f}M parameters, output layer {head.numel() / 1e6:.0f}M")
    print(table(rows, ["benchmark", "n", "prompt tokens", "option tokens"]))
    print(f"matmul work of scoring every question: {flops / 1e12:.1f} TFLOP")
    for dtype, rate in rates.items():
        print(
            f"GEMM [1024 x {d}] @ [{d} x {ff}] {str(dtype).removeprefix('torch.')}: {rate / 1e9:.0f} GFLOP/s "
            f"-> scoring takes at least {flops / rate:.0f} s at that rate"
        )


if __name__ == "__main__":
    main()
