"""The benchmark scripts run on the library's current interfaces (a refactor that changes a
return type breaks them silently otherwise: nothing else calls them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import QUESTIONS, tiny_causal
from teachers_testlib import write_prepared

ROOT = Path(__file__).resolve().parents[1]


def test_bench_eval_paths_table_runs_and_every_path_agrees(tmp_path, tiny_tokenizer):
    # guards: score_options returned scoring.OptionScores since the cloze rules, and the paths
    # table still iterated it as a list of lists (TypeError on the benchmark's default command)
    model = tmp_path / "student"
    tiny_causal(tiny_tokenizer).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    write_prepared(tmp_path / "prepared", "arc", "valid", QUESTIONS)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_eval.py"), "--model", str(model), "--data", str(tmp_path)]
    out = subprocess.run(
        [*cmd, "--benchmark", "arc", "--questions", "4", "--repeats", "1", "--batch-size", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| score") or line.startswith("| generate")]
    assert len(rows) == 6, out.stdout
    assert sum("4/4 predictions identical" in r for r in rows) == 4, out.stdout  # batch-invariant scoring
    assert "4/4 texts identical" in rows[-1], out.stdout
