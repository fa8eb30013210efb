"""Accuracy of a student on multiple-choice questions, decided two ways:

- ``score`` (option likelihood): the option whose tokens (option text + EOS) have the highest
  mean log-likelihood after the answer prompt; ties go to the first option.
- ``generate`` (generate-and-match, the paper's rule): greedy decoding after the answer prompt,
  the text matched to an option after normalisation — the option text itself, or a bare letter
  such as "(d)"; text that names no option counts as wrong and is counted as ``unmatched``.

The student (``student.py``) computes scores and texts; this module turns them into
predictions and accuracies. Predictions are batch-invariant: a question gets the same
prediction whatever else shares its batch (fp32 on CPU; tests/test_evaluate.py).
"""

from __future__ import annotations

import logging
import re
import string

log = logging.getLogger(__name__)

_PUNCT = str.maketrans("", "", string.punctuation)
_LETTER = re.compile(r"^\(?([a-z])\)?(?:[.:]|\s|$)", re.I)


def normalize(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def match_option(text: str, choices: list[str]) -> int | None:
    """Index of the option ``text`` names, else None.

    The first line is compared with every option after normalisation; a leading letter tag
    "(b)" / "b)" / "b." is dropped first, and a bare letter ("(d)", "d") names its option."""
    first = text.strip().split("\n")[0].strip()
    m = _LETTER.match(first)
    if m:
        rest = first[m.end() :].strip()
        i = ord(m.group(1).lower()) - ord("a")
        if not rest and i < len(choices):
            return i  # a bare letter answer
        if rest:
            first = rest
    norm = normalize(first)
    hits = [i for i, c in enumerate(choices) if normalize(c) == norm]
    return hits[0] if len(hits) == 1 else None


def argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


def evaluate_records(
    student,
    records: list[dict],
    *,
    max_input_tokens: int,
    max_new_tokens: int | None,
    batch_size: int,
    device,
    headline: str = "score",
    progress: bool = True,
    generate: bool = True,
    generate_limit: int | None = None,
    reuse_scores: bool = True,
) -> tuple[dict, list[dict]]:
    """Metrics (both decision rules) and per-question predictions for one benchmark split.

    Every question is scored; generate-and-match runs on all of them, or on the first
    ``generate_limit`` (``n_generate`` in the metrics says how many: a cheaper fixed subset).
    ``reuse_scores``: read greedy answers off option scoring where they follow an option, and
    decode only the rest (``Student.score_and_generate``; ``n_decoded`` says how many); False
    decodes every one (the reference path, same texts)."""
    from tqdm.auto import tqdm

    if not records:
        raise ValueError("no records to evaluate")
    n_gen = 0
    if generate:
        n_gen = len(records) if generate_limit is None else min(generate_limit, len(records))
    texts = [None] * len(records)
    with tqdm(total=len(records), desc="  score options", disable=not progress, leave=False) as bar:
        if n_gen and reuse_scores:
            scores, texts[:n_gen], n_decoded = student.score_and_generate(
                records, max_input_tokens, max_new_tokens, batch_size, device, n_gen, bar
            )
        else:
            scores = student.score_options(records, max_input_tokens, batch_size, device, bar)
    if n_gen and not reuse_scores:
        with tqdm(total=n_gen, desc="  generate", disable=not progress, leave=False) as bar:
            texts[:n_gen] = student.generate(records[:n_gen], max_input_tokens, max_new_tokens, batch_size, device, bar)
            n_decoded = n_gen
    preds = []
    for rec, sc, text in zip(records, scores, texts, strict=True):
        preds.append(
            {
                "id": rec["id"],
                "label": rec["label"],
                "pred_score": argmax(sc),
                "pred_generate": None if text is None else match_option(text, rec["choices"]),
                "generated": text,
                "scores": [round(s, 4) for s in sc],
            }
        )
    n = len(preds)
    acc_score = sum(p["pred_score"] == p["label"] for p in preds) / n
    metrics = {"acc_score": acc_score, "n": n}
    if n_gen:
        gen = preds[:n_gen]
        metrics["acc_generate"] = sum(p["pred_generate"] == p["label"] for p in gen) / n_gen
        metrics["unmatched_generate"] = sum(p["pred_generate"] is None for p in gen) / n_gen
        metrics["n_generate"] = n_gen
        metrics["n_decoded"] = n_decoded
    metrics["accuracy"] = metrics["acc_score"] if headline == "score" else metrics["acc_generate"]
    return metrics, preds


def average(per_benchmark: dict[str, dict]) -> dict:
    """Unweighted mean over benchmarks (the paper's "Avg" column)."""
    keys = [
        k
        for k in ("accuracy", "acc_score", "acc_generate", "unmatched_generate")
        if all(k in m for m in per_benchmark.values())
    ]
    k = len(per_benchmark)
    out = {key: sum(m[key] for m in per_benchmark.values()) / k for key in keys}
    for key in ("n", "n_generate", "n_decoded"):
        if all(key in m for m in per_benchmark.values()):
            out[key] = sum(m[key] for m in per_benchmark.values())
    return out
