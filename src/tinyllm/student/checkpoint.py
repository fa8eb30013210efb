"""Loading and saving a student: the kind from the model's config, the answer format from the
checkpoint's ``tinyllm.json``; saving is atomic."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Student
from .causal import CausalStudent
from .seq2seq import Seq2SeqStudent

KINDS: dict[str, type[Student]] = {"causal": CausalStudent, "seq2seq": Seq2SeqStudent}


def resolve_kind(config, kind: str = "auto") -> str:
    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if kind not in KINDS:
        raise ValueError(f"student kind {kind!r} not in auto/{'/'.join(KINDS)}")
    return kind


def load_student(path, kind: str = "auto", dtype=torch.float32) -> Student:
    """A ``Student`` from a saved checkpoint folder or a hub id."""
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(path)
    cls = KINDS[resolve_kind(cfg, kind)]
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # sdpa: the shared-question path passes a boolean 4-D mask, which eager attention would misread
    model = cls.auto_class().from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    student = cls(model, tok)
    meta = Path(path) / "tinyllm.json"  # the answer format the checkpoint was trained in (distill)
    if meta.exists():
        import json

        fmt = json.loads(meta.read_text(encoding="utf-8"))
        student.set_format(fmt.get("answer_format", "listed"), fmt.get("rationale_position", "branch"))
    return student


def save_student(student_or_model, tok, out_dir: Path, meta: dict) -> None:
    """``save_pretrained`` a plain checkpoint (LoRA adapters merged) plus ``tinyllm.json``.

    Atomic: written into a temporary sibling folder, then renamed over ``out_dir``; a process
    killed mid-save leaves the previous checkpoint (or none) and a ``.<name>.tmp-*`` folder, never a
    half-written ``out_dir``."""
    import os
    import shutil

    from ..io import write_json

    model = student_or_model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save of an earlier process with this pid
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "tinyllm.json", meta)
        old = None
        if out_dir.exists():  # rename the old one aside first: rename() cannot replace a non-empty folder
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
