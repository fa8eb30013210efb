"""Loading students (seq2seq or decoder-only) and running them on a device and precision."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def model_class(config, kind: str = "auto"):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if kind not in ("causal", "seq2seq"):
        raise ValueError(f"student kind {kind!r} not in auto/causal/seq2seq")
    return AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:  # oneDNN reports AVX512-BF16 / AMX support
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" where the hardware runs it natively, else "fp32"."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def load_student(path, kind: str = "auto", dtype=torch.float32):
    """(model, tokenizer, is_seq2seq) from a saved checkpoint folder or a hub id."""
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(path)
    cls = model_class(cfg, kind)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = cls.from_pretrained(path, dtype=dtype)
    return model, tok, bool(cfg.is_encoder_decoder)
