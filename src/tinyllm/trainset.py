"""The training set: each train question joined with the rationales its teachers wrote for it.

One training *example* is ``{"record": <prepared question>, "rationales": {teacher: text}}``;
``distill.train`` turns it into one sequence per task (answer + one per teacher).
"""

from __future__ import annotations

from pathlib import Path

from .benchmarks import load_prepared
from .rationales import load_cache


def build_examples(
    prepared_dir: Path,
    rationale_root: Path,
    benchmarks: list[str],
    teachers: list[str],
    per_benchmark: int | None,
    seed: int,
    drop_flags: list[str] = (),
) -> tuple[list[dict], dict]:
    """Training examples ``{"record", "rationales": {teacher: text}}`` and coverage stats.

    The first ``per_benchmark`` questions of each train split (file order; the release's
    order is already shuffled) — the same questions a local teacher with
    ``limit_per_benchmark`` writes rationales for. A teacher's rationale is used when its
    cache record is ``ok`` and carries none of ``drop_flags`` (``filtered`` matches every
    ``filtered:<reason>`` flag). ``seed`` is kept for callers; batch order is seeded in ``train``.
    """
    examples, stats = [], {}
    for b in benchmarks:
        records = load_prepared(prepared_dir, b, "train")
        if records is None:
            raise FileNotFoundError(f"{Path(prepared_dir) / b / 'train.jsonl'}: prepared train split missing")
        if per_benchmark is not None:
            records = records[:per_benchmark]
        by_teacher = {}
        for t in teachers:
            cache = load_cache(rationale_root, t, b, "train")
            by_teacher[t] = {
                r["id"]: r["rationale"]
                for r in cache
                if r["status"] == "ok" and not any(f.split(":")[0] in drop_flags or f in drop_flags
                                                   for f in r.get("flags", []))
            }
        for rec in records:
            rats = {t: by_teacher[t][rec["id"]] for t in teachers if rec["id"] in by_teacher[t]}
            examples.append({"record": rec, "rationales": rats})
        stats[b] = {"questions": len(records),
                    **{f"rationales_{t}": sum(r["id"] in by_teacher[t] for r in records) for t in teachers}}
    return examples, stats
