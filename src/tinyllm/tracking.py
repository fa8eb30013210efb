"""MLflow tracking: the only module that imports mlflow (~1-3 s), so stages that do not track stay fast.

What a run holds (one run per trained student, spanning the ``distill`` and ``evaluate`` stages):

- ``distill`` starts the run (name: grid row / DVC experiment, alphas, seed: ``no_icl a=1,1,0.5 s0``),
  logs params, tags and its input datasets (prepared splits and each used rationale cache, the DVC
  md5 from ``dvc.lock`` as digest), then the training losses *live* (``train.loss``, ``train.loss_<teacher>``,
  ``train.lr`` per logged step) and CPU/memory system metrics, and writes the run id to
  ``metrics/mlflow_run.json`` (a small DVC output of ``distill``, next to the metrics).
- ``evaluate`` resumes that run (``start_run(run_id=...)``) and adds the per-benchmark metrics, the
  evaluation datasets, the metric files and the student as an MLflow model (transformers flavour,
  registered as a version of ``tracking.registered_model``). When there is no usable run to resume
  (no run file, a run id from another store, or a run already evaluated because DVC restored
  ``distill`` from its run-cache), it starts a fresh run that carries everything the distill run would
  have (params, training curve from ``metrics/train_log.tsv``, training datasets) and is linked by
  tag to the checkpoint's md5 (``tinyllm.student_md5``) and to the run that trained it
  (``tinyllm.distill_run_id``).
- A grid or study is one parent run (``parent_run``); a child finds its parent through the
  ``TINYLLM_PARENT_RUN_ID`` environment variable, which DVC passes through its queue workers to the
  stage commands (set it in the environment of ``dvc queue start`` / ``dvc exp run``).
  ``register_best`` points the alias ``@best-valid`` at the best child's registered student.

The experiment carries ``mlflow.experimentKind = custom_model_development`` so the UI opens on the
runs table, not on the GenAI traces overview.

Default store: SQLite at ``<repo>/mlflow.db`` (absolute path). Queued DVC experiments run in
``<repo>/.dvc/tmp/exps/tmpXXXX``; the store path is taken from the repo *outside* that copy so
every run lands in the same database. ``MLFLOW_TRACKING_URI`` overrides it (a team server).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import hashlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
PARENT_ENV = "TINYLLM_PARENT_RUN_ID"  # a queued/temp DVC experiment's parent run (grid or study)
RUN_FILE = "metrics/mlflow_run.json"  # distill -> evaluate hand-over of the run id
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # read by the MLflow 3 UI to pick the experiment's first page
EXPERIMENT_KIND = "custom_model_development"  # runs table first (the default is the GenAI traces overview)
TAG_DISTILLED = "tinyllm.distilled"
TAG_EVALUATED = "tinyllm.evaluated"
TAG_ORIGIN = "tinyllm.run_origin"
TAG_STUDENT_MD5 = "tinyllm.student_md5"
TAG_DISTILL_RUN = "tinyllm.distill_run_id"
TAG_KIND = "tinyllm.kind"  # training | grid (parent) | report
MODEL_ARTIFACT = "student"


# ----------------------------------------------------------------------------- store and names


def main_repo_root(root: Path) -> Path:
    """The user's repo, also when running inside a queued experiment's temp copy."""
    s = str(Path(root).resolve())
    return Path(s.split(EXPS_TMP)[0]) if EXPS_TMP in s else Path(s)


def tracking_uri(root: Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{main_repo_root(root) / 'mlflow.db'}"


def _redact(uri: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host``: a URI is printed in logs (issue 12 item 13)."""
    try:
        from tinyllm.redact import redact_uri  # the shared helper, where it exists
    except ImportError:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(uri)
        if "@" not in parts.netloc:
            return uri
        return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
    return redact_uri(uri)


# How long one tracking call may take while a stage logs live: MLflow's defaults (7 retries with
# backoff, 120 s timeout) turned a server outage into ~4 min per call (issue 21 fault 1).
FAST_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int: MLflow refuses "0.5"
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
RETRY_EVERY_S = 30.0  # in an outage, try the server again at most this often (each try <= ~11 s)
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
    return _redact(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")[:200]


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
        f"MLflow tracking server {_redact(uri)} did not answer within {timeout_s:g} s ({_short(last)}). "
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
    """The experiment's id, created if needed, with its kind set so the UI opens on the runs table."""
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
    return exp_id


def runs_url(ui: str, experiment_id: str, run_id: str | None = None) -> str:
    """A UI link that opens on the runs table (or one run) in the "Model training" view.

    MLflow 3.17's UI picks an experiment's first page from its GenAI / Model training toggle
    (stored per browser, GenAI by default), not from ``mlflow.experimentKind``; the URL parameter
    ``workflowType=machine_learning`` sets that toggle, so links printed for users carry it.
    """
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def run_name(params: dict) -> str:
    """What the run is: ``<DVC experiment or grid row> a=<alphas> s<seed>``, e.g. ``no_icl a=1,1,0.5 s0``.

    The name comes first from ``DVC_EXP_NAME`` (set by ``dvc exp run``), else ``tracking.row``, else
    the experiment name for the default profile; the alphas are those > 0 in params order (``a=-``:
    label-only fine-tuning); ``+lora`` marks a LoRA run.
    """
    track = params.get("tracking") or {}
    distill = params.get("distill") or {}
    row = track.get("row", "default")
    name = os.environ.get("DVC_EXP_NAME") or (row if row != "default" else track.get("experiment", "tinyllm"))
    alphas = [f"{float(a):g}" for a in (distill.get("alphas") or {}).values() if a and float(a) > 0]
    lora = " +lora" if distill.get("lora") else ""
    steps = distill.get("steps")
    untrained = " untrained" if steps == 0 else ""
    return f"{name} a={','.join(alphas) or '-'} s{distill.get('seed', 0)}{lora}{untrained}"


def git_info(root: Path) -> dict[str, str]:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


def _lock_entries(root: Path) -> list[dict]:
    """Every out and dep of ``dvc.lock`` (outs first), as ``{path, md5, ...}`` dicts."""
    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return []
    data = yaml.safe_load(lock.read_text()) or {}
    stages = (data.get("stages") or {}).values()
    return [e for s in stages for e in s.get("outs", [])] + [e for s in stages for e in s.get("deps", [])]


def dvc_hashes(root: Path, paths: list[str]) -> dict[str, str]:
    """md5 of DVC outputs (as recorded in ``dvc.lock``) for the given output paths."""
    found = {}
    for e in _lock_entries(root):
        p = e.get("path")
        for want in paths:
            if p == want or (p and p.startswith(want.rstrip("/") + "/")):
                found.setdefault(f"dvc.md5.{p}", e.get("md5", ""))
    return found


def dvc_md5(root: Path, path: str) -> str | None:
    """The md5 ``dvc.lock`` records for exactly ``path`` (an output where it is one), else None."""
    for e in _lock_entries(root):
        if e.get("path") == path.rstrip("/") and e.get("md5"):
            return e["md5"]
    return None


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ----------------------------------------------------------------------------- datasets


@dataclass
class DatasetRef:
    """One dataset input of a run: a DVC-versioned folder and the digest it had."""

    name: str  # shown in the UI's Dataset column, e.g. rationales/flan_t5_xl
    path: str  # relative to the repo, e.g. data/rationales/flan_t5_xl
    context: str  # training | evaluation
    digest: str  # the DVC md5 (``<md5>.dir`` for a folder), else a content md5
    digest_source: str  # dvc.lock | content


def _content_digest(path: Path) -> str:
    """md5 over the relative paths and bytes of every file under ``path``: the digest where
    ``dvc.lock`` has none (a stage run by hand, a test)."""
    h = hashlib.md5()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for f in files:
        h.update(str(f.relative_to(path) if f != Path(path) else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _ref(root: Path, name: str, path: str, context: str) -> DatasetRef | None:
    """None for a path that is neither in dvc.lock nor on disk (nothing to name; the stage that
    needs it reports that, not the tracking)."""
    md5 = dvc_md5(root, path)
    if md5:
        return DatasetRef(name, path, context, md5, "dvc.lock")
    if not (Path(root) / path).exists():
        log.warning("dataset %s: %s is neither in dvc.lock nor on disk; not logged", name, path)
        return None
    return DatasetRef(name, path, context, _content_digest(Path(root) / path), "content")


def training_datasets(
    root: Path, params: dict, prepared: str = "data/prepared", rationales: str = "data/rationales"
) -> list[DatasetRef]:
    """The prepared train splits, the joined trainset (where that stage exists) and the cache of
    each teacher with alpha > 0.

    A cache is one DVC output (released teachers) or one per benchmark (generated teachers); each
    benchmark's part becomes its own dataset then, so each digest is the one ``dvc.lock`` holds.
    """
    refs = [_ref(root, "prepared/train", prepared, "training")]
    if (Path(root) / "data" / "trainset").exists():  # the joined questions + rationales distill reads
        refs.append(_ref(root, "trainset", "data/trainset", "training"))
    benchmarks = (params.get("data") or {}).get("benchmarks") or []
    for teacher, alpha in ((params.get("distill") or {}).get("alphas") or {}).items():
        if not alpha or float(alpha) <= 0:
            continue
        path = f"{rationales}/{teacher}"
        if dvc_md5(root, path) or not any(dvc_md5(root, f"{path}/{b}") for b in benchmarks):
            refs.append(_ref(root, f"rationales/{teacher}", path, "training"))
        else:
            refs += [
                _ref(root, f"rationales/{teacher}/{b}", f"{path}/{b}", "training")
                for b in benchmarks
                if (Path(root) / path / b).exists()
            ]
    return [r for r in refs if r is not None]


def evaluation_datasets(root: Path, splits: list[str], prepared: str = "data/prepared") -> list[DatasetRef]:
    """The prepared evaluation splits (one dataset per split; a dataset is logged once per run, so
    the train and valid views of data/prepared need distinct names)."""
    return [r for r in (_ref(root, f"prepared/{s}", prepared, "evaluation") for s in splits) if r is not None]


def _log_datasets(mlflow, refs: list[DatasetRef]) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for r in refs:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local paths
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(r.path)
        ds = MetaDataset(source, name=r.name, digest=r.digest)
        mlflow.log_input(ds, context=r.context, tags={"dvc_path": r.path, "digest_source": r.digest_source})


# ----------------------------------------------------------------------------- one run


def _is_main_process() -> bool:
    """Rank 0 under ``accelerate launch`` / ``torchrun`` (only it logs), True without them."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _params_of(params: dict, sections: tuple[str, ...]) -> dict[str, str]:
    flat = flatten({k: params[k] for k in sections if k in params})
    return {k: ("null" if v is None else str(v))[:6000] for k, v in flat.items()}


def _tags_of(root: Path, params: dict) -> dict[str, str]:
    distill = params.get("distill") or {}
    teachers = sorted(t for t, a in (distill.get("alphas") or {}).items() if a)
    return {
        TAG_KIND: "training",
        "row": (params.get("tracking") or {}).get("row", "default"),
        "student": (params.get("student") or {}).get("source", ""),
        "teachers": ",".join(teachers) or "none",
        "alphas": json.dumps(distill.get("alphas") or {}, sort_keys=True),
        "headline": (params.get("evaluate") or {}).get("headline", "score"),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        **git_info(root),
    }


def _row_metric(key: str) -> str:
    return f"valid.{key[len('valid_') :]}" if key.startswith("valid_") else f"train.{key}"


class Run:
    """The active MLflow run of this stage. ``Run()`` (no run id) stands for "not tracked"
    (``--no-mlflow``, a non-main process): every method is then a no-op.

    If the stage dies before :meth:`end`, the run is ended FAILED at exit (MLflow's own exit hook
    would mark it FINISHED).

    Metrics and tags (``log_row``, ``log_metrics``, ``set_tags``) survive a tracking outage: a call
    the server does not answer (a few seconds: ``FAST_HTTP``) goes to a local buffer with one
    warning, and the buffer is replayed in order, with the original timestamps, as soon as the
    server answers again (tried at most every ``RETRY_EVERY_S``) or at :meth:`flush`. What is still
    buffered at the end is handed over in the run file (``pending``) and replayed by ``evaluate``.
    """

    def __init__(self, mlflow=None, run_id: str | None = None, resumed: bool = False, root: Path | None = None):
        self.mlflow, self.run_id, self.resumed, self.root = mlflow, run_id, resumed, root
        self.pending: list[dict] = []  # ops not delivered yet (outage), oldest first
        self.experiment_id: str | None = None
        self._retry_at = 0.0
        self._warned = False
        if run_id:
            atexit.register(self._fail_if_open)

    # --- delivery with a local buffer (issue 21 fault 1)

    def _write(self, op: dict) -> None:
        from mlflow.entities import Metric, RunTag

        client = self.mlflow.MlflowClient()
        if op["op"] == "metrics":
            metrics = [Metric(k, v, op["ts"], op.get("step") or 0) for k, v in op["metrics"].items()]
            client.log_batch(self.run_id, metrics=metrics)
        elif op["op"] == "tags":
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
        else:
            raise ValueError(f"unknown buffered op {op['op']!r}")

    def _send(self, op: dict) -> None:
        if self.pending:  # in an outage: keep the order, try the server again now and then
            self.pending.append(op)
            if time.monotonic() >= self._retry_at:
                self.flush()
            return
        try:
            with fast_http():
                self._write(op)
        except Exception as e:  # noqa: BLE001  (tracking is never the reason a training is lost)
            if not _is_outage(e):  # the server answered and refused this call: it would refuse it again
                log.error("MLflow refused a logging call (%s); it is dropped, training goes on", _short(e))
                return
            self.pending.append(op)
            self._retry_at = time.monotonic() + RETRY_EVERY_S
            if not self._warned:
                self._warned = True
                log.warning(
                    "MLflow at %s did not answer (%s): logging to a local buffer, replayed when it answers "
                    "again or at the end; training goes on and the model is saved either way",
                    _redact(tracking_uri(self.root or Path("."))),
                    _short(e),
                )

    def flush(self) -> bool:
        """Replay the buffer; True when nothing is left in it."""
        if not self.run_id or not self.pending:
            return True
        n = len(self.pending)
        try:
            with fast_http():
                while self.pending:
                    try:
                        self._write(self.pending[0])
                    except Exception as e:  # noqa: BLE001
                        if _is_outage(e):
                            raise
                        log.error("MLflow refused a buffered logging call (%s); it is dropped", _short(e))
                    self.pending.pop(0)
        except Exception:  # noqa: BLE001  (still down)
            self._retry_at = time.monotonic() + RETRY_EVERY_S
            return False
        log.warning("MLflow answers again: %d buffered logging calls replayed into run %s", n, self.run_id)
        return True

    def log_row(self, row: dict) -> None:
        """One logged training step (``train()``'s ``on_log`` callback) at ``step``: ``train.<key>``
        (loss, loss_answer, loss_<teacher>, lr, ...), and ``valid.<loss_task>`` for ``valid_<loss_task>``."""
        if self.run_id:
            step = int(row["step"])
            metrics = {_row_metric(k): float(v) for k, v in row.items() if k != "step"}
            self._send({"op": "metrics", "metrics": metrics, "step": step, "ts": int(time.time() * 1000)})

    def log_metrics(self, metrics: dict, prefix: str = "") -> None:
        flat = {
            f"{prefix}{k}": float(v)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self.run_id and flat:
            self._send({"op": "metrics", "metrics": flat, "step": 0, "ts": int(time.time() * 1000)})

    def log_params(self, params: dict[str, str]) -> None:
        """Params not logged yet (a resumed run keeps the values distill logged: MLflow refuses to
        change a param)."""
        if not self.run_id:
            return
        have = self.mlflow.MlflowClient().get_run(self.run_id).data.params if self.resumed else {}
        new = {k: v for k, v in params.items() if k not in have}
        if new:
            self.mlflow.log_params(new)

    def set_tags(self, tags: dict) -> None:
        if self.run_id and tags:
            self._send({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_datasets(self, refs: list[DatasetRef]) -> None:
        if self.run_id:
            _log_datasets(self.mlflow, refs)

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for p in paths:
            if self.run_id and Path(p).exists():
                self.mlflow.log_artifact(str(p), artifact_path=artifact_path)

    def log_model(self, model, tokenizer, registered_model: str | None, seq2seq: bool) -> str | None:
        """The student as an MLflow model (transformers flavour), registered as a new version of
        ``registered_model``; returns the model URI.

        Logged from the loaded model and tokenizer: MLflow 3.17's checkpoint-folder path
        (``transformers_model="<dir>"``) fails under transformers 5 (``check_task`` returns the
        pipeline class by name, MLflow reads its ``__name__``).
        """
        if not self.run_id:
            return None
        import mlflow.transformers

        t0 = time.perf_counter()
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name=MODEL_ARTIFACT,
            task="text2text-generation" if seq2seq else "text-generation",
            registered_model_name=registered_model or None,
            # fixed requirements: inferring them imports the model in a subprocess (slow, offline)
            pip_requirements=_model_requirements(),
        )
        wall = time.perf_counter() - t0
        log.info(
            "student logged as MLflow model %s in %.1f s%s",
            info.model_uri,
            wall,
            f" (registered as {registered_model} v{info.registered_model_version})" if registered_model else "",
        )
        self.mlflow.log_metric("log_model_s", wall)
        return info.model_uri

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            atexit.unregister(self._fail_if_open)
            self.mlflow.end_run(status)

    def _fail_if_open(self) -> None:
        run = self.mlflow.active_run()
        if run is not None and run.info.run_id == self.run_id:
            try:
                with fast_http():
                    self.mlflow.end_run("FAILED")
            except Exception:  # noqa: BLE001  (server gone: the next run of the stage marks it, mark_orphans)
                log.warning("could not mark run %s FAILED (tracking server not answering)", self.run_id)


def _model_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("torch", "transformers", "accelerate", "sentencepiece"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return out


TAG_HOST = "tinyllm.host"  # where the process that holds a RUNNING run lives
TAG_PID = "tinyllm.pid"
TAG_PROC_START = "tinyllm.proc_start"  # that process's start time (a reused pid is another process)
TAG_ENDED_BY = "tinyllm.ended_by"  # why a run was ended by someone else than its own process


def _host() -> str:
    import socket

    return socket.gethostname()


def _proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` (psutil), None when there is no such process."""
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def owner_tags() -> dict[str, str]:
    """Tags naming the process that holds the run: :func:`mark_orphans` of a later run reads them."""
    return {TAG_HOST: _host(), TAG_PID: str(os.getpid()), TAG_PROC_START: _proc_start(os.getpid()) or ""}


def mark_orphans(root: Path, experiment_id: str, keep: str | None = None) -> list[str]:
    """End as KILLED every RUNNING training run of ``experiment_id`` whose process, on this host, is
    gone (killed with -9, the machine rebooted): MLflow has no heartbeat, so without this they stay
    RUNNING forever (issue 21 fault 3). The run gets tag ``tinyllm.ended_by`` saying why. Runs held
    by a live process (a parallel queue worker) and runs of other hosts (no way to tell) are left
    alone. Returns the ids it ended."""
    mlflow = _mlflow(root)
    client = mlflow.MlflowClient()
    host = _host()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'",
        max_results=1000,
    )
    ended = []
    for r in runs:
        tags = r.data.tags
        if r.info.run_id == keep or tags.get(TAG_KIND, "training") != "training":
            continue
        try:
            pid = int(tags.get(TAG_PID, ""))
        except ValueError:
            continue
        alive = _proc_start(pid)
        if alive is not None and alive == tags.get(TAG_PROC_START):
            continue  # its process is still there
        why = (
            f"orphan: process {pid} on {host} that held this run is gone (killed or crashed); "
            f"marked KILLED by run {keep or '-'} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        client.set_tag(r.info.run_id, TAG_ENDED_BY, why)
        client.set_terminated(r.info.run_id, "KILLED")
        log.warning("MLflow run %s (%s) was left RUNNING by a dead process: %s", r.info.run_id, r.info.run_name, why)
        ended.append(r.info.run_id)
    return ended


def _start(root: Path, params: dict, run_id: str | None = None) -> Run:
    """Start (or resume, with ``run_id``) the stage's run, with CPU/memory system metrics.

    A tracking server that does not answer is reported within ``PROBE_S`` seconds
    (:class:`TrackingUnavailable`); the run is tagged with the process that holds it, and runs left
    RUNNING by dead processes of this host are ended KILLED (:func:`mark_orphans`)."""
    check_server(root)
    mlflow = _mlflow(root)
    track = params.get("tracking") or {}
    exp_id = ensure_experiment(root, track.get("experiment", "tinyllm"))
    if run_id:
        # make the run's own experiment the active one: MLflow refuses to resume a run while another
        # experiment is active (mlflow.set_experiment earlier in the process, a user's shell)
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
        run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
    else:
        parent = os.environ.get(PARENT_ENV) or None
        run = mlflow.start_run(
            experiment_id=exp_id, run_name=run_name(params), parent_run_id=parent, log_system_metrics=True
        )
    log.info(
        "MLflow run %s (%s) in experiment %r at %s",
        run.info.run_id,
        run.info.run_name,
        track.get("experiment", "tinyllm"),
        _redact(tracking_uri(root)),
    )
    out = Run(mlflow, run.info.run_id, resumed=bool(run_id), root=Path(root))
    out.experiment_id = run.info.experiment_id
    out.set_tags(owner_tags())
    try:
        mark_orphans(root, run.info.experiment_id, keep=run.info.run_id)
    except Exception as e:  # noqa: BLE001  (housekeeping must not stop the stage)
        log.warning("could not check for orphaned runs: %s", _short(e))
    return out


def start_distill_run(root: Path, params: dict, enabled: bool = True) -> Run:
    """The run a training starts: params, tags, training datasets; losses follow via ``log_row``."""
    if not enabled or not _is_main_process():
        return Run()
    for k, v in FAST_HTTP.items():  # every call of this stage (system metrics too) fails in seconds
        os.environ.setdefault(k, v)
    run = _start(root, params)
    run.log_params(_params_of(params, ("data", "student", "distill", "tracking")))
    run.log_params(_params_of({"teachers": _used_teachers(params)}, ("teachers",)))
    run.set_tags(_tags_of(root, params))
    run.log_datasets(training_datasets(root, params))
    return run


def _used_teachers(params: dict) -> dict:
    alphas = (params.get("distill") or {}).get("alphas") or {}
    return {t: v for t, v in (params.get("teachers") or {}).items() if alphas.get(t)}


def finish_distill_run(run: Run, root: Path, train_metrics: dict, run_file: Path | str = RUN_FILE) -> None:
    """Summary metrics, the hand-over file for ``evaluate``, and the run ended FINISHED.

    The file is written also without a run (``{"run_id": null}``): it is a DVC output of distill.
    """
    from .io import write_json

    info = {"run_id": run.run_id}
    if run.run_id:
        run.log_metrics(train_metrics, prefix="train.")
        run.set_tags({TAG_DISTILLED: "true"})
        info.update(experiment_id=run.experiment_id, tracking_uri=_redact(tracking_uri(root)))
        if run.flush():
            try:
                with fast_http():
                    run.end("FINISHED")
            except Exception as e:  # noqa: BLE001
                log.warning("could not end MLflow run %s (%s); evaluate ends it", run.run_id, _short(e))
                info["pending"] = []
        if run.pending:
            # the server is still down: the files are written all the same, evaluate replays these
            info["pending"] = run.pending
            log.warning(
                "MLflow did not answer before the end: %d logging calls kept in %s, replayed into run %s by "
                "evaluate (or tinyllm.tracking.replay_pending)",
                len(run.pending),
                run_file,
                run.run_id,
            )
            atexit.unregister(run._fail_if_open)
            with contextlib.suppress(Exception), fast_http():
                _forget_active_run(run.mlflow)
    write_json(Path(root) / run_file, info)


def _forget_active_run(mlflow) -> None:
    """Drop the active run from MLflow's stack without calling the server (it is down): its exit hook
    would otherwise retry ``end_run`` at exit. The run stays RUNNING in the store until replayed."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack:
        rid = stack.pop().info.run_id
        mon = fluent.run_id_to_system_metrics_monitor.pop(rid, None)
        if mon is not None:
            mon._shutdown_event.set()


def replay_pending(root: Path, run_file: Path | str = RUN_FILE) -> int:
    """Replay the logging calls ``distill`` kept in the run file during an outage into their run
    (ended FINISHED when distill could not end it); returns how many. The file loses ``pending``."""
    from .io import write_json

    path = Path(root) / run_file
    info = json.loads(path.read_text()) if path.exists() else {}
    if not info.get("run_id") or "pending" not in info:
        return 0
    mlflow = _mlflow(root)
    client = mlflow.MlflowClient()
    n = len(info["pending"])
    try:
        with fast_http():
            status = client.get_run(info["run_id"]).info.status
    except Exception as e:  # noqa: BLE001  (another store: the training curve comes from train_log.tsv)
        log.warning(
            "run %s of the run file is not in this store (%s): %d kept calls dropped", info["run_id"], _short(e), n
        )
        status = None
    if status is not None:
        run = Run(mlflow, None, root=Path(root))
        run.run_id, run.pending = info["run_id"], list(info["pending"])
        if not run.flush():
            raise TrackingUnavailable(f"MLflow at {_redact(tracking_uri(root))} still does not answer")
        if status == "RUNNING":
            client.set_terminated(run.run_id, "FINISHED")
    info.pop("pending")
    write_json(path, info)
    log.info("replayed %d logging calls of an outage into run %s", n, run.run_id)
    return n


def _resumable(mlflow, info: dict) -> tuple[str | None, str]:
    """The run id ``evaluate`` may resume, and why (or why not): ``distill``,
    ``fresh:no-run-file``, ``fresh:other-store``, ``fresh:already-evaluated``."""
    run_id = info.get("run_id")
    if not run_id:
        return None, "fresh:no-run-file"
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except Exception:  # not in this store: a pulled checkpoint, another machine's mlflow.db
        return None, "fresh:other-store"
    if run.info.lifecycle_stage != "active":
        return None, "fresh:run-deleted"
    if run.data.tags.get(TAG_EVALUATED) == "true":  # distill restored from DVC's run-cache
        return None, "fresh:already-evaluated"
    return run_id, "distill"


def open_evaluate_run(
    root: Path,
    params: dict,
    run_file: Path | str = RUN_FILE,
    train_metrics: dict | None = None,
    train_log: Path | None = None,
    student: str = "models/student",
    enabled: bool = True,
) -> Run:
    """Resume the run ``distill`` started, or start a fresh one linked to the checkpoint.

    A fresh run gets everything the distill run would have had (params, tags, training datasets,
    the training curve from ``train_log`` and ``train_metrics``), so it is complete on its own.
    """
    if not enabled or not _is_main_process():
        return Run()
    check_server(root)
    replay_pending(root, run_file)  # what distill logged while the server was down, if anything
    mlflow = _mlflow(root)
    path = Path(root) / run_file
    info = json.loads(path.read_text()) if path.exists() else {}
    run_id, origin = _resumable(mlflow, info)
    run = _start(root, params, run_id)
    link = {TAG_ORIGIN: origin}
    md5 = dvc_md5(root, student)
    if md5:
        link[TAG_STUDENT_MD5] = md5
    if run_id is None:
        if info.get("run_id"):
            link[TAG_DISTILL_RUN] = info["run_id"]
        run.log_params(_params_of(params, ("data", "student", "distill")))
        run.log_params(_params_of({"teachers": _used_teachers(params)}, ("teachers",)))
        run.set_tags(_tags_of(root, params))
        run.log_datasets(training_datasets(root, params))
        for row in _read_tsv(train_log):
            run.log_row(row)
        run.log_metrics(train_metrics or {}, prefix="train.")
    run.log_params(_params_of(params, ("evaluate", "tracking")))
    run.set_tags(link)
    log.info("evaluate logs into run %s (%s)", run.run_id, origin)
    return run


def _read_tsv(path: Path | None) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f, delimiter="\t")]


def finish_evaluate_run(
    run: Run,
    results: dict,
    extra_metrics: dict | None = None,
    artifacts: list[Path] = (),
    eval_splits: list[str] = (),
    model=None,
    tokenizer=None,
    log_model: bool = False,
    registered_model: str | None = None,
    seq2seq: bool = False,
    prepared: str = "data/prepared",
    predictions: Path | None = None,
) -> None:
    """Per-benchmark metrics (``valid.obqa.accuracy``, ``valid.average.accuracy``...), the evaluated
    splits as datasets, the metric files, optionally the student as a registered model; the run
    ended FINISHED."""
    if not run.run_id:
        return
    run.log_datasets(evaluation_datasets(run.root, eval_splits, prepared))
    run.log_metrics(results)
    run.log_metrics(extra_metrics or {})
    run.log_artifacts(list(artifacts))
    for split_dir in sorted(Path(predictions).glob("*")) if predictions else []:
        # per-question predictions: the report's paired tests read them back (predictions/<split>/<b>.jsonl)
        run.log_artifacts(sorted(split_dir.glob("*.jsonl")), f"predictions/{split_dir.name}")
    if log_model and model is not None:
        run.log_model(model, tokenizer, registered_model, seq2seq)
    run.set_tags({TAG_EVALUATED: "true"})
    run.end("FINISHED")


# ----------------------------------------------------------------------------- grids and studies


def start_parent(root: Path, name: str, experiment: str = "tinyllm", tags: dict | None = None) -> str:
    """A parent run (RUNNING) for a grid or study; returns its id. End it with :func:`end_parent`."""
    mlflow = _mlflow(root)
    exp_id = ensure_experiment(root, experiment)
    run = mlflow.MlflowClient().create_run(
        exp_id, run_name=name, tags={TAG_KIND: "grid", **{k: str(v) for k, v in (tags or {}).items()}}
    )
    log.info("MLflow parent run %s (%s) at %s", run.info.run_id, name, _redact(tracking_uri(root)))
    return run.info.run_id


def end_parent(root: Path, run_id: str, status: str = "FINISHED") -> None:
    _mlflow(root).MlflowClient().set_terminated(run_id, status)


@contextlib.contextmanager
def parent_run(root: Path, name: str, experiment: str = "tinyllm", tags: dict | None = None) -> Iterator[str]:
    """``with parent_run(root, "grid 2026-11-25") as pid:`` — runs started inside (in this process
    or in subprocesses started inside, e.g. ``dvc queue start``) become its children via
    ``TINYLLM_PARENT_RUN_ID``; the parent ends FAILED if the block raises."""
    pid = start_parent(root, name, experiment, tags)
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
    metric: str = "valid.average.accuracy",
    registered_model: str = "tinyllm-student",
    alias: str = "best-valid",
) -> tuple[str, str]:
    """Point ``registered_model@alias`` at the student of the child run with the highest ``metric``.

    Returns ``(run_id, version)``. Every evaluated child with ``tracking.log_model: true`` has
    registered its student as a version; the best child without one is an error naming it.
    """
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
        run.log_params({k: ("null" if v is None else str(v))[:6000] for k, v in flatten(params).items()})
        run.set_tags(tags)
        run.log_metrics(metrics)
        for row in step_rows or []:
            run.log_row(row)
        run.log_artifacts(list(artifacts))
        atexit.unregister(run._fail_if_open)
    log.info("MLflow run %s in experiment %r at %s", active.info.run_id, experiment, _redact(tracking_uri(root)))
    return active.info.run_id


# --- experiments: reading runs back ---
# Used by tinyllm.experiments (the grid's report and status); the only other MLflow calls.


def _mlflow_at(root: Path):
    """mlflow, pointed at the repo's store (imported lazily: ~3 s)."""
    return _mlflow(root)


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
    runs = mlflow.search_runs(
        experiment_ids=[exp.experiment_id],
        output_format="list",
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    out = []
    for r in runs:
        row = r.data.tags.get("row")
        if not row or not any(k.endswith(".accuracy") for k in r.data.metrics):
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
    exp_id = ensure_experiment(root, experiment)  # artifacts next to the store, not in ./mlruns
    with mlflow.start_run(experiment_id=exp_id, run_name="report") as run:
        mlflow.set_tags({"kind": "report", TAG_KIND: "report", **{k: str(v) for k, v in tags.items()}})
        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        for i in range(0, len(finite), 500):  # MLflow's batch limit is 1000 metrics
            mlflow.log_metrics(dict(list(finite.items())[i : i + 500]))
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="report")
        return run.info.run_id


def describe_run(root: Path, run_id: str, text: str, tags: dict | None = None) -> None:
    """Set a run's description (the MLflow UI shows it on the run page) and tags, e.g. a study's
    one-sentence conclusion on its parent run."""
    client = _mlflow(root).MlflowClient()
    client.set_tag(run_id, "mlflow.note.content", text)
    for k, v in (tags or {}).items():
        client.set_tag(run_id, k, str(v))
