"""Resumable training: the full state of a ``distill.train`` run (weights, AdamW moments, LR
schedule, RNG states, steps done, the log so far) saved every N steps with Accelerate's
``save_state``, and loaded back so a killed run continues where its last save left off and ends
with the same weights as a run never interrupted (``tests/test_train_state.py``).

A state folder holds one save: it is written beside it (``<dir>.tmp``) and renamed into place,
so a crash while saving leaves the previous one whole. ``resume.json`` in it names what the run
was started from: its settings, its training questions and rationales (a digest), the student's
weights before the first step (``weights_digest``: another base checkpoint of the same
architecture is another run), the student kind and the training code (``code_digest``). A save
is resumed only by the run it belongs to: one made by another run, or one that cannot be read
back (a truncated file), is discarded with one log line and the run starts over
(``usable_state``); it never resumes silently and never blocks the next run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

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


def weights_digest(model) -> str:
    """A digest of every tensor of ``model`` (names, dtypes, shapes and bytes): the student a run
    starts from, whatever folder it was loaded from (~0.5 s for the 135M student)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# The package's subfolders that cannot change a trained student: experiment bookkeeping, MLflow
# and the teachers (their rationales reach training through the examples digest).
_NOT_TRAINING_CODE = ("experiments", "tracking", "teachers")


def code_digest() -> str:
    """A digest of the library's training code: every ``.py`` file of the package except
    ``_NOT_TRAINING_CODE``. An edit to the loss, the student or the loop makes older saves
    another run's."""
    import hashlib

    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        rel = p.relative_to(pkg)
        if rel.parts[0] in _NOT_TRAINING_CODE:
            continue
        h.update(rel.as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _mismatch(found: Path, settings: dict) -> tuple[int | None, str | None]:
    """(the step the save reached, None) when it was made under ``settings``, else (None, why not)."""
    path = found / RESUME_FILE
    try:
        saved = json.loads(path.read_text())
        step, before = int(saved["step"]), saved["settings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{RESUME_FILE} is not a training-state record ({type(e).__name__}: {e})"
    if before != settings:
        diff = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
        shown = [k for k in diff if not k.endswith(("digest", "sha256"))]
        return None, (
            f"saved by another run: {', '.join(diff)} differ"
            + (f" ({[before.get(k) for k in shown]} then, {[settings.get(k) for k in shown]} now)" if shown else "")
        )
    return step, None


def _unreadable(found: Path) -> str | None:
    """Why a file of the save cannot be loaded back (a truncated or damaged file), None if all can."""
    from safetensors.torch import load_file

    for f in sorted(found.iterdir()):
        try:
            if f.suffix == ".safetensors":
                load_file(f)
            elif f.suffix in (".bin", ".pkl", ".pt", ".pth"):
                torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any failure to read a file means the save is unusable
            return f"{f.name} cannot be read ({type(e).__name__}: {str(e)[:120]})"
    return None


def usable_state(state_dir: Path, settings: dict, is_main: bool = True) -> Path | None:
    """The save to resume from: the last whole one in ``state_dir`` when it belongs to this run
    (``settings``) and every file of it can be read; otherwise None, after one warning naming the
    folder and the reason, the save removed (by the main process) so the run starts over."""
    found = find_state(state_dir)
    if found is None:
        return None
    step, why = _mismatch(found, settings)
    why = why or _unreadable(found)
    if why is None:
        return found
    log.warning("training state %s (step %s) not resumed: %s; the run starts over", found, step, why)
    if is_main:
        remove_state(state_dir)
    return None


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
