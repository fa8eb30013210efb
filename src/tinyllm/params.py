"""The whole of params.yaml validated, the ``teachers:`` entries included (``tinyllm.teachers.config``).

Apart from ``config.py`` so that only what reads teachers depends on the teacher schema: the
``check_params`` stage (which runs before every other stage and writes a constant line), the
``generate_rationales`` and ``trainset`` stages. An edit of the teacher schema re-runs those and
leaves ``distill`` and ``evaluate`` alone (dvc.yaml deps: ``tests/test_dvc_graph.py``).
"""

from __future__ import annotations

import os

from .config import Params, ParamsError, _fail, load_params, validate_sections
from .teachers.config import teacher_config


def validate_params(params: dict) -> Params:
    """Every section of a loaded params.yaml (``config.validate_sections``) and every teacher
    entry, with their cross-checks: in-context examples come from an imported released cache."""
    from .rationales import IMPORTED_SPLITS, RELEASED_TEACHERS

    p = validate_sections(params, teacher_config)
    for name, t in p.teachers.items():
        # dvc.yaml's generate stages depend on the released caches only, and import_rationales
        # imports their train and valid splits: an example source elsewhere would be a hidden input
        if t.icl.k > 0 and t.icl.source not in RELEASED_TEACHERS:
            _fail(
                f"teachers.{name}.icl.source",
                f"= {t.icl.source!r}; in-context examples come from a released cache: one of {list(RELEASED_TEACHERS)}",
            )
        if t.icl.k > 0 and t.icl.split not in IMPORTED_SPLITS:
            _fail(
                f"teachers.{name}.icl.split",
                f"= {t.icl.split!r}; released rationales are imported for {list(IMPORTED_SPLITS)} only",
            )
    return p


def load_config(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate the whole of ``path``."""
    return validate_params(load_params(path))


def load_teachers(path: str | os.PathLike = "params.yaml") -> dict:
    """The ``teachers:`` section of ``path`` alone, each entry validated (name -> TeacherConfig):
    for readers of the teacher setup (reports, the export) that need no other section."""
    raw = load_params(path).get("teachers") or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: teachers = {raw!r} is not a mapping")
    return {name: teacher_config(name, t) for name, t in raw.items()}


def stage_config(path: str | os.PathLike) -> Params:
    """``load_config(path)`` for a stage script: a bad value exits naming the file and key (no
    traceback). The stages that read teachers call this; the others ``_stage.sections()``."""
    try:
        return load_config(path)
    except ValueError as e:  # ParamsError, or a teacher entry that is not a mapping
        raise SystemExit(str(e)) from None
