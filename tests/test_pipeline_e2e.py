"""End to end: `dvc repro` of the real pipeline (real data from the mirror, the real SmolLM2
student, MLflow on SQLite) in a temp copy of the repo, shrunk to a few questions. Guards the
wiring no unit test sees: dvc.yaml paths, params, lock-file lineage tags, no-op re-runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    d = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml"):
        shutil.copy2(ROOT / name, d / name)
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["data"]["source"] = str(mirror)
    p["data"]["benchmarks"] = ["arc", "piqa"]
    p["distill"].update(train_per_benchmark=4, steps=2, batch_size=2, max_input_tokens=64,
                        max_rationale_tokens=16)
    p["evaluate"].update(max_per_benchmark=3, max_new_tokens=4, max_input_tokens=64)
    for t in list(p.get("teachers") or {}):  # local teachers have their own tests
        del p["teachers"][t]
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    dvc = yaml.safe_load((d / "dvc.yaml").read_text())
    for name in [n for n, s in dvc["stages"].items() if "generate" in s.get("cmd", str(s.get("do", "")))]:
        del dvc["stages"][name]
    (d / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{d}/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run(["git", "init", "-q"], d, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"], d, env)
    run(["dvc", "init", "-q"], d, env)
    out = run(["dvc", "repro"], d, env)
    return d, env, out


def test_repro_writes_metrics_and_one_mlflow_run_with_lineage(repo):
    d, env, _ = repo
    metrics = json.loads((d / "metrics" / "eval.json").read_text())
    assert set(metrics["valid"]) == {"arc", "piqa", "average"}
    acc = [metrics["valid"][b]["accuracy"] for b in ("arc", "piqa")]
    assert metrics["valid"]["average"]["accuracy"] == pytest.approx(sum(acc) / 2)
    assert (d / "models" / "student" / "model.safetensors").exists()
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["tinyllm"])
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["metrics.valid.arc.accuracy"] == pytest.approx(metrics["valid"]["arc"]["accuracy"])
    lock = yaml.safe_load((d / "dvc.lock").read_text())
    student_md5 = next(o["md5"] for o in lock["stages"]["distill"]["outs"] if o["path"] == "models/student")
    assert r["tags.dvc.md5.models/student"] == student_md5
    assert r["tags.teachers"] == "flan_t5_xl,llama2_7b" and r["params.distill.steps"] == "2"


def test_second_repro_runs_nothing_and_alpha_change_reruns_only_distill_evaluate(repo):
    d, env, _ = repo
    out = run(["dvc", "repro"], d, env)
    assert "Running stage" not in out
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["distill"]["alphas"]["llama2_7b"] = 0.5
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = run(["dvc", "repro"], d, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"distill", "evaluate"}  # data, rationale and student_base stages untouched
