"""The student: the one place that knows whether it is decoder-only or encoder-decoder.

Everything kind-specific lives in this package — loading, encoding a question and its tasks,
collating a batch, the multi-task forward/loss, option scoring and generation — behind one
interface, ``Student``, with one subclass per kind (``KINDS``). ``distill.py`` (training loop)
and ``evaluate.py`` (accuracy bookkeeping) call it and never branch on the kind; a third kind of
student is a new subclass (a module here and an entry in ``checkpoint.KINDS``). Option scoring
and greedy decoding are each kind's own ``score_options`` / ``score_and_generate`` / ``generate``
methods; what the kinds share (``OptionScores``, the answer budget, reading greedy answers off
option scoring) is ``scoring.py``.

Encoding (``Student.encode``): one question -> ``Encoded(prefix_ids, branches)``. The prefix is
the question block, shared by every task; each branch is one task: its tag tokens then its
target tokens (``prompts.py`` has the text format).

Three ways to compute the same multi-task loss (tests check they agree in fp32 to 1e-5,
gradients included):
- ``per_task``: one padded forward per task, logits for every position — the authors' trainer.
- ``fused``: every (question, task) pair as its own left-padded row, one forward, logits for
  target columns only — the question is still encoded once per task.
- ``shared`` (default): the question is encoded once. Decoder-only: each question's prefix and
  all its branches sit in one row with a block attention mask (a branch sees the prefix and
  itself, never a sibling) and position ids that restart each branch at the end of the prefix;
  several questions are packed into one row up to ``pack_tokens`` (padding-free packing).
  Encoder-decoder: the encoder runs once per question and the decoder runs every task against
  the repeated encoder states.
The vocabulary projection only ever sees target positions, in chunks (``loss.token_nll``).

Modules: ``base`` (the ``Student`` interface, ``Encoded``/``Branch``/``Losses``, shared helpers),
``causal`` and ``seq2seq`` (one per kind), ``checkpoint`` (``load_student``, ``save_student``).
"""

from .base import FORWARDS, Branch, Encoded, Losses, Student, hidden_instead_of_logits, pack_rows
from .causal import CausalStudent
from .checkpoint import KINDS, load_student, resolve_kind, save_student
from .seq2seq import Seq2SeqStudent

__all__ = [
    "FORWARDS",
    "KINDS",
    "Branch",
    "CausalStudent",
    "Encoded",
    "Losses",
    "Seq2SeqStudent",
    "Student",
    "hidden_instead_of_logits",
    "load_student",
    "pack_rows",
    "resolve_kind",
    "save_student",
]
