"""Accuracy of a student on multiple-choice questions, decided two ways:

- ``score``: the option whose target tokens (option text + EOS) have the highest mean
  log-likelihood after the answer prompt. Every option is scored, all options of all questions
  batched together (one forward per batch, not per option).
- ``generate``: greedy decoding after the answer prompt, the text matched to an option after
  normalisation (the paper's exact-match rule; text that names no option counts as wrong and is
  counted as ``unmatched``).
"""

from __future__ import annotations

import logging
import re
import string

import torch

from .distill import Sequence, collate_causal, collate_seq2seq
from .prompts import ANSWER_PREFIX, encode_input, encode_target

log = logging.getLogger(__name__)

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def match_option(text: str, choices: list[str]) -> int | None:
    """Index of the option ``text`` names, else None. Accepts a leading "(b)" letter tag."""
    first = text.strip().split("\n")[0]
    first = re.sub(r"^\(?([a-z])\)\s+", "", first.strip(), flags=re.I)
    norm = normalize(first)
    hits = [i for i, c in enumerate(choices) if normalize(c) == norm]
    return hits[0] if len(hits) == 1 else None


@torch.no_grad()
def score_options(model, tok, records: list[dict], seq2seq: bool, max_input_tokens: int,
                  batch_size: int, device, progress=None) -> list[list[float]]:
    """Mean token log-likelihood of every option of every record: ``scores[i][j]``.

    Decoder-only students run each question's prompt once and score all its options from the
    prompt's KV cache (a prompt is ~10x longer than an option, so this is ~options-x cheaper
    than scoring prompt+option pairs); seq2seq students use the pairwise path.
    """
    if seq2seq:
        return score_options_pairwise(model, tok, records, seq2seq, max_input_tokens, batch_size, device, progress)
    scores = [[0.0] * len(r["choices"]) for r in records]
    prompts = [encode_input(tok, ANSWER_PREFIX, r, max_input_tokens, False) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
    pad = tok.pad_token_id
    for start in range(0, len(order), batch_size):
        qs = order[start:start + batch_size]
        p = max(len(prompts[i]) for i in qs)
        ids = torch.full((len(qs), p), pad, dtype=torch.long)
        mask = torch.zeros((len(qs), p), dtype=torch.long)
        for r, i in enumerate(qs):
            ids[r, p - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, p - len(prompts[i]):] = 1
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                    use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(out.logits[:, -1].float(), -1)  # (Q, V): predicts option token 0
        opts = [(r, i, j, encode_target(tok, c, 64, False)) for r, i in enumerate(qs)
                for j, c in enumerate(records[i]["choices"])]
        rows = torch.tensor([o[0] for o in opts])
        o_len = max(len(o[3]) for o in opts)
        tgt = torch.full((len(opts), o_len), pad, dtype=torch.long)
        tmask = torch.zeros((len(opts), o_len), dtype=torch.long)
        for n, o in enumerate(opts):
            tgt[n, : len(o[3])] = torch.tensor(o[3])
            tmask[n, : len(o[3])] = 1
        cache = out.past_key_values
        for layer in cache.layers:  # one copy of each question's prompt per option
            layer.batch_select_indices(rows.to(device))
        full_mask = torch.cat([mask[rows], tmask], 1)
        opos = pos[rows, -1:] + 1 + torch.arange(o_len)[None]
        lp = torch.zeros(len(opts), o_len)
        lp[:, 0] = first_logp[rows.to(device), tgt[:, 0].to(device)].cpu()
        if o_len > 1:
            logits = model(input_ids=tgt[:, :-1].to(device), attention_mask=full_mask[:, :-1].to(device),
                           position_ids=opos[:, :-1].to(device), past_key_values=cache, use_cache=True).logits
            nxt = torch.log_softmax(logits.float(), -1).gather(-1, tgt[:, 1:, None].to(device))[..., 0]
            lp[:, 1:] = nxt.cpu()
        mean = (lp * tmask).sum(-1) / tmask.sum(-1)
        for (r, i, j, _), v in zip(opts, mean.tolist()):
            scores[i][j] = v
        if progress is not None:
            progress.update(len(opts))
    return scores


@torch.no_grad()
def score_options_pairwise(model, tok, records: list[dict], seq2seq: bool, max_input_tokens: int,
                           batch_size: int, device, progress=None) -> list[list[float]]:
    """Reference scorer: every (prompt + option) pair as its own sequence, batched."""
    pairs = []
    for i, rec in enumerate(records):
        inp = encode_input(tok, ANSWER_PREFIX, rec, max_input_tokens, seq2seq)
        for j, c in enumerate(rec["choices"]):
            pairs.append((i, j, Sequence(inp, encode_target(tok, c, 64, seq2seq), 0)))
    order = sorted(range(len(pairs)), key=lambda k: len(pairs[k][2].input_ids) + len(pairs[k][2].target_ids))
    scores = [[0.0] * len(r["choices"]) for r in records]
    pad = tok.pad_token_id
    for start in range(0, len(order), batch_size):
        chunk = [pairs[k] for k in order[start:start + batch_size]]
        seqs = [p[2] for p in chunk]
        if seq2seq:
            b = {k: v.to(device) for k, v in collate_seq2seq(seqs, pad).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).logits
            labels = b["labels"]
        else:
            b = collate_causal(seqs, pad)
            keep = b.pop("keep")
            b = {k: v.to(device) for k, v in b.items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           position_ids=b["position_ids"], logits_to_keep=keep).logits
            labels = b["labels"][:, -keep:]
        logp = torch.log_softmax(logits.float(), -1)
        mask = labels != -100
        tok_lp = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * mask
        mean = tok_lp.sum(-1) / mask.sum(-1).clamp_min(1)
        for (i, j, _), v in zip(chunk, mean.tolist()):
            scores[i][j] = v
        if progress is not None:
            progress.update(len(chunk))
    return scores


@torch.no_grad()
def generate_answers(model, tok, records: list[dict], seq2seq: bool, max_input_tokens: int,
                     max_new_tokens: int, batch_size: int, device, progress=None) -> list[str]:
    """Greedy answers, batched (left padding for decoder-only students), in record order."""
    inputs = [encode_input(tok, ANSWER_PREFIX, r, max_input_tokens, seq2seq) for r in records]
    order = sorted(range(len(inputs)), key=lambda k: len(inputs[k]))
    out: list[str] = [""] * len(records)
    pad = tok.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t = max(len(inputs[k]) for k in idx)
        ids = torch.full((len(idx), t), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), t), dtype=torch.long)
        for r, k in enumerate(idx):
            seq = inputs[k]
            if seq2seq:
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            else:
                ids[r, t - len(seq):] = torch.tensor(seq)
                mask[r, t - len(seq):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=tok.eos_token_id)
        new = gen if seq2seq else gen[:, t:]
        for r, k in enumerate(idx):
            out[k] = tok.decode(new[r], skip_special_tokens=True).strip()
        if progress is not None:
            progress.update(len(idx))
    return out


def evaluate_records(model, tok, records: list[dict], seq2seq: bool, *, max_input_tokens: int,
                     max_new_tokens: int, batch_size: int, device, headline: str = "score",
                     progress: bool = True) -> tuple[dict, list[dict]]:
    """Metrics (both decision rules) and per-question predictions for one benchmark split."""
    from tqdm.auto import tqdm

    if not records:
        raise ValueError("no records to evaluate")
    n_opts = sum(len(r["choices"]) for r in records)
    with tqdm(total=n_opts, desc="  score options", disable=not progress, leave=False) as bar:
        scores = score_options(model, tok, records, seq2seq, max_input_tokens, batch_size, device, bar)
    with tqdm(total=len(records), desc="  generate", disable=not progress, leave=False) as bar:
        texts = generate_answers(model, tok, records, seq2seq, max_input_tokens, max_new_tokens, batch_size, device, bar)
    preds = []
    for rec, sc, text in zip(records, scores, texts):
        by_score = max(range(len(sc)), key=sc.__getitem__)
        by_gen = match_option(text, rec["choices"])
        preds.append({"id": rec["id"], "label": rec["label"], "pred_score": by_score, "pred_generate": by_gen,
                      "generated": text, "scores": [round(s, 4) for s in sc]})
    n = len(preds)
    acc_score = sum(p["pred_score"] == p["label"] for p in preds) / n
    acc_gen = sum(p["pred_generate"] == p["label"] for p in preds) / n
    metrics = {
        "accuracy": acc_score if headline == "score" else acc_gen,
        "acc_score": acc_score,
        "acc_generate": acc_gen,
        "unmatched_generate": sum(p["pred_generate"] is None for p in preds) / n,
        "n": n,
    }
    return metrics, preds


def average(per_benchmark: dict[str, dict]) -> dict:
    """Unweighted mean over benchmarks (the paper's "Avg" column)."""
    keys = ("accuracy", "acc_score", "acc_generate", "unmatched_generate")
    k = len(per_benchmark)
    out = {key: sum(m[key] for m in per_benchmark.values()) / k for key in keys}
    out["n"] = sum(m["n"] for m in per_benchmark.values())
    return out
