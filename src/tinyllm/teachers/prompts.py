"""Teacher prompts in the paper's shape, as plain text or as chat messages.

Teacher forcing on (the paper)::

    Question:
    <question>
    Options:
    (a) <choice 0>
    (b) <choice 1>
    Answer:
    (b) <choice 1>
    Rationale:
    Let's think step by step.

The teacher continues after "Let's think step by step." and explains a *known* answer.
Teacher forcing off (the ablation): the block ends at "Answer:"; the teacher picks an option and
explains it, and ``parse_answer`` reads the option it picked.

In-context examples are the same block with their rationale filled in, rendered before the
question. ``plain`` prompts concatenate the blocks; ``chat`` prompts (instruct models) put a
system prompt first and each example as a user turn followed by an assistant turn holding the
example's rationale, so the model sees what a good reply looks like.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..rationales import prompt_hash

COT = "Let's think step by step."
SYSTEM_FORCED = (
    "You are a science teacher. The correct answer is given; explain in one or two sentences why it is correct."
)
SYSTEM_OPEN = (
    "You are a science teacher. Choose the correct option, write its letter and text, "
    "then explain in one or two sentences why it is correct."
)
# A teacher that keeps going writes the next exercise; everything from there on is cut.
_RUNON = re.compile(r"\n\s*(?:Question:|Q:|Options:|Answer Choices:|#{2,})|<\|im_(?:start|end)\|>")


def letter(i: int) -> str:
    return chr(ord("a") + i)


def trim_words(text: str, max_words: int | None) -> str:
    """Keep the last ``max_words`` words: long PubMedQA/BioASQ contexts come first, the question last."""
    if max_words is None:
        return text
    words = text.split()
    if len(words) <= max_words:
        return text
    return "... " + " ".join(words[-max_words:])


def question_block(record: dict, teacher_forcing: bool, max_words: int | None = None) -> str:
    """The block up to where the teacher takes over (``Let's think step by step.`` or ``Answer:``)."""
    opts = "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(record["choices"]))
    head = f"Question:\n{trim_words(record['question'], max_words)}\nOptions:\n{opts}\nAnswer:\n"
    if teacher_forcing:
        return head + f"({letter(record['label'])}) {record['answer']}\nRationale:\n{COT}"
    return head


def example_reply(example: dict, rationale: str, teacher_forcing: bool) -> str:
    """What the teacher should write after the question block, for an in-context example."""
    if teacher_forcing:
        return rationale.strip()
    return f"({letter(example['label'])}) {example['answer']}\nRationale:\n{rationale.strip()}"


@dataclass
class TeacherPrompt:
    """One question's prompt, in both forms a backend may need.

    ``messages`` is the chat form (``[{"role", "content"}, ...]``, None for plain prompts);
    ``text`` is the plain prompt, or for chat a readable rendering of the messages (backends that
    apply a chat template report the exact string they fed the model as ``Generation.prompt_text``).
    """

    qid: str
    format: str  # "chat" | "plain"
    text: str
    messages: list[dict] | None
    icl_ids: list[str]
    teacher_forcing: bool
    hash: str = ""
    settings: dict = field(default_factory=dict)

    def key_text(self) -> str:
        """The exact input that the prompt hash covers."""
        if self.messages is not None:
            return json.dumps(self.messages, ensure_ascii=False)
        return self.text


def build_prompt(
    record: dict,
    examples: list[tuple[dict, str]],
    *,
    teacher_forcing: bool,
    fmt: str,
    system_prompt: str | None = None,
    max_words: int | None = None,
    decoding: dict | None = None,
) -> TeacherPrompt:
    """The prompt for ``record`` with ``examples`` = [(example record, its rationale), ...].

    ``fmt`` is "chat" or "plain" (resolve "auto" with the backend first). ``decoding`` (model,
    max_new_tokens, temperature, ...) goes into the hash, so changing it regenerates the record.
    """
    if fmt not in ("chat", "plain"):
        raise ValueError(f"prompt format {fmt!r}: resolve 'auto' to 'chat' or 'plain' first")
    icl_ids = [ex["id"] for ex, _ in examples]
    block = question_block(record, teacher_forcing, max_words)
    if fmt == "plain":
        # Forced: "... Let's think step by step. <rationale>"; open: "Answer:\n(x) ...\nRationale:\n...".
        # The question's own block ends exactly where the examples' replies start.
        sep = " " if teacher_forcing else ""
        parts = [
            question_block(ex, teacher_forcing, max_words) + sep + example_reply(ex, rat, teacher_forcing)
            for ex, rat in examples
        ]
        text = "\n\n".join([*parts, block])
        messages = None
    else:
        system = system_prompt or (SYSTEM_FORCED if teacher_forcing else SYSTEM_OPEN)
        messages = [{"role": "system", "content": system}]
        for ex, rat in examples:
            messages.append({"role": "user", "content": question_block(ex, teacher_forcing, max_words)})
            messages.append({"role": "assistant", "content": example_reply(ex, rat, teacher_forcing)})
        messages.append({"role": "user", "content": block})
        text = "\n\n".join(f"<{m['role']}>\n{m['content']}" for m in messages)
    settings = {"teacher_forcing": teacher_forcing, "icl_ids": icl_ids, "format": fmt, **(decoding or {})}
    p = TeacherPrompt(
        qid=record["id"],
        format=fmt,
        text=text,
        messages=messages,
        icl_ids=icl_ids,
        teacher_forcing=teacher_forcing,
        settings=settings,
    )
    p.hash = prompt_hash(p.key_text(), settings)
    return p


def clean_output(text: str) -> tuple[str, list[str]]:
    """Strip the generated text and cut a run-on next exercise; returns (rationale, flags)."""
    flags = []
    m = _RUNON.search(text)
    if m:
        text = text[: m.start()]
        flags.append("runon_cut")
    text = text.strip()
    if text.startswith(COT):  # some teachers echo the opener
        text = text[len(COT) :].strip()
    return text, flags


_LETTER_PATTERNS = (
    re.compile(r"^\s*(?:answer\s*:?\s*)?\(([a-z])\)", re.I),  # "(b) ..." / "Answer: (b)"
    re.compile(r"^\s*(?:answer\s*:?\s*)?([a-z])[\).:]\s", re.I),  # "b) ..." / "b. ..."
    re.compile(r"answer is:?\s*\(?([a-z])\)?(?:\W|$)", re.I),  # "... the answer is (b)"
)


def parse_answer(text: str, choices: list[str]) -> int | None:
    """The option a teacher picked: a leading or stated letter, else the one option text it quotes.

    Returns the option index, or None when no single option can be read (counted, never guessed).
    """
    for pat in _LETTER_PATTERNS:
        m = pat.search(text)
        if m:
            i = ord(m.group(1).lower()) - ord("a")
            if 0 <= i < len(choices):
                return i
    low = text.lower()
    hits = [i for i, c in enumerate(choices) if c.strip() and c.strip().lower() in low]
    # An option that is a substring of another ("yes" in "yes, maybe") is ambiguous: keep the longest.
    hits = [i for i in hits if not any(j != i and choices[i].lower() in choices[j].lower() for j in hits)]
    return hits[0] if len(hits) == 1 else None


def contradicts_gold(rationale: str, record: dict) -> bool:
    """Teacher forcing on: does the rationale state a *different* option as the answer?"""
    for pat in _LETTER_PATTERNS[2:]:
        m = pat.search(rationale)
        if m:
            i = ord(m.group(1).lower()) - ord("a")
            return 0 <= i < len(record["choices"]) and i != record["label"]
    return False
