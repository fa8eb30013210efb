"""Print the MLflow UI link to this project's runs table in the Model training view.

    python scripts/mlflow_ui_url.py [--ui http://127.0.0.1:5000] [--wait PID]

MLflow 3.17's UI opens an experiment in its GenAI view unless the link says otherwise; the link
from ``tinyllm.tracking.runs_url`` carries ``workflowType=machine_learning``. The experiment is
``tracking.experiment`` of params.yaml in the store ``tinyllm.tracking`` uses (MLFLOW_TRACKING_URI,
else <repo>/mlflow.db). The link opens the runs table in the results view (the accuracy columns,
``tinyllm.tracking.results_view_state``), tagged on the experiment if an older run did not. Before
the first evaluated run there is no link to give (the server, not this script, creates the
experiment, so its artifacts go where the server keeps them).
`make mlflow-ui` prints this before starting the server, and again (``--wait PID``) once the server
answers ``/health``, after its start-up lines, which go to a log file instead of the terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyllm import tracking
from tinyllm.config import load_sections

ROOT = Path(__file__).resolve().parents[1]


def runs_link(root: Path, ui: str) -> str | None:
    """The runs table of the experiment that holds the newest evaluated run, or None without runs."""
    uri = tracking.tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # no store yet: reading would create it
    runs = tracking.row_runs(root, load_sections(root / "params.yaml").tracking.experiment)
    if not runs:
        return None
    exp_id = runs[0]["experiment_id"]
    tracking.ensure_results_view(root, exp_id)  # a store whose runs are older than the view
    return tracking.runs_url(ui, exp_id)


def wait_healthy(ui: str, pid: int, timeout: float) -> bool:
    """Poll ``<ui>/health`` until it answers 200 (True), the server process ``pid`` is gone or
    ``timeout`` seconds pass (False)."""
    import os
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{ui.rstrip('/')}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ui", default="http://127.0.0.1:5000", help="where the MLflow UI is served")
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--wait", type=int, metavar="PID", help="first wait until the server (process PID) is healthy")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits at most")
    args = ap.parse_args(argv)
    if args.wait is not None and not wait_healthy(args.ui, args.wait, args.timeout):
        print(f"{args.ui}: the MLflow server did not come up (see its log)", file=sys.stderr)
        return 1
    link = runs_link(args.root, args.ui)
    if link:
        print(f"MLflow runs table (Model training view): {link}")
    else:
        print(f"{args.ui}: no evaluated runs yet; after `dvc repro`, `python scripts/mlflow_ui_url.py` prints the link")
    return 0


if __name__ == "__main__":
    sys.exit(main())
