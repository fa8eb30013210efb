"""Shared fixtures: a tiny tokenizer trained in the test, tiny random-init students, a few
benchmark rows, and the offline mirror of the authors' release when it sits beside the repo."""

from __future__ import annotations

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


def tiny_causal(tok, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
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
    return LlamaForCausalLM(cfg)


def tiny_seq2seq(tok, seed=0):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(
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
    return T5ForConditionalGeneration(cfg)
