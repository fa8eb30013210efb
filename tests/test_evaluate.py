"""Evaluation: option matching rules, the KV-cached scorer equals the pairwise reference,
and a student trained until it knows the answers scores 100% both ways."""

import pytest
import torch
from conftest import records, tiny_causal, tiny_seq2seq

from tinyllm.config import DistillConfig
from tinyllm.evaluate import evaluate_records, match_option, score_options, score_options_pairwise
from tinyllm.distill import train


def test_match_option_rules():
    ch = ["Pour it onto a plate", "Pour it into a jar"]
    assert match_option("pour it into a jar.", ch) == 1  # case and punctuation normalised
    assert match_option("(b) Pour it into a jar\nbecause ...", ch) == 1  # letter tag, first line
    assert match_option("Pour it", ch) is None  # a prefix is not a match
    assert match_option("jar", ch) is None


def test_kv_cached_scores_equal_pairwise(tiny_tokenizer):
    # the fast scorer must not change any score (fp32, atol 1e-4)
    tok = tiny_tokenizer
    model = tiny_causal(tok).eval()
    recs = records()
    fast = torch.tensor(score_options(model, tok, recs, False, 64, 3, "cpu"))
    ref = torch.tensor(score_options_pairwise(model, tok, recs, False, 64, 5, "cpu"))
    assert torch.allclose(fast, ref, atol=1e-4)


@pytest.mark.parametrize("make, seq2seq", [(tiny_causal, False), (tiny_seq2seq, True)])
def test_student_that_knows_the_answers_scores_100(tiny_tokenizer, make, seq2seq):
    tok = tiny_tokenizer
    model = make(tok)
    exs = [{"record": r, "rationales": {}} for r in records()]
    cfg = DistillConfig(alphas={}, steps=60, batch_size=4, lr=1e-2, max_input_tokens=64, precision="fp32")
    model = train(model, tok, seq2seq, exs, [], cfg, progress=False)["_model"].eval()
    metrics, preds = evaluate_records(model, tok, records("valid"), seq2seq, max_input_tokens=64,
                                      max_new_tokens=8, batch_size=3, device="cpu", progress=False)
    assert metrics["acc_score"] == 1.0 and metrics["acc_generate"] == 1.0
    assert [p["generated"] for p in preds] == [r["answer"] for r in records()]
    # an untrained student of the same shape does not know them
    fresh, _ = evaluate_records(make(tok, seed=1).eval(), tok, records("valid"), seq2seq, max_input_tokens=64,
                                max_new_tokens=8, batch_size=3, device="cpu", progress=False)
    assert fresh["acc_generate"] < 1.0
