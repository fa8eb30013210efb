"""The encoder-decoder student (FLAN-T5, the paper's): the encoder runs once per question, every
task's decoder rows run against its repeated states."""

from __future__ import annotations

import torch

from .. import scoring
from ..loss import IGNORE, task_sums, token_nll
from .base import Branch, Encoded, Losses, Student, _inner, hidden_instead_of_logits


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
