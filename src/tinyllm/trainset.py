"""The training set actually used: each train question joined with its teachers' current rationales.

One training *example* is ``{"record": <prepared question>, "rationales": {teacher: text}}``;
``distill.train`` turns it into one sequence per task (answer + one per teacher).

The stage ``trainset`` writes it to ``data/trainset/<split>.jsonl`` so that ``distill`` depends on
the bytes it trains on, not on every cache: regenerating a cache no teacher with alpha > 0 uses
re-runs this cheap stage only, and DVC skips ``distill`` because the file did not change.

A teacher's rationale for a question is used only when the cache record

- has status ``ok`` and none of ``drop_flags`` (``filtered`` matches every ``filtered:<reason>``);
- for a local teacher (a ``teachers:`` entry), was written under the *current* settings
  (``prompt.settings == TeacherConfig.settings_hash()``), for a split the teacher is configured
  for, and for a question within its current ``limit_per_benchmark``: a persistent cache keeps
  records of older settings and larger limits, and training on them silently mixes teachers.

Everything else is counted, per teacher and benchmark: ``used``, ``missing`` (no record),
``not_ok`` (empty/missing/failed), ``dropped_flags``, ``stale`` (other settings or split),
``out_of_limit``. The quality of what is left is counted too (``flag_<name>``): each usable
rationale gets the quality flags of ``rationales.quality_flags`` for its question (``misses_gold``:
the gold option's text is not in it; ``glitch_start``: its first word is a glitch token;
``cites_letter``: it refers to an option letter), which ``drop_flags`` may name like cache flags.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .benchmarks import load_prepared
from .config import active_teachers
from .io import read_jsonl, write_json, write_jsonl
from .rationales import RATIONALE_FLAGS, load_cache, quality_flags

log = logging.getLogger(__name__)

COUNTS = ("used", "missing", "not_ok", "dropped_flags", "stale", "out_of_limit")
# Counted over the usable ("ok", current) records, dropped or not: how many carry each flag.
QUALITY = tuple(f"flag_{f}" for f in RATIONALE_FLAGS)


def _dropped(flags: list[str], drop_flags) -> bool:
    return any(f.split(":")[0] in drop_flags or f in drop_flags for f in flags)


def usable_rationales(
    records: list[dict], questions: list[dict], all_questions: list[dict], split: str, drop_flags, cfg=None
) -> tuple[dict, dict]:
    """({id: rationale} of the records that may be trained on, counts over ``questions``).

    ``all_questions``: the whole split, in file order (a local teacher's limit counts from its
    start). ``cfg``: the ``TeacherConfig`` of a local teacher, or None for a released cache.
    """
    by_id = {r["id"]: r for r in records}
    allowed = settings = None
    if cfg is not None:
        settings = cfg.settings_hash()
        if cfg.limit_per_benchmark is not None:
            allowed = {q["id"] for q in all_questions[: cfg.limit_per_benchmark]}
    counts = dict.fromkeys(COUNTS + QUALITY, 0)
    out = {}
    for q in questions:
        r = by_id.get(q["id"])
        if r is None:
            counts["missing"] += 1
        elif cfg is not None and (split not in cfg.splits or r.get("prompt", {}).get("settings") != settings):
            counts["stale"] += 1
        elif allowed is not None and q["id"] not in allowed:
            counts["out_of_limit"] += 1
        elif r["status"] != "ok":
            counts["not_ok"] += 1
        elif _dropped(_count_flags(r, q, counts), drop_flags):
            counts["dropped_flags"] += 1
        else:
            out[q["id"]] = r["rationale"]
            counts["used"] += 1
    return out, counts


def _count_flags(record: dict, question: dict, counts: dict) -> list[str]:
    """A usable record's cache flags and its quality flags for its question, each counted in
    ``counts["flag_<name>"]`` (``filtered:<reason>`` as ``flag_filtered``)."""
    flags = record.get("flags", []) + quality_flags(record["rationale"], question)
    for f in dict.fromkeys(f.split(":")[0] for f in flags):
        key = f"flag_{f}"
        counts[key] = counts.get(key, 0) + 1
    return flags


def build_trainset(
    prepared_dir: Path,
    rationale_root: Path,
    benchmarks: list[str],
    teachers: dict,
    per_benchmark: int | None,
    drop_flags=(),
    split: str = "train",
) -> tuple[list[dict], dict]:
    """Examples of ``split`` and {teacher: {benchmark: counts}}.

    ``teachers``: {name: TeacherConfig of a local teacher, or None for a released cache}, the
    teachers with alpha > 0. The first ``per_benchmark`` questions of each split are used (file
    order; the release's order is already shuffled), the same ones a local teacher with
    ``limit_per_benchmark`` writes rationales for.
    """
    unknown = [f for f in drop_flags if f not in RATIONALE_FLAGS]
    if unknown:
        raise ValueError(f"distill.drop_flags: unknown flag(s) {unknown}; known: {list(RATIONALE_FLAGS)}")
    examples, counts = [], {t: {} for t in teachers}
    for b in benchmarks:
        all_questions = load_prepared(prepared_dir, b, split)
        if all_questions is None:
            if split == "train":
                raise FileNotFoundError(f"{Path(prepared_dir) / b / 'train.jsonl'}: prepared train split missing")
            continue
        questions = all_questions if per_benchmark is None else all_questions[:per_benchmark]
        by_teacher = {}
        for t, cfg in teachers.items():
            cache = load_cache(rationale_root, t, b, split)
            by_teacher[t], counts[t][b] = usable_rationales(cache, questions, all_questions, split, drop_flags, cfg)
        for q in questions:
            examples.append(
                {"record": q, "rationales": {t: by_teacher[t][q["id"]] for t in teachers if q["id"] in by_teacher[t]}}
            )
    return examples, counts


def coverage(examples: list[dict], teachers: list[str]) -> dict:
    """{benchmark: {"questions": n, "rationales_<teacher>": n}} of a list of examples."""
    out: dict[str, dict] = {}
    for ex in examples:
        b = out.setdefault(ex["record"]["benchmark"], {"questions": 0, **{f"rationales_{t}": 0 for t in teachers}})
        b["questions"] += 1
        for t in ex["rationales"]:
            b[f"rationales_{t}"] = b.get(f"rationales_{t}", 0) + 1
    return out


def write_trainset(out_dir: Path, splits: dict[str, list[dict]], meta: dict) -> None:
    """``<out_dir>/<split>.jsonl`` per split + ``meta.json`` (deterministic bytes: DVC hashes them)."""
    out_dir = Path(out_dir)
    for split, examples in splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", examples)
    write_json(out_dir / "meta.json", meta)


def load_trainset(trainset_dir: Path, teachers: list[str], split: str = "train") -> tuple[list[dict], dict]:
    """Examples of one split written by the ``trainset`` stage and their coverage.

    Fails when the trainset was built for other teachers (params changed without ``dvc repro``).
    """
    trainset_dir = Path(trainset_dir)
    meta_path = trainset_dir / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no training set; run `dvc repro trainset`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if sorted(meta["teachers"]) != sorted(teachers):
        raise ValueError(
            f"{meta_path}: built for teachers {meta['teachers']}, but distill.alphas > 0 names "
            f"{teachers}; run `dvc repro trainset`"
        )
    path = trainset_dir / f"{split}.jsonl"
    examples = read_jsonl(path) if path.exists() else []
    return examples, coverage(examples, teachers)


def build_examples(
    prepared_dir: Path,
    rationale_root: Path,
    benchmarks: list[str],
    teachers: list[str],
    per_benchmark: int | None,
    seed: int = 0,
    drop_flags=(),
    configs: dict | None = None,
) -> tuple[list[dict], dict]:
    """Examples and coverage straight from the caches (benchmark scripts; the pipeline reads the
    ``trainset`` stage's file). ``configs``: {teacher: TeacherConfig} of local teachers, whose
    stale and out-of-limit records are then left out; ``seed`` is kept for callers."""
    examples, _ = build_trainset(
        prepared_dir,
        rationale_root,
        benchmarks,
        {t: (configs or {}).get(t) for t in teachers},
        per_benchmark,
        drop_flags,
    )
    return examples, coverage(examples, teachers)


def make_trainset(prepared: Path, rationales: Path, out: Path, params) -> dict:
    """The ``trainset`` stage under the typed ``params`` (``config.Params``): the train examples
    (first ``distill.train_per_benchmark``) and the validation-loss examples (first
    ``distill.valid_loss_per_benchmark`` valid questions) of every teacher with alpha > 0, written
    to ``out`` with their settings in ``meta.json``. Returns the counts (``metrics/trainset.json``:
    per split, teacher and benchmark, plus totals), after logging them."""
    import shutil

    d = params.distill
    used = active_teachers(d.alphas)  # alpha 0: no task, no sequence, no loss
    _require_caches(Path(rationales), used)
    teachers = {t: params.teachers.get(t) for t in used}  # None: a released cache (fixed source)
    splits, counts = {}, {}
    for split, n in (("train", d.train_per_benchmark), ("valid", d.valid_loss_per_benchmark)):
        if split == "valid" and not n:
            continue
        splits[split], counts[split] = build_trainset(
            prepared, rationales, params.data.benchmarks, teachers, n, d.drop_flags, split
        )
    shutil.rmtree(out, ignore_errors=True)
    meta = {
        "teachers": used,
        "benchmarks": params.data.benchmarks,
        "train_per_benchmark": d.train_per_benchmark,
        "valid_per_benchmark": d.valid_loss_per_benchmark or 0,
        "drop_flags": d.drop_flags,
    }
    write_trainset(out, splits, meta)
    totals = {
        split: {t: {k: sum(c[k] for c in per.values()) for k in COUNTS + QUALITY} for t, per in by_t.items()}
        for split, by_t in counts.items()
    }
    _log_counts(totals, {split: len(examples) for split, examples in splits.items()})
    return {"totals": totals, **counts}


def _require_caches(rationales: Path, teachers: list[str]) -> None:
    for t in teachers:
        if not (rationales / t).is_dir():
            known = sorted(d.name for d in rationales.iterdir() if d.is_dir()) if rationales.is_dir() else []
            raise FileNotFoundError(
                f"params.yaml [distill]: teacher {t!r} in alphas has no rationale cache at "
                f"{rationales / t}; caches present: {known}"
            )


def _log_counts(totals: dict, sizes: dict[str, int]) -> None:
    for split, by_t in totals.items():
        log.info("%s: %d questions", split, sizes[split])
        for t, c in by_t.items():
            log.info("  %s: %s", t, ", ".join(f"{c[k]} {k}" for k in COUNTS))
            if c["stale"] or c["out_of_limit"]:
                log.warning(
                    "  %s: %d stale (other settings) and %d out-of-limit records left out of %s",
                    *(t, c["stale"], c["out_of_limit"], split),
                )
