"""Peer agreement (issue #20 item 6): the project's cloze predictions against
lm-evaluation-harness's `acc` / `acc_norm` choices for one checkpoint on the same questions.

    python scripts/check_lm_eval.py [--model models/base] [--benchmarks obqa arc piqa riddle] [--limit 100]

Writes the per-benchmark agreement to --out (JSON) and prints a table. A thin command line over
tinyllm.experiments.harness (see its docstring); task files: experiments/lm_eval_tasks/.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tinyllm.experiments.harness import compare  # noqa: E402
from tinyllm.io import write_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "base", help="a checkpoint folder")
    ap.add_argument("--benchmarks", nargs="+", default=["obqa", "arc", "piqa", "riddle"])
    ap.add_argument("--limit", type=int, default=100, help="first N valid questions per benchmark (0: all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lm_eval_agreement.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = compare(args.model, args.benchmarks, args.limit or None, ROOT, args.batch_size)
    model = args.model.resolve()
    model = model.relative_to(ROOT) if model.is_relative_to(ROOT) else model  # a path another clone can read
    write_json(args.out, {"model": str(model), "limit": args.limit, "benchmarks": report})
    print("| benchmark | n | sum = acc | norm = acc_norm | max |loglik diff| |")
    print("|---|---|---|---|---|")
    for b, r in report.items():
        print(
            f"| {b} | {r['n']} | {100 * r['agree_acc']:.1f}% | {100 * r['agree_acc_norm']:.1f}% "
            f"| {r['max_abs_loglik_diff']:.2e} |"
        )
    n = sum(r["n"] for r in report.values())
    both = sum(r["n"] - len(r["differ"]) for r in report.values())
    print(f"\nall: {both}/{n} questions with both choices equal ({100 * both / n:.2f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
