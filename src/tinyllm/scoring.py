"""Option scoring and greedy decoding, the parts every kind of student shares.

``OptionScores`` holds what scoring gives per record and option (mean and summed
log-likelihoods, optionally the greedy next tokens along each option); ``greedy_along_options``
reads a greedy answer off those tokens, so a student that answers with an option costs no
decoding (``Student.score_and_generate``); only answers that leave every option are decoded.

The scoring and decoding themselves are methods of the student classes, one implementation per
kind (``CausalStudent.score_options`` / ``score_and_generate`` / ``generate`` in
``student/causal.py``, ``Seq2SeqStudent``'s in ``student/seq2seq.py``): callers use
``student.score_options(...)`` and never branch on the kind. This module has what they share:
the ``OptionScores`` they return, the answer budget (``answer_limit``), reading greedy answers
off option scoring (``greedy_along_options``, ``read_greedy``) and the decoding log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class OptionScores:
    """Per record and option: ``mean`` log-likelihood of the option's tokens + EOS (the listed
    format's rule ``score``), ``total`` = summed log-likelihood of the option text's tokens
    without EOS (the cloze rules ``sum``/``norm``/``pmi``), and, when asked for, ``greedy``:
    the greedy next token after the prompt and each prefix of the option."""

    mean: list[list[float]]
    total: list[list[float]]
    greedy: list[list[list[int] | None]] | None = None

    @classmethod
    def empty(cls, records: list[dict], greedy: bool = False) -> OptionScores:
        def grid(v):
            return [[v] * len(r["choices"]) for r in records]

        return cls(grid(0.0), grid(0.0), grid(None) if greedy else None)


def log_decoding(n: int, of: int) -> None:
    log.info("  decoding %d of %d generations (their greedy answer leaves every option)", n, of)


def answer_limit(options: list[list[int]], max_new_tokens: int | None) -> int:
    """Tokens a greedy answer may take: the longest option (+ EOS), or ``max_new_tokens``
    where that is lower. A per-question budget, so no answer depends on its batch."""
    limit = max(map(len, options))
    return min(limit, max_new_tokens) if max_new_tokens else limit


def greedy_along_options(
    options: list[list[int]], greedy: list[list[int]], eos_id: int | None, limit: int
) -> tuple[list[int], bool]:
    """The greedy answer read off option scoring: (tokens, complete).

    ``greedy[j][t]`` is the student's argmax after the prompt and ``options[j][:t]``. Greedy
    decoding emits ``greedy[j][0]`` (the same for every j); while the tokens so far are a
    prefix of some option j, the next one is ``greedy[j][t]``. Complete: the answer ended (EOS,
    not included, or ``limit`` tokens). Not complete: its last token left every option, so what
    follows it is unknown and must be decoded, continuing from these tokens."""
    path: list[int] = []
    alive = list(range(len(options)))  # options whose first len(path) tokens are the path
    for t in range(limit):
        tok = greedy[alive[0]][t]
        if tok == eos_id:
            break
        path.append(tok)
        if t + 1 == limit:
            break
        alive = [j for j in alive if t + 1 < len(options[j]) and options[j][t] == tok]
        if not alive:
            return path, False
    return path, True


def read_greedy(student, record: dict, greedy: list[list[int]], max_new_tokens: int | None):
    """(tokens, complete, budget): the record's greedy answer as far as option scoring knows
    it (``greedy_along_options``), within the budget ``generate`` gives it."""
    options = student.option_ids(record["choices"], 1 << 30)
    limit = answer_limit(options, max_new_tokens)
    path, complete = greedy_along_options(options, greedy, student.eos_id, limit)
    return path, complete, limit
