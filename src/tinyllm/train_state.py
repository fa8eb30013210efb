"""Resumable training: the full state of a ``distill.train`` run (weights, AdamW moments, LR
schedule, RNG states, steps done, the log so far) saved every N steps with Accelerate's
``save_state``, and loaded back so a killed run continues where its last save left off and ends
with the same weights as a run never interrupted (``tests/test_train_state.py``).

A state folder holds one save: it is written beside it (``<dir>.tmp``) and renamed into place,
so a crash while saving leaves the previous one whole. ``resume.json`` in it names the settings
the run was started with; resuming under other settings is an error naming the fields that
differ (delete the folder to start over).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

RESUME_FILE = "resume.json"


class Progress:
    """What a state folder holds beside Accelerate's objects: steps done, tokens seen, the
    seconds spent and the logged rows (registered with ``Accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0
        self.tokens = 0
        self.elapsed_s = 0.0
        self.rows: list[dict] = []

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "elapsed_s": self.elapsed_s, "rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.elapsed_s, self.rows = float(state["elapsed_s"]), list(state["rows"])


def _siblings(state_dir: Path) -> tuple[Path, Path]:
    return state_dir.with_name(state_dir.name + ".tmp"), state_dir.with_name(state_dir.name + ".old")


def find_state(state_dir: Path) -> Path | None:
    """The last whole save: ``state_dir``, else ``<state_dir>.old`` (a crash between the two
    renames of ``save_state``); None when there is none."""
    old = _siblings(state_dir)[1]
    for d in (state_dir, old):
        if (d / RESUME_FILE).exists():
            return d
    return None


def saved_step(state_dir: Path) -> int | None:
    """The step a restart would continue from (the last whole save's), None without one."""
    found = find_state(state_dir)
    return None if found is None else int(json.loads((found / RESUME_FILE).read_text())["step"])


def check_settings(found: Path, settings: dict) -> int:
    """The step the save in ``found`` reached; an error when it was made under other settings."""
    path = found / RESUME_FILE
    try:
        saved = json.loads(path.read_text())
        step, before = int(saved["step"]), saved["settings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a training-state record ({e}); delete {found} to start over") from e
    if before != settings:
        diff = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
        raise ValueError(
            f"{path}: this run's state was saved under other settings ({', '.join(diff)}: "
            f"{[before.get(k) for k in diff]} then, {[settings.get(k) for k in diff]} now); "
            f"delete {found} to start the run over"
        )
    return step


def save_state(acc, state_dir: Path, step: int, settings: dict) -> None:
    """Every process writes its share into ``<state_dir>.tmp`` (Accelerate's ``save_state``);
    the main process then adds ``resume.json`` and swaps the folder into place."""
    tmp, old = _siblings(state_dir)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / RESUME_FILE).write_text(json.dumps({"step": step, "settings": settings}, indent=1))
        shutil.rmtree(old, ignore_errors=True)
        if state_dir.exists():
            state_dir.rename(old)
        tmp.rename(state_dir)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    log.info("training state at step %d saved to %s", step, state_dir)


def remove_state(state_dir: Path) -> None:
    """The state folder and its siblings (the run it belonged to is finished and saved)."""
    for d in (state_dir, *_siblings(state_dir)):
        shutil.rmtree(d, ignore_errors=True)
