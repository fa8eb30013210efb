"""The mutation check's breakages still point at code that exists (tests/mutations/mutations.py).

A refactor that moves a guarded line makes its breakage "stale": ``tests/mutations/run.py``
reports it as an error, but only when someone runs that 5-minute check. This fast test fails at
once, naming the breakage and the file to point it at."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "mutations"))

from mutations import MUTATIONS  # noqa: E402


@pytest.mark.parametrize("m", MUTATIONS, ids=[m["name"] for m in MUTATIONS])
def test_each_breakage_applies_to_exactly_one_place(m):
    path = ROOT / m["file"]
    assert path.is_file(), f"{m['name']!r}: {m['file']} does not exist (moved? point 'file' at its new home)"
    count = path.read_text(encoding="utf-8").count(m["original"])
    assert count == 1, f"{m['name']!r}: its original occurs {count} times in {m['file']} (must be exactly once)"
    assert m["broken"] != m["original"]
