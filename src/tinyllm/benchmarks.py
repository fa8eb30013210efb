"""The six benchmarks: read the authors' release layout, validate every record, normalise.

Release layout (github.com/YikunHan42/TinyLLM, and the offline mirror in ``../shared``)::

    <root>/datasets/<ds>/<ds>_{train,valid,test}.json      questions (JSON array or JSON Lines)
    <root>/datasets/<ds>/llm/<split>_CoT_<k>.json           released rationales, 500 per file

A normalised record is ``{"id", "benchmark", "split", "question", "choices", "answer", "label"}``
with ``id`` a string unique across all splits of its benchmark and ``choices[label] == answer``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    # The release numbers PIQA's questions 0..n-1 within each split, so ids repeat across
    # splits; for such sources the normalised id is namespaced as "<split>-<id>".
    split_local_ids: bool = False
    # PubMedQA/BioASQ put long context passages first and the question last.
    context_first: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("obqa", "OpenBookQA"),
        Benchmark("arc", "ARC-Challenge"),
        Benchmark("piqa", "PIQA", split_local_ids=True),
        Benchmark("riddle", "RiddleSense"),
        Benchmark("pubmedqa", "PubMedQA", context_first=True),
        Benchmark("bioasq", "BioASQ", context_first=True),
    )
}


class DataError(ValueError):
    """A record that cannot be used; the message names file, record and field."""


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def question_file(root: Path, benchmark: str, split: str) -> Path:
    return Path(root) / "datasets" / benchmark / f"{benchmark}_{split}.json"


def rationale_files(root: Path, benchmark: str, split: str) -> list[Path]:
    """Released rationale files of one split, in numeric order of k (``_CoT_10`` after ``_CoT_9``)."""
    folder = Path(root) / "datasets" / benchmark / "llm"
    files = list(folder.glob(f"{split}_CoT_*.json"))
    key = lambda p: int(re.search(r"_CoT_(\d+)\.json$", p.name).group(1))  # noqa: E731
    return sorted((p for p in files if re.search(r"_CoT_\d+\.json$", p.name)), key=key)


def read_text_utf8(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is a ``DataError`` naming the file, line and byte offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}: byte offset {e.start} (line {line}): not UTF-8 ({e.reason}: "
            f"{data[e.start : e.end]!r}); re-encode the file as UTF-8"
        ) from None


def read_json_records(path: Path) -> list:
    """A JSON array or JSON Lines file, decided by content (obqa's ``.json`` files are JSONL)."""
    text = read_text_utf8(path)
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: file is empty")
    if stripped[0] == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not a valid JSON array (line {e.lineno}: {e.msg})") from e
        return data
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not valid JSON Lines ({e.msg})") from e
    return records


def validate_record(raw: object, path: Path, index: int) -> dict:
    """Check one raw question record; return it with ``label`` added. Errors name file, record, field."""
    where = f"{path}: record {index}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if "id" in raw and raw["id"] is not None and str(raw["id"]).strip():
        where = f"{path}: record {index} (id {raw['id']!r})"
    for field, kind in (("id", (str, int)), ("question", str), ("choices", list), ("answer", str)):
        if field not in raw:
            raise DataError(f"{where}: field {field!r} is missing")
        if not isinstance(raw[field], kind) or isinstance(raw[field], bool):
            raise DataError(f"{where}: field {field!r} has type {type(raw[field]).__name__}")
    if not str(raw["id"]).strip():
        raise DataError(f"{where}: field 'id' is empty")
    if not raw["question"].strip():
        raise DataError(f"{where}: field 'question' is empty")
    if len(raw["choices"]) < 2:
        raise DataError(f"{where}: field 'choices' needs at least 2 options, has {len(raw['choices'])}")
    for j, c in enumerate(raw["choices"]):
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"{where}: field 'choices'[{j}] is empty or not a string")
    # strip first, check after: "Paris " must match "Paris", and "a " / "a" are the same option
    choices, answer = [c.strip() for c in raw["choices"]], raw["answer"].strip()
    if answer not in choices:
        raise DataError(f"{where}: field 'answer' {raw['answer']!r} is not among 'choices'")
    if choices.count(answer) > 1:
        # a repeated distractor is harmless (3 OBQA train items have one); a repeated gold is not
        raise DataError(f"{where}: field 'answer' {raw['answer']!r} appears more than once in 'choices'")
    return {
        **raw,
        "question": raw["question"].strip(),
        "choices": choices,
        "answer": answer,
        "label": choices.index(answer),
    }


def load_split(root: Path, benchmark: str, split: str) -> list[dict] | None:
    """Validated, normalised records of one split, or ``None`` when the source has no such file."""
    spec = get_benchmark(benchmark)
    path = question_file(root, benchmark, split)
    if not path.exists():
        return None
    raw = read_json_records(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a list of records, got {type(raw).__name__}")
    if not raw:
        raise DataError(f"{path}: holds no records (an empty split fails here, not later in evaluate)")
    out, seen = [], {}
    for i, rec in enumerate(raw):
        rec = validate_record(rec, path, i)
        rid = f"{split}-{rec['id']}" if spec.split_local_ids else str(rec["id"])
        if rid in seen:
            raise DataError(f"{path}: record {i} (id {rec['id']!r}): field 'id' repeats record {seen[rid]}")
        seen[rid] = i
        out.append(
            {
                "id": rid,
                "benchmark": benchmark,
                "split": split,
                "question": rec["question"].strip(),
                "choices": [c.strip() for c in rec["choices"]],
                "answer": rec["answer"].strip(),
                "label": rec["label"],
            }
        )
    return out


def load_benchmark(root: Path, benchmark: str, splits=SPLITS) -> dict[str, list[dict]]:
    """All available splits of one benchmark; ids must be unique across splits."""
    loaded: dict[str, list[dict]] = {}
    owner: dict[str, str] = {}
    for split in splits:
        records = load_split(root, benchmark, split)
        if records is None:
            log.warning(
                "%s: no %s split at %s — skipped (not invented)",
                benchmark,
                split,
                question_file(root, benchmark, split),
            )
            continue
        for r in records:
            if r["id"] in owner:
                raise DataError(
                    f"{question_file(root, benchmark, split)}: record id {r['id']!r}: field 'id' "
                    f"also appears in the {owner[r['id']]} split"
                )
            owner[r["id"]] = split
        loaded[split] = records
    if "train" not in loaded:
        raise DataError(f"{question_file(root, benchmark, 'train')}: the train split is required")
    return loaded


def load_prepared(prepared_dir: Path, benchmark: str, split: str) -> list[dict] | None:
    """Records of ``data/prepared/<benchmark>/<split>.jsonl``, or None when that split is absent."""
    from .io import read_jsonl

    path = Path(prepared_dir) / benchmark / f"{split}.jsonl"
    return read_jsonl(path) if path.exists() else None


# ----------------------------------------------------------------------------- dev / report halves of valid

HALVES = ("dev", "report")
HALF_SALT = "tinyllm-valid-halves-v1"  # fixed before any pilot (2026-12-01); changing it re-draws the halves


def valid_half(record: dict) -> str:
    """``dev`` or ``report``: a fixed, seeded half of the validation split for each question.

    Pilots and every choice (regime, rule, alpha, steps, checkpoint) are made on ``dev``; a
    study's numbers come from ``report`` (and from ``test`` where a source has it). The half is a
    hash of (salt, benchmark, id), so it does not depend on file order, on which other questions
    are loaded or on the machine, and each benchmark splits about 50/50."""
    import hashlib

    key = f"{HALF_SALT}:{record['benchmark']}:{record['id']}".encode()
    return HALVES[hashlib.sha256(key).digest()[0] & 1]


def select_half(records: list[dict], half: str | None) -> list[dict]:
    """The records of one half (file order kept); ``None``: all of them."""
    if half is None:
        return records
    if half not in HALVES:
        raise ValueError(f"half {half!r} not in {HALVES}")
    return [r for r in records if valid_half(r) == half]
