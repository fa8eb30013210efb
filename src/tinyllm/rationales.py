"""Per-teacher rationale caches and the importer of the authors' released rationale files.

Cache layout (DVC-tracked): ``data/rationales/<teacher>/<benchmark>/<split>.jsonl``, one record
per question::

    {"id": "7-980", "benchmark": "obqa", "split": "train", "teacher": "flan_t5_xl",
     "rationale": "Sun is responsible for ...",
     "status": "ok" | "empty" | "missing" | "failed",
     "flags": ["truncated", "runon_cut", "non_english", "answer_mismatch", "filtered:<reason>"],
     "prompt": {"teacher_forcing": true, "icl_ids": ["7-12", "7-99"], "hash": "<sha1>",
                "text": "<the exact prompt, or null when unknown (released files)>"},
     "source": "released" | "<backend>:<model>",
     "teacher_answer": null | "<the teacher's own answer when teacher forcing is off>",
     "answer_match": null | true | false}

The key of a record is (teacher, benchmark, split, id, prompt.hash): generating backends skip keys
already present and regenerate what a changed prompt setting made stale. Downstream code
(``distill``) reads only ``id``, ``teacher``, ``rationale`` and ``status``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .benchmarks import DataError, rationale_files, read_json_records
from .io import iter_jsonl

STATUSES = ("ok", "empty", "missing", "failed")

# The two teachers of the release, in the order their parts appear in each string.
RELEASED_TEACHERS = ("flan_t5_xl", "llama2_7b")
# The splits whose released rationales anything reads: train (the training set, in-context
# examples) and valid (distill's validation-loss curve). Test rationales are never used.
IMPORTED_SPLITS = ("train", "valid")

_THUS = "Thus, the answer is"
_LLAMA = "llama rationale:"
_COT = "Let's think step by step."
# LLaMA-2 often keeps going after its rationale and writes the next exercise; cut it there.
_RUNON = re.compile(r"\n\s*(?:#|Question:|Q:|Answer Choices:|Options:)")
_TERMINAL = tuple(".!?\"')]»”")


def prompt_hash(text: str | None, settings: dict) -> str:
    """Stable hash of a prompt and the settings that produced it (the cache key's last part)."""
    payload = json.dumps({"text": text, **settings}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()


def looks_non_english(text: str, threshold: float = 0.3) -> bool:
    """True when more than ``threshold`` of the letters are outside ASCII (e.g. Chinese, Cyrillic)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 8:
        return False
    return sum(not c.isascii() for c in letters) / len(letters) > threshold


def is_truncated(text: str) -> bool:
    """A rationale cut off mid-sentence: it does not end with terminal punctuation."""
    return bool(text) and not text.rstrip().endswith(_TERMINAL)


# Quality flags computed against the question when the training set is built (``quality_flags``);
# unlike the cache flags above, they need the gold answer, so they are never stored in a cache.
QUALITY_FLAGS = ("misses_gold", "glitch_start", "cites_letter")
# Every flag ``distill.drop_flags`` may name: the cache flags (``filtered`` stands for every
# ``filtered:<reason>``) and the quality flags. ``truncated`` is a rationale that stops mid-sentence.
RATIONALE_FLAGS = ("truncated", "runon_cut", "non_english", "answer_mismatch", "filtered", *QUALITY_FLAGS)

# LLaMA-2's anomalous ("glitch") tokens that open many released rationales in place of an English
# word (RiddleSense train: "Unterscheidung", "Hinweis:", "sierp...", "kwiet...", ...), as stems.
_GLITCH_STEMS = ("unterscheidung", "hinweis", "einzeln", "begriffe", "sierp", "kwiet", "nahm", "stycz")
# "(b)", "option b", "answer is (c)": a reference to an option's letter.
_LETTER = re.compile(r"\([a-e]\)|\boptions?\s+\(?[a-e]\b(?!['-])|\banswer\s+(?:is\s+)?\([a-e]\)", re.I)


def normalize_text(text: str) -> str:
    """Lower case, NFKC, punctuation as spaces, single spaces: the form answers are matched in."""
    import unicodedata

    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def names_gold(text: str, answer: str) -> bool:
    """Does the rationale name the gold option's text (whole words after ``normalize_text``; the
    last word may take a plural s/es)? Option letters never count: a cloze student never sees them."""
    gold = normalize_text(answer)
    if not gold:
        return False
    return re.search(rf"(?<!\w){re.escape(gold)}(?:e?s)?(?!\w)", normalize_text(text)) is not None


def starts_with_glitch(text: str) -> bool:
    """The first word is not English: a known LLaMA-2 glitch token or mojibake (non-ASCII letters)."""
    words = text.split()
    if not words:
        return False
    first = words[0]
    if any(c.isalpha() and not c.isascii() for c in first):
        return True
    return first.lower().startswith(_GLITCH_STEMS)


def quality_flags(text: str, record: dict) -> list[str]:
    """The ``QUALITY_FLAGS`` of one rationale for its question ``record`` (prepared format)."""
    flags = []
    if not names_gold(text, record["answer"]):
        flags.append("misses_gold")
    if starts_with_glitch(text):
        flags.append("glitch_start")
    if _LETTER.search(text):
        flags.append("cites_letter")
    return flags


@dataclass
class ReleasedParts:
    """One released string, split into its two teachers' rationales."""

    flan: str
    llama: str | None  # None: the string has no LLaMA part (all of PIQA)
    stated_answer: str | None  # the "(x) text" after "Thus, the answer is"
    flags: dict[str, list[str]] = field(default_factory=dict)  # teacher -> flags


def split_released(text: str) -> ReleasedParts:
    """Split ``<flan> Thus, the answer is (x) <ans>\\n\\nQ: ... llama rationale: <llama>``.

    The FLAN-T5 rationale is the text before the *last* "Thus, the answer is" ahead of the echoed
    question (a few FLAN rationales say "thus, the answer is" themselves). The LLaMA rationale
    loses its "Let's think step by step." opener and any run-on next exercise.
    """
    if _LLAMA in text:
        head, llama = text.split(_LLAMA, 1)
    else:
        head, llama = text, None
    q = head.find("\n\nQ:")
    before_q = head if q < 0 else head[:q]
    cut = before_q.rfind(_THUS)
    if cut >= 0:
        flan, stated = before_q[:cut], before_q[cut + len(_THUS) :].strip()
    else:
        flan, stated = before_q, None
    flan = flan.strip()
    flags: dict[str, list[str]] = {"flan_t5_xl": [], "llama2_7b": []}
    if llama is not None:
        llama = llama.strip()
        if llama.startswith(_COT):
            llama = llama[len(_COT) :].strip()
        m = _RUNON.search(llama)
        if m:
            llama = llama[: m.start()].rstrip()
            flags["llama2_7b"].append("runon_cut")
    for name, part in (("flan_t5_xl", flan), ("llama2_7b", llama)):
        if part and is_truncated(part):
            flags[name].append("truncated")
        if part and looks_non_english(part):
            flags[name].append("non_english")
    return ReleasedParts(flan=flan, llama=llama, stated_answer=stated, flags=flags)


def _stated_matches(stated: str | None, record: dict) -> bool:
    """Does "(b) Pour it into a jar" name the record's gold answer?"""
    if stated is None:
        return False
    m = re.match(r"\(([a-z])\)\s*(.*)", stated, re.S)
    if not m:
        return stated.strip() == record["answer"]
    letter_ok = ord(m.group(1)) - ord("a") == record["label"]
    return letter_ok or m.group(2).strip() == record["answer"]


def import_released(raw_root: Path, benchmark: str, split: str, records: list[dict]) -> dict[str, list[dict]]:
    """Cache records of both released teachers for one benchmark split, aligned by position.

    Raises ``DataError`` naming the file when the released strings do not line up with the
    questions (count differs, or an entry is not a string).
    """
    files = rationale_files(raw_root, benchmark, split)
    if not files:
        raise DataError(f"{Path(raw_root) / 'datasets' / benchmark / 'llm'}: no {split}_CoT_*.json files")
    strings: list[tuple[Path, int, object]] = []
    for f in files:
        data = read_json_records(f)
        if not isinstance(data, list):
            raise DataError(f"{f}: expected a JSON array of strings")
        strings.extend((f, i, s) for i, s in enumerate(data))
    if len(strings) != len(records):
        raise DataError(
            f"{files[0].parent}: {split}_CoT_*.json hold {len(strings)} rationales for "
            f"{len(records)} {split} questions; they must align one to one"
        )
    settings = {"teacher_forcing": True, "icl_ids": None}
    out: dict[str, list[dict]] = {t: [] for t in RELEASED_TEACHERS}
    for (f, i, s), rec in zip(strings, records, strict=True):
        if not isinstance(s, str):
            raise DataError(f"{f}: entry {i} (question id {rec['id']!r}): expected a string")
        parts = split_released(s)
        mismatch = not _stated_matches(parts.stated_answer, rec)
        for teacher, text in (("flan_t5_xl", parts.flan), ("llama2_7b", parts.llama)):
            status = "missing" if text is None else ("empty" if not text.strip() else "ok")
            flags = list(parts.flags[teacher])
            if teacher == "flan_t5_xl" and mismatch:
                flags.append("answer_mismatch")
            out[teacher].append(
                {
                    "id": rec["id"],
                    "benchmark": benchmark,
                    "split": split,
                    "teacher": teacher,
                    "rationale": text or "",
                    "status": status,
                    "flags": flags,
                    "prompt": {**settings, "hash": prompt_hash(None, {**settings, "teacher": teacher}), "text": None},
                    "source": f"released:{f.name}",
                    "teacher_answer": None,
                    "answer_match": None,
                }
            )
    return out


def summarize(records: list[dict]) -> dict:
    """Numeric summary of one cache file (for DVC metrics and MLflow)."""
    n = len(records)
    ok = [r for r in records if r["status"] == "ok"]
    flags: dict[str, int] = {}
    for r in records:
        for fl in r.get("flags", []):
            key = fl.split(":")[0]
            flags[key] = flags.get(key, 0) + 1
    words = [len(r["rationale"].split()) for r in ok]
    out = {"records": n, **{s: sum(r["status"] == s for r in records) for s in STATUSES}}
    out.update({f"flag_{k}": v for k, v in sorted(flags.items())})
    out["mean_words"] = round(sum(words) / len(words), 2) if words else 0.0
    agree = [r["answer_match"] for r in records if r.get("answer_match") is not None]
    if agree:
        out["answer_agreement"] = round(sum(agree) / len(agree), 4)
    return out


def cache_path(root: Path, teacher: str, benchmark: str, split: str) -> Path:
    return Path(root) / teacher / benchmark / f"{split}.jsonl"


def load_cache(root: Path, teacher: str, benchmark: str, split: str) -> list[dict]:
    """Records of one cache file; a missing file is an empty cache."""
    path = cache_path(root, teacher, benchmark, split)
    if not path.exists():
        return []
    records = []
    for i, r in enumerate(iter_jsonl(path, tolerate_torn_tail=True), 1):
        for key in ("id", "teacher", "rationale", "status"):
            if key not in r:
                raise DataError(f"{path}: record {i}: field {key!r} is missing")
        if r["status"] not in STATUSES:
            raise DataError(f"{path}: record {i} (id {r['id']!r}): field 'status' is {r['status']!r}")
        records.append(r)
    return records
