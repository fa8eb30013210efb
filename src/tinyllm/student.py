"""The student: the one place that knows whether it is decoder-only or encoder-decoder.

Everything kind-specific lives here — loading, encoding a question and its tasks, collating a
batch, the multi-task forward/loss, option scoring and generation — behind one interface,
``Student``, with one subclass per kind (``KINDS``). ``distill.py`` (training loop) and
``evaluate.py`` (accuracy bookkeeping) call it and never branch on the kind; a third kind of
student is a new subclass here.

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
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .loss import IGNORE, task_sums, token_nll
from .prompts import FORMATS, RATIONALE_POSITIONS, answer_tag, question_block, rationale_after_answer_tag, rationale_tag

log = logging.getLogger(__name__)

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
class OptionScores:
    """Per record and option: ``mean`` log-likelihood of the option's tokens + EOS (the listed
    format's rule ``score``), ``total`` = summed log-likelihood of the option text's tokens
    without EOS (the cloze rules ``sum``/``norm``/``pmi``), and, when asked for, ``greedy``:
    the greedy next token after the prompt and each prefix of the option."""

    mean: list[list[float]]
    total: list[list[float]]
    greedy: list[list[list[int] | None]] | None = None

    @classmethod
    def empty(cls, records: list[dict], greedy: bool = False) -> OptionScores:
        def grid(v):
            return [[v] * len(r["choices"]) for r in records]

        return cls(grid(0.0), grid(0.0), grid(None) if greedy else None)


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
    ) -> OptionScores:
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
    ) -> tuple[OptionScores, list[str], int]:
        """Option scores of every record and greedy answers of the first ``n_generate``, from
        one pass: (scores, texts, how many texts needed their own decoding).

        Scoring already runs the student over the prompt followed by each option, so it knows
        the greedy next token after every prefix of every option. As long as greedy decoding
        stays on some option's tokens, its path is read off those argmaxes
        (``greedy_along_options``): a student that answers with an option (EOS included) costs
        no decoding. Only a question whose greedy path leaves every option is decoded: here by
        ``generate`` from the start; the decoder-only student continues it from the prompt's
        KV cache instead. Same texts as ``generate`` (tests/test_evaluate.py)."""
        scores = self.score_options(records, max_input_tokens, batch_size, device, progress, with_greedy=True)
        texts: list[str] = []
        decode = []
        for i, rec in enumerate(records[:n_generate]):
            path, complete, _ = self._read_greedy(rec, scores.greedy[i], max_new_tokens)
            texts.append(self._text(path))
            if not complete:
                decode.append(i)
        if decode:
            _log_decoding(len(decode), n_generate)
            decoded = self.generate([records[i] for i in decode], max_input_tokens, max_new_tokens, batch_size, device)
            for i, text in zip(decode, decoded, strict=True):
                texts[i] = text
        return scores, texts, len(decode)

    def _read_greedy(self, record: dict, greedy: list[list[int]], max_new_tokens: int | None):
        """(tokens, complete, budget): the record's greedy answer as far as option scoring knows
        it (``greedy_along_options``), within the budget ``generate`` gives it."""
        options = self.option_ids(record["choices"], 1 << 30)
        limit = answer_limit(options, max_new_tokens)
        path, complete = greedy_along_options(options, greedy, self.eos_id, limit)
        return path, complete, limit

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


def _log_decoding(n: int, of: int) -> None:
    log.info("  decoding %d of %d generations (their greedy answer leaves every option)", n, of)


def answer_limit(options: list[list[int]], max_new_tokens: int | None) -> int:
    """Tokens a greedy answer may take: the longest option (+ EOS), or ``max_new_tokens``
    where that is lower. A per-question budget, so no answer depends on its batch."""
    limit = max(map(len, options))
    return min(limit, max_new_tokens) if max_new_tokens else limit


def greedy_along_options(
    options: list[list[int]], greedy: list[list[int]], eos_id: int | None, limit: int
) -> tuple[list[int], bool]:
    """The greedy answer read off option scoring: (tokens, complete).

    ``greedy[j][t]`` is the student's argmax after the prompt and ``options[j][:t]``. Greedy
    decoding emits ``greedy[j][0]`` (the same for every j); while the tokens so far are a
    prefix of some option j, the next one is ``greedy[j][t]``. Complete: the answer ended (EOS,
    not included, or ``limit`` tokens). Not complete: its last token left every option, so what
    follows it is unknown and must be decoded, continuing from these tokens."""
    path: list[int] = []
    alive = list(range(len(options)))  # options whose first len(path) tokens are the path
    for t in range(limit):
        tok = greedy[alive[0]][t]
        if tok == eos_id:
            break
        path.append(tok)
        if t + 1 == limit:
            break
        alive = [j for j in alive if t + 1 < len(options[j]) and options[j][t] == tok]
        if not alive:
            return path, False
    return path, True


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

    @torch.no_grad()
    def score_options(
        self, records, max_input_tokens, batch_size, device, progress=None, with_greedy=False, unconditional=False
    ) -> OptionScores:
        """Log-likelihoods of every option of every record (``OptionScores``: mean over text +
        EOS, and the text's sum).

        Each question's prompt runs once; all its options are scored from the prompt's KV
        cache (a prompt is ~10x longer than an option). The option rows of a batch run sorted
        by length in chunks of ``batch_size`` rows, so a long option pads only its peers
        (PIQA's options are 3-60 tokens). ``with_greedy``: also return, per record and option,
        the greedy next token after the prompt and each prefix of the option
        (``greedy_along_options``). ``unconditional``: after the answer tag alone (PMI)."""
        scores = OptionScores.empty(records, greedy=True)
        for qs, _, _ in self._score_batches(records, max_input_tokens, batch_size, device, scores, unconditional):
            if progress is not None:
                progress.update(len(qs))
        if not with_greedy:
            scores.greedy = None
        return scores

    def _score_batches(self, records, max_input_tokens, batch_size, device, scores, unconditional=False):
        """``score_options``' work, one batch of questions (sorted by prompt length) at a time:
        fills ``scores`` (an ``OptionScores`` with ``greedy``) and yields ``(qs, mask,
        prompt_kv)``: the batch's record indices, its left-padded prompt mask and the prompts' KV
        cache, per layer (keys, values)."""
        prompts = [self.answer_prompt(r, max_input_tokens, unconditional) for r in records]
        options = [self.option_ids(r["choices"], 1 << 30) for r in records]
        order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), batch_size):
            qs = order[start : start + batch_size]
            ids, mask, pos = self._left_pad([prompts[i] for i in qs])
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=pos.to(device),
                use_cache=True,
                logits_to_keep=1,
            )
            first_logp = torch.log_softmax(out.logits[:, -1].float(), -1).cpu()  # predicts option token 0
            first_arg = first_logp.argmax(-1).tolist()
            prompt_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            opts = [(r, i, j, o) for r, i in enumerate(qs) for j, o in enumerate(options[i])]
            opts.sort(key=lambda o: len(o[3]))
            for c in range(0, len(opts), batch_size):
                chunk = opts[c : c + batch_size]
                mean, total, arg = self._score_chunk(chunk, prompt_kv, mask, pos, first_logp, device)
                for (r, i, j, o), v, t, a in zip(chunk, mean, total, arg, strict=True):
                    scores.mean[i][j], scores.total[i][j] = v, t
                    scores.greedy[i][j] = [first_arg[r]] + a[: len(o) - 1]
            yield qs, mask, prompt_kv

    @torch.no_grad()
    def score_and_generate(
        self, records, max_input_tokens, max_new_tokens, batch_size, device, n_generate, progress=None
    ):
        """``Student.score_and_generate``, with the answers that leave every option continued
        from the prompt's KV cache, kept from scoring (``_continue``): no prompt runs twice.
        They are decoded ``batch_size`` at a time as they come."""
        scores = OptionScores.empty(records, greedy=True)
        texts: list[str] = [""] * min(n_generate, len(records))
        pending, n_decoded = [], 0  # (record index, its prompt's KV cache, answer so far, budget left)

        def flush(items):
            tails = self._continue([p[1] for p in items], [p[2] for p in items], [p[3] for p in items], device)
            for (i, _, path, _), tail in zip(items, tails, strict=True):
                texts[i] = self._text(path + tail)

        for qs, mask, prompt_kv in self._score_batches(records, max_input_tokens, batch_size, device, scores):
            for r, i in enumerate(qs):
                if i >= n_generate:
                    continue
                path, complete, limit = self._read_greedy(records[i], scores.greedy[i], max_new_tokens)
                texts[i] = self._text(path)
                if not complete:  # this prompt's cache alone (a copy: the batch's is freed)
                    n = int(mask[r].sum())
                    kv = [(k[r : r + 1, :, -n:].clone(), v[r : r + 1, :, -n:].clone()) for k, v in prompt_kv]
                    pending.append((i, kv, path, limit - len(path)))
                    n_decoded += 1
            if len(pending) >= batch_size:
                flush(pending[:batch_size])
                del pending[:batch_size]
            if progress is not None:
                progress.update(len(qs))
        if pending:
            flush(pending)
        if n_decoded:
            _log_decoding(n_decoded, len(texts))
        return scores, texts, n_decoded

    @torch.no_grad()
    def _continue(self, kvs, paths, budgets, device) -> list[list[int]]:
        """Greedy tokens after each answer begun: ``kvs[g]`` is its prompt's KV cache (per
        layer (keys, values) of shape [1, heads, prompt tokens, dim]), ``paths[g]`` the answer
        tokens already chosen (not yet in the cache), ``budgets[g]`` how many more it may take.
        Stops at EOS (not returned). Prompts and answers of different lengths sit side by side
        with masked gaps and their own position ids; rows leave the batch as they finish."""
        from transformers import DynamicCache

        g_n = len(paths)
        n = [kv[0][0].shape[2] for kv in kvs]
        p_len, a_len = max(n), max(map(len, paths))
        layers = []
        for layer in range(len(kvs[0])):
            k0 = kvs[0][layer][0]
            keys = k0.new_zeros((g_n, k0.shape[1], p_len, k0.shape[3]))
            values = torch.zeros_like(keys)
            for g, kv in enumerate(kvs):
                keys[g, :, p_len - n[g] :] = kv[layer][0][0]
                values[g, :, p_len - n[g] :] = kv[layer][1][0]
            layers.append((keys, values))
        cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        ids = torch.full((g_n, a_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((g_n, p_len + a_len), dtype=torch.long)
        pos = torch.zeros((g_n, a_len), dtype=torch.long)
        for g, path in enumerate(paths):
            ids[g, a_len - len(path) :] = torch.tensor(path)
            mask[g, p_len - n[g] : p_len] = 1
            mask[g, p_len + a_len - len(path) :] = 1
            pos[g, a_len - len(path) :] = n[g] + torch.arange(len(path))
        out: list[list[int]] = [[] for _ in range(g_n)]
        alive = list(range(g_n))
        logits = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
        nxt_pos = pos[:, -1] + 1
        while True:
            nxt = logits[:, -1].argmax(-1).tolist()
            keep = []
            for r, g in enumerate(alive):
                if nxt[r] == self.eos_id:
                    continue
                out[g].append(nxt[r])
                if len(out[g]) < budgets[g]:
                    keep.append(r)
            if not keep:
                return out
            if len(keep) < len(alive):
                idx = torch.tensor(keep)
                for layer in cache.layers:
                    layer.batch_select_indices(idx.to(device))
                mask, nxt_pos = mask[idx], nxt_pos[idx]
                alive, nxt = [alive[r] for r in keep], [nxt[r] for r in keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], 1)
            logits = self.model(
                input_ids=torch.tensor(nxt)[:, None].to(device),
                attention_mask=mask.to(device),
                position_ids=nxt_pos[:, None].to(device),
                past_key_values=cache,
                use_cache=True,
            ).logits
            nxt_pos = nxt_pos + 1

    def _score_chunk(self, chunk, prompt_kv, mask, pos, first_logp, device):
        """Mean log-likelihood (text + EOS), the text's summed log-likelihood and per-position
        greedy tokens of option rows ``(row, i, j, ids)`` continuing the prompts whose KV cache
        is ``prompt_kv`` (one copy per option row)."""
        from transformers import DynamicCache

        rows = torch.tensor([o[0] for o in chunk])
        o_len = max(len(o[3]) for o in chunk)
        tgt = torch.full((len(chunk), o_len), self.pad_id, dtype=torch.long)
        tmask = torch.zeros((len(chunk), o_len), dtype=torch.long)
        for n, o in enumerate(chunk):
            tgt[n, : len(o[3])] = torch.tensor(o[3])
            tmask[n, : len(o[3])] = 1
        lp = torch.zeros(len(chunk), o_len)
        lp[:, 0] = first_logp[rows, tgt[:, 0]]
        arg = torch.zeros(len(chunk), max(o_len - 1, 0), dtype=torch.long)
        if o_len > 1:
            dev_rows = rows.to(device)
            cache = DynamicCache(  # the config keeps each layer's kind (sliding window or full)
                ddp_cache_data=[(k[dev_rows], v[dev_rows]) for k, v in prompt_kv], config=self.model.config
            )
            logits = self.model(
                input_ids=tgt[:, :-1].to(device),
                attention_mask=torch.cat([mask[rows], tmask[:, :-1]], 1).to(device),
                position_ids=(pos[rows, -1:] + 1 + torch.arange(o_len - 1)[None]).to(device),
                past_key_values=cache,
                use_cache=True,
            ).logits
            logp = torch.log_softmax(logits.float(), -1)
            lp[:, 1:] = logp.gather(-1, tgt[:, 1:, None].to(device))[..., 0].cpu()
            arg = logp.argmax(-1).cpu()
        mean = (lp * tmask).sum(-1) / tmask.sum(-1)
        return mean.tolist(), self._text_sums(lp, tmask).tolist(), arg.tolist()

    @torch.no_grad()
    def score_options_pairwise(self, records, max_input_tokens, batch_size, device, progress=None, unconditional=False):
        """Reference scorer: every (prompt + option) pair as its own left-padded row."""
        scores = OptionScores.empty(records)
        pairs = []
        for i, r in enumerate(records):
            p = self.answer_prompt(r, max_input_tokens, unconditional)
            pairs += [(i, j, p, o) for j, o in enumerate(self.option_ids(r["choices"], 1 << 30))]
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            ids, mask, pos = self._left_pad([p + o for _, _, p, o in chunk])
            logp = torch.log_softmax(
                self.model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)
                ).logits.float(),
                -1,
            ).cpu()
            t = ids.shape[1]
            for r, (i, j, _, o) in enumerate(chunk):
                cols = torch.arange(t - len(o) - 1, t - 1)
                lp = logp[r, cols, torch.tensor(o)]
                scores.mean[i][j] = lp.mean().item()
                scores.total[i][j] = lp[: len(o) - self._has_eos()].sum().item()
        return scores

    @torch.no_grad()
    def generate(self, records, max_input_tokens, max_new_tokens, batch_size, device, progress=None):
        """Greedy answers, batched by decoding budget then prompt length, with left padding, in
        record order. Each batch decodes at most as many tokens as its longest option (+ EOS)
        needs, unless ``max_new_tokens`` caps it lower."""
        prompts = [self.answer_prompt(r, max_input_tokens) for r in records]
        budget = [answer_limit(self.option_ids(r["choices"], 1 << 30), max_new_tokens) for r in records]
        order = sorted(range(len(records)), key=lambda i: (budget[i], len(prompts[i])))
        out = [""] * len(records)
        for start in range(0, len(order), batch_size):
            qs = order[start : start + batch_size]
            ids, mask, _ = self._left_pad([prompts[i] for i in qs])
            gen = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max(budget[i] for i in qs),
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )
            for r, i in enumerate(qs):
                new = gen[r, ids.shape[1] :].tolist()[: budget[i]]
                # a prediction depends on its own tokens only: stop at its own EOS, whatever its batch
                if self.eos_id in new:
                    new = new[: new.index(self.eos_id)]
                out[i] = self._text(new)
            if progress is not None:
                progress.update(len(qs))
        return out


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

    @torch.no_grad()
    def score_options(
        self, records, max_input_tokens, batch_size, device, progress=None, with_greedy=False, unconditional=False
    ) -> OptionScores:
        """Encoder once per question; every option decoded after the answer tag, batched.
        ``with_greedy`` and ``unconditional`` as for the decoder-only student."""
        scores = OptionScores.empty(records, greedy=with_greedy)
        for start in range(0, len(records), batch_size):
            chunk = list(range(start, min(len(records), start + batch_size)))
            prompts = [self.answer_prompt(records[i], max_input_tokens, unconditional) for i in chunk]
            ids, mask = self._pad_right([p[0] for p in prompts], self.pad_id)
            enc = self.model.get_encoder()(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            opts = [
                (r, i, j, o)
                for r, i in enumerate(chunk)
                for j, o in enumerate(self.option_ids(records[i]["choices"], 1 << 30))
            ]
            rows = torch.tensor([o[0] for o in opts], device=device)
            dec = [prompts[r][1] + o[:-1] for r, _, _, o in opts]
            lab = [[IGNORE] * (len(prompts[r][1]) - 1) + o for r, _, _, o in opts]
            d, dmask = self._pad_right(dec, self.pad_id)
            labels, _ = self._pad_right(lab, IGNORE)
            from transformers.modeling_outputs import BaseModelOutput

            logits = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc[rows]),
                attention_mask=mask.to(device)[rows],
                decoder_input_ids=d.to(device),
                decoder_attention_mask=dmask.to(device),
            ).logits
            logp = torch.log_softmax(logits.float(), -1).cpu()
            keep = labels != IGNORE
            tok_lp = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * keep
            mean = tok_lp.sum(-1) / keep.sum(-1)
            arg = logp.argmax(-1).tolist()
            for n, ((r, i, j, o), v) in enumerate(zip(opts, mean.tolist(), strict=True)):
                first = len(prompts[r][1]) - 1  # the position that predicts the option's first token
                scores.mean[i][j] = v
                scores.total[i][j] = tok_lp[n, first : first + len(o) - self._has_eos()].sum().item()
                if with_greedy:
                    scores.greedy[i][j] = arg[n][first : first + len(o)]
            if progress is not None:
                progress.update(len(chunk))
        return scores

    score_options_pairwise = score_options  # the encoder-decoder scorer is already exact per pair

    @torch.no_grad()
    def generate(self, records, max_input_tokens, max_new_tokens, batch_size, device, progress=None):
        prompts = [self.answer_prompt(r, max_input_tokens) for r in records]
        need = [answer_limit(self.option_ids(r["choices"], 1 << 30), max_new_tokens) for r in records]
        out = [""] * len(records)
        for start in range(0, len(records), batch_size):
            qs = list(range(start, min(len(records), start + batch_size)))
            ids, mask = self._pad_right([prompts[i][0] for i in qs], self.pad_id)
            dec = torch.tensor([prompts[i][1] for i in qs])  # same tag for every question
            gen = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                decoder_input_ids=dec.to(device),
                max_new_tokens=max(need[i] for i in qs),
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
            )
            for r, i in enumerate(qs):
                new = gen[r, dec.shape[1] :].tolist()
                if self.eos_id in new:
                    new = new[: new.index(self.eos_id)]
                out[i] = self.tok.decode(new[: need[i]], skip_special_tokens=True).strip()
            if progress is not None:
                progress.update(len(qs))
        return out


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
