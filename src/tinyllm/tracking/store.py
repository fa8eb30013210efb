"""The MLflow store: where it is (``tracking_uri``), whether it answers (``check_server``, the
outage helpers), mlflow pointed at it (``_mlflow``), the experiment (``ensure_experiment``,
``experiment_name``) and links into its UI (``runs_url``, ``compare_url``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from ..config import SECTIONS, TrackingConfig, from_dict, load_params
from ..redact import redact_and_cut, redact_uri
from ..workspace import main_repo_root

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by the MLflow 3 UI to pick the experiment's first page
EXPERIMENT_KIND = "custom_model_development"  # runs table first (the default is the GenAI traces overview)


def tracking_uri(root: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{main_repo_root(root) / 'mlflow.db'}"


def shown_uri(root: Path) -> str:
    """The tracking URI as logs and errors print it, its ``user:password@`` masked (issue 12 item 13)."""
    return redact_uri(tracking_uri(root))


# How long one tracking call may take while a stage logs live: MLflow's defaults (7 retries with
# backoff, 120 s timeout) turned a server outage into ~4 min per call (issue 21 fault 1).
FAST_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int: MLflow refuses "0.5"
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


PROBE_S = 12.0  # a tracking server that does not answer within this at start is reported


class TrackingUnavailable(RuntimeError):
    """The tracking server does not answer when a stage starts (nothing has been trained yet)."""


@contextlib.contextmanager
def fast_http():
    """MLflow's HTTP calls inside fail in seconds, not minutes (MLflow reads these per request)."""
    saved = {k: os.environ.get(k) for k in FAST_HTTP}
    os.environ.update(FAST_HTTP)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_outage(e: Exception) -> bool:
    """True when ``e`` says the tracking server did not answer (connection refused or reset, a
    timeout, a 5xx): worth buffering and retrying. False when it answered and refused the call
    (a 4xx: a bad value, a deleted run), which a retry would not change."""
    import requests

    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, OSError)):
        return True
    try:
        from mlflow.exceptions import MlflowException, RestException
    except ImportError:
        return False
    if isinstance(e, RestException):  # the server answered with an error document
        return e.get_http_status_code() >= 500
    # MLflow wraps transport failures ("API request to ... failed with exception ...") as INTERNAL_ERROR
    return isinstance(e, MlflowException) and e.error_code in (
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
    )


def _short(e: Exception) -> str:
    """The error's first line for a log: free text that may quote the URI with its password
    (``API request to http://u:p@host/... failed``), so redacted as text, not as one URI."""
    return redact_and_cut(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", 200)


def check_server(root: Path, timeout_s: float | None = None) -> None:
    """Raise :class:`TrackingUnavailable` within ``timeout_s`` when an ``http(s)://`` tracking server
    does not answer (any HTTP status counts as an answer: auth and routing are MLflow's to report).
    A local store (SQLite, a folder) is always there."""
    uri = tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    timeout_s = PROBE_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=(min(left, 5.0), min(left, 5.0)))
            return
        except requests.RequestException as e:
            last = e
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise TrackingUnavailable(
        f"MLflow tracking server {redact_uri(uri)} did not answer within {timeout_s:g} s ({_short(last)}). "
        "Start it, point MLFLOW_TRACKING_URI at one that runs (unset: the local mlflow.db), or run the stage "
        "with --no-mlflow; nothing has been trained yet."
    )


def _mlflow(root: Path):
    """mlflow, imported and pointed at this repo's store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow


def ensure_experiment(root: Path, name: str) -> str:
    """The experiment's id, created if needed, with its kind set so the UI opens on the runs table
    and the results view (``runs_url``) tagged."""
    mlflow = _mlflow(root)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        # a SQLite store keeps artifacts next to it in the user's repo: a queued experiment's temp
        # copy (where ./mlruns would land) is deleted when the run ends
        location = (main_repo_root(root) / "mlartifacts").as_uri() if tracking_uri(root).startswith("sqlite:") else None
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # another process created it in between (parallel queue workers)
            exp_id = mlflow.get_experiment_by_name(name).experiment_id
        tags = {}
    else:
        exp_id, tags = exp.experiment_id, exp.tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    ensure_results_view(root, exp_id, tags)
    return exp_id


# The runs table's columns as the link opens it: MLflow 3.17 keeps the table's columns per browser
# (localStorage), and a link may name a "shared view", an experiment tag
# ``mlflow.sharedViewState.<key>`` holding the view state as JSON (what the UI's Share button
# writes). The results view shows the accuracy (percent) columns, average first, newest run first.
RESULTS_VIEW = "tinyllm-results"
SHARED_VIEW_TAG = "mlflow.sharedViewState."


def results_view_state() -> dict:
    """The runs table's view state of the results view: accuracy/valid/average, then each
    benchmark's, then the test average, then MLflow's Models column (the wide Dataset column is
    left to *Columns*: it pushed the accuracies off screen)."""
    from ..benchmarks import BENCHMARKS
    from .names import acc_metric

    accs = [acc_metric("valid", b) for b in ("average", *BENCHMARKS)] + [acc_metric("test", "average")]
    columns = [f"metrics.`{m}`" for m in accs] + ["attributes.`Models`"]
    return {
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
    }


def ensure_results_view(root: Path, experiment_id: str, tags: dict | None = None) -> None:
    """Write the results view's tag on the experiment (its ``tags``, read when not given) unless it
    is there already."""
    import json

    mlflow = _mlflow(root)
    tags = mlflow.get_experiment(experiment_id).tags if tags is None else tags
    value = json.dumps(results_view_state(), separators=(",", ":"))
    if tags.get(SHARED_VIEW_TAG + RESULTS_VIEW) != value:
        mlflow.MlflowClient().set_experiment_tag(experiment_id, SHARED_VIEW_TAG + RESULTS_VIEW, value)


def runs_url(ui: str, experiment_id: str, run_id: str | None = None) -> str:
    """A UI link that opens on the runs table (or one run) in the "Model training" view.

    MLflow 3.17's UI picks an experiment's first page from its GenAI / Model training toggle
    (stored per browser, GenAI by default), not from ``mlflow.experimentKind``; the URL parameter
    ``workflowType=machine_learning`` sets that toggle, so links printed for users carry it. The
    runs table opens in the results view (``ensure_results_view``: the accuracy columns).
    """
    if run_id:
        return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    return (
        f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={RESULTS_VIEW}"
    )


def section(params: dict, name: str):
    """Section ``name`` of a params dict as its typed config (``tinyllm.config``: the defaults of
    missing keys live there, not here); e.g. ``section(params, "tracking").experiment``."""
    return from_dict(SECTIONS[name], params.get(name), name)


def tracking_config(root: Path) -> TrackingConfig:
    """``tracking`` of ``<root>/params.yaml`` (the typed defaults without the file or the section)."""
    path = Path(root) / "params.yaml"
    return section(load_params(path) if path.exists() else {}, "tracking")


def experiment_name(root: Path, experiment: str | None = None) -> str:
    """`experiment`, else params.yaml's `tracking.experiment` (typed default: `tinyllm`)."""
    return experiment or tracking_config(root).experiment


def compare_url(run_ids: list[str], experiment_ids: list[str], ui: str) -> str | None:
    """The MLflow UI's compare page of these runs (None when there are none)."""
    import json
    from urllib.parse import quote

    if not run_ids:
        return None

    def enc(x):
        return quote(json.dumps(x, separators=(",", ":")), safe="")

    return (
        f"{ui.rstrip('/')}/#/compare-runs?runs={enc(list(run_ids))}&experiments={enc(sorted(set(experiment_ids)))}"
        "&workflowType=machine_learning"  # stay in the Model training view (runs_url)
    )
