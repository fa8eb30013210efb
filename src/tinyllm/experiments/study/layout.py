"""A study's folder: ``runs/<arm>-s<seed>/`` (``done.json`` last), predictions read back, JSON written."""

from __future__ import annotations

import json
from pathlib import Path

from ...config import RULES
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


# What a study keeps of each prediction (the fields its report reads): the compact file
# ``<benchmark>.jsonl.gz`` beside where ``<benchmark>.jsonl`` (every field) used to be.
COMPACT_FIELDS = ("id", "label", "half", *(f"pred_{r}" for r in RULES))


def compact(p: dict) -> dict:
    """A prediction as the study keeps it: ``COMPACT_FIELDS``, the option count, and the generated
    text only where there is one."""
    from ...stats import n_options

    out = {k: p[k] for k in COMPACT_FIELDS if k in p}
    out["n_options"] = n_options(p)
    if p.get("generated") is not None:
        out["generated"] = p["generated"]
    return out


def write_preds(path: Path, preds: list[dict]) -> Path:
    """``path`` (``.../<benchmark>.jsonl``) written compact as ``<benchmark>.jsonl.gz``, atomically
    and byte-reproducibly (gzip without a time stamp or name); returns the file written."""
    import gzip
    import io

    from ...io import atomic_write

    text = "".join(json.dumps(compact(p), ensure_ascii=False) + "\n" for p in preds)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    out = Path(str(path) + ".gz") if not str(path).endswith(".gz") else Path(path)
    with atomic_write(out, "wb") as f:
        f.write(buf.getvalue())
    return out


def _read_preds(path: Path, half: str | None = None) -> list[dict]:
    """Predictions of one file (``<benchmark>.jsonl``, or its compact ``.jsonl.gz``); ``half``:
    only those of that half of valid."""
    import gzip

    path = Path(path)
    if path.exists():
        text = path.read_text()
    else:
        text = gzip.decompress(Path(str(path) + ".gz").read_bytes()).decode("utf-8")
    preds = [json.loads(line) for line in text.splitlines() if line.strip()]
    if half is not None:
        if any("half" not in p for p in preds):
            raise ValueError(f"{path}: predictions carry no 'half' (written before the dev/report split)")
        preds = [p for p in preds if p["half"] == half]
    return preds


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
