"""The training loop: multi-task distillation (TinyLLM), label-only fine-tuning and LoRA.

One training *example* is a question with the rationales its teachers wrote (``trainset.py``);
the student (``student/``) encodes it as a shared question prefix plus one branch per task —
the answer (task 0) and each teacher's rationale (task m) — and computes per-task token-NLL sums.
This module turns those into ``L = w_A * L_A + sum_m alpha_m * L_m`` where every term is the
mean over that task's target tokens in the whole optimizer step (all micro-batches of
``grad_accum`` and all processes), so splitting a batch never changes the step.

Batches are drawn by ``batches``: per epoch a seeded shuffle of the questions, bucketed by the
length of the *question alone*, so two arms with the same seed (label-only and TinyLLM) see the
same questions in the same order whatever their rationales.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import DistillConfig, active_teachers  # noqa: F401  (active_teachers re-exported)
from .device import resolve_precision
from .loss import multitask_loss
from .student import Encoded, Student
from .train_state import Progress, code_digest, save_state, usable_state, weights_digest

if TYPE_CHECKING:
    from .checkpoints import Checkpoints

log = logging.getLogger(__name__)


def encode_examples(student: Student, examples: list[dict], teachers: list[str], cfg: DistillConfig) -> list[Encoded]:
    """Each example as an ``Encoded`` question; only teachers in ``teachers`` (alpha > 0) add a task."""
    return [
        student.encode(
            ex["record"],
            ex["rationales"],
            teachers,
            cfg.max_input_tokens,
            cfg.max_answer_tokens,
            cfg.max_rationale_tokens,
        )
        for ex in examples
    ]


def target_stats(encoded: list[Encoded], examples: list[dict], teachers: list[str]) -> dict:
    """How many targets of each task were cut at their cap, per benchmark (cut targets carry no EOS)."""
    names = ["answer"] + list(teachers)
    out: dict[str, dict] = {}
    for e, ex in zip(encoded, examples, strict=True):
        b = ex["record"].get("benchmark", "all")
        for br in e.branches:
            d = out.setdefault(names[br.task], {}).setdefault(b, {"targets": 0, "cut": 0})
            d["targets"] += 1
            d["cut"] += int(br.cut)
    return out


def batches(encoded: list[Encoded], batch_size: int, seed: int, rank: int = 0, world: int = 1, bucket_factor: int = 50):
    """Endless stream of batches (lists of question indices), epoch after epoch.

    Per epoch: a seeded shuffle of all questions, cut into pools of ``bucket_factor * batch_size
    * world``, each pool sorted by question length and sliced into global batches, batch order
    shuffled; process ``rank`` takes its ``batch_size`` share of each global batch. Every
    question appears exactly once per epoch; the order depends on the seed and the questions,
    never on the rationales (``Encoded.question_tokens``)."""
    rng = random.Random(seed)
    n = len(encoded)
    key = [e.question_tokens for e in encoded]
    glob = batch_size * world
    while True:
        idx = list(range(n))
        rng.shuffle(idx)
        out = []
        pool = bucket_factor * glob
        for i in range(0, n, pool):
            chunk = sorted(idx[i : i + pool], key=lambda j: (key[j], j))
            out += [chunk[j : j + glob] for j in range(0, len(chunk), glob)]
        rng.shuffle(out)
        for b in out:
            share = b[rank::world]
            if share:
                yield share


def _task_names(teachers: list[str]) -> list[str]:
    return ["answer"] + list(teachers)


@torch.no_grad()
def valid_losses(student: Student, model, encoded: list[Encoded], k: int, cfg: DistillConfig, device) -> torch.Tensor:
    """Mean token loss of each task on a fixed set of held-out questions, (K,) (NaN: task absent)."""
    was = model.training
    model.eval()
    sums = torch.zeros(k)
    counts = torch.zeros(k)
    for i in range(0, len(encoded), cfg.batch_size):
        part = student.losses(
            model,
            encoded[i : i + cfg.batch_size],
            k,
            cfg.forward,
            cfg.pack_tokens,
            cfg.ce_chunk_tokens,
            device,
            cfg.pad_multiple,
        )
        sums += part.sums.float().cpu()
        counts += part.counts.float().cpu()
    model.train(was)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))


def malloc_trim() -> bool:
    """Return the free pages of every glibc heap arena to the OS (``malloc_trim(0)``).

    A training step frees GBs of activations whose sizes change with the batch; glibc keeps the
    freed blocks mapped for reuse, so with batches of varying lengths the resident set ratchets
    up step after step (default profile, 3 steps with gradient checkpointing: 4.1 GB, 3.8 GB
    with a trim after every step; ``benchmarks/profile_memory.py``). False where there is no
    glibc (macOS, musl): nothing happens."""
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _libc_malloc_trim():
    """glibc's ``malloc_trim``, looked up once per process (None without glibc)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


@dataclass
class _Loop:
    """What the training loop works with, set up once by ``_setup`` (and ``_resume``)."""

    acc: Any  # accelerate.Accelerator
    model: Any  # the prepared model
    opt: Any
    sched: Any
    weights: torch.Tensor  # (K,) answer weight, then each teacher's alpha
    names: list[str]  # task names: answer, then the teachers
    valid_enc: list[Encoded]  # the validation-loss questions
    precision: str
    done: Progress  # steps done, tokens, seconds and rows so far (a resumed run's from its save)
    settings: dict | None = None  # what a training-state save records (None: not resumable)


def train(
    student: Student,
    examples: list[dict],
    cfg: DistillConfig,
    log_path: Path | None = None,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    valid_examples: list[dict] | None = None,
    on_step: Callable[[int], None] | None = None,
    state_dir: Path | None = None,
    state_every: int = 0,
    state_at_end: bool = True,
) -> dict:
    """Train ``student.model`` in place for ``cfg.steps`` optimizer steps; return summary metrics.

    The teachers are those with alpha > 0 (``active_teachers``); one of them without a single
    rationale among ``examples`` is an error naming it. ``steps = 0`` leaves the model untouched
    (the untrained-student row) and writes a log with its header only.
    Uses Accelerate, so the same code runs on CPU, one GPU, or several processes under
    ``accelerate launch`` / ``torchrun`` (batch_size is per process; each process takes its
    share of every global batch). ``on_log(row)`` is called on the main process with every
    logged row (MLflow logs it live); ``valid_examples`` give the per-task validation loss.
    ``on_step(step)`` is called on the main process after every optimizer step (checkpoint
    evaluation: it may switch ``student.model`` to eval mode; training resumes in train mode).
    The student reads and answers questions in ``cfg.answer_format`` from here on (saved with it).

    With ``state_dir``, the run is resumable (``train_state``): the whole training state is saved
    there every ``state_every`` steps and after the last one (unless ``state_at_end`` is False: a
    caller that saves the model right away), and a call that finds a save of the same run there
    (same settings, questions, starting weights, student kind and code) continues from it; any
    other save, or one that cannot be read back, is discarded with a warning. A resumed call
    replays the logged rows so far through ``on_log`` and calls ``on_step`` for the new steps only.
    The caller removes the folder once it has saved the result.
    """
    from tqdm.auto import tqdm

    student.set_format(cfg.answer_format, cfg.rationale_position)
    teachers = active_teachers(cfg.alphas)
    encoded, cut = _encode_checked(student, examples, teachers, cfg)
    if cfg.steps == 0:
        if log_path is not None:
            _write_tsv(log_path, [], keys=["step", "loss"])
        return {"steps": 0, "examples": len(examples), "cut_targets": cut, "_is_main": True}
    loop = _setup(student, teachers, cfg, valid_examples, state_dir is not None)
    if state_dir is not None:
        _resume(loop, student, examples, teachers, cfg, state_dir)
    acc, done = loop.acc, loop.done
    stream = batches(encoded, cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes)
    for _ in range(done.step * cfg.grad_accum):  # the batches the saved steps consumed
        next(stream)
    rows, tokens, resumed_at = done.rows, done.tokens, done.step
    if on_log is not None and acc.is_main_process:
        for row in rows:
            on_log(row)
    t0 = time.perf_counter() - done.elapsed_s
    bar = tqdm(
        range(done.step, cfg.steps), desc="distill", initial=done.step, total=cfg.steps,
        disable=not (progress and acc.is_main_process),
    )  # fmt: skip
    for step in bar:
        micro = [[encoded[i] for i in next(stream)] for _ in range(cfg.grad_accum)]
        sums, denom, tokens = _optimizer_step(student, loop, micro, cfg, tokens)
        row = _log_row(student, loop, cfg, step + 1, sums, denom, tokens, time.perf_counter() - t0)
        rows.append(row)
        if acc.is_main_process:
            _announce(loop, cfg, row, on_step, on_log, bar)
        last = state_at_end and step + 1 == cfg.steps
        if state_dir is not None and state_every and ((step + 1) % state_every == 0 or last):
            done.step, done.tokens, done.elapsed_s, done.rows = step + 1, tokens, row["elapsed_s"], rows
            save_state(acc, state_dir, step + 1, loop.settings)
    acc.wait_for_everyone()
    # keep_fp32_wrapper=False: drop Accelerate's autocast wrapper of forward(), so the student
    # evaluates in fp32 in this process too (under bf16 autocast, predictions depend on the batch)
    student.model = acc.unwrap_model(loop.model, keep_fp32_wrapper=False)
    if log_path is not None and acc.is_main_process:
        _write_tsv(log_path, rows)
    return _summary(loop, cfg, examples, encoded, rows, tokens, resumed_at, time.perf_counter() - t0, cut)


def _encode_checked(student: Student, examples: list[dict], teachers: list[str], cfg: DistillConfig):
    """(encoded questions, cut-target stats); an error when a teacher in use has no rationale at
    all among ``examples``, or when there is nothing to train on."""
    missing = [t for t in teachers if not any(ex["rationales"].get(t) for ex in examples)]
    if missing:
        raise ValueError(
            f"distill.alphas: teacher(s) {missing} have alpha > 0 but no rationale for any of the "
            f"{len(examples)} training questions (is the cache missing or stale?)"
        )
    encoded = encode_examples(student, examples, teachers, cfg)
    if not encoded:
        raise ValueError("no training examples")
    return encoded, target_stats(encoded, examples, teachers)


def _setup(
    student: Student, teachers: list[str], cfg: DistillConfig, valid_examples: list[dict] | None, resumable: bool
) -> _Loop:
    """Accelerate, the optimizer and the LR schedule around ``student.model``."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import AutocastKwargs
    from transformers import get_scheduler

    precision = resolve_precision(cfg.precision, PartialState(cpu=not torch.cuda.is_available()).device)
    # Accelerate keeps its settings in a process-wide singleton; forget the previous call's
    # mixed-precision choice (several train() calls in one process: tests, benchmarks).
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if precision == "bf16" else "no",
        # autocast's cache keeps a bf16 copy of every weight until the forward ends (0.27 GB for
        # the default student); checkpointed layers recompute, and so recast, in backward anyway,
        # so casting on use costs nothing. A weight used several times per forward (the tied
        # output layer, once per cross-entropy chunk) now gets its gradient per use in fp32.
        kwargs_handlers=[AutocastKwargs(cache_enabled=False)],
    )
    torch.manual_seed(cfg.seed)

    valid_enc = encode_examples(student, valid_examples or [], teachers, cfg)
    weights = torch.tensor([cfg.answer_weight] + [float(cfg.alphas[t]) for t in teachers])
    model = student.model
    start = {"start_weights": weights_digest(model), "kind": student.kind} if resumable else {}
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Not prepared by Accelerate: its wrapper steps the schedule once per process per optimizer
    # step, which under N processes would decay the LR N times too fast.
    sched = get_scheduler(
        cfg.lr_schedule, opt, num_warmup_steps=int(cfg.warmup_ratio * cfg.steps), num_training_steps=cfg.steps
    )
    model, opt = acc.prepare(model, opt)
    loop = _Loop(acc, model, opt, sched, weights, _task_names(teachers), valid_enc, precision, Progress())
    loop.settings = start  # completed by _resume
    model.train()
    loop.weights = weights.to(acc.device)
    return loop


def _resume(
    loop: _Loop, student: Student, examples: list[dict], teachers: list[str], cfg: DistillConfig, state_dir: Path
) -> None:
    """Make the run resumable and continue it from its own last save in ``state_dir``, if any
    (weights, AdamW moments, schedule, RNG states, ``loop.done``); another run's save or a damaged
    one is discarded (``train_state.usable_state``)."""
    acc = loop.acc
    loop.settings = _state_settings(cfg, teachers, examples, acc.num_processes, loop.settings or {})
    acc.register_for_checkpointing(loop.sched, loop.done)
    found = usable_state(state_dir, loop.settings, acc.is_main_process)  # another run's or damaged: discarded
    acc.wait_for_everyone()
    if found is not None:
        acc.load_state(str(found))  # weights, AdamW moments, schedule, RNG states, `done`
        log.info("resuming from the training state at step %d (%s)", loop.done.step, found)
    loop.model.train()


def _optimizer_step(student: Student, loop: _Loop, micro: list[list[Encoded]], cfg: DistillConfig, tokens: int):
    """One optimizer step over ``grad_accum`` micro-batches: (per-task NLL sums over all processes,
    per-task target-token counts, tokens seen so far on this process)."""
    acc, model, k = loop.acc, loop.model, len(loop.names)
    # token counts of each task over the whole step (all micro-batches, all processes): the
    # denominators that make the sum of micro-batch losses equal the full batch's loss
    local = torch.zeros(k)
    for mb in micro:
        for e in mb:
            for b in e.branches:
                local[b.task] += len(b.target_ids)
    denom = acc.reduce(local.to(acc.device), reduction="sum")
    sums = torch.zeros(k, device=acc.device)
    weights = loop.weights
    for i, mb in enumerate(micro):
        tokens += sum(e.n_tokens() for e in mb)
        sync = acc.no_sync(model) if i < len(micro) - 1 else contextlib.nullcontext()
        with sync:
            with acc.autocast():
                part = student.losses(
                    model, mb, k, cfg.forward, cfg.pack_tokens, cfg.ce_chunk_tokens, acc.device, cfg.pad_multiple
                )
                # DDP averages gradients over processes: scale by the number of processes
                loss = multitask_loss(part.sums, weights, denom) * acc.num_processes
            # backward outside autocast (PyTorch's advice): autocast's bf16 copies of the
            # weights are freed before the backward pass allocates its gradients
            acc.backward(loss)
        sums += part.sums.detach().float()
        if cfg.malloc_trim and acc.device.type == "cpu" and i < len(micro) - 1:
            del part, loss
            malloc_trim()  # this micro-batch's activations, before the next one's forward
    loop.opt.step()
    loop.opt.zero_grad()
    loop.sched.step()
    if cfg.malloc_trim and acc.device.type == "cpu":
        malloc_trim()
    return acc.reduce(sums, reduction="sum").cpu(), denom.cpu(), tokens


def _log_row(
    student: Student, loop: _Loop, cfg: DistillConfig, step: int, sums, denom, tokens: int, elapsed: float
) -> dict:
    """The logged row of ``step``: total and per-task loss (each task's mean over the target tokens
    it had in the step; NaN: absent), LR, throughput, and the validation loss every ``log_every``."""
    acc, names = loop.acc, loop.names
    d = denom
    per_task = torch.where(d > 0, sums / d.clamp_min(1), torch.full_like(sums, float("nan")))
    total = float((loop.weights.cpu() * torch.nan_to_num(per_task)).sum())
    row = {
        "step": step,
        "loss": total,
        **{f"loss_{n}": float(v) for n, v in zip(names, per_task, strict=True)},
        "lr": loop.sched.get_last_lr()[0],
        "tokens_per_s": tokens * acc.num_processes / elapsed,
        "elapsed_s": elapsed,
    }
    if loop.valid_enc and (step % cfg.log_every == 0 or step == cfg.steps):
        vl = valid_losses(student, loop.model, loop.valid_enc, len(names), cfg, acc.device)
        row.update({f"valid_loss_{n}": float(v) for n, v in zip(names, vl, strict=True)})
        if cfg.malloc_trim and acc.device.type == "cpu":
            malloc_trim()  # the validation pass's blocks, before the next step's forward
    return row


def _announce(loop: _Loop, cfg: DistillConfig, row: dict, on_step, on_log, bar) -> None:
    """The main process's per-step calls: ``on_step`` (then train mode again), ``on_log``, the
    progress bar and, every ``log_every`` steps, a log line."""
    step = row["step"]
    if on_step is not None:
        on_step(step)
        loop.model.train()
    if on_log is not None:
        on_log(row)
    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
    if step % cfg.log_every == 0 or step == 1:
        log.info(
            "step %d/%d loss %.4f (%s) %.0f tok/s",
            step,
            cfg.steps,
            row["loss"],
            ", ".join(f"{k_}={v:.3f}" for k_, v in row.items() if k_.startswith(("loss_", "valid_"))),
            row["tokens_per_s"],
        )


def _summary(
    loop: _Loop, cfg: DistillConfig, examples, encoded, rows: list[dict], tokens: int, resumed_at: int, wall, cut
) -> dict:
    """``train``'s return value: losses first and last, throughput, where it resumed."""
    acc, names = loop.acc, loop.names
    return {
        "steps": cfg.steps,
        "examples": len(examples),
        "sequences": sum(len(e.branches) for e in encoded),
        "loss_first": rows[0]["loss"],
        "loss_last": _tail_mean(rows, "loss"),
        **{f"loss_{n}_last": _tail_mean(rows, f"loss_{n}") for n in names},
        **{f"valid_loss_{n}_last": rows[-1][f"valid_loss_{n}"] for n in names if f"valid_loss_{n}" in rows[-1]},
        "tokens_per_s": tokens * acc.num_processes / wall,
        "s_per_step": wall / cfg.steps,
        "resumed_at_step": resumed_at,
        "train_wall_s": wall,
        "bf16": int(loop.precision == "bf16"),
        "processes": acc.num_processes,
        "cut_targets": cut,
        "_is_main": acc.is_main_process,
    }


def distill_student(
    base: Path,
    trainset: Path,
    out: Path,
    cfg: DistillConfig,
    kind: str = "auto",
    log_path: Path | None = None,
    on_log: Callable[[dict], None] | None = None,
    state_dir: Path | None = None,
    state_every: int = 0,
    checkpoints: Checkpoints | None = None,
    progress: bool = True,
) -> dict | None:
    """The ``distill`` stage: the ``trainset`` stage's examples for the teachers with alpha > 0 (and
    its validation-loss examples), the base student (LoRA adapters when ``cfg.lora``) trained under
    ``cfg``, saved atomically to ``out`` with its teachers, answer format and settings
    (``tinyllm.json``). Returns what metrics/train.json holds; None on a non-main process of a
    distributed run, which saves nothing.

    With ``state_dir`` the run is resumable (see ``train``): a killed stage started again continues
    from its last save there, and the folder is removed once the student is saved. ``checkpoints``
    (``tinyllm.checkpoints``): memory per step and the student scored every ``checkpoints.every``
    steps, on the main process."""
    from .student import load_student, save_student
    from .train_state import remove_state
    from .trainset import load_trainset

    teachers = active_teachers(cfg.alphas)
    examples, coverage = load_trainset(trainset, teachers)  # current rationales of these teachers only
    log.info("%d training questions; teachers %s; coverage %s", len(examples), teachers, coverage)
    valid = load_trainset(trainset, teachers, "valid")[0]  # the validation-loss curve's questions
    torch.manual_seed(cfg.seed)
    student = load_student(base, kind)
    if cfg.lora:
        apply_lora(student, cfg.lora)
    on_step = checkpoints.hook(student, cfg.steps) if checkpoints is not None else None
    result = train(
        student, examples, cfg, log_path=log_path, on_log=on_log, valid_examples=valid, progress=progress,
        on_step=on_step, state_dir=state_dir, state_every=state_every,
        state_at_end=False,  # the student is saved next
    )  # fmt: skip
    is_main, cut = result.pop("_is_main"), result.pop("cut_targets")
    if not is_main:
        return None
    meta = {"teachers": teachers, "kind": student.kind, "distill": config_dict(cfg), **student.format_meta()}
    save_student(student.model, student.tok, out, meta)
    if state_dir is not None:
        remove_state(state_dir)  # the student is saved: a rerun starts over
    return {"train": result, "coverage": coverage, "cut_targets": cut}


def _tail_mean(rows: list[dict], key: str) -> float:
    """Mean of ``key`` over the last fifth of the steps, ignoring steps where the task was absent."""
    tail = [r[key] for r in rows[-max(1, len(rows) // 5) :] if not math.isnan(r[key])]
    return sum(tail) / len(tail) if tail else float("nan")


def _write_tsv(path: Path, rows: list[dict], keys: list[str] | None = None) -> None:
    from .io import atomic_write

    keys = keys or list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(path) as f:
        f.write("\t".join(keys) + "\n")
        for r in rows:
            f.write("\t".join(_fmt(r.get(k, "")) for k in keys) + "\n")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


# DistillConfig keys that do not change the trained weights: how often the state is saved and
# how the run is scored on the way (a run resumes across a change of these)
_NOT_TRAINING = ("state_every", "checkpoint_every", "checkpoint_half", "checkpoint_rule")


def _state_settings(cfg: DistillConfig, teachers: list[str], examples: list[dict], processes: int, start: dict) -> dict:
    """What a saved training state must have been started with to be resumed (JSON-normalised):
    the settings (but how often to save), the processes, the training questions with their
    rationales (a digest), ``start`` (the student's weights digest and kind) and the training code."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex["record"], ex["rationales"]], sort_keys=True, default=str).encode())
    config = {k: v for k, v in config_dict(cfg).items() if k not in _NOT_TRAINING}
    settings = {**config, "teachers": teachers, "processes": processes, **start, "code_digest": code_digest()}
    return json.loads(json.dumps({**settings, "examples": len(examples), "examples_sha256": digest.hexdigest()}))


def apply_lora(student: Student, lora: dict) -> None:
    """Wrap ``student.model`` with PEFT LoRA adapters (only they train)."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=lora.get("target_modules", "all-linear"),
        task_type=TaskType.SEQ_2_SEQ_LM if student.kind == "seq2seq" else TaskType.CAUSAL_LM,
    )
    student.model = get_peft_model(student.model, cfg)


def config_dict(cfg: DistillConfig) -> dict:
    return asdict(cfg)
