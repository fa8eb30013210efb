"""DVC stage: one teacher writes rationales for one benchmark into its resumable cache.

    python stages/generate_rationales.py --teacher smollm2_135m --benchmark obqa

Reads ``params.yaml`` [teachers.<NAME>] and ``data/prepared/<B>/<split>.jsonl``; writes
``data/rationales/<NAME>/<B>/<split>.jsonl`` + ``<split>.summary.json`` (a ``persist: true``
output, so the cache survives reruns) and the metrics file. Exits 2 when too many requests
failed (finished records are kept; rerun to resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import _stage  # (this checkout's src/ first: also right inside a queued experiment's copy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="a key under 'teachers' in params.yaml")
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", default="data/prepared", help="folder of <benchmark>/<split>.jsonl")
    ap.add_argument("--rationales", default="data/rationales", help="root of the rationale caches")
    ap.add_argument("--metrics", default=None, help="also write {split: summary} here (DVC metrics)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from tinyllm.benchmarks import get_benchmark
    from tinyllm.io import write_json
    from tinyllm.teachers.generate import TooManyFailures, generate_teacher

    get_benchmark(args.benchmark)  # unknown names fail here, listing the known ones
    teachers = _stage.config(args.params).teachers  # the whole params.yaml is validated first
    if args.teacher not in teachers:
        raise KeyError(f"params.yaml: no teacher {args.teacher!r} under 'teachers'; known: {sorted(teachers)}")
    cfg = teachers[args.teacher]
    try:
        summaries = generate_teacher(
            cfg, args.benchmark, Path(args.prepared), Path(args.rationales), progress=not args.no_progress
        )
        code = 0
    except TooManyFailures as e:
        logging.getLogger("generate_rationales").error("%s", e)
        summaries, code = e.summaries, 2
    if args.metrics:
        write_json(args.metrics, summaries)
    for split, s in summaries.items():
        logging.getLogger("generate_rationales").info(
            "%s/%s/%s: %d ok, %d empty, %d failed, %d filtered, %.1f words, %s tok/s",
            cfg.name,
            args.benchmark,
            split,
            s["ok"],
            s["empty"],
            s["failed"],
            s["filtered"],
            s["mean_words"],
            s["tokens_per_s"],
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
