"""Shared start-up of every stage script: import this repo's ``src`` (also inside a queued
DVC experiment's temp copy, where an editable install would point at the wrong tree), set up
logging, read ``params.yaml``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

logging.basicConfig(
    level=os.environ.get("TINYLLM_LOG", "INFO"),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    datefmt="%H:%M:%S",
)


def params(section: str | None = None) -> dict:
    from tinyllm.config import load_params

    p = load_params(ROOT / "params.yaml")
    if section is None:
        return p
    if section not in p:
        raise SystemExit(f"params.yaml: section [{section}] is missing")
    return p[section]
