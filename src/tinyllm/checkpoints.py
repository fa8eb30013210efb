"""What training records as it goes: the student scored every N steps, and memory per step.

``Checkpoints.hook(student, steps)`` is ``train()``'s ``on_step``. After every optimizer step it
records the resident set size and its peak within the step (a long run must stay flat); every
``every`` steps before the last it scores the model so far with the one evaluation loop
(``evaluation.evaluate_benchmarks``: fp32, the likelihood rules, batch-invariant) and writes
``<out>/step<N>/metrics.json`` and ``<out>/step<N>/predictions/<split>/<benchmark>.jsonl.gz``.
Every prediction carries its ``half`` of valid, so a step is selected on ``dev`` only.

Used by the distill stage (``distill.checkpoint_every``: ``metrics/checkpoints/``) and by a study's
runs (``checkpoint_every``: ``runs/<arm>-s<seed>/checkpoints/``); the questions and the evaluation
settings are the caller's (``checkpoint_evaluation`` gives the stage's).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Checkpoints:
    """Where and how a training run is scored and measured while it trains."""

    out: Path  # step<N>/ folders
    every: int = 0  # score every N steps before the last (0: memory only)
    questions: dict[str, list[dict]] = field(default_factory=dict)  # {benchmark: records}
    evaluation: object = None  # an EvaluateConfig: max_input_tokens, batch_size, headline
    split: str = "valid"
    memory: Path | None = None  # the memory curve's file (None: <out>/memory.json)

    @property
    def memory_path(self) -> Path:
        return Path(self.memory) if self.memory is not None else Path(self.out) / "memory.json"

    def hook(self, student, steps: int) -> Callable[[int], None]:
        """``on_step(step)`` for ``train(student, ...)`` of ``steps`` steps. A run resumed from a
        training state keeps the memory rows logged before the step it resumed from (marked
        ``resumed`` at its first new step) and the checkpoints it had finished."""
        rows = _read_json(self.memory_path, [])
        first = True

        def on_step(step: int) -> None:
            nonlocal first
            while rows and rows[-1]["step"] >= step:  # logged after the state this run resumed from
                rows.pop()
            restarted, first = first and step > 1, False
            peak = step_peak_gb()
            rows.append(
                {
                    "step": step,
                    "rss_gb": round(rss_gb(), 4),
                    **({"peak_gb": round(peak, 4)} if peak is not None else {}),
                    **({"resumed": True} if restarted else {}),
                }
            )
            if step == steps:
                _write(self.memory_path, rows)
            if not self.every or step % self.every or step == steps:
                return
            _write(self.memory_path, rows)  # so far: a resumed run keeps its curve
            self.score(student, step)

        return on_step

    def score(self, student, step: int) -> dict:
        """The model so far scored on ``questions``; its metrics and predictions under ``step<N>/``."""
        from .evaluation import write_compact_predictions

        per, preds_by = score_student(student, self.questions, self.evaluation)
        ck = Path(self.out) / f"step{step}"
        for b, preds in preds_by.items():
            write_compact_predictions(ck / "predictions" / self.split / f"{b}.jsonl", preds)
        _write(ck / "metrics.json", {"step": step, self.split: per})
        log.info("  checkpoint step %d: %s %.3f", step, self.evaluation.headline, per["average"]["accuracy"])
        return per


def score_student(student, questions: dict[str, list[dict]], evaluation) -> tuple[dict, dict]:
    """({benchmark: metrics} with the average, {benchmark: predictions}) of the model as it is now,
    in fp32 without gradients, likelihood rules only; each prediction carries its ``half``."""
    import torch

    from .benchmarks import valid_half
    from .evaluation import evaluate_benchmarks

    @contextlib.contextmanager
    def fp32_no_grad():
        with torch.no_grad(), fp32_forward(student.model):
            yield

    student.model.eval()
    per, preds_by = evaluate_benchmarks(
        student,
        questions,
        context=fp32_no_grad,
        max_input_tokens=evaluation.max_input_tokens,
        max_new_tokens=evaluation.max_new_tokens,
        batch_size=evaluation.batch_size,
        device="cpu",
        progress=False,
        generate=False,
        headline=evaluation.headline,
    )
    for b, records in questions.items():
        for p, r in zip(preds_by[b], records, strict=True):
            p["half"] = valid_half(r)
    return per, preds_by


def checkpoint_evaluation(distill):
    """How the distill stage scores its checkpoints (an ``EvaluateConfig`` from the ``distill``
    section alone, so the stage depends on no ``evaluate`` key): the student's own input limit,
    ``checkpoint_rule`` as the headline, fp32, no generation."""
    from .config import EvaluateConfig

    return EvaluateConfig(
        splits=["valid"],
        max_per_benchmark=None,
        headline=distill.checkpoint_rule,
        generate_per_benchmark=0,
        max_input_tokens=distill.max_input_tokens,
        precision="fp32",
    )


def checkpoint_questions(
    prepared: Path, benchmarks: list[str], half: str, split: str = "valid", limit: int | None = None
) -> dict[str, list[dict]]:
    """{benchmark: the first ``limit`` questions of its ``split`` (None: all), then those of valid's
    ``half`` ("all": both), in file order}."""
    from .benchmarks import select_half
    from .evaluation import prepared_questions

    questions = prepared_questions(Path(prepared), benchmarks, split, limit, required=True)
    return {b: select_half(records, None if half == "all" else half) for b, records in questions.items()}


@contextlib.contextmanager
def fp32_forward(model):
    """During training, Accelerate's bf16 mixed precision wraps ``model.forward`` in autocast; a
    checkpoint is scored with the original fp32 forward (batch-invariant), then rewrapped."""
    wrapped = model.__dict__.get("forward")
    original = getattr(model, "_original_forward", None)
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


def step_peak_gb() -> float | None:
    """The highest resident set size since the last call (Linux: ``VmHWM``, then reset through
    ``/proc/self/clear_refs``): the step's forward/backward and any checkpoint scoring, which
    the size after the step (``rss_gb``) does not show. None elsewhere."""
    import re

    try:
        status = Path("/proc/self/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 2**20
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return None
    return peak


def rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def _read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def _write(path: Path, obj) -> None:
    from .io import write_json

    write_json(path, obj)
