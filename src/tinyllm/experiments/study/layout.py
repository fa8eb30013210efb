"""A study's folder: ``runs/<arm>-s<seed>/`` (``done.json`` last), predictions read back, JSON written."""

from __future__ import annotations

import logging
from pathlib import Path

from ...evaluation import read_predictions, write_compact_predictions
from .config import StudyConfig

log = logging.getLogger(__package__)


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


# A study keeps each prediction compact (``<benchmark>.jsonl.gz``: the fields its report reads)
write_preds = write_compact_predictions
_read_preds = read_predictions


def compact_runs(cfg: StudyConfig, out: Path, backup: Path | None) -> list[Path]:
    """Every full ``<benchmark>.jsonl`` of this study's runs (final and checkpoint predictions)
    rewritten as its compact ``.jsonl.gz``; the originals are moved under ``backup`` (same
    relative paths) so a caller can put them back, or left in place with ``backup=None`` (a study
    still running on code that reads only the full files; git ignores them). Returns the compact
    files written."""
    import shutil

    written = []
    runs = Path(out) / "runs"
    for f in sorted(runs.glob("*/**/predictions/*/*.jsonl")) if runs.is_dir() else []:
        if not (f.parent.parent.parent / "done.json").exists() and f.parent.parent.parent.parent.name != "checkpoints":
            continue  # a run still being written
        preds = _read_preds(f)
        written.append(write_preds(f, preds))
        if backup is not None:
            dest = Path(backup) / f.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), dest)
    return written


def dvc_add(root: Path, path: Path) -> None:
    """Track a saved student with DVC (``<run>.dvc`` beside it: commit it, ``dvc push`` the
    weights from its DVC repository, ``models/study``), so it can be re-evaluated on another machine
    without retraining. A failure (no
    DVC, a lock held by a running ``dvc repro``) is a warning naming the command to run."""
    import subprocess
    import sys

    repo = _dvc_repo_of(path, root)
    cmd = ["dvc", "add", "--quiet", str(path.relative_to(repo) if path.is_relative_to(repo) else path)]
    try:  # this interpreter's DVC: a job started as `.venv/bin/python ...` has no `dvc` on PATH
        done = subprocess.run([sys.executable, "-m", *cmd], cwd=repo, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not track %s with DVC (%s); run: %s", path, e, " ".join(cmd))
        return
    if done.returncode:
        log.warning("`%s` failed (%s); run it again later", " ".join(cmd), done.stderr.strip()[-300:])


def _dvc_repo_of(path: Path, root: Path) -> Path:
    """The DVC repository that tracks ``path``: the nearest folder above it with a ``.dvc`` folder
    (``models/study`` is a DVC subrepo, so the pipeline's ``dvc status`` never lists study students
    a clone has not pulled: docs/sharing.md), else ``root``."""
    for d in Path(path).resolve().parents:
        if (d / ".dvc").is_dir():
            return d
        if d == Path(root).resolve():
            break
    return Path(root)


def train_state_dir(root: Path, cfg: StudyConfig, run: str) -> Path:
    """Where a run's training state is saved every ``checkpoint_every`` steps (weights and AdamW
    moments, ~12 bytes a parameter; not in git): a killed study resumes the run from its last
    save on this machine, and removes the folder once the run is done."""
    return root / (cfg.save_models or "models/study") / cfg.name / ".train-state" / run


def study_status(root: Path, cfg: StudyConfig, out: Path) -> dict:
    """Where the study stands: ``progress.json``, the finished runs, and each unfinished run's
    last saved training state (the step a restart continues from)."""
    import json

    from ...train_state import saved_step

    p = out / "progress.json"
    states = {}
    for arm, seed in cfg.trained_runs():
        run = f"{arm}-s{seed}"
        step = saved_step(train_state_dir(root, cfg, run))
        if step is not None and not (out / "runs" / run / "done.json").exists():
            states[run] = step
    done = [f"{a}-s{s}" for a, s in cfg.runs() if (cfg.run_dir(out, a, s) / "done.json").exists()]
    return {
        "progress": json.loads(p.read_text()) if p.exists() else None,
        "done": done,
        "of": len(cfg.runs()),
        "resumes_at_step": states,
    }


def write_run_predictions(run_dir: Path, predictions: dict[str, dict[str, list[dict]]]) -> None:
    """``<run_dir>/predictions/<split>/<benchmark>.jsonl.gz``, each prediction with its ``half`` of
    valid (``benchmarks.valid_half``: what the report selects on)."""
    from ...benchmarks import valid_half

    for split, preds_by in predictions.items():
        for b, preds in preds_by.items():
            for p in preds:
                p["half"] = valid_half({"benchmark": b, "id": p["id"]})
            write_preds(run_dir / "predictions" / split / f"{b}.jsonl", preds)
