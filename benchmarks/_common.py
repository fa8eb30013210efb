"""Shared helpers for the speed benchmarks: machine description, timing with warm-up, tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def machine() -> str:
    import torch

    from tinyllm.device import bf16_supported

    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = open("/proc/cpuinfo").read()
        flags = ",".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in text)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"CPU {cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {flags}); "
        f"GPU {gpu}; bf16 native: {bf16_supported(torch.device('cpu'))}; torch {torch.__version__}; "
        f"python {platform.python_version()}"
    )


def timeit(fn, repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
    line = lambda vals: "| " + " | ".join(str(v).ljust(widths[c]) for c, v in zip(cols, vals, strict=True)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (widths[c] + 2) for c in cols) + "|"]
    out += [line([r.get(c, "") for c in cols]) for r in rows]
    return "\n".join(out)
