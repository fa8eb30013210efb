"""The student's input format, as text: the question block, then one tag per task.

    Q: <question>
    Answer Choices:
    (a) <option>
    (b) <option>
    A: <answer>                                 # the answer task
    Explain (<teacher>): <teacher's rationale>  # one rationale task per teacher

Every task reads the same question block and differs only in the tag after it, so the block is a
common prefix of all tasks: the student encodes it once per question and branches per task
(``student.py``). At test time only the answer tag is used. The authors put a task prefix
*before* the question ("predict: ", "explain: "), which forces one full pass per task.

Pure text, no tokenizer and no kind of student: ``student.py`` turns these strings into ids.
"""

from __future__ import annotations

ANSWER_TAG = "A:"


def rationale_tag(teacher: str) -> str:
    """One tag per teacher (the authors used the prefixes "explain: " and "rationale: ")."""
    return f"Explain ({teacher}):"


def letter(i: int) -> str:
    return chr(ord("a") + i)


def question_block(question: str, choices: list[str]) -> str:
    """The shared prefix of every task: question and lettered options, ending in a newline."""
    opts = "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(choices))
    return f"Q: {question}\nAnswer Choices:\n{opts}\n"
