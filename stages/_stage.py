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


def sections(path: str | os.PathLike | None = None):
    """Every section of params.yaml validated but the ``teachers:`` entries (held raw), for the
    stages that read no teacher: they do not depend on the teacher schema, so an edit of it
    re-runs only what reads teachers (those call ``tinyllm.params.stage_config``: the whole file;
    ``check_params`` does so before every other stage). Each such stage still validates every other section before
    any work (an ``evaluate`` typo stops ``distill`` before it trains). Exits naming the key.
    """
    from tinyllm.config import load_sections

    try:
        return load_sections(path or ROOT / "params.yaml")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def params(section: str | None = None) -> dict:
    """The raw mapping of ``section`` (or the whole file), after validating it (``sections``)."""
    from tinyllm.config import load_params

    sections()
    p = load_params(ROOT / "params.yaml")
    if section is None:
        return p
    if section not in p:
        raise SystemExit(f"params.yaml: section [{section}] is missing")
    return p[section]
