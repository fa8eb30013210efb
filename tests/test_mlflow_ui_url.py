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
