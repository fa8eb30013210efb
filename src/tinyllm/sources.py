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
from .workspace import main_repo_root

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


OTHER_SOURCES = (
    "a release folder (offline: ../shared/benchmarks/tinyllm-release), a tarball URL, "
    "github:YikunHan42/TinyLLM@<commit> or hf-hub"
)


def check_source(source: str, benchmarks: list[str], alphas: dict[str, float], base: Path | None = None) -> None:
    """Fail in seconds, before anything is fetched or deleted, when ``data.source`` cannot serve
    this configuration: a release folder that is not there, a host that does not answer (one
    connection attempt), benchmarks or released teachers the Hub copies do not have. The
    ``DataError`` names ``data.source`` and the alternatives."""
    import os
    import socket
    from urllib.parse import urlsplit

    from .config import active_teachers
    from .hub import HUB
    from .rationales import RELEASED_TEACHERS

    where = f"params.yaml [data] source: {redact_uri(source)!r}"
    if source == HUB_SOURCE:
        missing = [b for b in benchmarks if HUB.get(b) is None]
        released = [t for t in RELEASED_TEACHERS if t in active_teachers(alphas)]
        if missing or released:
            raise DataError(
                f"{where}: the Hub copies have questions only and no {', '.join(missing + released)} "
                f"(leave {'them' if len(missing + released) > 1 else 'it'} out of data.benchmarks / distill.alphas, "
                f"or use {OTHER_SOURCES.replace(' or hf-hub', '')})"
            )
        if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
            return  # the datasets cache must serve it; nothing to probe
        url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    else:
        url = resolve_url(source)
    if url is None or url.startswith("file://"):
        root = Path(urlsplit(url).path if url else source)
        if not root.is_absolute() and base is not None:
            root = main_repo_root(base) / root  # a temp/queued DVC experiment: from the user's repo
        if not (root / "datasets").is_dir():
            what = "does not exist" if not root.exists() else "has no datasets/ folder"
            raise DataError(f"{where}: the release folder {root} {what}; set data.source to {OTHER_SOURCES}")
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as e:
        raise DataError(
            f"{where}: {parts.hostname}:{port} does not answer ({type(e).__name__}: {e}); offline, set "
            f"data.source to {OTHER_SOURCES.split(', a tarball')[0]}"
        ) from None


def fetch(source: str, benchmarks: list[str], out: Path, base: Path | None = None) -> dict[str, list[str]]:
    """Materialise ``source`` into ``out``, replacing it only once the whole source is in (built
    in ``<out>.tmp`` and swapped in: a failed download leaves ``out`` as it was). Relative local
    paths resolve from ``base`` (the user's repo when ``base`` is a DVC experiment's temp copy)."""
    out = Path(out)
    tmp_out = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp_out, ignore_errors=True)
    try:
        found = _fetch_into(source, benchmarks, tmp_out, base)
    except BaseException:
        shutil.rmtree(tmp_out, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp_out.rename(out)
    return found


def _fetch_into(source: str, benchmarks: list[str], out: Path, base: Path | None) -> dict[str, list[str]]:
    if source == HUB_SOURCE:
        return fetch_hub(benchmarks, out)
    url = resolve_url(source)
    if url is None:
        root = Path(source)
        if not root.is_absolute() and base is not None:
            root = main_repo_root(base) / root  # a temp/queued DVC experiment: from the user's repo
        return copy_release(root, benchmarks, out)
    with tempfile.TemporaryDirectory() as tmp:
        return copy_release(download_release(url, Path(tmp)), benchmarks, out)
