"""In-context example generator: k examples from the same benchmark's train split.

The pool is the train questions that have an ``ok`` rationale in the configured source cache
(e.g. ``data/rationales/flan_t5_xl``, the imported released rationales), so every example shows
a real rationale. A question is never its own example; neither is a pool entry with the same
question text (duplicated items would leak the answer).

- ``random`` (the paper's): a ``random.Random`` seeded by ``"<seed>:<benchmark>:<id>"``, so a
  question gets the same examples on every run, on every machine, whatever else is generated.
- ``similar``: TF-IDF (question + options) nearest neighbours by cosine similarity (scikit-learn).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from ..benchmarks import DataError
from ..rationales import load_cache

log = logging.getLogger(__name__)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _doc(record: dict) -> str:
    return record["question"] + " " + " ".join(record["choices"])


class ExampleSelector:
    """Picks ``k`` (example record, rationale) pairs for a question.

    ``pool`` is a list of (train record, rationale); its order fixes the random draws.
    """

    def __init__(
        self, pool: list[tuple[dict, str]], k: int, strategy: str = "random", seed: int = 0, benchmark: str = ""
    ):
        if strategy not in ("random", "similar"):
            raise ValueError(f"in-context strategy {strategy!r}; known: random, similar")
        self.pool, self.k, self.strategy, self.seed, self.benchmark = pool, k, strategy, seed, benchmark
        self._text = [_norm(r["question"]) for r, _ in pool]
        self._vec = self._matrix = None
        if strategy == "similar" and k > 0 and pool:
            from sklearn.feature_extraction.text import TfidfVectorizer

            # sublinear tf + English stop words: shared content words decide, not "the"/"which"
            self._vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2))
            self._matrix = self._vec.fit_transform([_doc(r) for r, _ in pool])  # (n_pool, vocab), rows L2-normed

    def _allowed(self, i: int, record: dict) -> bool:
        ex = self.pool[i][0]
        return ex["id"] != record["id"] and self._text[i] != _norm(record["question"])

    def select(self, record: dict) -> list[tuple[dict, str]]:
        if self.k == 0 or not self.pool:
            return []
        if self.strategy == "random":
            rng = random.Random(f"{self.seed}:{self.benchmark}:{record['id']}")
            # draw a few spare indices so excluding the question itself never leaves fewer than k
            n = min(len(self.pool), self.k + 4)
            picks = [i for i in rng.sample(range(len(self.pool)), n) if self._allowed(i, record)]
            if len(picks) < self.k:  # tiny pools: fall back to every allowed index, shuffled
                picks = [i for i in range(len(self.pool)) if self._allowed(i, record)]
                rng.shuffle(picks)
            chosen = picks[: self.k]
        else:
            from sklearn.metrics.pairwise import linear_kernel

            sims = linear_kernel(self._vec.transform([_doc(record)]), self._matrix)[0]  # (n_pool,)
            # stable sort: equal similarity -> pool order, so results are deterministic
            order = sorted(range(len(self.pool)), key=lambda i: (-sims[i], i))
            chosen = [i for i in order if self._allowed(i, record)][: self.k]
        return [self.pool[i] for i in chosen]


def build_pool(
    train_records: list[dict], source_root: Path, source: str, benchmark: str, split: str = "train"
) -> list[tuple[dict, str]]:
    """(train record, rationale) pairs of questions whose source rationale is ``ok`` and non-empty.

    Raises ``DataError`` naming the cache file when the source has no usable rationale at all.
    """
    from ..rationales import cache_path

    cache = load_cache(source_root, source, benchmark, split)
    rationales = {
        r["id"]: r["rationale"]
        for r in cache
        if r["status"] == "ok"
        and r["rationale"].strip()
        and not any(f.startswith("filtered:") for f in r.get("flags", []))
    }
    pool = [(r, rationales[r["id"]]) for r in train_records if r["id"] in rationales]
    if not pool:
        raise DataError(
            f"{cache_path(source_root, source, benchmark, split)}: no 'ok' rationale of the "
            f"{len(train_records)} {split} questions; in-context examples need a source "
            f"(set icl.source to an existing cache, or icl.k: 0)"
        )
    log.info("%s: %d in-context example candidates from %s", benchmark, len(pool), source)
    return pool
