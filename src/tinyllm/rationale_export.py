"""The rationale caches (``data/rationales/<teacher>/<benchmark>/<split>.jsonl``) as a dataset ready
for the Hugging Face Hub: one Parquet file per teacher, benchmark and split
(``<teacher>/<benchmark>/<split>.parquet``, one Hub config per teacher) and a dataset card
(``README.md``) with each teacher's prompt and decoding settings and the counts per file.

``hf upload <user>/<name> <out> --repo-type dataset`` (huggingface_hub 2) publishes the folder as is.
Records are read with ``rationales.load_cache`` (a record missing a field is an error naming file,
record and field); the nested ``prompt`` is flattened into ``prompt_*`` columns.
"""

from __future__ import annotations

import json
from pathlib import Path

from .benchmarks import SPLITS, DataError
from .rationales import RELEASED_TEACHERS, load_cache, summarize

RELEASE = "github.com/YikunHan42/TinyLLM@9f5bebec8b22037f80ffa8d17bfeb01a2a524a3b"
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # the Hub's split names
# Each benchmark's licence (the card's license_name/licenses; RiddleSense and BioASQ forbid redistribution).
LICENCES = {
    "obqa": "apache-2.0",
    "arc": "cc-by-sa-4.0",
    "piqa": "afl-3.0",
    "pubmedqa": "mit",
    "riddle": "riddlesense: research and non-commercial use only, no redistribution",
    "bioasq": "bioasq: registration required, no redistribution",
}
COLUMNS = (
    "id",
    "benchmark",
    "split",
    "question",
    "choices",
    "answer",
    "teacher",
    "rationale",
    "status",
    "flags",
    "source",
    "teacher_answer",
    "answer_match",
    "prompt_teacher_forcing",
    "prompt_icl_ids",
    "prompt_hash",
    "prompt_settings",
)


def features():
    """Column types, the same in every file (an all-null column must not change a file's schema)."""
    from datasets import Features, List, Value

    s = Value("string")
    return Features(
        {
            **{c: s for c in ("id", "benchmark", "split", "question")},
            "choices": List(s),
            "answer": s,
            **{c: s for c in ("teacher", "rationale", "status", "source")},
            "flags": List(s),
            "teacher_answer": s,
            "answer_match": Value("bool"),
            "prompt_teacher_forcing": Value("bool"),
            "prompt_icl_ids": List(s),
            "prompt_hash": s,
            "prompt_settings": s,
        }
    )


def flat_row(r: dict, question: dict | None = None) -> dict:
    """One cache record as a table row, with its question, options and gold answer (``question``:
    the prepared record; None leaves them null), the Hub's split name (``validation``),
    prompt.* -> prompt_*, ids as strings (PIQA's are ints)."""
    p = r.get("prompt") or {}
    q = question or {}
    return {
        "id": str(r["id"]),
        "benchmark": r.get("benchmark"),
        "split": HUB_SPLITS.get(r.get("split"), r.get("split")),
        "question": q.get("question"),
        "choices": None if q.get("choices") is None else [str(c) for c in q["choices"]],
        "answer": q.get("answer"),
        "teacher": r["teacher"],
        "rationale": r["rationale"],
        "status": r["status"],
        "flags": list(r.get("flags") or []),
        "source": r.get("source"),
        "teacher_answer": r.get("teacher_answer"),
        "answer_match": r.get("answer_match"),
        "prompt_teacher_forcing": p.get("teacher_forcing"),
        "prompt_icl_ids": None if p.get("icl_ids") is None else [str(i) for i in p["icl_ids"]],
        "prompt_hash": p.get("hash"),
        "prompt_settings": p.get("settings"),
    }


MARKER = ".tinyllm-export"  # written into every export folder: the only kind the exporter replaces


def claim_folder(out: Path) -> None:
    """Make ``out`` an empty export folder: a new one, an empty one, or an earlier export (it has
    ``MARKER``), whose files are removed so a teacher left out now does not linger. Anything else
    is refused with a ``DataError``: the exporter deletes only what it wrote."""
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: a file, not a folder; give a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DataError(
                f"--out {out}: the folder has files the exporter did not write (no {MARKER}); "
                "it replaces only its own exports: give a new or empty folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by scripts/export_rationales.py; replaced by its next run\n")


def export_rationales(
    rationales: Path,
    out: Path,
    settings: dict[str, dict | None],
    prepared: Path | None = None,
    benchmarks: list[str] | None = None,
) -> dict:
    """Parquet files and README.md under ``out`` for the teachers in ``settings`` ({name: the
    teacher's ``TeacherConfig.settings()``, or None for a released teacher}), for ``benchmarks``
    (None: every cached one); each row carries its question, options and answer from ``prepared``
    (``data/prepared``; None: left null). Returns {teacher: {benchmark: {split: summary}}}
    (``rationales.summarize``). A teacher folder with no records is an error naming it."""
    from datasets import Dataset

    from .benchmarks import load_prepared

    rationales, out = Path(rationales), Path(out)
    counts: dict[str, dict] = {}
    questions: dict[tuple[str, str], dict] = {}
    for teacher in settings:
        if not (rationales / teacher).is_dir():
            raise DataError(f"{rationales / teacher}: no rationale cache for teacher {teacher!r}")
        for bdir in sorted(d for d in (rationales / teacher).iterdir() if d.is_dir()):
            if benchmarks is not None and bdir.name not in benchmarks:
                continue
            for split in SPLITS:
                records = load_cache(rationales, teacher, bdir.name, split)
                if not records:
                    continue
                if prepared is not None and (bdir.name, split) not in questions:
                    recs = load_prepared(Path(prepared), bdir.name, split) or []
                    questions[(bdir.name, split)] = {str(q["id"]): q for q in recs}
                by_id = questions.get((bdir.name, split), {})
                dest = out / teacher / bdir.name / f"{HUB_SPLITS[split]}.parquet"
                dest.parent.mkdir(parents=True, exist_ok=True)
                rows = [flat_row(r, by_id.get(str(r["id"]))) for r in records]
                Dataset.from_list(rows, features=features()).to_parquet(str(dest))
                counts.setdefault(teacher, {}).setdefault(bdir.name, {})[split] = summarize(records)
        if teacher not in counts:
            raise DataError(
                f"{rationales / teacher}: no records"
                + (f" for benchmarks {benchmarks}" if benchmarks is not None else "")
                + "; nothing to export for this teacher (leave it out with --teachers)"
            )
    (out / "README.md").write_text(dataset_card(settings, counts), encoding="utf-8")
    return counts


def _front_matter(counts: dict) -> list[str]:
    lines = [
        "---",
        "pretty_name: TinyLLM teacher rationales",
        "language: [en]",
        "task_categories: [question-answering, text-generation]",
        "tags: [rationales, chain-of-thought, distillation, tinyllm]",
        "license: other",
        "license_name: per-benchmark",
        "license_details: "
        + json.dumps("; ".join(f"{b}: {LICENCES[b]}" for b in _benchmarks(counts) if b in LICENCES)),
        "configs:",
    ]
    for teacher, by_b in counts.items():
        lines += [f"- config_name: {teacher}", "  data_files:"]
        for split in SPLITS:
            if any(split in s for s in by_b.values()):
                lines += [f"  - split: {HUB_SPLITS[split]}", f"    path: {teacher}/*/{HUB_SPLITS[split]}.parquet"]
    return lines + ["---", ""]


def _benchmarks(counts: dict) -> list[str]:
    return sorted({b for by_b in counts.values() for b in by_b})


def _settings_lines(teacher: str, s: dict | None) -> list[str]:
    if s is None and teacher in RELEASED_TEACHERS:
        return [f"Released with the TinyLLM paper ({RELEASE}): written given the gold answer (teacher forcing)."]
    if s is None:
        return ["Settings unknown: this teacher is not in params.yaml any more (see each row's `prompt_settings`)."]
    return ["```json", json.dumps(s, indent=2, ensure_ascii=False), "```"]


def dataset_card(settings: dict[str, dict | None], counts: dict) -> str:
    """README.md: what the files are, each teacher's settings, and records per file by status
    (missing: the release has no rationale of that teacher for the question, e.g. LLaMA-2 on PIQA)."""
    lines = _front_matter(counts) + [
        "# TinyLLM teacher rationales",
        "",
        "Rationales written by teacher LLMs for the questions of six benchmarks (OBQA, ARC-Challenge, PIQA,",
        "RiddleSense, PubMedQA, BioASQ), as cached by the tinyllm-distill pipeline. One config per teacher;",
        "files are `<teacher>/<benchmark>/<split>.parquet` (splits `train`, `validation`, `test`); a row is one",
        "question (`question`, `choices`, gold `answer`) and its rationale (`status`: ok, empty or failed;",
        "`flags`: truncated, non_english, filtered:<reason>, ...; `prompt_*`: the prompt's teacher forcing,",
        "in-context example ids, hash and settings hash).",
        "",
        "Licences: the questions come from the benchmarks, each under its own licence (OpenBookQA Apache-2.0,",
        "ARC CC BY-SA 4.0, PIQA AFL-3.0, PubMedQA MIT; RiddleSense is research and non-commercial use only,",
        "BioASQ needs a registration: neither may be redistributed, so export without them for a public",
        "upload: `--benchmarks obqa,arc,piqa,pubmedqa`).",
        "",
        f"Benchmarks in this export: {', '.join(_benchmarks(counts))}.",
        "",
        "## Teachers and their prompt settings",
    ]
    for teacher in counts:
        lines += ["", f"### {teacher}", "", *_settings_lines(teacher, settings.get(teacher))]
    lines += [
        "",
        "## Counts",
        "",
        "| teacher | benchmark | split | records | ok | empty | missing | failed | mean words |",
    ]
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for teacher, by_b in counts.items():
        for b, by_s in by_b.items():
            for split, c in by_s.items():
                lines.append(
                    f"| {teacher} | {b} | {split} | {c['records']} | {c['ok']} | {c['empty']} | {c['missing']} "
                    f"| {c['failed']} | {c['mean_words']} |"
                )
    return "\n".join(lines) + "\n"
