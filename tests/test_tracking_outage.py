"""Tracking outages and killed runs (issue 21 faults 1 and 3), against a real SQLite MLflow store
whose writes fail on purpose, a closed local port, and a process killed with SIGKILL.

- an outage mid-training: live logging goes to a local buffer with one warning and is replayed
  when the server answers; training and the saved outputs never depend on it;
- an outage that lasts to the end: the calls are kept in the run file and ``evaluate`` replays them;
- a server down at start is reported in seconds (``PROBE_S`` <= 15 s), not after minutes of retries;
- a run left RUNNING by a killed process is ended KILLED, with a tag saying why, by the next run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import records, tiny_causal
from teachers_testlib import free_port

from tinyllm import tracking
from tinyllm.config import DistillConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "data": {"benchmarks": ["obqa"]},
    "student": {"source": "tiny", "kind": "auto"},
    "distill": {"alphas": {}, "seed": 0, "steps": 6},
    "evaluate": {"splits": ["valid"], "headline": "score"},
    "tracking": {"experiment": "outage"},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"  # one per module: migrations take seconds


@pytest.fixture
def repo(tmp_path, store, monkeypatch, request):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    for k in tracking.FAST_HTTP:
        monkeypatch.delenv(k, raising=False)
    params = json.loads(json.dumps(PARAMS))
    params["tracking"]["experiment"] = request.node.name[:60]
    yield tmp_path, params
    import mlflow

    while mlflow.active_run():
        mlflow.end_run("FAILED")


class Outage:
    """Every ``MlflowClient.log_batch`` fails like an unreachable server while ``down`` is set."""

    def __init__(self, monkeypatch):
        from mlflow.tracking.client import MlflowClient

        self.down, self.refused = False, 0
        real = MlflowClient.log_batch
        outer = self

        def log_batch(client, *a, **kw):
            if outer.down:
                outer.refused += 1
                import requests

                raise requests.exceptions.ConnectionError("Connection refused (test outage)")
            return real(client, *a, **kw)

        monkeypatch.setattr(MlflowClient, "log_batch", log_batch)


def _history(run_id, key):
    import mlflow

    return [(m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, key)]


def test_outage_mid_training_buffers_then_replays_when_the_server_answers(repo, monkeypatch, caplog, tiny_tokenizer):
    # fault 1: the live-loss callback raised after minutes of retries and the trained model was lost
    from tinyllm.distill import train
    from tinyllm.student import CausalStudent

    root, params = repo
    outage = Outage(monkeypatch)
    monkeypatch.setattr(tracking, "RETRY_EVERY_S", 0.0)
    run = tracking.start_distill_run(root, params)
    seen = []

    def on_log(row):  # the server stops after step 1 and is back from step 5
        outage.down = 2 <= row["step"] <= 4
        run.log_row(row)
        seen.append((row["step"], len(run.pending)))

    cfg = DistillConfig(alphas={}, steps=6, batch_size=2, lr=1e-2, precision="fp32", valid_loss_per_benchmark=0)
    student = CausalStudent(tiny_causal(tiny_tokenizer), tiny_tokenizer)
    with caplog.at_level(logging.WARNING, logger="tinyllm.tracking"):
        res = train(student, [{"record": r, "rationales": {}} for r in records()], cfg, progress=False, on_log=on_log)
    assert res["steps"] == 6 and outage.refused >= 3
    assert seen == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 0), (6, 0)]  # buffered, then replayed at step 5
    assert sum("did not answer" in r.getMessage() for r in caplog.records) == 1  # one warning
    tracking.finish_distill_run(run, root, res)
    assert [s for s, _ in _history(run.run_id, "train.loss")] == [1, 2, 3, 4, 5, 6]
    import mlflow

    assert mlflow.MlflowClient().get_run(run.run_id).info.status == "FINISHED"
    assert "pending" not in json.loads((root / tracking.RUN_FILE).read_text())


def test_outage_to_the_end_hands_the_buffer_to_evaluate(repo, monkeypatch):
    # fault 1: the exit hook retried again and distill exited 255; now the run file keeps the calls
    root, params = repo
    outage = Outage(monkeypatch)
    run = tracking.start_distill_run(root, params)
    run.log_row({"step": 1, "loss": 3.0})
    outage.down = True
    t0 = time.perf_counter()
    run.log_row({"step": 2, "loss": 2.0})
    run.log_row({"step": 3, "loss": 1.0})
    tracking.finish_distill_run(run, root, {"loss_last": 1.0})
    assert time.perf_counter() - t0 < 15
    info = json.loads((root / tracking.RUN_FILE).read_text())
    assert info["run_id"] == run.run_id and len(info["pending"]) == 4  # 2 rows, summary metrics, tag
    outage.down = False  # the server is back when evaluate starts
    ev = tracking.open_evaluate_run(root, params)
    assert ev.run_id == run.run_id  # resumed, not a fresh run: distill's run carries its whole curve
    assert [s for s, _ in _history(run.run_id, "train.loss")] == [1, 2, 3]
    import mlflow

    got = mlflow.MlflowClient().get_run(run.run_id)
    assert got.data.metrics["train.loss_last"] == 1.0 and got.data.tags[tracking.TAG_DISTILLED] == "true"
    assert "pending" not in json.loads((root / tracking.RUN_FILE).read_text())
    tracking.finish_evaluate_run(ev, {"valid": {"average": {"accuracy": 0.5}}}, eval_splits=[])


def test_a_server_down_at_start_is_reported_in_seconds(repo, monkeypatch):
    # fault 1: the first error came after 4 min 21 s of MLflow's retries
    root, params = repo
    assert tracking.PROBE_S <= 15
    monkeypatch.setattr(tracking, "PROBE_S", 2.0)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:hunter2@127.0.0.1:{free_port()}")
    t0 = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable, match="did not answer within 2 s") as e:
        tracking.start_distill_run(root, params)
    assert time.perf_counter() - t0 < 6 and "hunter2" not in str(e.value) and "--no-mlflow" in str(e.value)


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tinyllm import tracking
run = tracking.start_distill_run(Path(sys.argv[2]), {"tracking": {"experiment": sys.argv[3]}, "distill": {}})
print(run.run_id, flush=True)
time.sleep(120)
"""


def test_a_run_left_running_by_a_killed_process_is_marked_killed(repo):
    # fault 3: a stage killed with -9 left its run RUNNING forever
    import mlflow

    root, params = repo
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ROOT / "src"), str(root), params["tracking"]["experiment"]],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TINYLLM_LOG": "WARNING"},
    )
    try:
        orphan = p.stdout.readline().strip()
        assert orphan, "the holder process did not start its run"
        live = tracking.start_distill_run(root, params)  # the holder is alive: its run is left alone
        client = mlflow.MlflowClient()
        assert client.get_run(orphan).info.status == "RUNNING"
        tracking.finish_distill_run(live, root, {})
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    assert client.get_run(orphan).info.status == "RUNNING"  # nothing ends it by itself
    nxt = tracking.start_distill_run(root, params)
    got = client.get_run(orphan)
    assert got.info.status == "KILLED"
    assert (
        f"process {p.pid}" in got.data.tags[tracking.TAG_ENDED_BY]
        and nxt.run_id in got.data.tags[tracking.TAG_ENDED_BY]
    )
    assert client.get_run(live.run_id).info.status == "FINISHED"  # finished runs are never touched
    tracking.finish_distill_run(nxt, root, {})
