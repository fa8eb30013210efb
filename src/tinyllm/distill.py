"""Multi-task distillation of the student (TinyLLM), label-only fine-tuning and LoRA.

One training *example* is a question; it yields one sequence per task: the answer task
(``predict:`` prefix, target = the option text) and one rationale task per teacher with a
rationale for it (``explain (<teacher>):`` prefix, target = that teacher's rationale).

Fast path (``fused_tasks``): all sequences of a step go through the student in one padded
forward/backward. Decoder-only students are left-padded so every target sits at the end of its
row; logits are then computed for the last ``max target length`` positions only (the
49k-vocabulary projection of prompt tokens is never needed). The reference path runs one
forward per task, like the authors' trainer; both compute the same loss (see tests).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import DistillConfig
from .io import write_json
from .loss import IGNORE, multitask_loss, multitask_loss_tokens
from .prompts import ANSWER_PREFIX, encode_input, encode_target, rationale_prefix

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


@dataclass
class Sequence:
    input_ids: list[int]
    target_ids: list[int]
    task: int  # 0 = answer, m = teacher m


def encode_example(tok, example: dict, teachers: list[str], cfg: DistillConfig, seq2seq: bool) -> list[Sequence]:
    rec = example["record"]
    seqs = [Sequence(encode_input(tok, ANSWER_PREFIX, rec, cfg.max_input_tokens, seq2seq),
                     encode_target(tok, rec["answer"], cfg.max_answer_tokens, seq2seq), 0)]
    for m, t in enumerate(teachers, 1):
        text = example["rationales"].get(t)
        if text:
            seqs.append(Sequence(encode_input(tok, rationale_prefix(t), rec, cfg.max_input_tokens, seq2seq),
                                 encode_target(tok, text, cfg.max_rationale_tokens, seq2seq), m))
    return seqs


def bucketed_batches(encoded: list[list[Sequence]], batch_size: int, rng: random.Random,
                     bucket_factor: int = 50):
    """Endless stream of batches (lists of examples' sequences) with similar lengths.

    Shuffle, cut into pools of ``bucket_factor * batch_size`` examples, sort each pool by
    length, slice into batches and shuffle the batches: padding shrinks, order stays random.
    """
    idx = list(range(len(encoded)))
    length = [sum(len(s.input_ids) + len(s.target_ids) for s in ex) for ex in encoded]
    while True:
        rng.shuffle(idx)
        batches = []
        pool = bucket_factor * batch_size
        for i in range(0, len(idx), pool):
            chunk = sorted(idx[i:i + pool], key=length.__getitem__)
            batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield [s for i in b for s in encoded[i]]


# ----------------------------------------------------------------------------- batches


def collate_causal(seqs: list[Sequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask``/``position_ids`` and ``labels`` aligned so
    that hidden state t predicts ``labels[:, t]``; targets sit at the right end of every row."""
    full = [s.input_ids + s.target_ids for s in seqs]
    n, t = len(full), max(map(len, full))
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    labels = torch.full((n, t), IGNORE, dtype=torch.long)
    for i, (s, f) in enumerate(zip(seqs, full)):
        ids[i, t - len(f):] = torch.tensor(f)
        mask[i, t - len(f):] = 1
        # position p predicts token p+1: the first target token is predicted by the last input token
        labels[i, t - len(s.target_ids) - 1: t - 1] = torch.tensor(s.target_ids)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    keep = max(len(s.target_ids) for s in seqs) + 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": labels,
            "task_ids": torch.tensor([s.task for s in seqs]), "keep": keep}


def collate_seq2seq(seqs: list[Sequence], pad_id: int) -> dict[str, torch.Tensor]:
    n = len(seqs)
    ti, tt = max(len(s.input_ids) for s in seqs), max(len(s.target_ids) for s in seqs)
    ids = torch.full((n, ti), pad_id, dtype=torch.long)
    mask = torch.zeros((n, ti), dtype=torch.long)
    labels = torch.full((n, tt), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
        mask[i, : len(s.input_ids)] = 1
        labels[i, : len(s.target_ids)] = torch.tensor(s.target_ids)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "task_ids": torch.tensor([s.task for s in seqs])}


def batch_loss(model, batch: dict, weights: torch.Tensor, seq2seq: bool,
               all_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over a collated batch of any mix of tasks -> (total, per-task losses).

    ``all_logits`` projects every position onto the vocabulary, as a plain
    ``model(..., labels=...)`` call does (the reference path); by default only the last
    ``keep`` columns, where all targets of a left-padded batch lie, are projected.
    """
    if seq2seq:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return multitask_loss(out.logits, batch["labels"], batch["task_ids"], weights)
    if all_logits:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"])
        return multitask_loss(out.logits, batch["labels"], batch["task_ids"], weights)
    keep = batch["keep"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep)
    labels = batch["labels"][:, -keep:]
    return multitask_loss(out.logits, labels, batch["task_ids"], weights)


def step_loss(model, seqs: list[Sequence], weights: torch.Tensor, seq2seq: bool, pad_id: int,
              fused: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one step's sequences: fused (one forward, target logits only) or the authors'
    reference (one forward per task, logits for every position).

    Both give ``sum_k w_k * mean over task k's target tokens``; the caller backpropagates it.
    """
    collate = collate_seq2seq if seq2seq else collate_causal
    to = lambda b: {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}  # noqa: E731
    if fused:
        return batch_loss(model, to(collate(seqs, pad_id)), weights, seq2seq)
    total = torch.zeros((), device=device)
    per_task = torch.zeros(len(weights), device=device)
    for k in sorted({s.task for s in seqs}):
        group = [s for s in seqs if s.task == k]
        # a one-task batch: with unit weights its total is that task's mean token loss
        lk, _ = batch_loss(model, to(collate(group, pad_id)), torch.ones(len(weights), device=device), seq2seq,
                           all_logits=True)
        total = total + weights[k].to(lk) * lk
        per_task[k] = lk.detach()
    return total, per_task


# ----------------------------------------------------------------------------- training


def _lr_lambda(cfg: DistillConfig):
    warm = int(cfg.warmup_ratio * cfg.steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    return f


def train(
    model,
    tok,
    seq2seq: bool,
    examples: list[dict],
    teachers: list[str],
    cfg: DistillConfig,
    log_path: Path | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model`` in place for ``cfg.steps`` optimizer steps; return summary metrics.

    Uses Accelerate, so the same code runs on CPU, one GPU, or several processes under
    ``accelerate launch`` / ``torchrun`` (each process draws its own shard of batches).
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from tqdm.auto import tqdm

    from .modeling import resolve_precision

    precision = resolve_precision(cfg.precision, PartialState(cpu=not torch.cuda.is_available()).device)
    # Accelerate keeps its settings in a process-wide singleton; forget the previous call's
    # mixed-precision choice (several train() calls in one process: tests, benchmarks).
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(cpu=not torch.cuda.is_available(),
                      mixed_precision="bf16" if precision == "bf16" else "no",
                      gradient_accumulation_steps=cfg.grad_accum)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed + acc.process_index)

    encoded = [encode_example(tok, ex, teachers, cfg, seq2seq) for ex in examples]
    if not encoded:
        raise ValueError("no training examples")
    weights = torch.tensor([cfg.answer_weight] + [float(cfg.alphas[t]) for t in teachers])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    # The scheduler is not prepared: Accelerate's wrapper steps it once per process per
    # optimizer step, which under N processes would decay the LR N times too fast.
    model, opt = acc.prepare(model, opt)
    model.train()
    weights = weights.to(acc.device)
    pad_id = tok.pad_token_id

    # each process trains on its own disjoint shard (batch_size is per process)
    batches = bucketed_batches(encoded[acc.process_index::acc.num_processes], cfg.batch_size, rng)
    rows, t0, tokens = [], time.perf_counter(), 0
    bar = tqdm(range(cfg.steps), desc="distill", disable=not (progress and acc.is_main_process))
    for step in bar:
        step_total, step_tasks = 0.0, torch.zeros(len(weights))
        for _ in range(cfg.grad_accum):
            seqs = next(batches)
            tokens += sum(len(s.input_ids) + len(s.target_ids) for s in seqs)
            with acc.accumulate(model), acc.autocast():
                loss, per_task = step_loss(model, seqs, weights, seq2seq, pad_id, cfg.fused_tasks, acc.device)
                acc.backward(loss)
                opt.step()  # a no-op until the last micro-batch of the accumulation window
                opt.zero_grad()
            # logged values cover the global batch (all processes), not rank 0's share
            step_total += acc.reduce(loss.detach(), reduction="mean").item() / cfg.grad_accum
            step_tasks += acc.reduce(per_task.detach().float(), reduction="mean").cpu() / cfg.grad_accum
        sched.step()  # once per optimizer step
        elapsed = time.perf_counter() - t0
        row = {"step": step + 1, "loss": step_total,
               **{("loss_answer" if k == 0 else f"loss_{teachers[k - 1]}"): float(v) for k, v in enumerate(step_tasks)},
               "lr": sched.get_last_lr()[0], "tokens_per_s": tokens / elapsed, "elapsed_s": elapsed}
        rows.append(row)
        if acc.is_main_process:
            bar.set_postfix(loss=f"{step_total:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if (step + 1) % cfg.log_every == 0 or step == 0:
                log.info("step %d/%d loss %.4f (%s) %.0f tok/s", step + 1, cfg.steps, step_total,
                         ", ".join(f"{k}={v:.3f}" for k, v in row.items() if k.startswith("loss_")),
                         row["tokens_per_s"])
    acc.wait_for_everyone()
    model = acc.unwrap_model(model)
    if log_path is not None and acc.is_main_process:
        _write_tsv(log_path, rows)
    wall = time.perf_counter() - t0
    first = rows[0]["loss"]
    tail = rows[-max(1, len(rows) // 5):]
    return {
        "steps": cfg.steps,
        "examples": len(examples),
        "sequences": sum(map(len, encoded)),
        "loss_first": first,
        "loss_last": sum(r["loss"] for r in tail) / len(tail),
        **{f"{k}_last": sum(r[k] for r in tail) / len(tail) for k in rows[-1] if k.startswith("loss_")},
        "tokens_per_s": tokens / wall,
        "s_per_step": wall / cfg.steps,
        "train_wall_s": wall,
        "bf16": int(precision == "bf16"),
        "processes": acc.num_processes,
        "_model": model,
        "_is_main": acc.is_main_process,
    }


def _write_tsv(path: Path, rows: list[dict]) -> None:
    from .io import atomic_write

    keys = list(rows[0])
    with atomic_write(path) as f:
        f.write("\t".join(keys) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + "\n")


def apply_lora(model, lora: dict, seq2seq: bool):
    """Wrap ``model`` with PEFT LoRA adapters (only they train)."""
    from peft import LoraConfig, TaskType, get_peft_model

    known = {"r", "alpha", "dropout", "target_modules"}
    unknown = set(lora) - known
    if unknown:
        raise ValueError(f"params.yaml [distill.lora]: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    cfg = LoraConfig(
        r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)), lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=lora.get("target_modules", "all-linear"),
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, cfg)


def save_student(model, tok, out_dir: Path, meta: dict) -> None:
    """``save_pretrained`` a plain checkpoint (LoRA adapters merged) plus ``tinyllm.json``."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    write_json(out_dir / "tinyllm.json", meta)


def config_dict(cfg: DistillConfig) -> dict:
    return asdict(cfg)
