"""Typed view of one ``teachers: {NAME: {...}}`` entry of ``params.yaml``.

Unknown keys fail loudly (a typo must not silently fall back to a default) and
``__post_init__`` checks ranges with messages that name the teacher, the key and the bad value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..schema import ParamsError, from_dict, validate_fields

# The keys of backends.BACKENDS (a test checks they agree); named here so that validating
# params.yaml does not import the backends (torch, transformers) into every stage.
BACKEND_NAMES = ("transformers", "llama_cpp", "openai")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ICLConfig:
    """In-context examples shown before each question (the paper: two, random, same benchmark)."""

    k: int = 2  # examples per prompt; 0 turns in-context examples off (the ablation)
    # random (seeded per question id) | similar (TF-IDF nearest neighbours)
    strategy: Literal["random", "similar"] = "random"
    # Where the examples' rationales come from: a teacher cache under data/rationales
    # (e.g. flan_t5_xl, the imported released rationales); only status "ok" records are used.
    source: str | None = "flan_t5_xl"
    seed: int = 0
    split: Literal["train", "valid", "test"] = "train"  # examples always come from this split of the same benchmark

    RANGES: ClassVar[dict] = {"k": "0..16", "seed": ">=0"}

    def check(self, where: str) -> None:
        validate_fields(self, f"{where}.icl")
        if self.k > 0 and not self.source:
            raise ParamsError(f"params.yaml [{where}]: icl.k = {self.k} needs icl.source (a rationale cache name)")


@dataclass
class TeacherConfig:
    """One teacher: which model, through which backend, with which prompt and decoding settings."""

    name: str  # the key under ``teachers:``; also the cache folder data/rationales/<name>
    backend: str  # transformers | llama_cpp | openai (see tinyllm.teachers.backends.BACKENDS)
    # transformers: a local folder, a hub id, or "gguf-pypi:<name>" (a registered offline model);
    # llama_cpp: a .gguf path or "gguf-pypi:<name>"; openai: the model name the server serves.
    model: str
    gguf_file: str | None = None  # transformers: load this GGUF file inside ``model`` (a folder)
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: name of the env var holding the API key (never the key)
    # auto (chat when the model has a chat template) | chat | plain
    prompt_format: Literal["auto", "chat", "plain"] = "auto"
    system_prompt: str | None = None  # chat only; None: a default that matches teacher_forcing
    teacher_forcing: bool = True  # show the gold answer and ask for its explanation (the paper)
    icl: ICLConfig = field(default_factory=ICLConfig)
    max_question_words: int | None = 160  # keep the last N words of long questions (PubMedQA contexts)
    max_input_tokens: int = 2048  # prompts longer than this lose their start (transformers, llama_cpp)
    max_new_tokens: int = 64
    batch_size: int = 8  # transformers: sequences per generate call; openai: requests per flush
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    # transformers: auto (bf16 where the CPU/GPU runs it natively) | bf16 | fp32
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    n_threads: int | None = None  # llama_cpp: CPU threads (None: llama.cpp's default)
    concurrency: int = 4  # openai: parallel requests
    request_timeout_s: float = 120.0  # openai: a total deadline per attempt (not per read)
    max_retries: int = 4  # openai: retries on 429/5xx/connection errors (exponential backoff)
    backoff_s: float = 1.0  # openai: first retry delay; doubles each retry
    limit_per_benchmark: int | None = None  # first N questions of each split (None: all)
    splits: list[Literal["train", "valid", "test"]] = field(default_factory=lambda: ["train"])
    # Quality filter: reasons in this list add the flag "filtered:<reason>" (status unchanged;
    # distill drops records carrying any "filtered:*" flag). Descriptive flags ("truncated",
    # "non_english", "answer_mismatch") are always recorded.
    filters: list[Literal["empty", "truncated", "answer_mismatch", "non_english"]] = field(
        default_factory=lambda: ["empty", "non_english"]
    )
    # More failed records than this: exit non-zero after saving, so the next `dvc repro` retries them.
    # 0 (default): any failure does; a larger value accepts failures that DVC then never retries.
    max_failed_fraction: float = 0.0

    # Ranges (see tinyllm.config.check_range); every field is also checked against its annotation.
    RANGES: ClassVar[dict] = {
        "model": "nonempty",
        "max_new_tokens": ">=1",
        "batch_size": ">=1",
        "concurrency": ">=1",
        "max_input_tokens": ">=16",
        "limit_per_benchmark": ">=1",
        "max_question_words": ">=1",
        "n_threads": ">=1",
        "max_retries": ">=0",
        "temperature": "0..5",
        "top_p": ">0,0..1",
        "request_timeout_s": ">0",
        "backoff_s": ">=0",
        "max_failed_fraction": "0..1",
        "splits": "nonempty",
        "seed": ">=0",
    }

    def __post_init__(self):
        w = f"teachers.{self.name}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ParamsError(f"params.yaml [teachers]: teacher name {self.name!r} must match {_NAME.pattern}")
        if self.backend not in BACKEND_NAMES:
            raise ParamsError(
                f"params.yaml [{w}]: backend {self.backend!r} is unknown; known: {', '.join(BACKEND_NAMES)}"
            )
        validate_fields(self, w)  # types + RANGES, naming teachers.<name>.<key>
        self.icl.check(w)
        if self.backend == "openai" and not self.base_url:
            raise ParamsError(f"params.yaml [{w}]: the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.api_key_env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env):
            raise ParamsError(
                f"params.yaml [{w}]: api_key_env {self.api_key_env!r} must be an environment "
                "variable *name* (the key itself never goes into params.yaml)"
            )

    @property
    def source(self) -> str:
        """The record's ``source`` field: ``<backend>:<model>[#<gguf_file>]``."""
        return f"{self.backend}:{self.model}" + (f"#{self.gguf_file}" if self.gguf_file else "")

    def decoding(self) -> dict:
        """Settings that change what the teacher writes; part of every record's prompt hash."""
        d = {
            "backend": self.backend,
            "model": self.model,
            "gguf_file": self.gguf_file,
            "max_new_tokens": self.max_new_tokens,
            "temperature": float(self.temperature),
        }
        if self.temperature > 0:  # seed and top_p only matter when sampling
            d.update(top_p=float(self.top_p), seed=self.seed)
        return d

    def settings(self) -> dict:
        """Every setting that changes what this teacher writes for a given question.

        The prompt hash of a record covers these *and* the question and example texts; this
        part alone is what the training set compares (``tinyllm.trainset``): a record written
        under other settings is stale even when it is still in the cache.
        """
        icl = dataclasses.asdict(self.icl) if self.icl.k > 0 else {"k": 0}
        return {
            "teacher_forcing": self.teacher_forcing,
            "icl": icl,
            "prompt_format": self.prompt_format,
            "system_prompt": self.system_prompt,
            "max_question_words": self.max_question_words,
            "max_input_tokens": self.max_input_tokens,
            **self.decoding(),
        }

    def settings_hash(self) -> str:
        payload = json.dumps(self.settings(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def teacher_config(name: str, data: dict | None) -> TeacherConfig:
    """Build the config of teacher ``name`` from its ``params.yaml`` mapping."""
    if not isinstance(data, dict):
        raise ParamsError(f"params.yaml [teachers.{name}]: expected a mapping, got {type(data).__name__}")
    for required in ("backend", "model"):
        if required not in data:
            raise ParamsError(f"params.yaml [teachers.{name}]: key {required!r} is required")
    return from_dict(TeacherConfig, {**data, "name": name}, f"teachers.{name}")


def load_teacher(params: dict, name: str) -> TeacherConfig:
    """The config of ``name`` from a loaded ``params.yaml``; unknown names list the known ones."""
    teachers = params.get("teachers") or {}
    if name not in teachers:
        raise KeyError(f"params.yaml: no teacher {name!r} under 'teachers'; known: {sorted(teachers)}")
    return teacher_config(name, teachers[name])
