"""Lineage of a run: the git commit, the DVC md5s recorded in ``dvc.lock``, and the datasets a
run trained or evaluated on (``DatasetRef``: a DVC-versioned folder and its digest)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from .store import section

log = logging.getLogger(__name__)


def git_info(root: Path) -> dict[str, str]:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "HEAD")
    # what the pipeline itself rewrites before training (dvc.lock, metrics/) does not make a run dirty
    dirty = git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":(exclude){p}" for p in PIPELINE_WRITES)
    )
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


PIPELINE_WRITES = ("dvc.lock", "metrics")  # committed files `dvc repro` rewrites as it runs


def _lock_entries(root: Path) -> list[dict]:
    """Every out and dep of ``dvc.lock`` (outs first), as ``{path, md5, ...}`` dicts."""
    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return []
    data = yaml.safe_load(lock.read_text()) or {}
    stages = (data.get("stages") or {}).values()
    return [e for s in stages for e in s.get("outs", [])] + [e for s in stages for e in s.get("deps", [])]


def dvc_hashes(root: Path, paths: list[str]) -> dict[str, str]:
    """md5 of DVC outputs (as recorded in ``dvc.lock``) for the given output paths."""
    found = {}
    for e in _lock_entries(root):
        p = e.get("path")
        for want in paths:
            if p == want or (p and p.startswith(want.rstrip("/") + "/")):
                found.setdefault(f"dvc.md5.{p}", e.get("md5", ""))
    return found


def dvc_md5(root: Path, path: str) -> str | None:
    """The md5 ``dvc.lock`` records for exactly ``path`` (an output where it is one), else None."""
    for e in _lock_entries(root):
        if e.get("path") == path.rstrip("/") and e.get("md5"):
            return e["md5"]
    return None


@dataclass
class DatasetRef:
    """One dataset input of a run: a DVC-versioned folder and the digest it had."""

    name: str  # shown in the UI's Dataset column, e.g. rationales/flan_t5_xl
    path: str  # relative to the repo, e.g. data/rationales/flan_t5_xl
    context: str  # training | evaluation
    digest: str  # the DVC md5 (``<md5>.dir`` for a folder), else a content md5
    digest_source: str  # dvc.lock | content


def _content_digest(path: Path) -> str:
    """md5 over the relative paths and bytes of every file under ``path``: the digest where
    ``dvc.lock`` has none (a stage run by hand, a test)."""
    h = hashlib.md5()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for f in files:
        h.update(str(f.relative_to(path) if f != Path(path) else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _ref(root: Path, name: str, path: str, context: str) -> DatasetRef | None:
    """None for a path that is neither in dvc.lock nor on disk (nothing to name; the stage that
    needs it reports that, not the tracking)."""
    md5 = dvc_md5(root, path)
    if md5:
        return DatasetRef(name, path, context, md5, "dvc.lock")
    if not (Path(root) / path).exists():
        log.warning("dataset %s: %s is neither in dvc.lock nor on disk; not logged", name, path)
        return None
    return DatasetRef(name, path, context, _content_digest(Path(root) / path), "content")


def training_datasets(
    root: Path, params: dict, prepared: str = "data/prepared", rationales: str = "data/rationales"
) -> list[DatasetRef]:
    """The prepared train splits, the joined trainset (where that stage exists) and the cache of
    each teacher with alpha > 0.

    A cache is one DVC output (released teachers) or one per benchmark (generated teachers); each
    benchmark's part becomes its own dataset then, so each digest is the one ``dvc.lock`` holds.
    """
    refs = [_ref(root, "prepared/train", prepared, "training")]
    if (Path(root) / "data" / "trainset").exists():  # the joined questions + rationales distill reads
        refs.append(_ref(root, "trainset", "data/trainset", "training"))
    benchmarks = section(params, "data").benchmarks
    for teacher, alpha in section(params, "distill").alphas.items():
        if not alpha or float(alpha) <= 0:
            continue
        path = f"{rationales}/{teacher}"
        if dvc_md5(root, path) or not any(dvc_md5(root, f"{path}/{b}") for b in benchmarks):
            refs.append(_ref(root, f"rationales/{teacher}", path, "training"))
        else:
            refs += [
                _ref(root, f"rationales/{teacher}/{b}", f"{path}/{b}", "training")
                for b in benchmarks
                if (Path(root) / path / b).exists()
            ]
    return [r for r in refs if r is not None]


def evaluation_datasets(root: Path, splits: list[str], prepared: str = "data/prepared") -> list[DatasetRef]:
    """The prepared evaluation splits (one dataset per split; a dataset is logged once per run, so
    the train and valid views of data/prepared need distinct names)."""
    return [r for r in (_ref(root, f"prepared/{s}", prepared, "evaluation") for s in splits) if r is not None]


def _log_datasets(mlflow, refs: list[DatasetRef]) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for r in refs:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local paths
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(r.path)
        ds = MetaDataset(source, name=r.name, digest=r.digest)
        mlflow.log_input(ds, context=r.context, tags={"dvc_path": r.path, "digest_source": r.digest_source})
