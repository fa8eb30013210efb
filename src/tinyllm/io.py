"""Small file helpers: atomic writes and JSON Lines.

Every output a stage declares is written through ``atomic_write`` (temp file + ``os.replace``),
so a crash never leaves a half-written file that DVC or the next stage would trust.
Append-only caches use ``JsonlAppender`` which flushes and fsyncs per batch; a torn last line
(``kill -9`` mid-write) is detected and dropped by ``read_jsonl(..., tolerate_torn_tail=True)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file next to ``path``; on success rename it over ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    if "b" in mode:
        encoding = None
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def replace_dir(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put the finished folder ``tmp`` at ``dest`` (same filesystem), replacing what was there.

    ``dest`` is moved aside and ``tmp`` renamed into place (two renames), so a failure while
    ``tmp`` was being written never leaves a mix of old and new files at ``dest``.
    """
    tmp, dest = Path(tmp), Path(dest)
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        import shutil

        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        import shutil

        shutil.rmtree(old)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike, tolerate_torn_tail: bool = False) -> list[dict]:
    """Read a JSON Lines file. Errors name the file and line.

    With ``tolerate_torn_tail`` a last line without its newline that does not parse (a write cut
    off by a crash) is ignored; a bad line anywhere else is always an error.
    """
    return list(iter_jsonl(path, tolerate_torn_tail))


def iter_jsonl(path: str | os.PathLike, tolerate_torn_tail: bool = False) -> Iterator[dict]:
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}: byte offset {e.start} (line {line}): not UTF-8 ({e.reason})") from None
    # split on "\n" only: str.splitlines also splits on U+2028, U+0085, ... inside JSON strings
    lines = [line + "\n" for line in text.split("\n")]
    if lines and lines[-1] == "\n":
        lines.pop()  # after the final newline
    elif lines:
        lines[-1] = lines[-1][:-1]  # a last line without its newline (a torn tail)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            last = i == len(lines) and not line.endswith("\n")
            if tolerate_torn_tail and last:
                return
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        yield obj


class JsonlAppender:
    """Append-only JSON Lines writer that survives ``kill -9``.

    On open, a torn last line left by a crash is cut off so new records start on a fresh line.
    ``append_many`` writes a batch, then flushes and fsyncs: what it returned from is on disk.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
            f.truncate(cut)

    def append_many(self, rows: Iterable[dict]) -> int:
        n = 0
        for row in rows:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        self._f.flush()
        os.fsync(self._f.fileno())
        return n

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
