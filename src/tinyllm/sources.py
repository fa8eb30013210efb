"""Where the benchmarks come from: a local folder in the release layout, a tarball URL, the
authors' GitHub release, or the Hugging Face Hub copies of the benchmarks (``hf-hub``, see
hub.py), copied into ``data/raw`` for DVC to version.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .benchmarks import DataError, question_file
from .hub import HUB_SOURCE, fetch_hub
from .redact import redact_uri

log = logging.getLogger(__name__)

GITHUB_TARBALL = "https://codeload.github.com/{repo}/tar.gz/{ref}"


def resolve_url(source: str) -> str | None:
    """The download URL of a remote source, or None for a local folder."""
    if source.startswith("github:"):
        spec = source[len("github:") :]
        repo, _, ref = spec.partition("@")
        return GITHUB_TARBALL.format(repo=repo, ref=ref or "HEAD")
    if source.startswith(("http://", "https://", "file://")):
        return source
    return None


def download_release(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download and unpack a release tarball; return the folder that holds ``datasets/``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tar_path = dest / "release.tar.gz"
    log.info("downloading %s", redact_uri(url))
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tar_path, "wb") as f:
        shutil.copyfileobj(r, f)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest / "unpacked", filter="data")
    hits = sorted(p.parent for p in (dest / "unpacked").rglob("datasets") if p.is_dir())
    if not hits:
        raise DataError(f"{redact_uri(url)}: the archive has no datasets/ folder")
    return hits[0]


def copy_release(root: Path, benchmarks: list[str], out: Path) -> dict[str, list[str]]:
    """Copy each benchmark's question files and released rationales into ``out`` (same layout).

    Returns, per benchmark, the splits found. A benchmark without a train split is an error.
    """
    root, out = Path(root), Path(out)
    if not (root / "datasets").is_dir():
        raise DataError(f"{root}: not a release folder (no datasets/ inside)")
    found = {}
    for b in benchmarks:
        src = root / "datasets" / b
        if not question_file(root, b, "train").exists():
            raise DataError(f"{question_file(root, b, 'train')}: missing (source {root})")
        dst = out / "datasets" / b
        dst.mkdir(parents=True, exist_ok=True)
        splits = []
        for split in ("train", "valid", "test"):
            q = question_file(root, b, split)
            if q.exists():
                shutil.copy2(q, dst / q.name)
                splits.append(split)
            else:
                log.warning("%s: no %s split in the source — skipped", b, split)
        if (src / "llm").is_dir():
            shutil.copytree(src / "llm", dst / "llm", dirs_exist_ok=True)
        found[b] = splits
    return found


def fetch(source: str, benchmarks: list[str], out: Path, base: Path | None = None) -> dict[str, list[str]]:
    """Materialise ``source`` into ``out`` (replacing it). Relative local paths resolve from ``base``."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    if source == HUB_SOURCE:
        return fetch_hub(benchmarks, out)
    url = resolve_url(source)
    if url is None:
        root = Path(source)
        if not root.is_absolute() and base is not None:
            root = Path(base) / root
        return copy_release(root, benchmarks, out)
    with tempfile.TemporaryDirectory() as tmp:
        return copy_release(download_release(url, Path(tmp)), benchmarks, out)
