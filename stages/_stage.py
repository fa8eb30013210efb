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


def config(path: str | os.PathLike | None = None):
    """The whole of params.yaml, validated (types, ranges, unknown keys, cross-references).

    Every stage calls this (directly or through ``params``) before any work, so a bad value in
    any section stops every stage, not only the one that reads it (an ``evaluate`` typo must not
    surface after ``distill`` has trained). Exits with the error naming the key.
    """
    from tinyllm.config import load_config

    try:
        return load_config(path or ROOT / "params.yaml")
    except ValueError as e:  # ParamsError, or a teacher entry that is not a mapping
        raise SystemExit(str(e)) from None


def params(section: str | None = None) -> dict:
    """The raw mapping of ``section`` (or the whole file), after validating the whole file."""
    from tinyllm.config import load_params

    config()
    p = load_params(ROOT / "params.yaml")
    if section is None:
        return p
    if section not in p:
        raise SystemExit(f"params.yaml: section [{section}] is missing")
    return p[section]
