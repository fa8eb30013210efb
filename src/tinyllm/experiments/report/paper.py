"""The paper's Table 1 (v1): teachers' and students' accuracy, shown beside our rows. The numbers
are data (experiments/paper_table1.yaml), checked on load: every list has one number per column."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..rows import ROOT
from .columns import NAMES

TABLE1 = ROOT / "experiments" / "paper_table1.yaml"


def _accuracy(path: Path, where: str, values) -> list[float]:
    if not isinstance(values, list) or len(values) != len(NAMES) or not all(isinstance(v, int | float) for v in values):
        raise ValueError(f"{path}: {where} must be {len(NAMES)} numbers ({', '.join(NAMES)}), got {values!r}")
    return [float(v) for v in values]


def load_table1(path: Path = TABLE1) -> tuple[dict, dict, dict, dict]:
    """(teachers {name: (label, accuracy)}, students {hub id: size}, rows {size: {setting:
    accuracy}}, labels {setting: label}) from the YAML file; a malformed entry names its key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if data.get("columns") != NAMES:
        raise ValueError(f"{path}: columns must be {NAMES}, got {data.get('columns')!r}")
    teachers = {
        name: (t["label"], _accuracy(path, f"teachers.{name}.accuracy", t.get("accuracy")))
        for name, t in (data.get("teachers") or {}).items()
    }
    labels = dict(data.get("labels") or {})
    rows = {}
    for size, settings in (data.get("rows") or {}).items():
        unknown = set(settings) - set(labels)
        if unknown:
            raise ValueError(f"{path}: rows.{size} has setting(s) {sorted(unknown)} without a label in `labels`")
        rows[size] = {k: _accuracy(path, f"rows.{size}.{k}", v) for k, v in settings.items()}
    students = dict(data.get("students") or {})
    bad = {s for s in students.values() if s not in rows}
    if bad:
        raise ValueError(f"{path}: students name size(s) {sorted(bad)} that have no `rows` entry")
    return teachers, students, rows, labels


PAPER_TEACHERS, PAPER_STUDENTS, PAPER, PAPER_LABEL = load_table1()
RELEASE_NOTE = (
    "The released teachers' own accuracy cannot be computed from the release: it holds "
    "their rationales, written *given the gold answer*, not their answers. The paper's "
    "teacher numbers are shown for reference."
)
