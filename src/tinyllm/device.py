"""Loading a model: the device it runs on, its float precision and the transformers class.

Shared by the student (training, evaluation), the base-student materialisation and the local
teacher backend, so that teacher stages depend on this file alone and not on the student's code.
"""

from __future__ import annotations

import torch


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:  # oneDNN reports AVX512-BF16 / AMX support
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False
    return False


def resolve_precision(precision: str, device: torch.device, training: bool = True) -> str:
    """ "auto" -> "bf16" where the hardware runs it natively, else "fp32".

    Evaluation on CPU stays fp32 under "auto": bf16 autocast flipped 1.5-2.5% of predictions and
    made a question's prediction depend on its batch neighbours (tests/test_evaluate.py)."""
    if precision == "auto":
        if not training and device.type == "cpu":
            return "fp32"
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def auto_model_class(config, kind: str = "auto"):
    """The transformers Auto class that loads a checkpoint: encoder-decoder ("seq2seq") or
    decoder-only ("causal"); "auto" reads ``config.is_encoder_decoder``. The same classes as the
    student kinds' ``auto_class`` (``student.KINDS``)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    classes = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}
    if kind not in classes:
        raise ValueError(f"student kind {kind!r} not in auto/{'/'.join(classes)}")
    return classes[kind]
