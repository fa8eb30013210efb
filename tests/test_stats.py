"""tinyllm.stats on predictions built in the test (no model, no MLflow, < 5 s)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from tinyllm import stats


def preds(correct: list[int], k: int = 4, label: int = 0, ids=None, rule_none: bool = False) -> list[dict]:
    """Predictions of `len(correct)` questions with `k` options: right (pred = label) where 1,
    else the next option; ids q0, q1, ... unless given."""
    ids = ids or [f"q{i}" for i in range(len(correct))]
    out = []
    for i, c in zip(ids, correct, strict=True):
        wrong = None if rule_none else (label + 1) % k
        p = label if c else wrong
        out.append({"id": i, "label": label, "pred_score": p, "pred_generate": p, "generated": "", "scores": [0.0] * k})
    return out


def test_wilson_interval_is_scipys_and_stays_inside_0_1():
    # guards: a normal-approximation interval (negative at 0 successes) or a wrong level
    lo, hi = stats.wilson_ci(30, 100)
    assert (lo, hi) == pytest.approx((0.2189, 0.3958), abs=1e-4)
    lo0, hi0 = stats.wilson_ci(0, 20)
    assert lo0 == 0.0 and 0.1 < hi0 < 0.2
    assert stats.wilson_ci(30, 100, level=0.99)[0] < lo


def test_average_is_unweighted_and_its_bootstrap_resamples_within_benchmarks():
    # guards: the average weighting benchmarks by size (the paper's Avg is the plain mean), and a
    # bootstrap that pools questions across benchmarks (then one all-right and one all-wrong
    # benchmark would give a wide interval; resampled within each, the average cannot move)
    mats = {"a": np.ones((1, 10)), "b": np.zeros((1, 1000))}
    s = stats.accuracy_summary(mats)
    assert s["average"]["accuracy"] == pytest.approx(0.5) and s["average"]["n"] == 1010
    assert (s["average"]["ci_low"], s["average"]["ci_high"]) == pytest.approx((0.5, 0.5))
    assert s["a"]["accuracy"] == 1.0 and s["a"]["ci_high"] == pytest.approx(1.0) and s["a"]["ci_low"] < 1.0
    # a benchmark with variation: the CI covers the estimate and is not degenerate
    rng = np.random.default_rng(0)
    s = stats.accuracy_summary({"a": rng.integers(0, 2, (1, 300)).astype(float), "b": np.ones((1, 50))})
    assert s["average"]["ci_low"] < s["average"]["accuracy"] < s["average"]["ci_high"]


def test_paired_difference_and_exact_mcnemar_on_discordant_pairs():
    # guards: an unpaired test, counting the concordant pairs, or b and c swapped
    # 40 questions: both right 20, row only 10, reference only 2, both wrong 8
    row = [1] * 20 + [1] * 10 + [0] * 2 + [0] * 8
    ref = [1] * 20 + [0] * 10 + [1] * 2 + [0] * 8
    ids_a, a = stats.seed_matrix([preds(row)])
    ids_r, r = stats.seed_matrix([preds(ref)])
    c = stats.paired_comparison({"x": (ids_a, a)}, {"x": (ids_r, r)})
    assert c["x"]["diff"] == pytest.approx(8 / 40) and (c["x"]["b"], c["x"]["c"], c["x"]["n"]) == (10, 2, 40)
    assert c["x"]["p_mcnemar"] == pytest.approx(2 * (1 + 12 + 66) / 4096)  # two-sided exact binomial, 12 pairs
    assert c["x"]["p_mcnemar"] == pytest.approx(st.binomtest(10, 12).pvalue)
    assert c["x"]["ci_low"] > 0 and c["x"]["ci_high"] < 0.45
    same = stats.paired_comparison({"x": (ids_a, a)}, {"x": (ids_a, a)})
    assert (same["x"]["diff"], same["x"]["ci_low"], same["x"]["ci_high"], same["x"]["p_mcnemar"]) == (0, 0, 0, 1.0)


def test_paired_comparison_matches_questions_by_id_not_position():
    # guards: comparing question i of one file with question i of another (files written in a
    # different order, or one row evaluated on fewer questions)
    row = preds([1, 1, 0, 0, 1], ids=["a", "b", "c", "d", "e"])
    ref = list(reversed(preds([1, 0, 0, 1], ids=["b", "c", "d", "e"])))  # q "a" missing, order reversed
    c = stats.paired_comparison({"x": stats.seed_matrix([row])}, {"x": stats.seed_matrix([ref])})
    assert c["x"]["n"] == 4 and c["x"]["diff"] == 0.0 and (c["x"]["b"], c["x"]["c"]) == (0, 0)
    with pytest.raises(ValueError, match="appears twice"):
        stats.seed_matrix([row + row[:1]])


def test_average_comparison_is_stratified_and_pools_mcnemar_pairs():
    # guards: an average difference weighted by benchmark size, McNemar of the average not
    # pooling the benchmarks' discordant pairs
    big_row, big_ref = [1] * 90 + [0] * 10, [1] * 90 + [0] * 10  # no difference on 100 questions
    small_row, small_ref = [1] * 10, [0] * 10  # +100 points on 10 questions
    row = {"big": stats.seed_matrix([preds(big_row)]), "small": stats.seed_matrix([preds(small_row)])}
    ref = {"big": stats.seed_matrix([preds(big_ref)]), "small": stats.seed_matrix([preds(small_ref)])}
    c = stats.paired_comparison(row, ref)
    assert c["average"]["diff"] == pytest.approx(0.5)  # (0 + 1) / 2, not 10 / 110
    assert (c["average"]["b"], c["average"]["c"], c["average"]["n"]) == (10, 0, 110)
    assert (c["average"]["ci_low"], c["average"]["ci_high"]) == pytest.approx((0.5, 0.5))


def test_seeds_pool_by_mean_for_the_bootstrap_and_majority_vote_for_mcnemar():
    # guards: seeds concatenated as if they were more questions (a CI too narrow by sqrt(3)),
    # sd over questions instead of over seeds, or a vote that counts a 1-of-3 question as right
    m = np.array([[1, 1, 0, 0], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=float)
    assert stats.pooled(m).tolist() == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3])
    assert stats.majority_vote(m).tolist() == [1, 0, 0, 0]
    assert stats.majority_vote(np.array([[1.0], [0.0]])).tolist() == [0]  # an even tie counts as wrong
    s = stats.accuracy_summary({"x": m})
    assert s["x"]["seeds"] == 3 and s["x"]["n"] == 4 and s["x"]["accuracy"] == pytest.approx(0.5)
    assert s["x"]["sd"] == pytest.approx(np.std([0.5, 0.5, 0.5], ddof=1))
    m2 = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=float)  # per-seed 0.5, 0.75, 0.25
    assert stats.accuracy_summary({"x": m2})["x"]["sd"] == pytest.approx(0.25)
    ids, mat = stats.seed_matrix([preds([1, 0, 1]), list(reversed(preds([1, 1, 0])))])
    assert mat.tolist() == [[1, 0, 1], [1, 1, 0]]  # seeds aligned by question id (q0 q1 q2), not position


def test_majority_class_by_answer_text_for_fixed_options_else_by_position():
    # guards: the yes/no majority read as a position when options vary, or a MC benchmark's
    # majority taken from the evaluated split instead of train
    yn = [{"choices": ["yes", "no", "maybe"], "label": lab} for lab in [0, 0, 1, 2, 0]]
    m = stats.majority_class(yn)
    assert m == {"by": "answer", "answer": "yes", "position": 0, "share": 0.6}
    mc = [{"choices": [f"o{i}{j}" for j in range(4)], "label": lab} for i, lab in enumerate([2, 1, 2, 3])]
    assert stats.majority_class(mc) == {"by": "position", "answer": None, "position": 2, "share": 0.5}
    tie = [{"choices": [f"o{i}{j}" for j in range(2)], "label": lab} for i, lab in enumerate([1, 0])]
    assert stats.majority_class(tie)["position"] == 0
    evaluated = preds([1, 1, 1, 1], k=4, label=2)[:2] + preds([1, 1], k=4, label=0)
    rates = stats.reference_rates(evaluated, stats.majority_class(mc))
    assert rates == {"chance": 0.25, "majority": 0.5}


def test_summarize_split_gives_numeric_metrics_for_dvc():
    # guards: non-numeric or NaN values in metrics/eval.json (DVC metrics), a missing CI, an
    # average majority rate that is not the mean over benchmarks
    by_b = {"obqa": preds([1] * 30 + [0] * 70), "bioasq": preds([1] * 8 + [0] * 2, k=2)}
    majority = {"obqa": {"position": 0}, "bioasq": {"position": 1}}
    s = stats.summarize_split(by_b, majority)
    assert set(s) == {"obqa", "bioasq", "average"}
    assert s["obqa"]["n"] == 100 and (s["obqa"]["ci_low"], s["obqa"]["ci_high"]) == pytest.approx(
        (0.2189, 0.3958), abs=1e-4
    )
    assert s["obqa"]["majority"] == 1.0 and s["bioasq"]["majority"] == 0.0  # every gold label is 0 here
    assert s["average"]["chance"] == pytest.approx((0.25 + 0.5) / 2) and s["average"]["majority"] == 0.5
    assert s["average"]["ci_low"] < (0.3 + 0.8) / 2 < s["average"]["ci_high"]
    flat = json.loads(json.dumps(s))
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for m in flat.values() for v in m.values())
    assert "majority" not in stats.summarize_split(by_b)["obqa"]  # no train split: no majority rate


def test_summarize_split_gives_each_rule_its_ci_over_the_questions_it_decided():
    # guards: the generate-and-match CI missing from metrics/eval.json, or counting questions
    # that were only scored (generate_per_benchmark) as wrong generations
    obqa = preds([1] * 30 + [0] * 70)
    for p in obqa[:50]:  # generated on the first 50 only, 20 of them right
        p["pred_generate"] = p["label"] if p["id"] in {f"q{i}" for i in range(20)} else None
    for p in obqa[50:]:
        p["generated"], p["pred_generate"] = None, None
    s = stats.summarize_split({"obqa": obqa}, None, rule="score")["obqa"]
    assert s["n"] == s["n_score"] == 100 and s["n_generate"] == 50
    assert (s["ci_low"], s["ci_high"]) == (s["ci_low_score"], s["ci_high_score"])
    assert (s["ci_low_generate"], s["ci_high_generate"]) == pytest.approx(stats.wilson_ci(20, 50))
    headline_gen = stats.summarize_split({"obqa": obqa}, None, rule="generate")["obqa"]
    assert headline_gen["n"] == 50 and headline_gen["ci_low"] == s["ci_low_generate"]
    scored_only = [{**p, "generated": None, "pred_generate": None} for p in obqa]
    assert "ci_low_generate" not in stats.summarize_split({"obqa": scored_only})["obqa"]


def test_option_shares_and_generate_rule():
    # guards: the position bias hidden (shares of the wrong prediction field), an unmatched
    # generation (None) counted as a right answer or as option (a)
    p = preds([1, 0, 0, 0], k=4, label=0) + preds([0, 0], k=4, label=3, rule_none=True)
    sh = stats.option_shares(p, "score")
    assert sh["gold"] == [4 / 6, 0, 0, 2 / 6] and sh["pred"] == [1 / 6, 3 / 6, 0, 0] and sh["unmatched"] == 2 / 6
    assert stats.correct(p, "generate").tolist() == [1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="evaluate.headline"):
        stats.correct(p, "vote")
