"""One stage's MLflow run (``Run``): logging that survives a tracking outage, the student as a
model, and the owner tags by which a later run ends runs left RUNNING by dead processes
(``mark_orphans``)."""

from __future__ import annotations

import atexit
import logging
import math
import os
import time
from pathlib import Path

from .lineage import DatasetRef, _log_datasets
from .names import flatten, row_metric
from .store import _is_outage, _mlflow, _short, fast_http, shown_uri

log = logging.getLogger(__name__)

RETRY_EVERY_S = 30.0  # in an outage, try the server again at most this often (each try <= ~11 s)
MODEL_ARTIFACT = "student"


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
                    shown_uri(self.root or Path(".")),
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
        """One logged training step (``train()``'s ``on_log`` callback) at ``step``: ``train/<key>``
        (loss, loss_answer, loss_<teacher>, lr, ...), and ``valid/<loss_task>`` for ``valid_<loss_task>``."""
        if self.run_id:
            step = int(row["step"])
            # a task absent from this step's batch is NaN in the row: left out, so no curve ends in NaN
            metrics = {row_metric(k): float(v) for k, v in row.items() if k != "step" and not math.isnan(float(v))}
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

    def log_dict(self, data: dict, name: str) -> None:
        """``data`` as the JSON artifact ``name`` (bookkeeping that is no chart: ``rationales.json``)."""
        if not (self.run_id and data):
            return
        try:
            with fast_http():
                self.mlflow.MlflowClient().log_dict(self.run_id, data, name)
        except Exception as e:  # noqa: BLE001  (bookkeeping is never the reason a stage fails)
            log.warning("could not log %s to MLflow run %s (%s)", name, self.run_id, _short(e))

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


def owner_alive(tags: dict) -> bool:
    """Is the process named by a run's :func:`owner_tags` still running on this host?"""
    try:
        pid = int(tags.get(TAG_PID, ""))
    except ValueError:
        return False
    if tags.get(TAG_HOST) != _host():
        return False
    alive = _proc_start(pid)
    return alive is not None and alive == tags.get(TAG_PROC_START)


def owner_tags() -> dict[str, str]:
    """Tags naming the process that holds the run: :func:`mark_orphans` of a later run reads them."""
    return {TAG_HOST: _host(), TAG_PID: str(os.getpid()), TAG_PROC_START: _proc_start(os.getpid()) or ""}


def mark_orphans(root: Path, experiment_id: str, keep: str | None = None) -> list[str]:
    """End as KILLED every RUNNING run of ``experiment_id`` (training, grid or study parent) whose
    process, on this host, is gone (killed with -9, the machine rebooted): MLflow has no
    heartbeat, so without this they stay RUNNING forever (issue 21 fault 3). The run gets tag
    ``tinyllm.ended_by`` saying why. Runs held by a live process (a parallel queue worker) and
    runs of other hosts (no way to tell) are left alone. Returns the ids it ended."""
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
        if r.info.run_id == keep:
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
