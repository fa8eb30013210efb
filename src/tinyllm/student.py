"""The student: the one place that knows whether it is decoder-only or encoder-decoder.

Everything kind-specific lives here — loading, encoding a question and its tasks, collating a
batch, the multi-task forward/loss, option scoring and generation — behind one interface,
``Student``, with one subclass per kind (``KINDS``). ``distill.py`` (training loop) and
``evaluate.py`` (accuracy bookkeeping) call it and never branch on the kind; a third kind of
student is a new subclass here. The scoring and decoding machinery itself is ``scoring.py``: each
class binds its kind's functions as its ``score_options`` / ``score_and_generate`` /
``generate`` methods and provides the hooks they call (``answer_prompt``, ``option_ids``,
padding, ``_text``).

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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import scoring
from .loss import IGNORE, task_sums, token_nll
from .prompts import FORMATS, RATIONALE_POSITIONS, answer_tag, question_block, rationale_after_answer_tag, rationale_tag

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


# ----------------------------------------------------------------------------- loading


def resolve_kind(config, kind: str = "auto") -> str:
    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if kind not in KINDS:
        raise ValueError(f"student kind {kind!r} not in auto/{'/'.join(KINDS)}")
    return kind


def load_student(path, kind: str = "auto", dtype=torch.float32) -> Student:
    """A ``Student`` from a saved checkpoint folder or a hub id."""
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(path)
    cls = KINDS[resolve_kind(cfg, kind)]
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # sdpa: the shared-question path passes a boolean 4-D mask, which eager attention would misread
    model = cls.auto_class().from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    student = cls(model, tok)
    meta = Path(path) / "tinyllm.json"  # the answer format the checkpoint was trained in (distill)
    if meta.exists():
        import json

        fmt = json.loads(meta.read_text(encoding="utf-8"))
        student.set_format(fmt.get("answer_format", "listed"), fmt.get("rationale_position", "branch"))
    return student


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

    score_and_generate = scoring.score_and_generate  # option scores and greedy answers from one pass

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


# ----------------------------------------------------------------------------- decoder-only


class CausalStudent(Student):
    kind = "causal"

    @staticmethod
    def auto_class():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def _target_text(self, text: str) -> str:
        return " " + text  # the tag ends in ":"; the target starts a new word

    def _bos(self) -> list[int]:
        cached = getattr(self, "_bos_cache", None)
        if cached is None:
            ids = self.tok("a")["input_ids"]
            adds = bool(ids) and self.tok.bos_token_id is not None and ids[0] == self.tok.bos_token_id
            cached = self._bos_cache = [self.tok.bos_token_id] if adds else []
        return cached

    def _input_ids(self, block: str, tag: str, max_input_tokens: int) -> list[int]:
        """The task's input tokenized as the one string it is; only when the options alone
        overflow the budget are the block's last tokens (the options' end) cut."""
        ids = self._ids(block + tag)
        tag_len = len(self._ids(tag))
        if len(ids) > max_input_tokens + tag_len:  # fit_block could not fit it: cut the options' end
            ids = ids[:max_input_tokens] + self._ids(tag)
        return self._bos() + ids

    def _encode_tasks(self, block, tags, targets, max_input_tokens) -> Encoded:
        inputs = [self._input_ids(block, tag, max_input_tokens) for _, tag in tags]
        # the shared prefix: the longest common prefix of all tasks' inputs (tokenized whole)
        p = min(len(x) for x in inputs)
        for x in inputs[1:]:
            p = next((i for i in range(p) if x[i] != inputs[0][i]), p)
        if len(inputs) == 1:  # one task: the prefix is all of its input but the last token
            p = len(inputs[0]) - 1
        prefix = inputs[0][:p]
        branches = [Branch(x[p:], tgt, m, cut) for (m, _), x, (tgt, cut) in zip(tags, inputs, targets, strict=True)]
        return Encoded(prefix, branches, question_tokens=len(self._ids(block)))

    def answer_prompt(self, record: dict, max_input_tokens: int, unconditional: bool = False) -> list[int]:
        if unconditional:
            return self._bos() + self._ids(self.answer_tag)
        return self._input_ids(self.fit_block(record, max_input_tokens), self.answer_tag, max_input_tokens)

    # -- one row per (question, task), left-padded: the "fused" and "per_task" paths --

    def _rows_loss(self, model, batch, k, device, target_logits_only, ce_chunk) -> Losses:
        seqs = [(e.prefix_ids + b.tag_ids, b.target_ids, b.task) for e in batch for b in e.branches]
        n, t = len(seqs), max(len(i) + len(g) - 1 for i, g, _ in seqs)
        ids = torch.full((n, t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, t), dtype=torch.long)
        labels = torch.full((n, t), IGNORE, dtype=torch.long)
        task = torch.zeros((n, t), dtype=torch.long)
        for r, (inp, tgt, m) in enumerate(seqs):
            full = inp + tgt[:-1]
            ids[r, t - len(full) :] = torch.tensor(full)
            mask[r, t - len(full) :] = 1
            # position p predicts token p+1: the first target token is predicted by the last input token
            labels[r, t - len(tgt) :] = torch.tensor(tgt)
            task[r] = m
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        keep = labels != IGNORE
        if not target_logits_only:  # the reference: a plain forward with full logits
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).logits
            nll = torch.nn.functional.cross_entropy(
                logits[keep.to(device)].float(), labels[keep].to(device), reduction="none"
            )
        else:
            with hidden_instead_of_logits(model) as (w, b, cap):
                h = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=pos.to(device),
                    logits_to_keep=keep.to(device),
                ).logits
            nll = token_nll(h, w, b, labels[keep].to(device), ce_chunk, cap)
        s, c = task_sums(nll.float(), task[keep].to(device), k)
        return Losses(s, c)

    # -- the shared-question path: prefix once, branches in one row, block mask ----------

    def collate_shared(self, batch: list[Encoded], pack_tokens: int = 0, pad_multiple: int = 0) -> dict:
        """Rows of packed questions: ``input_ids``, ``position_ids``, a boolean 4-D
        ``attention_mask`` (R, 1, T, T) (True = may attend), ``labels`` at the position that
        predicts each target token, and the ``task`` of each label."""
        rows = pack_rows(batch, pack_tokens)
        t = max(sum(e.n_tokens() for e in row) for row in rows)
        if pad_multiple:
            t = -(-t // pad_multiple) * pad_multiple
        r_n = len(rows)
        ids = torch.full((r_n, t), self.pad_id, dtype=torch.long)
        pos = torch.zeros((r_n, t), dtype=torch.long)
        seg = torch.full((r_n, t), -1, dtype=torch.long)  # which question of the row
        br = torch.zeros((r_n, t), dtype=torch.long)  # 0 = prefix, b = branch b
        labels = torch.full((r_n, t), IGNORE, dtype=torch.long)
        task = torch.zeros((r_n, t), dtype=torch.long)
        for r, row in enumerate(rows):
            c = 0
            for s, e in enumerate(row):
                p = len(e.prefix_ids)
                start = c
                ids[r, c : c + p] = torch.tensor(e.prefix_ids, dtype=torch.long)
                pos[r, c : c + p] = torch.arange(p)
                seg[r, c : c + p] = s
                c += p
                for bi, b in enumerate(e.branches, 1):
                    cont = b.tag_ids + b.target_ids[:-1]
                    n = len(cont)
                    ids[r, c : c + n] = torch.tensor(cont, dtype=torch.long)
                    pos[r, c : c + n] = torch.arange(p, p + n)
                    seg[r, c : c + n] = s
                    br[r, c : c + n] = bi
                    # logical index L of this branch's sequence sits at row column
                    # start + L (prefix) or c + L - p (branch); target j is predicted by L - 1
                    for j, tok in enumerate(b.target_ids):
                        logical = p + len(b.tag_ids) + j - 1
                        col = start + logical if logical < p else c + logical - p
                        if labels[r, col] != IGNORE:
                            raise ValueError("two tasks predict from the same position: their tags must differ")
                        labels[r, col] = tok
                        task[r, col] = b.task
                    c += n
        causal = torch.ones((t, t), dtype=torch.bool).tril()
        same_q = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
        visible = (br[:, None, :] == 0) | (br[:, :, None] == br[:, None, :])
        allowed = same_q & visible & causal
        allowed |= torch.eye(t, dtype=torch.bool)  # padding attends to itself (no all-masked rows)
        return {
            "input_ids": ids,
            "position_ids": pos,
            "attention_mask": allowed[:, None],
            "labels": labels,
            "task": task,
        }

    def _shared_loss(self, model, batch, k, device, pack_tokens, ce_chunk, pad_multiple=0) -> Losses:
        b = _to(self.collate_shared(batch, pack_tokens, pad_multiple), device)
        keep = b["labels"] != IGNORE
        with hidden_instead_of_logits(model) as (w, bias, cap):
            h = model(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"],
                position_ids=b["position_ids"],
                logits_to_keep=keep,
            ).logits
        nll = token_nll(h, w, bias, b["labels"][keep], ce_chunk, cap)
        s, c = task_sums(nll.float(), b["task"][keep], k)
        return Losses(s, c)

    # -- evaluation ------------------------------------------------------------------

    def _left_pad(self, seqs: list[list[int]]):
        t = max(map(len, seqs))
        ids = torch.full((len(seqs), t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, t - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[r, t - len(s) :] = 1
        return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)

    # option scoring and greedy decoding: scoring.py
    score_options = scoring.causal_score_options
    score_and_generate = scoring.causal_score_and_generate
    _continue = scoring.continue_greedy
    score_options_pairwise = scoring.causal_score_options_pairwise
    generate = scoring.causal_generate


# ----------------------------------------------------------------------------- encoder-decoder


class Seq2SeqStudent(Student):
    kind = "seq2seq"

    @staticmethod
    def auto_class():
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def _start(self) -> int:
        start = self.model.config.decoder_start_token_id
        return self.pad_id if start is None else start

    def _encoder_ids(self, block: str, max_input_tokens: int) -> list[int]:
        ids = self._ids(block)[:max_input_tokens]
        return ids + ([self.eos_id] if self.eos_id is not None else [])

    def _encode_tasks(self, block, tags, targets, max_input_tokens) -> Encoded:
        prefix = self._encoder_ids(block, max_input_tokens)
        branches = [Branch(self._ids(tag), tgt, m, cut) for (m, tag), (tgt, cut) in zip(tags, targets, strict=True)]
        return Encoded(prefix, branches, question_tokens=len(prefix))

    def answer_prompt(self, record, max_input_tokens, unconditional=False):
        """(encoder ids, decoder prefix ids): the decoder opens with the answer tag;
        ``unconditional``: an empty encoder input (EOS alone)."""
        block = "" if unconditional else self.fit_block(record, max_input_tokens)
        return (self._encoder_ids(block, max_input_tokens), [self._start()] + self._ids(self.answer_tag))

    def _pad_right(self, seqs, fill):
        t = max(map(len, seqs))
        out = torch.full((len(seqs), t), fill, dtype=torch.long)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        for r, s in enumerate(seqs):
            out[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        return out, mask

    def _decoder_rows(self, branches: list[Branch]):
        """Decoder inputs ([start] + tag + target[:-1]) and labels (IGNORE on the tag)."""
        dec = [[self._start()] + b.tag_ids + b.target_ids[:-1] for b in branches]
        lab = [[IGNORE] * len(b.tag_ids) + b.target_ids for b in branches]
        d, dmask = self._pad_right(dec, self.pad_id)
        lab_t, _ = self._pad_right(lab, IGNORE)
        task = torch.tensor([b.task for b in branches])[:, None].expand_as(lab_t)
        return d, dmask, lab_t, task

    def _nll(self, model, device, enc_kwargs: dict, d, dmask, labels, task, k, ce_chunk, full_logits=False):
        keep = labels != IGNORE
        if full_logits:
            logits = model(**enc_kwargs, decoder_input_ids=d.to(device), decoder_attention_mask=dmask.to(device)).logits
            nll = torch.nn.functional.cross_entropy(
                logits[keep.to(device)].float(), labels[keep].to(device), reduction="none"
            )
        else:
            with hidden_instead_of_logits(model) as (w, b, cap):
                h = model(**enc_kwargs, decoder_input_ids=d.to(device), decoder_attention_mask=dmask.to(device)).logits
            nll = token_nll(h[keep.to(device)], w, b, labels[keep].to(device), ce_chunk, cap)
        s, c = task_sums(nll.float(), task[keep].to(device), k)
        return Losses(s, c)

    def _rows_loss(self, model, batch, k, device, target_logits_only, ce_chunk) -> Losses:
        pairs = [(e.prefix_ids, b) for e in batch for b in e.branches]
        ids, mask = self._pad_right([p for p, _ in pairs], self.pad_id)
        d, dmask, labels, task = self._decoder_rows([b for _, b in pairs])
        enc = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        return self._nll(model, device, enc, d, dmask, labels, task, k, ce_chunk, full_logits=not target_logits_only)

    def _shared_loss(self, model, batch, k, device, pack_tokens, ce_chunk, pad_multiple=0) -> Losses:
        from transformers.modeling_outputs import BaseModelOutput

        ids, mask = self._pad_right([e.prefix_ids for e in batch], self.pad_id)
        enc = _inner(model).get_encoder()(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        rows = torch.tensor([q for q, e in enumerate(batch) for _ in e.branches], device=device)
        d, dmask, labels, task = self._decoder_rows([b for e in batch for b in e.branches])
        kwargs = {
            "encoder_outputs": BaseModelOutput(last_hidden_state=enc[rows]),
            "attention_mask": mask.to(device)[rows],
        }
        return self._nll(model, device, kwargs, d, dmask, labels, task, k, ce_chunk)

    # option scoring and greedy decoding: scoring.py
    score_options = scoring.seq2seq_score_options
    score_options_pairwise = scoring.seq2seq_score_options  # the encoder-decoder scorer is already exact per pair
    generate = scoring.seq2seq_generate


KINDS: dict[str, type[Student]] = {"causal": CausalStudent, "seq2seq": Seq2SeqStudent}


def save_student(student_or_model, tok, out_dir: Path, meta: dict) -> None:
    """``save_pretrained`` a plain checkpoint (LoRA adapters merged) plus ``tinyllm.json``.

    Atomic: written into a temporary sibling folder, then renamed over ``out_dir``; a process
    killed mid-save leaves the previous checkpoint (or none) and a ``.<name>.tmp-*`` folder, never a
    half-written ``out_dir``."""
    import os
    import shutil

    from .io import write_json

    model = student_or_model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save of an earlier process with this pid
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "tinyllm.json", meta)
        old = None
        if out_dir.exists():  # rename the old one aside first: rename() cannot replace a non-empty folder
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
