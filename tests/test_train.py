"""Training: the three loss paths agree (loss and gradients), targets, task mapping, batching,
gradient accumulation, steps = 0, logging and LoRA, on tiny random-init students; a checkpoint save
killed midway leaves the previous one whole.

Against a reference built independently here (issue 21), each failing on a one-line breakage:

- one optimizer step of ``train()`` equals AdamW on ``L = w_A L_A + sum_m alpha_m L_m`` computed
  from plain per-sequence forwards (alphas squared, ignored or swapped in the back-propagated loss
  move the weights);
- training-path losses on a model with *sharpened attention* (positions matter): a branch whose
  position ids do not restart at the prefix end changes the loss by far more than the tolerance.
"""

import copy
import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import RATIONALES, distill_cfg, records, tiny_causal, tiny_seq2seq

from tinyllm.config import DistillConfig
from tinyllm.distill import active_teachers, apply_lora, batches, encode_examples, train, valid_losses
from tinyllm.student import CausalStudent, Seq2SeqStudent, load_student, save_student

TEACHERS = ["teacher_a", "teacher_b"]
KINDS = [(tiny_causal, CausalStudent), (tiny_seq2seq, Seq2SeqStudent)]


def examples():
    # teacher_b has no rationale for q4 (like LLaMA on PIQA): that task is simply absent there
    return [
        {
            "record": r,
            "rationales": {
                "teacher_a": RATIONALES[r["id"]],
                **({"teacher_b": RATIONALES[r["id"]][::-1]} if r["id"] != "q4" else {}),
            },
        }
        for r in records()
    ]


cfg = partial(distill_cfg, alphas={"teacher_a": 1.0, "teacher_b": 0.5}, steps=12)


def student(make, cls, tok, seed=0):
    return cls(make(tok, seed=seed), tok)


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("make, cls", KINDS)
def test_tiny_student_loss_goes_down(tiny_tokenizer, make, cls, tmp_path):
    s = student(make, cls, tiny_tokenizer)
    res = train(s, examples(), cfg(), log_path=tmp_path / "log.tsv", progress=False)
    assert res["loss_last"] < 0.8 * res["loss_first"]
    assert res["loss_teacher_b_last"] > 0  # the second teacher's rationales were trained on
    assert (tmp_path / "log.tsv").read_text().count("\n") == 13  # header + one row per step


@pytest.mark.parametrize("make, cls", KINDS)
@pytest.mark.parametrize("pack_tokens, ce_chunk", [(0, 0), (200, 5)])
def test_shared_and_fused_equal_the_per_task_reference(tiny_tokenizer, make, cls, pack_tokens, ce_chunk):
    # speed must never change results: the question encoded once (block mask, packing, chunked
    # cross-entropy) gives the per-task path's loss and gradients, fp32, atol 1e-5
    s = student(make, cls, tiny_tokenizer)
    s.model.eval()
    enc = encode_examples(s, examples(), TEACHERS, cfg())
    w = torch.tensor([1.0, 2.0, 0.5])
    out = {}
    for fw in ("per_task", "fused", "shared"):
        s.model.zero_grad()
        part = s.losses(s.model, enc, 3, fw, pack_tokens=pack_tokens, ce_chunk=ce_chunk)
        (w * part.sums / part.counts).sum().backward()
        out[fw] = (part.sums / part.counts, part.counts, grads(s.model))
    for fw in ("fused", "shared"):
        assert torch.equal(out[fw][1], out["per_task"][1])  # same target tokens
        assert torch.allclose(out[fw][0], out["per_task"][0], atol=1e-5)
        assert torch.allclose(out[fw][2], out["per_task"][2], atol=1e-5)


def test_packed_question_scores_as_if_alone(tiny_tokenizer):
    # guards: a packed row leaking attention between questions or between a question's tasks
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    s.model.eval()
    enc = encode_examples(s, examples(), TEACHERS, cfg())
    alone = sum(s.losses(s.model, [e], 3, "per_task").sums for e in enc)
    packed = s.losses(s.model, enc, 3, "shared", pack_tokens=10_000).sums
    assert len(s.collate_shared(enc, 10_000)["input_ids"]) == 1  # all four questions in one row
    assert torch.allclose(alone, packed, atol=1e-4)


def test_shared_layout_reads_each_question_once(tiny_tokenizer):
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    e = encode_examples(s, examples()[:1], TEACHERS, cfg())[0]
    per_task_tokens = sum(len(e.prefix_ids) + len(b.tag_ids) + len(b.target_ids) - 1 for b in e.branches)
    assert e.n_tokens() == per_task_tokens - 2 * len(e.prefix_ids)  # three tasks, one prefix
    # every task's input is its text tokenized as one string: prefix + tag == tokenize(block + tag)
    block = s.fit_block(records()[0], 64)
    for b, tag in zip(e.branches, ["A:", "Explain (teacher_a):", "Explain (teacher_b):"], strict=True):
        assert e.prefix_ids + b.tag_ids == tiny_tokenizer(block + tag, add_special_tokens=False)["input_ids"]
    assert s.answer_prompt(records()[0], 64) == e.prefix_ids + e.branches[0].tag_ids


@pytest.mark.parametrize("make, cls", KINDS)
def test_cut_target_has_no_eos_and_is_counted(tiny_tokenizer, make, cls):
    # guards: a rationale cut at its cap and then closed with EOS teaches the student to stop mid-sentence
    s = student(make, cls, tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    ids, cut = s.encode_target(RATIONALES["q1"], 5)
    assert cut and len(ids) == 5 and eos not in ids
    ids, cut = s.encode_target("ice", 5)
    assert not cut and ids[-1] == eos
    res = train(s, examples(), cfg(steps=0, max_rationale_tokens=5))
    assert res["cut_targets"]["teacher_a"]["obqa"] == {"targets": 4, "cut": 4}
    assert res["cut_targets"]["answer"]["obqa"]["cut"] == 0


def test_input_is_cut_from_the_question_start_and_keeps_the_options(tiny_tokenizer):
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    rec = {**records()[0], "question": "What melts when it gets warm? " * 20 + "Which conducts heat best?"}
    ids = s.answer_prompt(rec, 40)
    text = tiny_tokenizer.decode(ids)
    assert len(ids) <= 40 + len(tiny_tokenizer("A:", add_special_tokens=False)["input_ids"])
    assert text.rstrip().endswith("(c) paper\nA:") and "Which conducts heat best?" in text


def test_alpha_zero_teacher_adds_no_task(tiny_tokenizer):
    # guards: a teacher with alpha 0 still adding sequences (compute) or loss
    assert active_teachers({"teacher_a": 1.0, "teacher_b": 0.0, "c": 0.5}) == ["teacher_a", "c"]
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    res = train(s, examples(), cfg(alphas={"teacher_a": 1.0, "teacher_b": 0.0}, steps=1), progress=False)
    assert res["sequences"] == 8 and "loss_teacher_b_last" not in res  # 4 answers + 4 teacher_a rationales


def test_teacher_without_any_rationale_is_an_error_naming_it(tiny_tokenizer):
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    with pytest.raises(ValueError, match="teacher_c"):
        train(s, examples(), cfg(alphas={"teacher_a": 1.0, "teacher_c": 1.0}, steps=1), progress=False)


def test_each_alpha_reaches_its_own_teacher(tiny_tokenizer):
    # guards: alphas assigned to the wrong teachers inside train(). The first logged row is computed
    # with the initial weights, so it must equal the reference per-task means of each teacher's
    # own text, and the total must weigh each with its own alpha.
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    ref_model = copy.deepcopy(s.model).eval()
    exs = [{"record": r, "rationales": {"teacher_a": RATIONALES[r["id"]], "teacher_b": "Short."}} for r in records()]
    c = cfg(alphas={"teacher_b": 0.25, "teacher_a": 3.0}, steps=1)
    row = {}
    train(s, exs, c, progress=False, on_log=row.update)
    ref = CausalStudent(ref_model, tiny_tokenizer)
    with torch.no_grad():
        part = ref.losses(ref_model, encode_examples(ref, exs, ["teacher_b", "teacher_a"], c), 3, "per_task")
    mean = part.sums / part.counts
    assert row["loss_teacher_b"] == pytest.approx(float(mean[1]), abs=1e-5)
    assert row["loss_teacher_a"] == pytest.approx(float(mean[2]), abs=1e-5)
    assert row["loss"] == pytest.approx(float(mean[0] + 0.25 * mean[1] + 3.0 * mean[2]), abs=1e-4)


def test_absent_task_is_logged_as_nan_not_zero(tiny_tokenizer):
    # guards: per-task logs averaging in zeros for tasks absent from a step
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    exs = examples()
    exs[0]["rationales"] = {}  # q1 has no rationale at all
    rows = []
    train(s, exs, cfg(steps=4, batch_size=1), progress=False, on_log=rows.append)
    only_q1 = [r for r in rows if math.isnan(r["loss_teacher_a"])]
    assert only_q1 and all(r["loss"] == pytest.approx(r["loss_answer"]) for r in only_q1)
    assert all(r["loss_teacher_a"] > 0 for r in rows if r not in only_q1)


def test_batches_visit_every_question_once_per_epoch_in_an_order_independent_of_rationales(tiny_tokenizer):
    # guards: bucketing dropping or repeating a question, and label-only vs TinyLLM arms with the
    # same seed training on different questions in a different order (unpaired arms)
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    exs = examples() * 5
    tinyllm = encode_examples(s, exs, TEACHERS, cfg())
    label_only = encode_examples(s, exs, [], cfg())
    a, b = batches(tinyllm, 3, seed=7), batches(label_only, 3, seed=7)
    n_batches = math.ceil(len(exs) / 3)
    epoch_a = [next(a) for _ in range(n_batches)]
    assert sorted(i for bt in epoch_a for i in bt) == list(range(len(exs)))
    assert epoch_a == [next(b) for _ in range(n_batches)]
    # two processes share each global batch between them
    r0, r1 = batches(tinyllm, 2, 7, rank=0, world=2), batches(tinyllm, 2, 7, rank=1, world=2)
    assert sorted(next(r0) + next(r1)) == sorted(next(batches(tinyllm, 4, 7)))


def test_grad_accum_gives_the_step_of_the_full_batch(tiny_tokenizer):
    # guards: micro-batch losses normalised per micro-batch (or divided twice): 2 x 2 questions
    # must make the same update as 1 x 4 (fp32; atol 1e-6 on every weight)
    out = []
    for bs, acc in ((4, 1), (2, 2)):
        s = student(tiny_causal, CausalStudent, tiny_tokenizer)
        train(s, examples(), cfg(steps=1, batch_size=bs, grad_accum=acc, lr=1e-3), progress=False)
        out.append(torch.cat([p.detach().flatten() for p in s.model.parameters()]))
    assert torch.allclose(out[0], out[1], atol=1e-6)


def test_memory_savers_change_no_number(tiny_tokenizer, monkeypatch):
    # gradient checkpointing recomputes activations and malloc_trim hands freed heap pages back
    # to the OS after every step and validation pass: less memory, the same weights (fp32, atol 1e-6)
    import sys

    import tinyllm.distill as distill

    real, calls = distill.malloc_trim, []
    monkeypatch.setattr(distill, "malloc_trim", lambda: calls.append(1) or real())
    out = []
    for kw in ({}, {"gradient_checkpointing": True, "malloc_trim": True}):
        s = student(tiny_causal, CausalStudent, tiny_tokenizer)
        train(s, examples(), cfg(steps=3, lr=1e-3, log_every=2, **kw), progress=False, valid_examples=examples()[:2])
        out.append(torch.cat([p.detach().flatten() for p in s.model.parameters()]))
    assert calls == [1] * 5  # once per optimizer step (3) and validation pass (steps 2, 3), only when asked
    assert torch.allclose(out[0], out[1], atol=1e-6)
    if sys.platform.startswith("linux"):
        assert real() is True  # glibc found: the trim really runs


def test_steps_zero_leaves_the_student_unchanged(tiny_tokenizer, tmp_path):
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    res = train(s, examples(), cfg(steps=0), log_path=tmp_path / "log.tsv")
    assert res["steps"] == 0
    assert all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())
    assert (tmp_path / "log.tsv").read_text() == "step\tloss\n"


def test_validation_pass_keeps_no_graph(tiny_tokenizer, monkeypatch):
    # guards: the per-task validation loss building an autograd graph (eval mode turns
    # checkpointing off, so the graph would hold every activation of the pass)
    s, c = student(tiny_causal, CausalStudent, tiny_tokenizer), cfg()
    grad_mode, losses = [], CausalStudent.losses
    monkeypatch.setattr(
        CausalStudent, "losses", lambda *a, **kw: grad_mode.append(torch.is_grad_enabled()) or losses(*a, **kw)
    )
    vl = valid_losses(s, s.model, encode_examples(s, examples()[:2], TEACHERS, c), 3, c, "cpu")
    assert vl.shape == (3,) and torch.isfinite(vl).all()
    assert grad_mode == [False]


def test_valid_losses_are_logged_per_task(tiny_tokenizer):
    s = student(tiny_causal, CausalStudent, tiny_tokenizer)
    rows = []
    train(s, examples(), cfg(steps=4, log_every=2), progress=False, on_log=rows.append, valid_examples=examples()[:2])
    assert [("valid_loss_teacher_a" in r) for r in rows] == [False, True, False, True]
    assert rows[3]["valid_loss_answer"] < rows[1]["valid_loss_answer"] + 1.0


def test_lora_trains_adapters_and_saves_merged_checkpoint(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    s = student(tiny_causal, CausalStudent, tok)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    apply_lora(s, {"r": 4, "alpha": 8})
    res = train(s, examples(), cfg(alphas={}, steps=8), progress=False)
    assert res["loss_last"] < res["loss_first"]
    save_student(s.model, tok, tmp_path / "s", {"teachers": []})
    reloaded = load_student(tmp_path / "s")
    changed = [k for k, v in reloaded.model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed and all("proj" in k for k in changed)  # merged adapters changed the projections only


def test_save_student_is_atomic(tiny_tokenizer, tmp_path):
    # fault 8: a kill mid-save left models/student with config files only; now the save goes to a
    # temporary sibling and is renamed: the previous checkpoint stays whole until the new one is
    class Killed(BaseException):  # like SIGTERM's KeyboardInterrupt/SystemExit: not an Exception
        pass

    class DyingTokenizer:  # the model's files are written, then the process dies
        def save_pretrained(self, d):
            raise Killed

    out = tmp_path / "models" / "student"
    with pytest.raises(Killed):
        save_student(tiny_causal(tiny_tokenizer, seed=2), DyingTokenizer(), out, {"teachers": ["b"]})
    assert not out.exists()  # no checkpoint rather than a folder that looks like one
    first = tiny_causal(tiny_tokenizer, seed=1)
    save_student(first, tiny_tokenizer, out, {"teachers": ["a"]})
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(Killed):
        save_student(tiny_causal(tiny_tokenizer, seed=2), DyingTokenizer(), out, {"teachers": ["b"]})
    assert sorted(p.name for p in out.iterdir()) == before
    kept = load_student(out).model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in first.state_dict().items())  # the old weights, whole
    assert json.loads((out / "tinyllm.json").read_text()) == {"teachers": ["a"]}
    assert [p.name for p in out.parent.iterdir()] == ["student"]  # no half-written sibling left
    save_student(tiny_causal(tiny_tokenizer, seed=2), tiny_tokenizer, out, {"teachers": ["b"]})
    assert json.loads((out / "tinyllm.json").read_text()) == {"teachers": ["b"]}
    assert load_student(out).model.config.vocab_size == len(tiny_tokenizer)
    assert [p.name for p in out.parent.iterdir()] == ["student"]


# ----------------------------------------------------------------- against an independent reference

ALPHAS = {"teacher_a": 0.5, "teacher_b": 2.0}  # alpha^2 != alpha, and unequal
one_step_cfg = partial(  # one step at a constant rate, alphas that differ from their squares
    distill_cfg,
    alphas=ALPHAS,
    answer_weight=1.0,
    steps=1,
    grad_accum=1,
    lr=1e-3,
    lr_schedule="constant",
    forward="shared",
    pack_tokens=0,
    ce_chunk_tokens=7,
)


def sharpen(model, factor: float = 6.0):
    """Scale the query and key projections: attention logits grow by factor^2, so attention is
    peaked and which token sits where (RoPE) decides the output. A random tiny model barely uses
    positions otherwise (a position bug moved the loss by 1e-5)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(factor)
    return model


def reference_task_losses(student, model, c: DistillConfig) -> dict[int, torch.Tensor]:
    """Mean target-token NLL of each task over the batch, one plain forward per (question, task)
    with the model's default positions (causal: prefix + tag + target in one sequence; seq2seq:
    the encoder reads the question, the decoder [start] + tag + target)."""
    teachers = active_teachers(c.alphas)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    for e in encode_examples(student, examples(), teachers, c):
        for b in e.branches:
            if student.kind == "causal":
                seq = e.prefix_ids + b.tag_ids + b.target_ids
                logits = model(input_ids=torch.tensor([seq])).logits[0]
                first = len(e.prefix_ids) + len(b.tag_ids)
                nll = F.cross_entropy(logits[first - 1 : -1], torch.tensor(b.target_ids), reduction="sum")
            else:
                start = model.config.decoder_start_token_id
                dec = [start] + b.tag_ids + b.target_ids[:-1]
                logits = model(input_ids=torch.tensor([e.prefix_ids]), decoder_input_ids=torch.tensor([dec])).logits[0]
                nll = F.cross_entropy(logits[len(b.tag_ids) :], torch.tensor(b.target_ids), reduction="sum")
            sums[b.task] = sums.get(b.task, 0) + nll
            counts[b.task] = counts.get(b.task, 0) + len(b.target_ids)
    return {t: sums[t] / counts[t] for t in sums}


def sharp_student(kind, tok, seed=0):
    """Causal: sharpened attention; seq2seq: dropout off (train() and the reference agree)."""
    if kind == "causal":
        return CausalStudent(sharpen(tiny_causal(tok, seed=seed)), tok)
    model = tiny_seq2seq(tok, seed=seed)
    for m in model.modules():  # T5's dropout would make train() and the reference differ at random
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "dropout", None), float):  # T5Attention's functional dropout rate
            m.dropout = 0.0
    return Seq2SeqStudent(model, tok)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_one_step_equals_adamw_on_the_reference_loss(tiny_tokenizer, kind):
    # guards the back-propagated loss: alpha*alpha, ignoring the alphas or giving them to the wrong
    # teachers left the *logged* loss right (the checks above read it), but not this step
    c = one_step_cfg()
    s = sharp_student(kind, tiny_tokenizer)
    ref_model = copy.deepcopy(s.model)
    ref_model.train()
    losses = reference_task_losses(s, ref_model, c)
    weights = {0: c.answer_weight, 1: ALPHAS["teacher_a"], 2: ALPHAS["teacher_b"]}
    loss = sum(weights[t] * v for t, v in losses.items())
    loss.backward()
    opt = torch.optim.AdamW([p for p in ref_model.parameters() if p.requires_grad], lr=c.lr, weight_decay=0.0)
    opt.step()

    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    res = train(s, examples(), c, progress=False)
    assert res["loss_first"] == pytest.approx(float(loss.detach()), rel=1e-5)
    got, want = s.model.state_dict(), ref_model.state_dict()
    moved = [k for k in want if not torch.equal(want[k], before[k])]
    assert moved, "the reference step moved nothing"
    bad = {k: float((got[k] - want[k]).abs().max()) for k in moved if not torch.allclose(got[k], want[k], atol=2e-6)}
    assert not bad, f"{len(bad)} of {len(moved)} tensors differ from the reference step: {bad}"


def test_shared_path_losses_equal_independent_sequences_with_sharp_attention(tiny_tokenizer):
    # guards: a branch's position ids must restart at the prefix end (each task sees
    # prefix + its own continuation, positions 0..n-1); with sharp attention a wrong position
    # moves the loss by >> 1e-4, where a plain tiny model moved it by 1e-5
    c = one_step_cfg()
    s = sharp_student("causal", tiny_tokenizer)
    s.model.eval()
    teachers = active_teachers(c.alphas)
    enc = encode_examples(s, examples(), teachers, c)
    with torch.no_grad():
        ref = reference_task_losses(s, s.model, c)
        for forward, pack in (("shared", 0), ("shared", 200), ("fused", 0), ("per_task", 0)):
            part = s.losses(s.model, enc, 3, forward, pack_tokens=pack, ce_chunk=7)
            got = part.sums / part.counts
            for t, v in ref.items():
                assert float(got[t]) == pytest.approx(float(v), rel=1e-4, abs=1e-5), (forward, pack, t)
