"""Option scoring and greedy decoding: how a student's answers are read off the model.

``OptionScores`` holds what scoring gives per record and option (mean and summed
log-likelihoods, optionally the greedy next tokens along each option); ``greedy_along_options``
reads a greedy answer off those tokens, so a student that answers with an option costs no
decoding (``score_and_generate``); only answers that leave every option are decoded.

The functions take the student as their first argument and are bound on the student classes
as their methods (``CausalStudent.score_options = causal_score_options``, ...): callers use
``student.score_options(...)`` and never branch on the kind. What differs between kinds and is
not scoring (the answer prompt, option ids, padding, decoding ids to text) stays on the
student classes as the hooks these functions call: ``answer_prompt``, ``option_ids``,
``_left_pad`` (decoder-only), ``_pad_right`` (encoder-decoder), ``_text``, ``_has_eos``,
``_text_sums``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .loss import IGNORE

log = logging.getLogger(__name__)


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


def read_greedy(student, record: dict, greedy: list[list[int]], max_new_tokens: int | None):
    """(tokens, complete, budget): the record's greedy answer as far as option scoring knows
    it (``greedy_along_options``), within the budget ``generate`` gives it."""
    options = student.option_ids(record["choices"], 1 << 30)
    limit = answer_limit(options, max_new_tokens)
    path, complete = greedy_along_options(options, greedy, student.eos_id, limit)
    return path, complete, limit


def score_and_generate(
    student,
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
    scores = student.score_options(records, max_input_tokens, batch_size, device, progress, with_greedy=True)
    texts: list[str] = []
    decode = []
    for i, rec in enumerate(records[:n_generate]):
        path, complete, _ = read_greedy(student, rec, scores.greedy[i], max_new_tokens)
        texts.append(student._text(path))
        if not complete:
            decode.append(i)
    if decode:
        _log_decoding(len(decode), n_generate)
        decoded = student.generate([records[i] for i in decode], max_input_tokens, max_new_tokens, batch_size, device)
        for i, text in zip(decode, decoded, strict=True):
            texts[i] = text
    return scores, texts, len(decode)


# ----------------------------------------------------------------------------- decoder-only


@torch.no_grad()
def causal_score_options(
    student, records, max_input_tokens, batch_size, device, progress=None, with_greedy=False, unconditional=False
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
    for qs, _, _ in causal_score_batches(student, records, max_input_tokens, batch_size, device, scores, unconditional):
        if progress is not None:
            progress.update(len(qs))
    if not with_greedy:
        scores.greedy = None
    return scores


def causal_score_batches(student, records, max_input_tokens, batch_size, device, scores, unconditional=False):
    """``score_options``' work, one batch of questions (sorted by prompt length) at a time:
    fills ``scores`` (an ``OptionScores`` with ``greedy``) and yields ``(qs, mask,
    prompt_kv)``: the batch's record indices, its left-padded prompt mask and the prompts' KV
    cache, per layer (keys, values)."""
    prompts = [student.answer_prompt(r, max_input_tokens, unconditional) for r in records]
    options = [student.option_ids(r["choices"], 1 << 30) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        qs = order[start : start + batch_size]
        ids, mask, pos = student._left_pad([prompts[i] for i in qs])
        out = student.model(
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
            mean, total, arg = causal_score_chunk(student, chunk, prompt_kv, mask, pos, first_logp, device)
            for (r, i, j, o), v, t, a in zip(chunk, mean, total, arg, strict=True):
                scores.mean[i][j], scores.total[i][j] = v, t
                scores.greedy[i][j] = [first_arg[r]] + a[: len(o) - 1]
        yield qs, mask, prompt_kv


@torch.no_grad()
def causal_score_and_generate(
    student, records, max_input_tokens, max_new_tokens, batch_size, device, n_generate, progress=None
):
    """``Student.score_and_generate``, with the answers that leave every option continued
    from the prompt's KV cache, kept from scoring (``continue_greedy``): no prompt runs twice.
    They are decoded ``batch_size`` at a time as they come."""
    scores = OptionScores.empty(records, greedy=True)
    texts: list[str] = [""] * min(n_generate, len(records))
    pending, n_decoded = [], 0  # (record index, its prompt's KV cache, answer so far, budget left)

    def flush(items):
        tails = continue_greedy(student, [p[1] for p in items], [p[2] for p in items], [p[3] for p in items], device)
        for (i, _, path, _), tail in zip(items, tails, strict=True):
            texts[i] = student._text(path + tail)

    for qs, mask, prompt_kv in causal_score_batches(student, records, max_input_tokens, batch_size, device, scores):
        for r, i in enumerate(qs):
            if i >= n_generate:
                continue
            path, complete, limit = read_greedy(student, records[i], scores.greedy[i], max_new_tokens)
            texts[i] = student._text(path)
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
def continue_greedy(student, kvs, paths, budgets, device) -> list[list[int]]:
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
    cache = DynamicCache(ddp_cache_data=layers, config=student.model.config)
    ids = torch.full((g_n, a_len), student.pad_id, dtype=torch.long)
    mask = torch.zeros((g_n, p_len + a_len), dtype=torch.long)
    pos = torch.zeros((g_n, a_len), dtype=torch.long)
    for g, path in enumerate(paths):
        ids[g, a_len - len(path) :] = torch.tensor(path)
        mask[g, p_len - n[g] : p_len] = 1
        mask[g, p_len + a_len - len(path) :] = 1
        pos[g, a_len - len(path) :] = n[g] + torch.arange(len(path))
    out: list[list[int]] = [[] for _ in range(g_n)]
    alive = list(range(g_n))
    logits = student.model(
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
            if nxt[r] == student.eos_id:
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
        logits = student.model(
            input_ids=torch.tensor(nxt)[:, None].to(device),
            attention_mask=mask.to(device),
            position_ids=nxt_pos[:, None].to(device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        nxt_pos = nxt_pos + 1


def causal_score_chunk(student, chunk, prompt_kv, mask, pos, first_logp, device):
    """Mean log-likelihood (text + EOS), the text's summed log-likelihood and per-position
    greedy tokens of option rows ``(row, i, j, ids)`` continuing the prompts whose KV cache
    is ``prompt_kv`` (one copy per option row)."""
    from transformers import DynamicCache

    rows = torch.tensor([o[0] for o in chunk])
    o_len = max(len(o[3]) for o in chunk)
    tgt = torch.full((len(chunk), o_len), student.pad_id, dtype=torch.long)
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
            ddp_cache_data=[(k[dev_rows], v[dev_rows]) for k, v in prompt_kv], config=student.model.config
        )
        logits = student.model(
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
    return mean.tolist(), student._text_sums(lp, tmask).tolist(), arg.tolist()


@torch.no_grad()
def causal_score_options_pairwise(
    student, records, max_input_tokens, batch_size, device, progress=None, unconditional=False
):
    """Reference scorer: every (prompt + option) pair as its own left-padded row."""
    scores = OptionScores.empty(records)
    pairs = []
    for i, r in enumerate(records):
        p = student.answer_prompt(r, max_input_tokens, unconditional)
        pairs += [(i, j, p, o) for j, o in enumerate(student.option_ids(r["choices"], 1 << 30))]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        ids, mask, pos = student._left_pad([p + o for _, _, p, o in chunk])
        logp = torch.log_softmax(
            student.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)
            ).logits.float(),
            -1,
        ).cpu()
        t = ids.shape[1]
        for r, (i, j, _, o) in enumerate(chunk):
            cols = torch.arange(t - len(o) - 1, t - 1)
            lp = logp[r, cols, torch.tensor(o)]
            scores.mean[i][j] = lp.mean().item()
            scores.total[i][j] = lp[: len(o) - student._has_eos()].sum().item()
    return scores


@torch.no_grad()
def causal_generate(student, records, max_input_tokens, max_new_tokens, batch_size, device, progress=None):
    """Greedy answers, batched by decoding budget then prompt length, with left padding, in
    record order. Each batch decodes at most as many tokens as its longest option (+ EOS)
    needs, unless ``max_new_tokens`` caps it lower."""
    prompts = [student.answer_prompt(r, max_input_tokens) for r in records]
    budget = [answer_limit(student.option_ids(r["choices"], 1 << 30), max_new_tokens) for r in records]
    order = sorted(range(len(records)), key=lambda i: (budget[i], len(prompts[i])))
    out = [""] * len(records)
    for start in range(0, len(order), batch_size):
        qs = order[start : start + batch_size]
        ids, mask, _ = student._left_pad([prompts[i] for i in qs])
        gen = student.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max(budget[i] for i in qs),
            do_sample=False,
            pad_token_id=student.pad_id,
            eos_token_id=student.eos_id,
        )
        for r, i in enumerate(qs):
            new = gen[r, ids.shape[1] :].tolist()[: budget[i]]
            # a prediction depends on its own tokens only: stop at its own EOS, whatever its batch
            if student.eos_id in new:
                new = new[: new.index(student.eos_id)]
            out[i] = student._text(new)
        if progress is not None:
            progress.update(len(qs))
    return out


# ----------------------------------------------------------------------------- encoder-decoder


@torch.no_grad()
def seq2seq_score_options(
    student, records, max_input_tokens, batch_size, device, progress=None, with_greedy=False, unconditional=False
) -> OptionScores:
    """Encoder once per question; every option decoded after the answer tag, batched.
    ``with_greedy`` and ``unconditional`` as for the decoder-only student."""
    scores = OptionScores.empty(records, greedy=with_greedy)
    for start in range(0, len(records), batch_size):
        chunk = list(range(start, min(len(records), start + batch_size)))
        prompts = [student.answer_prompt(records[i], max_input_tokens, unconditional) for i in chunk]
        ids, mask = student._pad_right([p[0] for p in prompts], student.pad_id)
        enc = student.model.get_encoder()(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        opts = [
            (r, i, j, o)
            for r, i in enumerate(chunk)
            for j, o in enumerate(student.option_ids(records[i]["choices"], 1 << 30))
        ]
        rows = torch.tensor([o[0] for o in opts], device=device)
        dec = [prompts[r][1] + o[:-1] for r, _, _, o in opts]
        lab = [[IGNORE] * (len(prompts[r][1]) - 1) + o for r, _, _, o in opts]
        d, dmask = student._pad_right(dec, student.pad_id)
        labels, _ = student._pad_right(lab, IGNORE)
        from transformers.modeling_outputs import BaseModelOutput

        logits = student.model(
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
            scores.total[i][j] = tok_lp[n, first : first + len(o) - student._has_eos()].sum().item()
            if with_greedy:
                scores.greedy[i][j] = arg[n][first : first + len(o)]
        if progress is not None:
            progress.update(len(chunk))
    return scores


@torch.no_grad()
def seq2seq_generate(student, records, max_input_tokens, max_new_tokens, batch_size, device, progress=None):
    prompts = [student.answer_prompt(r, max_input_tokens) for r in records]
    need = [answer_limit(student.option_ids(r["choices"], 1 << 30), max_new_tokens) for r in records]
    out = [""] * len(records)
    for start in range(0, len(records), batch_size):
        qs = list(range(start, min(len(records), start + batch_size)))
        ids, mask = student._pad_right([prompts[i][0] for i in qs], student.pad_id)
        dec = torch.tensor([prompts[i][1] for i in qs])  # same tag for every question
        gen = student.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            decoder_input_ids=dec.to(device),
            max_new_tokens=max(need[i] for i in qs),
            do_sample=False,
            pad_token_id=student.pad_id,
            eos_token_id=student.eos_id,
        )
        for r, i in enumerate(qs):
            new = gen[r, dec.shape[1] :].tolist()
            if student.eos_id in new:
                new = new[: new.index(student.eos_id)]
            out[i] = student.tok.decode(new[: need[i]], skip_special_tokens=True).strip()
        if progress is not None:
            progress.update(len(qs))
    return out
