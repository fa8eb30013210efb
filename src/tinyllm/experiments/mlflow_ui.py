"""The MLflow UI for checks and screenshots: ``MlflowUI`` serves the repo's store on a free local
port, ``chromium`` renders a page headless (its DOM, and a PNG). Used by ``scripts/grid.py``
(the compare page of a grid), ``docs/mlflow_ui_pipeline.py`` and ``docs/mlflow_ui_demo.py``
(the documentation's screenshots) and the UI tests; no stage imports it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]


class MlflowUI:
    """`mlflow server` on the repo's store (or MLFLOW_TRACKING_URI) on a free local port, as a
    context manager; the server runs in its own process group, killed on exit."""

    def __init__(self, root: Path, timeout: float = 120.0):
        self.root, self.timeout, self.proc = root, timeout, None

    def __enter__(self) -> str:
        import socket
        import urllib.request

        from tinyllm.tracking import tracking_uri

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            tracking_uri(self.root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        self.log = tempfile.NamedTemporaryFile("w", prefix="mlflow-ui-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(1)
        self.__exit__()
        raise RuntimeError(f"mlflow server not healthy after {self.timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its worker, nothing else
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def chromium(url: str, screenshot: Path | None = None, budget_ms: int = 20000, size: str | None = None) -> str:
    """Load `url` in headless Chromium; return the rendered DOM (and save a screenshot; ``size``
    "W,H" in pixels, default 1600,1000)."""
    with tempfile.TemporaryDirectory() as profile:
        base = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        if size:
            base.append(f"--window-size={size}")
        if screenshot:
            subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=180)
        res = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return res.stdout
