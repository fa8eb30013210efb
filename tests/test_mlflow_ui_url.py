"""`make mlflow-ui` prints the runs table's link in the Model training view
(scripts/mlflow_ui_url.py over tinyllm.tracking.runs_url), read from a temp SQLite store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import mlflow_ui_url as cli  # noqa: E402


def test_link_opens_the_experiments_runs_table_in_model_training_view(tmp_path, monkeypatch, capsys):
    # guards: `make mlflow-ui` leaving users on MLflow's GenAI welcome page (issue 22), and the
    # script creating the store or the experiment itself (the server must, for its artifact root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert cli.main(["--root", str(tmp_path)]) == 0
    assert "no evaluated runs yet" in capsys.readouterr().out and not (tmp_path / "mlflow.db").exists()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.create_experiment("other", artifact_location=(tmp_path / "a").as_uri())
    exp_id = mlflow.create_experiment("tinyllm", artifact_location=(tmp_path / "a").as_uri())
    with mlflow.start_run(experiment_id=exp_id):
        mlflow.set_tag("row", "default")
        mlflow.log_metric("acc/valid/average", 0.4)
    assert cli.main(["--root", str(tmp_path), "--ui", "http://127.0.0.1:5001"]) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:5001/#/experiments/{exp_id}/runs?workflowType=machine_learning" in out


def test_make_mlflow_ui_prints_the_link_before_starting_the_server():
    # guards: the Makefile target losing the link (or a failing link blocking the server: `-`)
    out = subprocess.run(["make", "-n", "mlflow-ui"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    link, server = out.index("scripts/mlflow_ui_url.py \\\n  --ui http://127.0.0.1:5000"), out.index("mlflow server")
    assert link < server


def test_the_link_is_printed_again_once_the_server_is_healthy(tmp_path, capsys, monkeypatch):
    # guards the probed fault: the link printed before start-up was pushed off screen by ~12
    # start-up lines and per-request logs; now the server logs to a file and the link comes last
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sys.path.insert(0, str(ROOT / "scripts"))
    import mlflow_ui_url

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none.db")  # no store: no link, no params read

    class Health(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ui = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert mlflow_ui_url.wait_healthy(ui, os.getpid(), 10)
        assert mlflow_ui_url.main(["--ui", ui, "--root", str(tmp_path), "--wait", str(os.getpid())]) == 0
    finally:
        srv.shutdown()
        srv.server_close()
    assert not mlflow_ui_url.wait_healthy(ui, 2**22 + 12345, 3)  # no server and no such process: False, fast
    out = subprocess.run(["make", "-n", "mlflow-ui"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "> .tinyllm/mlflow-ui.log 2>&1 &" in out and out.rindex("--wait") > out.index("mlflow server")
