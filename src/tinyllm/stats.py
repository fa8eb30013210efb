"""Statistics of accuracy tables, from per-question predictions (eval/predictions/<split>/<b>.jsonl).

A prediction is ``{"id", "label", "pred_<rule>" for each rule, "generated", "scores", ...}``;
the decision ``rule`` (``evaluate.headline``) says which prediction counts: ``score``, ``sum``,
``norm``, ``pmi`` (option likelihood rules, ``tinyllm.evaluate``) or ``generate``
(generate-and-match; an unmatched text, ``None``, is wrong).

What is computed, and with which library:

- per benchmark: n, accuracy and a 95% Wilson interval (``scipy.stats.binomtest(...).proportion_ci``);
- the average (the paper's Avg: the unweighted mean over benchmarks): a percentile bootstrap that
  resamples questions *within* each benchmark (``scipy.stats.bootstrap`` with one sample per
  benchmark, ``paired=False``: every sample is resampled on its own), so a benchmark's weight
  stays 1/k in every resample;
- a row against a reference row (full fine-tuning, the untrained student): the paired
  difference of accuracy on the questions both answered, with a paired-bootstrap 95% CI (the
  per-question differences resampled; within each benchmark for the average) and the exact
  McNemar p-value, i.e. a two-sided binomial test of the discordant pairs
  (``scipy.stats.binomtest(b, b + c, 0.5)``; statsmodels' ``mcnemar(exact=True)`` is the same
  test, and statsmodels is not a dependency), and a sign-flip permutation p (``p_perm``) on the
  seed-averaged per-question differences, which uses every seed where McNemar's majority vote
  does not. For the average, McNemar pools the discordant
  pairs of all benchmarks (a test of the question-weighted difference; the CI is of the
  unweighted one);
- several seeds of one row: accuracy mean ± sd over seeds (sd with ddof 1); for the CI and the
  paired tests the seeds are pooled per question: the bootstrap resamples questions of the
  seed-averaged correctness (a question's value is the share of seeds that got it right), and
  McNemar uses the per-question majority vote (right when more than half of the seeds are
  right; with an even number of seeds a tie counts as wrong, so use an odd number);
- reference rates: chance (mean of 1/number of options) and majority class: the train split's
  most frequent answer, applied to the evaluated split. For benchmarks whose every question has
  the same options in the same order (PubMedQA yes/no/maybe, BioASQ yes/no) that is the most
  frequent *answer text*; for the others (OBQA, ARC, PIQA, Riddle) the most frequent gold
  *option position* (ties: the first position);
- the share of predictions per option position beside the gold share (a student that prefers
  option (a) shows it here).

numpy and scipy only (no torch, no mlflow): the evaluate stage imports this module.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from scipy import stats as st

from .config import RULES  # noqa: F401  (re-exported: the reports read it here)

LEVEL = 0.95
N_RESAMPLES = 2000
SEED = 0


# ----------------------------------------------------------------------------- per-question correctness


def prediction(p: dict, rule: str) -> int | None:
    """The option a prediction chose under `rule` (None: generate-and-match named no option)."""
    if rule not in RULES:
        raise ValueError(f"decision rule {rule!r} not in {RULES} (params key evaluate.headline)")
    return p[f"pred_{rule}"]


def n_options(p: dict) -> int:
    """How many options the question had (``n_options`` of a compact prediction, else its scores)."""
    return p["n_options"] if "n_options" in p else len(p["scores"])


def correct(preds: list[dict], rule: str = "score") -> np.ndarray:
    """1.0 where the prediction under `rule` is the gold label, else 0.0, in the given order."""
    return np.array([float(prediction(p, rule) == p["label"]) for p in preds])


def by_id(preds: list[dict], where: str = "predictions") -> dict[str, dict]:
    """Predictions keyed by question id; a repeated id is an error (it would be counted twice)."""
    out: dict[str, dict] = {}
    for i, p in enumerate(preds):
        key = str(p["id"])
        if key in out:
            raise ValueError(f"{where}: record {i}: question id {key!r} appears twice")
        out[key] = p
    return out


def seed_matrix(
    runs: list[list[dict]], rule: str = "score", where: str = "predictions"
) -> tuple[list[str], np.ndarray]:
    """Question ids and a (seeds, questions) 0/1 correctness matrix over the questions every
    seed answered (sorted ids): the seeds of a row must be compared question by question."""
    keyed = [by_id(preds, f"{where} (seed {k})") for k, preds in enumerate(runs)]
    ids = sorted(set.intersection(*(set(d) for d in keyed))) if keyed else []
    mat = np.array([[float(prediction(d[i], rule) == d[i]["label"]) for i in ids] for d in keyed])
    return ids, mat.reshape(len(keyed), len(ids))


def pooled(mat: np.ndarray) -> np.ndarray:
    """Seed-averaged correctness per question (the bootstrap's unit)."""
    return mat.mean(axis=0)


def majority_vote(mat: np.ndarray) -> np.ndarray:
    """Per-question majority vote over seeds, 1 when more than half are right (McNemar's unit)."""
    return (mat.sum(axis=0) * 2 > mat.shape[0]).astype(float)


# ----------------------------------------------------------------------------- intervals


def wilson_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of k successes in n (valid at 0 and n, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = st.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _mean_of_means(*samples, axis=-1):
    return np.mean([s.mean(axis=axis) for s in samples], axis=0)


def bootstrap_ci(
    samples: list[np.ndarray], level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the unweighted mean of the samples' means, each sample
    resampled on its own (stratified: one sample per benchmark). A sample with fewer than two
    values cannot be resampled; its mean is then taken as fixed."""
    fixed = [s for s in samples if len(s) < 2 and len(s)]
    free = [np.asarray(s, dtype=float) for s in samples if len(s) >= 2]
    if not free:
        m = float(np.mean([s.mean() for s in fixed])) if fixed else float("nan")
        return m, m
    k = len(free) + len(fixed)
    shift = sum(float(s.mean()) for s in fixed) / k
    res = st.bootstrap(
        tuple(free),
        _mean_of_means,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=seed,
    )
    scale = len(free) / k
    return float(res.confidence_interval.low * scale + shift), float(res.confidence_interval.high * scale + shift)


def sign_flip_p(diffs: list[np.ndarray], n_resamples: int = N_RESAMPLES, seed: int = SEED) -> float:
    """Two-sided sign-flip permutation test that the unweighted mean over benchmarks of the mean
    per-question difference is 0: under the null, each question's difference (seeds averaged, so
    every seed counts) is as likely to have either sign. ``scipy.stats.permutation_test`` with one
    sample of the question weights ``1 / (k * n_b)`` (exact when 2^n <= n_resamples)."""
    parts = [np.asarray(d, dtype=float) / (len(diffs) * len(d)) for d in diffs if len(d)]
    if not parts:
        return float("nan")
    w = np.concatenate(parts)
    if not np.any(w):
        return 1.0
    res = st.permutation_test(
        (w,), lambda x, axis=-1: np.sum(x, axis=axis), permutation_type="samples",
        n_resamples=n_resamples, alternative="two-sided", vectorized=True, rng=seed,
    )  # fmt: skip
    return float(res.pvalue)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (statsmodels ``multipletests(...,
    "holm")`` computes the same; statsmodels is not a dependency)."""
    keys = sorted(pvalues, key=lambda k: pvalues[k])
    m, out, running = len(keys), {}, 0.0
    for i, k in enumerate(keys):
        running = max(running, min(1.0, (m - i) * pvalues[k]))
        out[k] = running
    return out


def mcnemar_exact(row: np.ndarray, ref: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test of two paired 0/1 vectors: (p, b, c) with b = right only in `row`,
    c = right only in `ref`; p = two-sided binomial test of b in b + c at 1/2 (1.0 when b + c = 0)."""
    row, ref = np.asarray(row) > 0.5, np.asarray(ref) > 0.5
    b, c = int(np.sum(row & ~ref)), int(np.sum(~row & ref))
    p = 1.0 if b + c == 0 else float(st.binomtest(b, b + c, 0.5).pvalue)
    return p, b, c


# ----------------------------------------------------------------------------- tables


def accuracy_summary(
    mats: dict[str, np.ndarray], level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> dict[str, dict]:
    """Per benchmark and `average`: n, seeds, accuracy (mean over seeds), sd over seeds (nan for
    one seed), 95% CI (Wilson for one seed; bootstrap of the seed-averaged correctness for
    several; stratified bootstrap for the average). `mats`: {benchmark: (seeds, questions)}."""
    out: dict[str, dict] = {}
    for b, mat in mats.items():
        s, n = mat.shape
        per_seed = mat.mean(axis=1) if n else np.full(s, np.nan)
        if s == 1:
            lo, hi = wilson_ci(int(mat.sum()), n, level)
        else:
            lo, hi = bootstrap_ci([pooled(mat)], level, n_resamples, seed)
        out[b] = {
            "n": n,
            "seeds": s,
            "accuracy": float(np.mean(per_seed)),
            "sd": float(np.std(per_seed, ddof=1)) if s > 1 else float("nan"),
            "ci_low": lo,
            "ci_high": hi,
        }
    if mats:
        seeds = min(m.shape[0] for m in mats.values())
        per_seed_avg = np.mean([m[:seeds].mean(axis=1) for m in mats.values()], axis=0)
        lo, hi = bootstrap_ci([pooled(m) for m in mats.values()], level, n_resamples, seed)
        out["average"] = {
            "n": sum(m.shape[1] for m in mats.values()),
            "seeds": seeds,
            "accuracy": float(np.mean([o["accuracy"] for o in out.values()])),
            "sd": float(np.std(per_seed_avg, ddof=1)) if seeds > 1 else float("nan"),
            "ci_low": lo,
            "ci_high": hi,
        }
    return out


def paired_comparison(
    row: dict[str, tuple[list[str], np.ndarray]],
    ref: dict[str, tuple[list[str], np.ndarray]],
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, dict]:
    """`row` minus `ref` on the questions both answered, per benchmark and `average`: diff
    (accuracy points as a fraction), paired-bootstrap CI, exact McNemar p, n, b, c. Inputs:
    {benchmark: (ids, (seeds, questions) matrix)} as from `seed_matrix`; seeds pooled as the
    module docstring says."""
    out, diffs, votes = {}, [], []
    for b in row:
        if b not in ref:
            continue
        (ids_a, a), (ids_r, r) = row[b], ref[b]
        common = sorted(set(ids_a) & set(ids_r))
        if not common:
            continue
        ia, ir = {q: i for i, q in enumerate(ids_a)}, {q: i for i, q in enumerate(ids_r)}
        a, r = a[:, [ia[q] for q in common]], r[:, [ir[q] for q in common]]
        d = pooled(a) - pooled(r)
        lo, hi = bootstrap_ci([d], level, n_resamples, seed)
        va, vr = majority_vote(a), majority_vote(r)
        p, nb, nc = mcnemar_exact(va, vr)
        out[b] = {
            "diff": float(d.mean()),
            "ci_low": lo,
            "ci_high": hi,
            "p_mcnemar": p,
            "p_perm": sign_flip_p([d], n_resamples, seed),
            "n": len(common),
            "b": nb,
            "c": nc,
        }
        diffs.append(d)
        votes.append((va, vr))
    if diffs:
        lo, hi = bootstrap_ci(diffs, level, n_resamples, seed)
        p, nb, nc = mcnemar_exact(np.concatenate([v[0] for v in votes]), np.concatenate([v[1] for v in votes]))
        out["average"] = {
            "diff": float(np.mean([d.mean() for d in diffs])),
            "ci_low": lo,
            "ci_high": hi,
            "p_mcnemar": p,
            "p_perm": sign_flip_p(diffs, n_resamples, seed),
            "n": int(sum(len(d) for d in diffs)),
            "b": nb,
            "c": nc,
        }
    return out


def option_shares(preds: list[dict], rule: str = "score") -> dict[str, list[float]]:
    """Share of predictions per option position and share of gold labels per position (over
    the largest option count in the set), plus the unmatched share (generate rule)."""
    k = max((n_options(p) if "n_options" in p or p.get("scores") else 0 for p in preds), default=0)
    k = max(k, 1 + max((p["label"] for p in preds), default=-1))
    n = len(preds) or 1
    chosen = Counter(prediction(p, rule) for p in preds)
    gold = Counter(p["label"] for p in preds)
    return {
        "pred": [chosen.get(j, 0) / n for j in range(k)],
        "gold": [gold.get(j, 0) / n for j in range(k)],
        "unmatched": chosen.get(None, 0) / n,
    }


# ----------------------------------------------------------------------------- majority class and chance


def majority_class(train: list[dict]) -> dict:
    """The train split's majority answer: by answer text when every question has the same
    options in the same order (yes/no/maybe), else by gold option position. Returns
    {"by": "answer"|"position", "answer": text or None, "position": index, "share": train share}."""
    if not train:
        raise ValueError("majority_class: empty train split")
    fixed = len({tuple(r["choices"]) for r in train}) == 1
    if fixed:
        choices = train[0]["choices"]
        counts = Counter(r["choices"][r["label"]] for r in train)
        answer = max(choices, key=lambda c: (counts.get(c, 0), -choices.index(c)))
        pos, n_major = choices.index(answer), counts.get(answer, 0)
    else:
        counts = Counter(r["label"] for r in train)
        pos = max(counts, key=lambda j: (counts[j], -j))
        answer, n_major = None, counts[pos]
    return {"by": "answer" if fixed else "position", "answer": answer, "position": pos, "share": n_major / len(train)}


def majority_classes(prepared: Path, benchmarks: list[str]) -> dict[str, dict]:
    """`majority_class` of each benchmark's train split in data/prepared (benchmarks without a
    train split are left out)."""
    from tinyllm.benchmarks import load_prepared

    out = {}
    for b in benchmarks:
        train = load_prepared(Path(prepared), b, "train")
        if train:
            out[b] = majority_class(train)
    return out


def reference_rates(preds: list[dict], majority: dict | None) -> dict[str, float]:
    """Chance (mean 1/options) and, with the train majority, the majority-class accuracy on
    these questions (the majority answer is at the same position in every question when
    `majority["by"] == "answer"`: the options are fixed)."""
    out = {"chance": float(np.mean([1.0 / n_options(p) for p in preds])) if preds else float("nan")}
    if majority is not None:
        out["majority"] = float(np.mean([p["label"] == majority["position"] for p in preds])) if preds else float("nan")
    return out


def decided(preds: list[dict], rule: str) -> list[dict]:
    """The predictions `rule` decided: all for option scoring; for generate-and-match the ones
    that were generated (the evaluate stage may generate on a fixed subset only)."""
    if rule != "generate":
        return preds if all(f"pred_{rule}" in p for p in preds) else []
    return [p for p in preds if p.get("generated") is not None]


def summarize_split(
    preds_by_benchmark: dict[str, list[dict]],
    majority: dict[str, dict] | None = None,
    rule: str = "score",
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, dict]:
    """Numbers for metrics/eval.json (numeric only: DVC metrics) of one model on one split:
    {benchmark|"average": {n, ci_low, ci_high, chance[, majority]}} for the headline `rule`, and
    for each rule with predictions `n_<rule>`, `ci_low_<rule>`, `ci_high_<rule>` (each over the
    questions it decided); CIs as in `accuracy_summary`; the average's rates are unweighted
    means over benchmarks."""
    per_rule = {}
    for r in RULES:
        mats = {b: correct(decided(p, r), r)[None, :] for b, p in preds_by_benchmark.items() if decided(p, r)}
        if mats and len(mats) == sum(1 for p in preds_by_benchmark.values() if p):
            per_rule[r] = accuracy_summary(mats, level, n_resamples, seed)
    out = {}
    for b, preds in preds_by_benchmark.items():
        if not preds:
            continue
        rates = reference_rates(preds, (majority or {}).get(b))
        out[b] = {**_ci(per_rule, rule, b), **rates}
    if out:
        avg = {**_ci(per_rule, rule, "average"), "chance": float(np.mean([o["chance"] for o in out.values()]))}
        if all("majority" in o for o in out.values()):
            avg["majority"] = float(np.mean([o["majority"] for o in out.values()]))
        out["average"] = avg
    return out


def _ci(per_rule: dict, headline: str, key: str) -> dict:
    if headline not in per_rule:
        raise ValueError(f"headline rule {headline!r}: some benchmark has no {headline} predictions")
    acc = per_rule[headline][key]
    out = {"n": acc["n"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"]}
    for r, summary in per_rule.items():
        out |= {
            f"n_{r}": summary[key]["n"],
            f"ci_low_{r}": summary[key]["ci_low"],
            f"ci_high_{r}": summary[key]["ci_high"],
        }
    return out
