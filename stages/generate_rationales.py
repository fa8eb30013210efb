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

import _stage  # noqa: F401  (this checkout's src/ first: also right inside a queued experiment's copy)


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
    from tinyllm.params import stage_config
    from tinyllm.teachers.generate import TooManyFailures, generate_teacher

    get_benchmark(args.benchmark)  # unknown names fail here, listing the known ones
    teachers = stage_config(args.params).teachers  # the whole params.yaml is validated first
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
        write_json(args.metrics, keep_timings(summaries, Path(args.metrics)))
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


def keep_timings(summaries: dict, path: Path) -> dict:
    """A run that generated nothing (every record cached) measured no speed: its ``tokens_per_s``
    is the last measured one, read back from the previous metrics file (``persist: true`` in
    dvc.yaml, so DVC keeps it), with ``timed_run`` saying which run measured it. Also records the
    machine the cache was generated on (``machine``): greedy decoding is bit-identical on one
    machine, not across CPU instruction sets (docs/guarantees.md)."""
    import json

    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    for split, s in summaries.items():
        prev = old.get(split) if isinstance(old, dict) else None
        if s.get("tokens_per_s") is not None:
            s["timed_run"] = {**s["last_run"], "machine": machine()}
        elif isinstance(prev, dict) and prev.get("tokens_per_s") is not None:
            s["tokens_per_s"] = prev["tokens_per_s"]
            s["timed_run"] = prev.get("timed_run") or prev.get("last_run")
        s["machine"] = machine()
    return summaries


def machine() -> dict:
    """The CPU and libraries the teacher ran on: what a cross-machine hash difference comes from."""
    import platform

    import torch

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return {"cpu": platform.processor() or platform.machine(), "isa": isa, "torch": torch.__version__}


if __name__ == "__main__":
    sys.exit(main())
