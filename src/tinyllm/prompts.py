"""The student's input format: one prefix per task, the question, lettered options.

Training and evaluation encode inputs through the same function (``encode_input``), so the
student sees at test time exactly what it learned on. Long inputs are cut from the *start of
the question*: for PubMedQA/BioASQ the question field is "<context passages> \\n <question>",
so the question itself and the options always survive (the authors' code cut the end, losing
the question, at 100 tokens).
"""

from __future__ import annotations

ANSWER_PREFIX = "predict: "


def rationale_prefix(teacher: str) -> str:
    """One input prefix per teacher (the authors used "explain: " and "rationale: ")."""
    return f"explain ({teacher}): "


def letter(i: int) -> str:
    return chr(ord("a") + i)


def options_block(choices: list[str]) -> str:
    return "\nAnswer Choices:\n" + "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(choices))


def format_input(prefix: str, record: dict) -> str:
    """The full (untruncated) input text; ``encode_input`` is the tokenised, length-safe form."""
    return f"{prefix}Q: {record['question']}{options_block(record['choices'])}\nA:"


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_input(tokenizer, prefix: str, record: dict, max_tokens: int, seq2seq: bool) -> list[int]:
    """Token ids of the input, at most ``max_tokens``, cutting the question from its start.

    Seq2seq inputs end with EOS (as T5 tokenizers do); causal inputs start with BOS when the
    tokenizer defines one that it adds by default.
    """
    head = _ids(tokenizer, f"{prefix}Q: ")
    question = _ids(tokenizer, record["question"])
    tail = _ids(tokenizer, f"{options_block(record['choices'])}\nA:")
    special_start, special_end = [], []
    if seq2seq and tokenizer.eos_token_id is not None:
        special_end = [tokenizer.eos_token_id]
    if not seq2seq and tokenizer.bos_token_id is not None and _adds_bos(tokenizer):
        special_start = [tokenizer.bos_token_id]
    budget = max_tokens - len(head) - len(tail) - len(special_start) - len(special_end)
    if budget < 8:
        # the options alone overflow: keep the question's last 8 tokens, cut the options' end
        question = question[-8:]
        ids = special_start + head + question + tail
        return ids[: max_tokens - len(special_end)] + special_end
    if len(question) > budget:
        question = question[-budget:]
    return special_start + head + question + tail + special_end


def _adds_bos(tokenizer) -> bool:
    cached = getattr(tokenizer, "_tinyllm_adds_bos", None)
    if cached is None:
        ids = tokenizer("a")["input_ids"]
        cached = bool(ids) and ids[0] == tokenizer.bos_token_id
        try:
            tokenizer._tinyllm_adds_bos = cached
        except AttributeError:
            pass
    return cached


def encode_target(tokenizer, text: str, max_tokens: int, seq2seq: bool) -> list[int]:
    """Target ids ending with EOS (so the student learns where an answer stops)."""
    ids = _ids(tokenizer, text if seq2seq else " " + text)
    ids = ids[: max_tokens - 1]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids
