"""The decoder-only student (SmolLM2, Qwen, LLaMA...): left padding, the shared-question packed
layout with its block attention mask, the per-row (fused / per_task) forwards, and option scoring
and greedy decoding from each prompt's KV cache."""

from __future__ import annotations

import torch

from ..loss import IGNORE, task_sums, token_nll
from ..scoring import OptionScores, answer_limit, log_decoding, read_greedy
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

    # -- option scoring: each prompt once, every option from its KV cache -------------

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

    # -- greedy decoding --------------------------------------------------------------

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
                path, complete, limit = read_greedy(self, records[i], scores.greedy[i], max_new_tokens)
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
            log_decoding(n_decoded, len(texts))
        return scores, texts, n_decoded

    @torch.no_grad()
    def _continue(self, kvs, paths, budgets, device) -> list[list[int]]:
        """Greedy tokens after each answer begun: ``kvs[g]`` is its prompt's KV cache (per
        layer (keys, values) of shape [1, heads, prompt tokens, dim]), ``paths[g]`` the answer
        tokens already chosen (not yet in the cache), ``budgets[g]`` how many more it may take.
        Stops at EOS (not returned). Prompts and answers of different lengths sit side by side
        with masked gaps and their own position ids (``_continue_inputs``); rows leave the batch
        as they finish."""
        cache, ids, mask, pos = self._continue_inputs(kvs, paths)
        out: list[list[int]] = [[] for _ in range(len(paths))]
        alive = list(range(len(paths)))
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

    def _continue_inputs(self, kvs, paths):
        """``_continue``'s first forward: the prompts' caches right-aligned side by side (a
        ``DynamicCache``, shorter prompts left-padded with zeros) and the answers begun, each
        left-padded after them: (cache, ids, mask over prompt + answer columns, position ids)."""
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
        return cache, ids, mask, pos

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
