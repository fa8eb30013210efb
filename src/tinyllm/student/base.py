"""The ``Student`` interface, the data it encodes into and the helpers its kinds share
(see the package docstring)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .. import scoring
from ..prompts import (
    FORMATS,
    RATIONALE_POSITIONS,
    answer_tag,
    question_block,
    rationale_after_answer_tag,
    rationale_tag,
)

FORWARDS = ("shared", "fused", "per_task")


# ----------------------------------------------------------------------------- data


@dataclass
class Branch:
    tag_ids: list[int]  # the task's input continuation after the shared prefix
    target_ids: list[int]  # what the student learns to write (EOS only if not cut)
    task: int  # 0 = answer, m = teacher m
    cut: bool = False  # target truncated at its cap (and therefore has no EOS)


@dataclass
class Encoded:
    """One training question with all its tasks."""

    prefix_ids: list[int]
    branches: list[Branch] = field(default_factory=list)
    question_tokens: int = 0  # length of the question block alone: the bucketing key (same in every arm)

    def n_tokens(self) -> int:
        """Tokens in the shared layout (the last target token is never an input)."""
        return len(self.prefix_ids) + sum(len(b.tag_ids) + len(b.target_ids) - 1 for b in self.branches)


@dataclass
class Losses:
    """Per-task sums of token NLL and token counts of one micro-batch (both (K,))."""

    sums: torch.Tensor
    counts: torch.Tensor


# ----------------------------------------------------------------------------- the interface


class Student:
    """A model and its tokenizer, with everything that depends on the kind of model."""

    kind = "?"

    def __init__(self, model, tokenizer, answer_format: str = "listed", rationale_position: str = "branch"):
        self.model = model
        self.tok = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.answer_format = answer_format  # prompts.FORMATS: how questions and answers are written
        self.rationale_position = rationale_position  # prompts.RATIONALE_POSITIONS

    def set_format(self, answer_format: str, rationale_position: str = "branch") -> None:
        if answer_format not in FORMATS:
            raise ValueError(f"answer format {answer_format!r} not in {FORMATS}")
        if rationale_position not in RATIONALE_POSITIONS:
            raise ValueError(f"rationale position {rationale_position!r} not in {RATIONALE_POSITIONS}")
        self.answer_format, self.rationale_position = answer_format, rationale_position

    @property
    def answer_tag(self) -> str:
        return answer_tag(self.answer_format)

    def format_meta(self) -> dict:
        """What ``save_student`` records so that evaluation reads questions as training wrote them."""
        return {"answer_format": self.answer_format, "rationale_position": self.rationale_position}

    @staticmethod
    def auto_class():
        raise NotImplementedError

    # -- text -> ids ---------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def fit_block(self, record: dict, max_tokens: int) -> str:
        """The question block, its question cut from the *start* until the block fits
        ``max_tokens`` tokens (options always survive: for PubMedQA/BioASQ the question field is
        "<context passages> \\n <question>", so the question proper is kept too)."""
        q, choices, fmt = record["question"], record["choices"], self.answer_format
        block = question_block(q, choices, fmt)
        n = len(self._ids(block))
        if n <= max_tokens:
            return block
        enc = self.tok(q, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        cut = n - max_tokens
        while cut < len(offsets):
            block = question_block(q[offsets[cut][0] :].lstrip(), choices, fmt)
            n = len(self._ids(block))
            if n <= max_tokens:
                return block
            cut += n - max_tokens
        # the options alone overflow: keep the question's last 8 tokens; the caller cuts the ids
        return question_block(q[offsets[max(0, len(offsets) - 8)][0] :].lstrip(), choices, fmt)

    def encode_target(self, text: str, max_tokens: int) -> tuple[list[int], bool]:
        """(ids, cut): ``text`` + EOS, or its first ``max_tokens`` tokens *without* EOS when it
        is longer — a cut rationale must not teach the student to stop mid-sentence."""
        ids = self._ids(self._target_text(text))
        if len(ids) + 1 > max_tokens:
            return ids[:max_tokens], True
        return ids + ([self.eos_id] if self.eos_id is not None else []), False

    def _target_text(self, text: str) -> str:
        return text

    def encode(
        self,
        record: dict,
        rationales: dict[str, str],
        teachers: list[str],
        max_input_tokens: int,
        max_answer_tokens: int,
        max_rationale_tokens: int,
    ) -> Encoded:
        """One question with its answer task (task 0) and a rationale task per teacher that has
        a rationale for it (task m = position of the teacher in ``teachers`` + 1)."""
        block = self.fit_block(record, max_input_tokens)
        tasks = [(0, self.answer_tag, record["answer"], max_answer_tokens)]
        tasks += [
            (m, self._rationale_tag(t, record), rationales[t], max_rationale_tokens)
            for m, t in enumerate(teachers, 1)
            if rationales.get(t)
        ]
        targets = [self.encode_target(text, cap) for _, _, text, cap in tasks]
        return self._encode_tasks(block, [(m, tag) for m, tag, _, _ in tasks], targets, max_input_tokens)

    def _rationale_tag(self, teacher: str, record: dict) -> str:
        if self.rationale_position == "after_answer":
            return rationale_after_answer_tag(teacher, record["answer"], self.answer_format)
        return rationale_tag(teacher)

    def _encode_tasks(self, block, tags, targets, max_input_tokens) -> Encoded:
        raise NotImplementedError

    def answer_prompt(self, record: dict, max_input_tokens: int, unconditional: bool = False):
        """What the student reads at test time: the answer task's input; ``unconditional``: the
        answer tag alone, without the question (the PMI rule's baseline)."""
        raise NotImplementedError

    # -- training --------------------------------------------------------------------

    def losses(
        self,
        model,
        batch: list[Encoded],
        k: int,
        forward: str = "shared",
        pack_tokens: int = 0,
        ce_chunk: int = 1024,
        device="cpu",
        pad_multiple: int = 0,
    ) -> Losses:
        """Per-task NLL sums and token counts of ``batch`` (``forward`` in ``FORWARDS``).

        ``model`` is passed separately from ``self.model`` because training calls it through
        its Accelerate/DDP wrapper. ``pad_multiple``: the shared path pads its rows to a multiple
        of this many tokens (0: to the longest row), which bounds the number of distinct GEMM
        shapes a long run meets (oneDNN caches kernels per shape: the resident heap grows with
        them); padding carries no label (losses agree to float rounding)."""
        if forward not in FORWARDS:
            raise ValueError(f"distill.forward {forward!r} not in {FORWARDS}")
        if forward == "per_task":
            sums, counts = [], []
            for t in sorted({b.task for e in batch for b in e.branches}):
                one = [Encoded(e.prefix_ids, [b for b in e.branches if b.task == t], e.question_tokens) for e in batch]
                one = [e for e in one if e.branches]
                part = self._rows_loss(model, one, k, device, target_logits_only=False, ce_chunk=0)
                sums.append(part.sums)
                counts.append(part.counts)
            return Losses(torch.stack(sums).sum(0), torch.stack(counts).sum(0))
        if forward == "fused":
            return self._rows_loss(model, batch, k, device, target_logits_only=True, ce_chunk=ce_chunk)
        return self._shared_loss(model, batch, k, device, pack_tokens, ce_chunk, pad_multiple)

    def _rows_loss(self, model, batch, k, device, target_logits_only, ce_chunk) -> Losses:
        raise NotImplementedError

    def _shared_loss(self, model, batch, k, device, pack_tokens, ce_chunk, pad_multiple=0) -> Losses:
        raise NotImplementedError

    # -- evaluation ------------------------------------------------------------------

    def option_ids(self, choices: list[str], max_tokens: int) -> list[list[int]]:
        """Each option as a target (text + EOS); scoring uses the full option (``max_tokens`` is
        derived from the longest option by the caller)."""
        return [self.encode_target(c, max_tokens)[0] for c in choices]

    def score_options(
        self,
        records: list[dict],
        max_input_tokens: int,
        batch_size: int,
        device,
        progress=None,
        with_greedy=False,
        unconditional=False,
    ) -> scoring.OptionScores:
        raise NotImplementedError

    def score_and_generate(
        self,
        records: list[dict],
        max_input_tokens: int,
        max_new_tokens: int | None,
        batch_size: int,
        device,
        n_generate: int,
        progress=None,
    ) -> tuple[scoring.OptionScores, list[str], int]:
        """Option scores of every record and greedy answers of the first ``n_generate``, from
        one pass: (scores, texts, how many texts needed their own decoding).

        Scoring already runs the student over the prompt followed by each option, so it knows
        the greedy next token after every prefix of every option. As long as greedy decoding
        stays on some option's tokens, its path is read off those argmaxes
        (``scoring.greedy_along_options``): a student that answers with an option (EOS included)
        costs no decoding. Only a question whose greedy path leaves every option is decoded: here
        by ``generate`` from the start; the decoder-only student continues it from the prompt's
        KV cache instead. Same texts as ``generate`` (tests/test_evaluate.py)."""
        scores = self.score_options(records, max_input_tokens, batch_size, device, progress, with_greedy=True)
        texts: list[str] = []
        decode = []
        for i, rec in enumerate(records[:n_generate]):
            path, complete, _ = scoring.read_greedy(self, rec, scores.greedy[i], max_new_tokens)
            texts.append(self._text(path))
            if not complete:
                decode.append(i)
        if decode:
            scoring.log_decoding(len(decode), n_generate)
            decoded = self.generate([records[i] for i in decode], max_input_tokens, max_new_tokens, batch_size, device)
            for i, text in zip(decode, decoded, strict=True):
                texts[i] = text
        return scores, texts, len(decode)

    def _text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True).strip()

    def _has_eos(self) -> int:
        """1 when option targets end in EOS (``encode_target``), else 0."""
        return int(self.eos_id is not None)

    def _text_sums(self, lp: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        """Per row, the summed log-likelihood of the option text: every target token but the
        closing EOS (``lp``, ``tmask``: (rows, option tokens), left-aligned)."""
        text = tmask.clone()
        if self._has_eos():
            last = tmask.sum(-1) - 1
            text[torch.arange(len(text)), last] = 0
        return (lp * text).sum(-1)

    def generate(
        self,
        records: list[dict],
        max_input_tokens: int,
        max_new_tokens: int | None,
        batch_size: int,
        device,
        progress=None,
    ) -> list[str]:
        """Greedy answers (text before EOS, at most as many tokens as the longest option + EOS,
        or ``max_new_tokens`` where lower), each question decoded from its prompt by
        ``transformers``' ``generate``: the reference for the fast path above."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- helpers


def _inner(model):
    """The model inside a DDP wrapper (which forwards calls, not attributes)."""
    return getattr(model, "module", model)


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


@contextlib.contextmanager
def hidden_instead_of_logits(model):
    """Make ``model(...)`` return the hidden states that its output layer would project.

    The call still goes through the model's own forward (and its DDP/PEFT wrappers, so
    gradients synchronise as usual), but the output projection is swapped for the identity;
    ``token_nll`` then projects target positions in chunks with the real weights. Returns
    (weight, bias, softcap) of the output layer."""
    inner = _inner(model)
    head = inner.get_output_embeddings()
    owner, name = None, None
    for mod in inner.modules():
        for child_name, child in mod.named_children():
            if child is head:
                owner, name = mod, child_name
                break
        if owner is not None:
            break
    if owner is None:
        raise RuntimeError(f"{type(model).__name__}: output layer not found among its modules")
    config = getattr(inner, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    setattr(owner, name, torch.nn.Identity())
    if softcap:
        config.final_logit_softcapping = None
    try:
        yield head.weight, getattr(head, "bias", None), softcap
    finally:
        setattr(owner, name, head)
        if softcap:
            config.final_logit_softcapping = softcap


def pack_rows(batch: list[Encoded], pack_tokens: int) -> list[list[Encoded]]:
    """Greedy first-fit of whole questions into rows of at most ``max(pack_tokens, longest)``
    tokens, longest first (``pack_tokens <= 0``: one question per row)."""
    if pack_tokens <= 0:
        return [[e] for e in batch]
    cap = max(pack_tokens, max(e.n_tokens() for e in batch))
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for e in sorted(batch, key=lambda e: -e.n_tokens()):
        n = e.n_tokens()
        for i, r in enumerate(room):
            if n <= r:
                rows[i].append(e)
                room[i] -= n
                break
        else:
            rows.append([e])
            room.append(cap - n)
    return rows
