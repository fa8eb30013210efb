"""Where the user's repo is, also when a stage runs inside a copy of it: ``dvc exp run --temp``
and every queued DVC experiment (a grid row) run the stages in ``<repo>/.dvc/tmp/exps/.../tmpXXXX``.
Paths that point outside the repo (``data.source: ../shared/...``), the SQLite MLflow store and its
artifacts resolve from the user's repo, not from the copy, which is deleted when the run ends."""

from __future__ import annotations

import os
from pathlib import Path

EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep  # where `dvc exp run --temp/--queue` runs


def main_repo_root(root: str | os.PathLike) -> Path:
    """The user's repo, also when a stage runs inside a temp or queued DVC experiment's copy
    (``<repo>/.dvc/tmp/exps/.../tmpXXXX``): relative paths that point outside the repo
    (``data.source: ../shared/...``), the MLflow store and its artifacts resolve from here."""
    s = str(Path(root).resolve())
    return Path(s.split(EXPS_TMP)[0]) if EXPS_TMP in s else Path(s)
