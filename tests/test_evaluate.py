"""Evaluation: option matching rules, the KV-cached scorer equals the pairwise reference,
predictions do not depend on batch neighbours, generation length comes from the options, greedy
answers read off option scoring equal decoding, and a student trained until it knows the answers
scores 100% both ways."""

import random

import pytest
import torch
from conftest import QUESTIONS, records, tiny_causal, tiny_seq2seq

from tinyllm.config import DistillConfig
from tinyllm.distill import train
from tinyllm.evaluate import average, evaluate_records, match_option
from tinyllm.scoring import greedy_along_options
from tinyllm.student import CausalStudent, Seq2SeqStudent

KINDS = [(tiny_causal, CausalStudent), (tiny_seq2seq, Seq2SeqStudent)]


def many_records(n=20, seed=0):
    """``n`` questions of different lengths and option counts built from the fixture ones."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        choices = q["choices"][: 2 + i % 2] if q["answer"] in q["choices"][: 2 + i % 2] else q["choices"]
        choices = rng.sample(choices, len(choices))
        out.append(
            {
                "id": f"m{i}",
                "question": " ".join([q["question"]] * (1 + i % 3)),
                "choices": choices,
                "answer": q["answer"],
                "label": choices.index(q["answer"]),
                "benchmark": "obqa",
                "split": "valid",
            }
        )
    return out


def test_match_option_rules():
    ch = ["Pour it onto a plate", "Pour it into a jar", "c"]
    assert match_option("pour it into a jar.", ch) == 1  # case and punctuation normalised
    assert match_option("(b) Pour it into a jar\nbecause ...", ch) == 1  # letter tag, first line
    assert match_option("(a)", ch) == 0 and match_option("b", ch) == 1  # a bare letter names its option
    assert match_option("(d)", ch) is None  # no option (d)
    assert match_option("Pour it", ch) is None  # a prefix is not a match
    assert match_option("jar", ch) is None


def both_paths(student, recs, **kw):
    """(metrics, predictions) of the default evaluation path, then of the reference path
    (every question decoded)."""
    kw = {"max_input_tokens": 64, "device": "cpu", "progress": False, **kw}
    return evaluate_records(student, recs, **kw), evaluate_records(student, recs, reuse_scores=False, **kw)


def close(x, y, tol=1e-4):
    return all(abs(a - b) < tol for fx, fy in zip(x, y, strict=True) for a, b in zip(fx, fy, strict=True))


@pytest.mark.parametrize("fmt", ["listed", "cloze"])
@pytest.mark.parametrize("make, cls", KINDS)
def test_kv_cached_scores_equal_pairwise(tiny_tokenizer, make, cls, fmt):
    # the fast scorer must not change any score (fp32, atol 1e-4): means (text + EOS), text
    # sums, and the unconditional sums of the PMI rule, in both answer formats
    s = cls(make(tiny_tokenizer).eval(), tiny_tokenizer, answer_format=fmt)
    recs = many_records(12)
    fast = s.score_options(recs, 64, 5, "cpu")
    ref = s.score_options_pairwise(recs, 64, 3, "cpu")
    assert close(fast.mean, ref.mean) and close(fast.total, ref.total)
    fast_u = s.score_options(recs, 64, 5, "cpu", unconditional=True)
    ref_u = s.score_options_pairwise(recs, 64, 3, "cpu", unconditional=True)
    assert close(fast_u.total, ref_u.total)
    assert not close(fast.total, fast_u.total)  # the question matters to the conditional scores


@pytest.mark.parametrize("make, cls", KINDS)
def test_predictions_do_not_depend_on_the_batch(tiny_tokenizer, make, cls):
    # guards: a question's prediction changing with which other questions share its batch
    # (padding, batch-dependent decoding lengths, bf16 rounding): batch size 1 == batch size 16
    s = cls(make(tiny_tokenizer, seed=3).eval(), tiny_tokenizer)
    recs = many_records(20)
    _, one = evaluate_records(
        s, recs, max_input_tokens=64, max_new_tokens=None, batch_size=1, device="cpu", progress=False
    )
    _, many = evaluate_records(
        s, recs, max_input_tokens=64, max_new_tokens=None, batch_size=16, device="cpu", progress=False
    )
    assert [p["pred_score"] for p in one] == [p["pred_score"] for p in many]
    assert [p["generated"] for p in one] == [p["generated"] for p in many]
    assert all(
        abs(a - b) < 1e-4 for p, q in zip(one, many, strict=True) for a, b in zip(p["scores"], q["scores"], strict=True)
    )


def test_generation_stops_at_the_longest_option(tiny_tokenizer, monkeypatch):
    # guards: a fixed decoding budget cutting long options (38% of PIQA unmatched) or running on
    s = CausalStudent(tiny_causal(tiny_tokenizer, seed=2).eval(), tiny_tokenizer)
    recs = many_records(8)
    budgets, real = [], s.model.generate
    monkeypatch.setattr(s.model, "generate", lambda **kw: budgets.append(kw["max_new_tokens"]) or real(**kw))
    s.generate(recs, 64, None, 8, "cpu")
    longest = max(
        len(tiny_tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for r in recs for c in r["choices"]
    )
    assert budgets == [longest + 1]  # the longest option and its EOS
    s.generate(recs, 64, 2, 8, "cpu")
    assert budgets[-1] == 2  # a configured cap wins when lower


@pytest.mark.parametrize("make, cls", KINDS)
def test_student_that_knows_the_answers_scores_100(tiny_tokenizer, make, cls):
    tok = tiny_tokenizer
    s = cls(make(tok), tok)
    exs = [{"record": r, "rationales": {}} for r in records()]
    cfg = DistillConfig(
        alphas={}, steps=60, batch_size=4, lr=1e-2, max_input_tokens=64, precision="fp32", valid_loss_per_benchmark=0
    )
    train(s, exs, cfg, progress=False)
    s.model.eval()
    metrics, preds = evaluate_records(
        s, records("valid"), max_input_tokens=64, max_new_tokens=None, batch_size=3, device="cpu", progress=False
    )
    assert metrics["acc_score"] == 1.0 and metrics["acc_generate"] == 1.0
    assert [p["generated"] for p in preds] == [r["answer"] for r in records()]
    # its greedy answers follow the options, so they are read off scoring: nothing is decoded,
    # and decoding every question (the reference path) gives the same texts
    assert metrics["n_decoded"] == 0
    (_, fast), (ref_metrics, ref) = both_paths(s, records("valid"), max_new_tokens=None, batch_size=3)
    assert [p["generated"] for p in ref] == [p["generated"] for p in preds] == [p["generated"] for p in fast]
    assert ref_metrics["n_decoded"] == len(ref)
    # an untrained student of the same shape does not know them
    fresh, _ = evaluate_records(
        cls(make(tok, seed=1).eval(), tok),
        records("valid"),
        max_input_tokens=64,
        max_new_tokens=None,
        batch_size=3,
        device="cpu",
        progress=False,
    )
    assert fresh["acc_generate"] < 1.0


def test_average_is_unweighted_over_benchmarks():
    avg = average(
        {"a": {"accuracy": 1.0, "acc_score": 1.0, "n": 10}, "b": {"accuracy": 0.0, "acc_score": 0.0, "n": 90}}
    )
    assert avg["accuracy"] == 0.5 and avg["n"] == 100


def test_greedy_path_along_options():
    # greedy[j][t]: the argmax after the prompt and options[j][:t] (options 0 and 1 share [5], so
    # greedy[0][1] == greedy[1][1]); EOS = 0
    options = [[5, 6, 0], [5, 7, 8, 0], [9, 0]]
    # follows option 1 to its EOS: read off scoring, complete
    assert greedy_along_options(options, [[5, 7, 1], [5, 7, 8, 0], [5, 0]], 0, 4) == ([5, 7, 8], True)
    # first token shared by options 0 and 1; then option 0 and its EOS
    assert greedy_along_options(options, [[5, 6, 0], [5, 6, 8, 0], [5, 0]], 0, 4) == ([5, 6], True)
    # token 4 after [5] leaves every option: decoding continues after [5, 4]
    assert greedy_along_options(options, [[5, 4, 0], [5, 4, 8, 0], [5, 0]], 0, 4) == ([5, 4], False)
    # a first token no option starts with
    assert greedy_along_options(options, [[3, 6, 0], [3, 7, 8, 0], [3, 0]], 0, 4) == ([3], False)
    # ... but with a budget of one token there is nothing more to know
    assert greedy_along_options(options, [[3, 6, 0], [3, 7, 8, 0], [3, 0]], 0, 1) == ([3], True)
    # the budget cuts a path that is still on an option
    assert greedy_along_options(options, [[5, 7, 1], [5, 7, 8, 0], [5, 0]], 0, 2) == ([5, 7], True)
    # EOS first: an empty answer
    assert greedy_along_options(options, [[0, 6, 0], [0, 7, 8, 0], [0, 0]], 0, 4) == ([], True)


@pytest.mark.parametrize("make, cls", KINDS)
def test_reading_greedy_off_scores_equals_decoding(tiny_tokenizer, make, cls):
    # guards: the fast generate-and-match path changing a text. A random student leaves the
    # options (decoded); a few questions get a fixed cap on new tokens
    s = cls(make(tiny_tokenizer, seed=4).eval(), tiny_tokenizer)
    recs = many_records(16, seed=2)
    for cap in (None, 2):
        (fast_m, fast), (ref_m, ref) = both_paths(s, recs, max_new_tokens=cap, batch_size=4)
        assert [p["generated"] for p in fast] == [p["generated"] for p in ref]
        assert [p["pred_generate"] for p in fast] == [p["pred_generate"] for p in ref]
        assert fast_m["acc_generate"] == ref_m["acc_generate"] and ref_m["n_decoded"] == len(recs)


def test_an_answer_continued_from_its_prompts_cache_equals_uninterrupted_decoding(tiny_tokenizer):
    # guards: the fast path's continuation (prompt KV cache kept from scoring, then the answer's
    # first tokens) shifting positions across the masked gaps between prompts and answers of
    # different lengths, dropping/duplicating a token, or a row's budget or EOS leaking into
    # another row when rows leave the batch
    s = CausalStudent(tiny_causal(tiny_tokenizer, seed=5).eval(), tiny_tokenizer)
    with torch.no_grad():  # sharp attention, so a token's position (its distance to the prompt) matters
        for layer in s.model.model.layers:
            layer.self_attn.q_proj.weight *= 8
            layer.self_attn.k_proj.weight *= 8
    recs = many_records(6, seed=3)
    prompts = [s.answer_prompt(r, 64) for r in recs]
    assert len(set(map(len, prompts))) > 2  # prompts of different lengths share the batch
    kvs, paths, budgets, expect = [], [], [], []
    for g, p in enumerate(prompts):
        ids = torch.tensor([p])
        full = s.model.generate(
            input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=s.pad_id, eos_token_id=s.eos_id
        )[0, len(p) :].tolist()
        assert s.eos_id not in full[:3]  # three real tokens to start from
        k, budget = 1 + g % 3, 3 + g  # answers begun after 1-3 tokens; budgets 3..8 tokens in all
        tail = full[k:budget]
        if s.eos_id in tail:
            tail = tail[: tail.index(s.eos_id)]
        with torch.no_grad():
            cache = s.model(input_ids=ids, use_cache=True).past_key_values
        kvs.append([(layer.keys, layer.values) for layer in cache.layers])
        paths.append(full[:k])
        budgets.append(budget - k)
        expect.append(tail)
    assert s._continue(kvs, paths, budgets, "cpu") == expect
    # and one at a time
    assert [s._continue([kv], [p], [b], "cpu")[0] for kv, p, b in zip(kvs, paths, budgets, strict=True)] == expect
