"""Shared fixtures and factories: a tiny tokenizer trained in the test, the one tiny-model factory
(``tiny_causal`` / ``tiny_seq2seq``), the one tiny training config (``distill_cfg``), the real
params.yaml shrunk (``shrunk_params``), a few benchmark rows, and the offline mirror of the
authors' release when it sits beside the repo.

Plain functions, not fixtures, so test modules, helper modules (pipeline_copy, teachers_testlib)
and scripts started by tests (torchrun workers) import them: ``from conftest import ...``."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
MIRROR = ROOT.parent / "shared" / "benchmarks" / "tinyllm-release"

QUESTIONS = [
    {
        "id": "q1",
        "question": "Which of these conducts heat best?",
        "choices": ["wood", "steel", "paper"],
        "answer": "steel",
    },
    {
        "id": "q2",
        "question": "What do plants need to make food?",
        "choices": ["sunlight", "darkness", "sand"],
        "answer": "sunlight",
    },
    {"id": "q3", "question": "What melts when it gets warm?", "choices": ["rock", "glass", "ice"], "answer": "ice"},
    {"id": "q4", "question": "Which animal can fly?", "choices": ["bird", "fish", "worm"], "answer": "bird"},
]
RATIONALES = {
    "q1": "Steel is a metal and metals conduct heat well.",
    "q2": "Plants use sunlight in photosynthesis to make sugar.",
    "q3": "Ice is frozen water and melts above zero degrees.",
    "q4": "Birds have wings and hollow bones so they fly.",
}


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "datasets").is_dir():
        pytest.skip(f"offline mirror not found at {MIRROR}")
    return MIRROR


def records(split="train"):
    out = []
    for q in QUESTIONS:
        out.append({**q, "benchmark": "obqa", "split": split, "label": q["choices"].index(q["answer"])})
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


def build_tiny_tokenizer():
    """A byte-level BPE trained on the fixture text in ~0.1 s (no hub access needed).
    A plain function too, so scripts started by tests (torchrun workers) can build it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [q["question"] + " " + " ".join(q["choices"]) for q in QUESTIONS] + list(RATIONALES.values())
    corpus += ["predict: Q: Answer Choices: (a) (b) (c) A: explain (teacher_a): (teacher_b):"] * 3
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_causal(tok, seed=0, **config):
    """A random-init 2-layer Llama (hidden 32) sized to ``tok``, seeded. ``config`` overrides
    LlamaConfig fields (the teachers' tiny model: 2 heads, 1 key/value head, 2048 positions)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(LlamaConfig(**{**base, **config}))


def tiny_seq2seq(tok, seed=0, **config):
    """A random-init 2-layer T5 (d_model 32) sized to ``tok``, seeded; ``config`` overrides
    T5Config fields (the teachers' tiny T5: 1 layer, 2 heads of 16)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    base = dict(
        vocab_size=len(tok),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return T5ForConditionalGeneration(T5Config(**{**base, **config}))


# What every tiny training run shares: 4 questions a batch, short inputs, fp32, no logging or
# validation pass. Everything else is DistillConfig's default unless a test says otherwise.
TINY_DISTILL = dict(
    batch_size=4,
    lr=1e-2,
    max_input_tokens=64,
    max_rationale_tokens=24,
    precision="fp32",
    log_every=100,
    valid_loss_per_benchmark=0,
)


def distill_cfg(**kw):
    """``DistillConfig`` of a tiny training run: ``TINY_DISTILL`` with ``kw`` on top (a test file
    names its own run once, e.g. ``cfg = functools.partial(distill_cfg, steps=12, alphas=...)``).
    Values are copied, so a partial's ``alphas`` dict is never shared between configs."""
    from tinyllm.config import DistillConfig

    return DistillConfig(**copy.deepcopy({**TINY_DISTILL, **kw}))


def shrunk_params(benchmarks, *, source=None, steps=2, distill=None, evaluate=None) -> dict:
    """The real params.yaml, shrunk to run in seconds: ``benchmarks`` only, no local teachers (their
    generate stages have their own tests; their alphas go too), 4 train questions per benchmark,
    ``steps`` steps of 2 questions, 64 input / 16 rationale tokens, 3 eval questions per benchmark.
    ``source``: data.source; ``distill`` / ``evaluate``: more keys of those sections on top."""
    import yaml

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    if source is not None:
        p["data"]["source"] = str(source)
    p["data"]["benchmarks"] = list(benchmarks)
    for t in list(p.get("teachers") or {}):
        del p["teachers"][t]
        (p["distill"].get("alphas") or {}).pop(t, None)
    shrink = dict(train_per_benchmark=4, steps=steps, batch_size=2, max_input_tokens=64, max_rationale_tokens=16)
    p["distill"].update({**shrink, **(distill or {})})
    p["evaluate"].update({"max_per_benchmark": 3, "max_input_tokens": 64, **(evaluate or {})})
    return p
