"""Runs beyond one training: a grid's or study's parent run and its children, the registry alias
of the best child, self-contained runs (a study arm, the report), and reading runs back for the
report (``row_runs``, ``download_artifacts``)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .names import PARENT_ENV, SPLITS, TAG_KIND, acc_metric, has_accuracy, param_values, split_metrics
from .run import TAG_ENDED_BY, TAG_PID, Run, owner_alive, owner_tags
from .store import _mlflow, ensure_experiment, experiment_name, shown_uri, tracking_config

log = logging.getLogger(__name__)


TAG_PARENT_KEY = "tinyllm.parent_key"  # the study a parent run belongs to: a resumed study continues it


def _newest_parent(client, exp_id: str, key: str) -> list:
    """The newest run tagged parent of ``key`` (a list of at most one ``mlflow.entities.Run``)."""
    return client.search_runs(
        [exp_id], filter_string=f"tags.`{TAG_PARENT_KEY}` = '{key}'", order_by=["attributes.start_time DESC"],
        max_results=1,
    )  # fmt: skip


def start_parent(
    root: Path, name: str, experiment: str | None = None, tags: dict | None = None, key: str | None = None
) -> str:
    """A parent run (RUNNING) for a grid or study in ``experiment`` (default: params.yaml's); returns
    its id. End it with :func:`end_parent`. It carries its process's ``owner_tags``, so a killed job's
    parent is ended KILLED by the next run's orphan check instead of staying RUNNING. With ``key``
    (``study:<name>``), the newest parent of that key whose process is gone is continued (RUNNING
    again, this process its owner): a resumed study keeps one parent for all its runs."""
    mlflow = _mlflow(root)
    client = mlflow.MlflowClient()
    exp_id = ensure_experiment(root, experiment_name(root, experiment))
    own = owner_tags()
    if key:
        prev = _newest_parent(client, exp_id, key)
        mine = prev and prev[0].data.tags.get(TAG_PID) == own[TAG_PID] and prev[0].info.status != "RUNNING"
        if prev and (mine or not owner_alive(prev[0].data.tags)):
            rid = prev[0].info.run_id
            client.update_run(rid, status="RUNNING")
            for k, v in {
                **own,
                TAG_ENDED_BY: f"continued by process {own[TAG_PID]} (was {prev[0].info.status})",
            }.items():
                client.set_tag(rid, k, v)
            log.info("MLflow parent run %s (%s) continued at %s", rid, name, shown_uri(root))
            return rid
        if prev:
            log.warning("%s: its parent run %s is held by a live process; starting another", key, prev[0].info.run_id)
    extra = {TAG_PARENT_KEY: key} if key else {}
    run = client.create_run(
        exp_id, run_name=name, tags={TAG_KIND: "grid", **own, **extra, **{k: str(v) for k, v in (tags or {}).items()}}
    )
    log.info("MLflow parent run %s (%s) at %s", run.info.run_id, name, shown_uri(root))
    return run.info.run_id


def end_parent(root: Path, run_id: str, status: str = "FINISHED") -> None:
    _mlflow(root).MlflowClient().set_terminated(run_id, status)


@contextlib.contextmanager
def parent_run(
    root: Path, name: str, experiment: str | None = None, tags: dict | None = None, key: str | None = None
) -> Iterator[str]:
    """``with parent_run(root, "grid 2026-11-25") as pid:`` — runs started inside (in this process
    or in subprocesses started inside, e.g. ``dvc queue start``) become its children via
    ``TINYLLM_PARENT_RUN_ID``; the parent ends FAILED if the block raises."""
    pid = start_parent(root, name, experiment, tags, key)
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = pid
    status = "FAILED"
    try:
        yield pid
        status = "FINISHED"
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before
        end_parent(root, pid, status)


def child_runs(root: Path, parent_run_id: str) -> list:
    """The runs nested under ``parent_run_id`` (``mlflow.entities.Run``), oldest first."""
    mlflow = _mlflow(root)
    client = mlflow.MlflowClient()
    exp_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [exp_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )


def register_best(
    root: Path,
    parent_run_id: str,
    metric: str = acc_metric("valid", "average"),
    registered_model: str | None = None,
    alias: str = "best-valid",
) -> tuple[str, str]:
    """Point ``registered_model@alias`` (default: params.yaml's ``tracking.registered_model``, the
    name the rows registered under) at the student of the child run with the highest ``metric``.

    Returns ``(run_id, version)``. Every evaluated child with ``tracking.log_model: true`` has
    registered its student as a version; the best child without one is an error naming it.
    """
    registered_model = registered_model or tracking_config(root).registered_model
    client = _mlflow(root).MlflowClient()
    scored = [r for r in child_runs(root, parent_run_id) if metric in r.data.metrics]
    if not scored:
        raise ValueError(f"register_best: no child run of {parent_run_id} has metric {metric!r}")
    best = max(scored, key=lambda r: r.data.metrics[metric])
    versions = client.search_model_versions(f"name = '{registered_model}' and run_id = '{best.info.run_id}'")
    if not versions:
        raise ValueError(
            f"register_best: best run {best.info.run_name} ({best.info.run_id}, {metric} = "
            f"{best.data.metrics[metric]:.4f}) has no version of model {registered_model!r}; "
            f"run the grid with tracking.log_model=true"
        )
    version = max(versions, key=lambda v: int(v.version)).version
    client.set_registered_model_alias(registered_model, alias, version)
    client.set_tag(parent_run_id, f"best.{alias}", best.info.run_id)
    log.info(
        "%s@%s -> version %s (run %s, %s = %.4f)",
        registered_model,
        alias,
        version,
        best.info.run_name,
        metric,
        best.data.metrics[metric],
    )
    return best.info.run_id, version


def log_run(
    root: Path,
    experiment: str,
    run_name: str,
    params: dict,
    metrics: dict,
    tags: dict,
    step_rows: list[dict] | None = None,
    artifacts: list[Path] = (),
) -> str:
    """One self-contained run (e.g. the grid report's); returns its id."""
    mlflow = _mlflow(root)
    exp_id = ensure_experiment(root, experiment)
    parent = os.environ.get(PARENT_ENV) or None  # a study's or grid's run: this one is its child
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent) as active:
        run = Run(mlflow, active.info.run_id)
        run.log_params(param_values(params))
        run.set_tags(tags)
        run.log_metrics(metrics)
        for row in step_rows or []:
            run.log_row(row)
        run.log_artifacts(list(artifacts))
        atexit.unregister(run._fail_if_open)
    log.info("MLflow run %s in experiment %r at %s", active.info.run_id, experiment, shown_uri(root))
    return active.info.run_id


def row_runs(root: Path, experiment: str | None = None) -> list[dict]:
    """Finished runs that carry a `row` tag and accuracy metrics (evaluate's runs; a parent or
    report run without metrics is left out), newest first: {run_id, experiment_id, row, seed,
    tags, metrics, start_time}; seed = the run's `distill.seed` param (None if not logged). Its
    n, CIs and exact accuracies: ``run_results`` (an artifact read per run, so only where needed)."""
    mlflow = _mlflow(root)
    exp = mlflow.get_experiment_by_name(experiment_name(root, experiment))
    if exp is None:
        return []
    runs = mlflow.search_runs(
        experiment_ids=[exp.experiment_id],
        output_format="list",
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    out = []
    for r in runs:
        row = r.data.tags.get("row")
        if not row or not has_accuracy(r.data.metrics):
            continue
        seed = r.data.params.get("distill.seed")
        out.append(
            {
                "run_id": r.info.run_id,
                "experiment_id": exp.experiment_id,
                "row": row,
                "seed": int(seed) if seed not in (None, "", "null") else None,
                "tags": dict(r.data.tags),
                "metrics": dict(r.data.metrics),
                "start_time": r.info.start_time,
            }
        )
    return out


def run_results(root: Path, run_id: str, metrics: dict) -> dict:
    """``{split: {benchmark|average: {accuracy, n, ci_low, ci_high, majority, chance, ...}}}`` of an
    evaluated run, accuracy as a fraction: its ``eval.json`` artifact (the evaluate stage's
    metrics/eval.json, exact), else what its metrics hold (``split_metrics``: runs logged before
    the artifact carried the bookkeeping, and study child runs)."""
    mlflow = _mlflow(root)
    try:
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/eval.json")
    except Exception:  # noqa: BLE001  (no such artifact)
        data = None
    if isinstance(data, dict):
        per = {k: v for k, v in data.items() if k in SPLITS and isinstance(v, dict)}
        if per:
            return per
    return split_metrics(metrics)


def download_artifacts(root: Path, run_id: str, path: str, dst: Path) -> Path | None:
    """Artifact `path` (file or folder) of a run copied under `dst`; None when the run has none."""
    mlflow = _mlflow(root)
    if not mlflow.MlflowClient().list_artifacts(run_id, path):
        return None
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def log_report_run(root: Path, experiment: str, files: list[Path], tags: dict, metrics: dict) -> str:
    """A run named `report` (no `row` tag) holding the report's files as artifacts under
    `report/` and its numbers (CIs, paired tests) as metrics; returns its id."""
    mlflow = _mlflow(root)
    exp_id = ensure_experiment(root, experiment)  # artifacts next to the store, not in ./mlruns
    with mlflow.start_run(experiment_id=exp_id, run_name="report") as run:
        mlflow.set_tags({"kind": "report", TAG_KIND: "report", **{k: str(v) for k, v in tags.items()}})
        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        mlflow.log_metrics(finite)  # MlflowClient.log_batch sends them 1000 a request (the store's limit)
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="report")
        return run.info.run_id


def find_parent(root: Path, key: str, experiment: str | None = None) -> str | None:
    """The newest parent run of ``key`` (``study:<name>``, as :func:`start_parent` tags it) in
    ``experiment``, or None when there is none; creates nothing."""
    client = _mlflow(root).MlflowClient()
    exp = client.get_experiment_by_name(experiment_name(root, experiment))
    if exp is None:
        return None
    runs = _newest_parent(client, exp.experiment_id, key)
    return runs[0].info.run_id if runs else None


def annotate_run(root: Path, run_id: str, tags: dict, files: tuple[Path, ...] = (), artifact_path: str = "") -> None:
    """Add tags and artifact files to a run, finished or not (its status and description stay)."""
    client = _mlflow(root).MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path=artifact_path or None)


def describe_run(root: Path, run_id: str, text: str, tags: dict | None = None) -> None:
    """Set a run's description (the MLflow UI shows it on the run page) and tags, e.g. a study's
    one-sentence conclusion on its parent run."""
    annotate_run(root, run_id, {"mlflow.note.content": text, **(tags or {})})
