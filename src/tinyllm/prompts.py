"""The student's input format, as text: the question block, then one tag per task.

Two answer formats (``distill.answer_format``), with the same question prefix for every task:

    listed (the paper's)                        cloze (lm-evaluation-harness / OLMES style)
    Q: <question>                               Question: <question>
    Answer Choices:                             Answer: <option text>
    (a) <option>
    (b) <option>
    A: <option text>

and one rationale task per teacher after the same block: ``Explain (<teacher>): <rationale>``
(or, with ``distill.rationale_position: after_answer``, after the gold answer:
``A: <option text>\nExplain (<teacher>): <rationale>``). In the cloze format the options are
never shown: each is scored as a continuation of ``Answer:`` (``evaluate.py``'s rules).

Every task reads the same question block and differs only in the tag after it, so the block is a
common prefix of all tasks: the student encodes it once per question and branches per task
(``student/``). At test time only the answer tag is used. The authors put a task prefix
*before* the question ("predict: ", "explain: "), which forces one full pass per task.

Pure text, no tokenizer and no kind of student: ``student/`` turns these strings into ids.
"""

from __future__ import annotations

ANSWER_TAG = "A:"  # the listed format's answer tag (kept as a name: the paper's layout)
FORMATS = ("listed", "cloze")
ANSWER_TAGS = {"listed": ANSWER_TAG, "cloze": "Answer:"}
RATIONALE_POSITIONS = ("branch", "after_answer")


def answer_tag(fmt: str = "listed") -> str:
    """The tag after which the answer task's target (the option text) follows."""
    if fmt not in ANSWER_TAGS:
        raise ValueError(f"answer format {fmt!r} not in {FORMATS}")
    return ANSWER_TAGS[fmt]


def rationale_tag(teacher: str) -> str:
    """One tag per teacher (the authors used the prefixes "explain: " and "rationale: ")."""
    return f"Explain ({teacher}):"


def letter(i: int) -> str:
    return chr(ord("a") + i)


def rationale_after_answer_tag(teacher: str, answer: str, fmt: str = "listed") -> str:
    """The rationale task's tag when the rationale follows the gold answer (Wadhwa et al.)."""
    return f"{answer_tag(fmt)} {answer}\n{rationale_tag(teacher)}"


def question_block(question: str, choices: list[str], fmt: str = "listed") -> str:
    """The shared prefix of every task, ending in a newline: the question and lettered options
    (``listed``), or the question alone (``cloze``)."""
    if fmt == "cloze":
        return f"Question: {question}\n"
    if fmt != "listed":
        raise ValueError(f"answer format {fmt!r} not in {FORMATS}")
    opts = "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(choices))
    return f"Q: {question}\nAnswer Choices:\n{opts}\n"
