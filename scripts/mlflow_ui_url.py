"""Print the MLflow UI link to this project's runs table in the Model training view.

    python scripts/mlflow_ui_url.py [--ui http://127.0.0.1:5000]

MLflow 3.17's UI opens an experiment in its GenAI view unless the link says otherwise; the link
from ``tinyllm.tracking.runs_url`` carries ``workflowType=machine_learning``. The experiment is
``tracking.experiment`` of params.yaml in the store ``tinyllm.tracking`` uses (MLFLOW_TRACKING_URI,
else <repo>/mlflow.db), read only: before the first evaluated run there is no link to give (the
server, not this script, creates the experiment, so its artifacts go where the server keeps them).
`make mlflow-ui` prints this before starting the server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyllm import tracking
from tinyllm.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def runs_link(root: Path, ui: str) -> str | None:
    """The runs table of the experiment that holds the newest evaluated run, or None without runs."""
    uri = tracking.tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # no store yet: reading would create it
    runs = tracking.row_runs(root, load_config(root / "params.yaml").tracking.experiment)
    return tracking.runs_url(ui, runs[0]["experiment_id"]) if runs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ui", default="http://127.0.0.1:5000", help="where the MLflow UI is served")
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    link = runs_link(args.root, args.ui)
    if link:
        print(f"MLflow runs table (Model training view): {link}")
    else:
        print(f"{args.ui}: no evaluated runs yet; after `dvc repro`, `python scripts/mlflow_ui_url.py` prints the link")
    return 0


if __name__ == "__main__":
    sys.exit(main())
