"""The decoder-only student (SmolLM2, Qwen, LLaMA...): left padding, the shared-question packed
layout with its block attention mask, and the per-row (fused / per_task) forwards."""

from __future__ import annotations

import torch

from .. import scoring
from ..loss import IGNORE, task_sums, token_nll
from .base import Branch, Encoded, Losses, Student, _to, hidden_instead_of_logits, pack_rows


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
