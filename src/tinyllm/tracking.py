"""MLflow logging, kept in one module so only the stages that track import mlflow (~3 s).

Default store: SQLite at ``<repo>/mlflow.db`` (absolute path). Queued DVC experiments run in
``<repo>/.dvc/tmp/exps/tmpXXXX``; the store path is taken from the repo *outside* that copy so
every run lands in the same database. ``MLFLOW_TRACKING_URI`` overrides it (a team server).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def main_repo_root(root: Path) -> Path:
    """The user's repo, also when running inside a queued experiment's temp copy."""
    s = str(Path(root).resolve())
    return Path(s.split(EXPS_TMP)[0]) if EXPS_TMP in s else Path(s)


def tracking_uri(root: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{main_repo_root(root) / 'mlflow.db'}"


def git_info(root: Path) -> dict[str, str]:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


def dvc_hashes(root: Path, paths: list[str]) -> dict[str, str]:
    """md5 of DVC outputs (as recorded in ``dvc.lock``) for the given output paths."""
    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    found = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs", []) + stage.get("deps", []):
            p = out.get("path")
            for want in paths:
                if p == want or (p and p.startswith(want.rstrip("/") + "/")):
                    found[f"dvc.md5.{p}"] = out.get("md5", "")
    return found


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_run(root: Path, experiment: str, run_name: str, params: dict, metrics: dict, tags: dict,
            step_rows: list[dict] | None = None, artifacts: list[Path] = ()) -> str:
    """One MLflow run with everything a number needs to be traced; returns the run id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(experiment) is None:
        # artifacts next to the store in the user's repo: a queued experiment's temp copy (where
        # ./mlruns would land if it created the experiment) is deleted when the run ends
        mlflow.create_experiment(experiment,
                                 artifact_location=(main_repo_root(root) / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        flat = {k: ("null" if v is None else str(v))[:6000] for k, v in flatten(params).items()}
        mlflow.log_params(flat)
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
        mlflow.log_metrics({k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float))})
        for row in step_rows or []:
            step = int(row["step"])
            mlflow.log_metrics({f"train.{k}": float(v) for k, v in row.items() if k != "step"}, step=step)
        for a in artifacts:
            if Path(a).exists():
                mlflow.log_artifact(str(a))
        log.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, tracking_uri(root))
        return run.info.run_id
