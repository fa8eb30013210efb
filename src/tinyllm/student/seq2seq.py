"""The encoder-decoder student (FLAN-T5, the paper's): the encoder runs once per question, every
task's decoder rows run against its repeated states; option scoring and greedy decoding likewise."""

from __future__ import annotations

import torch

from ..loss import IGNORE, task_sums, token_nll
from ..scoring import OptionScores, answer_limit
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

    # -- option scoring and greedy decoding -------------------------------------------

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
