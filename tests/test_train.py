"""Tiny seq2seq and causal students train a few steps and lower their loss; the fused
(one-forward) path equals the authors' one-forward-per-task path; LoRA trains adapters only."""

import random

import pytest
import torch
from conftest import RATIONALES, records, tiny_causal, tiny_seq2seq

from tinyllm.config import DistillConfig
from tinyllm.distill import encode_example, save_student, step_loss, train
from tinyllm.modeling import load_student

TEACHERS = ["teacher_a", "teacher_b"]


def examples():
    # teacher_b has no rationale for q4 (like LLaMA on PIQA): that task is simply absent there
    return [{"record": r, "rationales": {"teacher_a": RATIONALES[r["id"]],
                                         **({"teacher_b": RATIONALES[r["id"]][::-1]} if r["id"] != "q4" else {})}}
            for r in records()]


def cfg(**kw):
    base = dict(alphas={"teacher_a": 1.0, "teacher_b": 0.5}, steps=12, batch_size=4, lr=1e-2,
                max_input_tokens=64, max_rationale_tokens=24, precision="fp32", log_every=100)
    return DistillConfig(**{**base, **kw})


@pytest.mark.parametrize("make, seq2seq", [(tiny_causal, False), (tiny_seq2seq, True)])
def test_tiny_student_loss_goes_down(tiny_tokenizer, make, seq2seq, tmp_path):
    model = make(tiny_tokenizer)
    res = train(model, tiny_tokenizer, seq2seq, examples(), TEACHERS, cfg(), log_path=tmp_path / "log.tsv",
                progress=False)
    assert res["loss_last"] < 0.8 * res["loss_first"]
    assert res["loss_teacher_b_last"] > 0  # the second teacher's rationales were trained on
    assert (tmp_path / "log.tsv").read_text().count("\n") == 13  # header + one row per step


@pytest.mark.parametrize("make, seq2seq", [(tiny_causal, False), (tiny_seq2seq, True)])
def test_fused_forward_equals_one_forward_per_task(tiny_tokenizer, make, seq2seq):
    # speed must never change results: same loss and same gradients, fp32, atol 1e-5
    tok = tiny_tokenizer
    model = make(tok).eval()
    seqs = [s for ex in examples() for s in encode_example(tok, ex, TEACHERS, cfg(), seq2seq)]
    random.Random(0).shuffle(seqs)
    w = torch.tensor([1.0, 2.0, 0.5])
    fused, per_f = step_loss(model, seqs, w, seq2seq, tok.pad_token_id, True, "cpu")
    fused.backward()
    g_fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref, per_r = step_loss(model, seqs, w, seq2seq, tok.pad_token_id, False, "cpu")
    ref.backward()
    assert torch.allclose(fused, ref, atol=1e-5) and torch.allclose(per_f, per_r, atol=1e-5)
    for a, p in zip(g_fused, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_left_padding_does_not_change_a_sequences_loss(tiny_tokenizer):
    # position ids follow the attention mask: a sequence scores the same alone or padded in a batch
    tok = tiny_tokenizer
    model = tiny_causal(tok).eval()
    seqs = [s for ex in examples() for s in encode_example(tok, ex, TEACHERS, cfg(), False)]
    short = min(seqs, key=lambda s: len(s.input_ids) + len(s.target_ids))
    one = torch.tensor([1.0, 1.0, 1.0])
    alone, _ = step_loss(model, [short], one, False, tok.pad_token_id, True, "cpu")
    longest = max(seqs, key=lambda s: len(s.input_ids) + len(s.target_ids))
    longest.task = short.task
    _, per = step_loss(model, [short, longest], one, False, tok.pad_token_id, True, "cpu")
    both_alone, _ = step_loss(model, [longest], one, False, tok.pad_token_id, True, "cpu")
    n_s, n_l = len(short.target_ids), len(longest.target_ids)
    expected = (alone * n_s + both_alone * n_l) / (n_s + n_l)
    assert torch.allclose(per[short.task], expected, atol=1e-5)


def test_lora_trains_adapters_and_saves_merged_checkpoint(tiny_tokenizer, tmp_path):
    from tinyllm.distill import apply_lora

    tok = tiny_tokenizer
    base = tiny_causal(tok)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, {"r": 4, "alpha": 8}, False)
    res = train(model, tok, False, examples(), [], cfg(alphas={}, steps=8), progress=False)
    assert res["loss_last"] < res["loss_first"]
    save_student(res["_model"], tok, tmp_path / "s", {"teachers": []})
    reloaded, _, _ = load_student(tmp_path / "s")
    changed = [k for k, v in reloaded.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed and all("proj" in k for k in changed)  # merged adapters changed the projections only
