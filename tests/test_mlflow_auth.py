"""The authenticated team MLflow server of docs/sharing.md, started for real on 127.0.0.1.

Issue 12 item 15: the documented server bound 0.0.0.0 without authentication. The guide now
binds 127.0.0.1 and, for a shared server, runs MLflow's basic-auth app (behind a TLS proxy):
anonymous requests get 401, a user created by the admin logs runs with
MLFLOW_TRACKING_USERNAME/PASSWORD, and a wrong password is refused.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from teachers_testlib import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "admin-pass-for-this-test-only"


def call(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    """HTTP status of a GET (or a JSON POST when ``body``) with optional basic auth."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"}
    )
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow-auth")
    ini = d / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{d}/auth.db\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
    }  # CSRF key the auth app requires
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{d}/mlflow.db",
        "--artifacts-destination",
        str(d / "artifacts"),
    ]
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"mlflow basic-auth server exited: {(d / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        else:
            pytest.skip(f"mlflow basic-auth server not healthy within 90 s: {(d / 'server.log').read_text()[-800:]}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_anonymous_requests_are_refused(auth_server):
    # guards: the documented team server answered anyone who could reach it
    assert call(f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1") == 401
    assert call(f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1", "admin", "wrong") == 401
    assert call(f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1", "admin", ADMIN_PASSWORD) == 200


def test_a_user_logs_a_run_with_credentials_from_the_environment(auth_server, tmp_path):
    # guards: the documented client set-up (MLFLOW_TRACKING_USERNAME/PASSWORD, never in the URI) works
    assert (
        call(
            f"{auth_server}/api/2.0/mlflow/users/create",
            "admin",
            ADMIN_PASSWORD,
            {"username": "alice", "password": "alice-pass-123"},
        )
        == 200
    )
    script = (
        "import mlflow\nmlflow.set_experiment('team')\n"
        "with mlflow.start_run() as r:\n    mlflow.log_metric('valid.average.accuracy', 0.44)\n"
        "print(r.info.run_id)"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": auth_server,
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": "alice-pass-123",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    run_id = res.stdout.strip().splitlines()[-1]
    assert call(f"{auth_server}/api/2.0/mlflow/runs/get?run_id={run_id}", "alice", "alice-pass-123") == 200
    env["MLFLOW_TRACKING_PASSWORD"] = "wrong"
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "401" in res.stderr + res.stdout
