"""A study's folder: ``runs/<arm>-s<seed>/`` (``done.json`` last), predictions read back, JSON written."""

from __future__ import annotations

import json
from pathlib import Path

from .config import StudyConfig


def _write_json(path: Path, obj) -> None:
    from ...io import write_json

    write_json(path, obj)


def _runs_done(cfg: StudyConfig, out: Path) -> dict[str, dict[int, Path]]:
    done: dict[str, dict[int, Path]] = {}
    for arm, seed in cfg.runs():
        d = cfg.run_dir(out, arm, seed)
        if (d / "done.json").exists():
            done.setdefault(arm, {})[seed] = d
    return done


def _read_preds(path: Path, half: str | None = None) -> list[dict]:
    """Predictions of one file; ``half``: only those of that half of valid."""
    preds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if half is not None:
        if any("half" not in p for p in preds):
            raise ValueError(f"{path}: predictions carry no 'half' (written before the dev/report split)")
        preds = [p for p in preds if p["half"] == half]
    return preds
