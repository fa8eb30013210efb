"""Evaluation: option scoring one (prompt + option) pair at a time against batched pairs and
against the default KV-cached scorer (one prompt pass per question, all options from its
cache); greedy generation one question at a time against batched. Same questions for all.

    python benchmarks/bench_eval.py [--model models/base] [--questions 24] [--benchmark arc]
"""

from __future__ import annotations

import argparse

from _common import ROOT, machine, table, timeit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--benchmark", default="arc")
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-input-tokens", type=int, default=128)
    args = ap.parse_args()

    import torch

    from tinyllm.benchmarks import load_prepared
    from tinyllm.evaluate import generate_answers, score_options, score_options_pairwise
    from tinyllm.modeling import load_student

    model, tok, s2s = load_student(args.model)
    model.eval()
    recs = load_prepared(ROOT / "data/prepared", args.benchmark, "valid")[: args.questions]
    n = len(recs)
    mi = args.max_input_tokens
    results = {}

    def bench(name, fn):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            med, _ = timeit(lambda: results.__setitem__(name, fn()), args.repeats)
        return med

    rows = []
    t1 = bench("pairs b1", lambda: score_options_pairwise(model, tok, recs, s2s, mi, 1, "cpu"))
    t2 = bench("pairs b16", lambda: score_options_pairwise(model, tok, recs, s2s, mi, 16, "cpu"))
    t3 = bench("kv b16", lambda: score_options(model, tok, recs, s2s, mi, 16, "cpu"))
    ref = torch.tensor(results["pairs b1"])
    for name, t in (("score: one pair at a time", t1), ("score: pairs batched (16)", t2),
                    ("score: KV-cached prompt, batched (16) [default]", t3)):
        key = {t1: "pairs b1", t2: "pairs b16", t3: "kv b16"}[t]
        diff = (torch.tensor(results[key]) - ref).abs().max().item()
        rows.append({"path": name, "s": f"{t:.2f}", "questions/s": f"{n / t:.1f}", "speed-up": f"{t1 / t:.2f}x",
                     "max |score - ref|": f"{diff:.1e}"})
    g1 = bench("gen b1", lambda: generate_answers(model, tok, recs, s2s, mi, 16, 1, "cpu"))
    g2 = bench("gen b16", lambda: generate_answers(model, tok, recs, s2s, mi, 16, 16, "cpu"))
    same = sum(a == b for a, b in zip(results["gen b1"], results["gen b16"]))
    rows.append({"path": "generate: one question at a time", "s": f"{g1:.2f}", "questions/s": f"{n / g1:.1f}",
                 "speed-up": "1.00x", "max |score - ref|": ""})
    rows.append({"path": "generate: batched (16), left-padded [default]", "s": f"{g2:.2f}",
                 "questions/s": f"{n / g2:.1f}", "speed-up": f"{g1 / g2:.2f}x",
                 "max |score - ref|": f"{same}/{n} texts identical"})
    print(f"machine: {machine()}")
    print(f"student: {args.model}; {n} {args.benchmark} valid questions, bf16 autocast, median of {args.repeats}")
    print(table(rows, ["path", "s", "questions/s", "speed-up", "max |score - ref|"]))


if __name__ == "__main__":
    main()
