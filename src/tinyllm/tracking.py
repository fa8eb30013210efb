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


# --- experiments: reading runs back ---
# Used by tinyllm.experiments (the grid's report and status); the only other MLflow calls.


def _mlflow_at(root: Path):
    """mlflow, pointed at the repo's store (imported lazily: ~3 s)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow


def experiment_name(root: Path, experiment: str | None = None) -> str:
    """`experiment`, else params.yaml's `tracking.experiment`, else `tinyllm`."""
    if experiment:
        return experiment
    p = Path(root) / "params.yaml"
    params = (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}
    return (params.get("tracking") or {}).get("experiment", "tinyllm")


def row_runs(root: Path, experiment: str | None = None) -> list[dict]:
    """Finished runs that carry a `row` tag and accuracy metrics (evaluate's runs; a parent or
    report run without metrics is left out), newest first: {run_id, experiment_id, row, seed,
    tags, metrics, start_time}; seed = the run's `distill.seed` param (None if not logged)."""
    mlflow = _mlflow_at(root)
    exp = mlflow.get_experiment_by_name(experiment_name(root, experiment))
    if exp is None:
        return []
    runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list",
                              filter_string="attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    out = []
    for r in runs:
        row = r.data.tags.get("row")
        if not row or not any(k.endswith(".accuracy") for k in r.data.metrics):
            continue
        seed = r.data.params.get("distill.seed")
        out.append({"run_id": r.info.run_id, "experiment_id": exp.experiment_id, "row": row,
                    "seed": int(seed) if seed not in (None, "", "null") else None, "tags": dict(r.data.tags),
                    "metrics": dict(r.data.metrics), "start_time": r.info.start_time})
    return out


def download_artifacts(root: Path, run_id: str, path: str, dst: Path) -> Path | None:
    """Artifact `path` (file or folder) of a run copied under `dst`; None when the run has none."""
    mlflow = _mlflow_at(root)
    if not mlflow.MlflowClient().list_artifacts(run_id, path):
        return None
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def compare_url(run_ids: list[str], experiment_ids: list[str], ui: str) -> str | None:
    """The MLflow UI's compare page of these runs (None when there are none)."""
    import json
    from urllib.parse import quote

    if not run_ids:
        return None

    def enc(x):
        return quote(json.dumps(x, separators=(",", ":")), safe="")

    return f"{ui.rstrip('/')}/#/compare-runs?runs={enc(list(run_ids))}&experiments={enc(sorted(set(experiment_ids)))}"


def log_report_run(root: Path, experiment: str, files: list[Path], tags: dict, metrics: dict) -> str:
    """A run named `report` (no `row` tag) holding the report's files as artifacts under
    `report/` and its numbers (CIs, paired tests) as metrics; returns its id."""
    mlflow = _mlflow_at(root)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="report") as run:
        mlflow.set_tags({"kind": "report", **{k: str(v) for k, v in tags.items()}})
        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        for i in range(0, len(finite), 500):  # MLflow's batch limit is 1000 metrics
            mlflow.log_metrics(dict(list(finite.items())[i:i + 500]))
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="report")
        return run.info.run_id
