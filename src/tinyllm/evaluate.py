"""Accuracy of a student on multiple-choice questions, under every decision rule (``RULES``):

- ``score`` (option likelihood): the option whose tokens (option text + EOS) have the highest
  mean log-likelihood after the answer prompt.
- ``sum``: the highest summed log-likelihood of the option text (no EOS): lm-evaluation-harness
  ``acc`` in the cloze format.
- ``norm``: that sum divided by the option's length in characters (lm-evaluation-harness
  ``acc_norm``; the OLMES standard for cloze multiple choice).
- ``pmi``: that sum minus the option's summed log-likelihood after the answer tag alone, without
  the question (pointwise mutual information: removes the prior of frequent answers).
- ``generate`` (generate-and-match, the paper's rule): greedy decoding after the answer prompt,
  the text matched to an option after normalisation — the option text itself, or a bare letter
  such as "(d)"; text that names no option counts as wrong and is counted as ``unmatched``.

Ties go to the first option. The answer format (listed options or cloze) is the student's own,
read from its checkpoint (``Student.answer_format``); every rule applies to either format.

The student (``student/``) computes scores and texts; this module turns them into
predictions and accuracies. Predictions are batch-invariant: a question gets the same
prediction whatever else shares its batch (fp32 on CPU; tests/test_evaluate.py).
"""

from __future__ import annotations

import logging
import re
import string

from .config import RULES

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


LIKELIHOOD_RULES = RULES[:-1]  # config.RULES: every rule but generate


def argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


def rule_scores(choices: list[str], mean: list[float], total: list[float], uncond: list[float] | None) -> dict:
    """{rule: per-option scores} of one question for the likelihood rules (``pmi`` needs
    ``uncond``, the options' summed log-likelihood after the answer tag alone)."""
    out = {
        "score": mean,
        "sum": total,
        "norm": [t / max(len(c), 1) for t, c in zip(total, choices, strict=True)],
    }
    if uncond is not None:
        out["pmi"] = [t - u for t, u in zip(total, uncond, strict=True)]
    return out


def unconditional_totals(student, records: list[dict], max_input_tokens: int, batch_size: int, device):
    """Per record, each option's summed log-likelihood after the answer tag alone (the ``pmi``
    baseline). It depends on the option texts only, so each distinct option list is scored once
    (PubMedQA's 500 questions share one)."""
    keys = list(dict.fromkeys(tuple(r["choices"]) for r in records))
    lists = [{"question": "", "choices": list(k)} for k in keys]
    totals = student.score_options(lists, max_input_tokens, batch_size, device, unconditional=True).total
    by_key = dict(zip(keys, totals, strict=True))
    return [by_key[tuple(r["choices"])] for r in records]


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
    pmi: bool = True,
) -> tuple[dict, list[dict]]:
    """Metrics (both decision rules) and per-question predictions for one benchmark split.

    Every question is scored; generate-and-match runs on all of them, or on the first
    ``generate_limit`` (``n_generate`` in the metrics says how many: a cheaper fixed subset).
    ``reuse_scores``: read greedy answers off option scoring where they follow an option, and
    decode only the rest (``Student.score_and_generate``; ``n_decoded`` says how many); False
    decodes every one (the reference path, same texts). ``pmi``: also score every option after
    the answer tag alone (a short second pass) for the ``pmi`` rule."""
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
    uncond = unconditional_totals(student, records, max_input_tokens, batch_size, device) if pmi else None
    preds = []
    for i, (rec, text) in enumerate(zip(records, texts, strict=True)):
        per_rule = rule_scores(rec["choices"], scores.mean[i], scores.total[i], uncond[i] if uncond else None)
        preds.append(
            {
                "id": rec["id"],
                "label": rec["label"],
                **{f"pred_{r}": argmax(v) for r, v in per_rule.items()},
                "pred_generate": None if text is None else match_option(text, rec["choices"]),
                "generated": text,
                "scores": [round(s, 4) for s in scores.mean[i]],
                "totals": [round(s, 4) for s in scores.total[i]],
                **({"uncond": [round(s, 4) for s in uncond[i]]} if uncond else {}),
            }
        )
    n = len(preds)
    metrics = {"n": n}
    for r in LIKELIHOOD_RULES:
        if f"pred_{r}" in preds[0]:
            metrics[f"acc_{r}"] = sum(p[f"pred_{r}"] == p["label"] for p in preds) / n
    if n_gen:
        gen = preds[:n_gen]
        metrics["acc_generate"] = sum(p["pred_generate"] == p["label"] for p in gen) / n_gen
        metrics["unmatched_generate"] = sum(p["pred_generate"] is None for p in gen) / n_gen
        metrics["n_generate"] = n_gen
        metrics["n_decoded"] = n_decoded
    if f"acc_{headline}" not in metrics:
        raise ValueError(f"headline rule {headline!r} was not computed (generate={generate}, pmi={pmi})")
    metrics["accuracy"] = metrics[f"acc_{headline}"]
    return metrics, preds


def average(per_benchmark: dict[str, dict]) -> dict:
    """Unweighted mean over benchmarks (the paper's "Avg" column)."""
    keys = [
        k
        for k in ("accuracy", *(f"acc_{r}" for r in RULES), "unmatched_generate")
        if all(k in m for m in per_benchmark.values())
    ]
    k = len(per_benchmark)
    out = {key: sum(m[key] for m in per_benchmark.values()) / k for key in keys}
    for key in ("n", "n_generate", "n_decoded"):
        if all(key in m for m in per_benchmark.values()):
            out[key] = sum(m[key] for m in per_benchmark.values())
    return out
