"""A shrunk copy of this repo that runs the real pipeline in ~2 minutes on 2 CPU cores.

Shared by the end-to-end tests (test_pipeline_e2e.py, test_sharing.py): copies the pipeline
files into a temp dir, shrinks params (2 benchmarks, 2 training steps, 3 eval questions), drops
the local-teacher generation stages (they have their own tests), then `git init` + `dvc init`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import shrunk_params

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["arc", "piqa"]


def run(cmd, cwd, env, timeout=900, check=True):
    """Run a command; on failure the assertion message carries the tail of its output."""
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def base_env(**extra) -> dict:
    """Environment for dvc/stage commands: this venv's bin first, no DVC analytics."""
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        **extra,
    }


def make_shrunk_repo(d: Path, mirror: Path, extra_files=(), extra_dirs=()) -> Path:
    """Copy the pipeline into `d` (must exist) with shrunk params; `git init` + one empty
    commit + `dvc init`. Nothing is run yet. `extra_files`/`extra_dirs`: more of the repo to
    copy (e.g. Makefile, .gitignore, scripts)."""
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", *extra_files):
        shutil.copy2(ROOT / name, d / name)
    for name in ("stages", "src", *extra_dirs):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = shrunk_params(BENCHMARKS, source=mirror, evaluate={"max_new_tokens": 4})  # no local teachers:
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))  # their generate stages are dropped below
    dvc = yaml.safe_load((d / "dvc.yaml").read_text())
    for name in [n for n, s in dvc["stages"].items() if "generate" in s.get("cmd", str(s.get("do", "")))]:
        del dvc["stages"][name]
    (d / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    env = base_env()
    run(["git", "init", "-q"], d, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"], d, env)
    run(["dvc", "init", "-q"], d, env)
    return d


def remove_if_passed(session, failed_before: int, *paths: Path) -> None:
    """Delete scratch directories once the tests that used them passed (none failed since
    `failed_before` = ``session.testsfailed`` when they were made). A shrunk repo holds its
    student twice (workspace + DVC cache, ~2 GB); kept to the end, `pytest -m slow` reached
    ~30 GB and filled CI's disk. A failure keeps them for inspection."""
    if session.testsfailed == failed_before:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)


def git_commit(d: Path, env: dict, msg: str) -> None:
    """Stage everything (DVC outputs are git-ignored by `dvc repro`) and commit."""
    run(["git", "add", "-A"], d, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", msg], d, env)
