"""End to end: `dvc repro` of the real pipeline (real data from the mirror, the real SmolLM2
student, MLflow on SQLite) in a temp copy of the repo, shrunk to a few questions. Guards the
wiring no unit test sees: dvc.yaml paths, params, lock-file lineage tags, no-op re-runs."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_copy import base_env, make_shrunk_repo, remove_if_passed, run  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(request, tmp_path_factory, mirror):
    failed = request.session.testsfailed
    d = make_shrunk_repo(tmp_path_factory.mktemp("repo"), mirror)
    env = base_env(MLFLOW_TRACKING_URI=f"sqlite:///{d}/mlflow.db")
    out = run(["dvc", "repro"], d, env)
    yield d, env, out
    remove_if_passed(request.session, failed, d)


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
    assert r["metrics.accuracy/valid/arc"] == round(100 * metrics["valid"]["arc"]["accuracy"], 2)  # percent, to 0.01
    n_in_artifact = mlflow.artifacts.load_dict(f"runs:/{r['run_id']}/eval.json")["valid"]["arc"]["n"]
    assert n_in_artifact == metrics["valid"]["arc"]["n"]  # bookkeeping: the artifact, not a chart each
    lock = yaml.safe_load((d / "dvc.lock").read_text())
    student_md5 = next(o["md5"] for o in lock["stages"]["distill"]["outs"] if o["path"] == "models/student")
    assert r["tags.dvc.md5.models/student"] == student_md5
    assert r["tags.teachers"] == "flan_t5_xl,llama2_7b" and r["params.distill.steps"] == "2"


def test_second_repro_runs_nothing_and_alpha_change_reruns_only_trainset_distill_evaluate(repo):
    d, env, _ = repo
    out = run(["dvc", "repro"], d, env)
    assert "Running stage" not in out
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["distill"]["alphas"]["llama2_7b"] = 0.5
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    out = run(["dvc", "repro"], d, env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    # data, rationale and student_base stages untouched; trainset (reads distill.alphas, seconds) reruns,
    # and check_params (tracks the whole file; its output is constant, so nothing else follows from it)
    assert ran == {"check_params", "trainset", "distill", "evaluate"}
