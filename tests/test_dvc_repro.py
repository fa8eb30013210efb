"""What ``dvc repro`` does with this pipeline's stage settings (issue 21 fault 2, docs/guarantees.md):
a params.yaml error stops it before DVC deletes any output (every stage depends on check_params),
and going back to params already trained restores distill's outputs from the run-cache."""

from __future__ import annotations


def test_a_params_error_stops_dvc_before_it_deletes_any_output(tmp_path):
    # fault 2: `distill.batch_size: 0` failed in distill's own validation, after DVC had deleted
    # models/student and its metrics; now check_params (every stage depends on it) fails first
    import shutil
    import subprocess

    import yaml
    from pipeline_copy import ROOT, base_env, run

    env = base_env()
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["source"] = str((ROOT / p["data"]["source"]).resolve())  # check_params checks the folder is there
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (tmp_path / "train.py").write_text(
        "import sys; sys.path.insert(0, 'stages'); import _stage\n"
        "_stage.sections()\n"  # like every stage: validates every section first
        "open('model.txt', 'w').write('weights'); open('runs.log', 'a').write('trained\\n')\n"
    )
    real = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # in the real pipeline every stage depends on check_params: each root stage (no dep made by
    # another stage) lists its output, and check_params tracks the whole params file
    outs = {
        next(iter(o)) if isinstance(o, dict) else o
        for n, st in real.items()
        if n != "check_params"
        for o in st.get("outs", [])
    }
    made = lambda d: any(d == o or d.startswith(o + "/") for o in outs)  # noqa: E731
    roots = [n for n, st in real.items() if n != "check_params" and not any(made(d) for d in st.get("deps", []))]
    assert roots == ["fetch", "student_base"] and all("data/params.ok" in real[n]["deps"] for n in roots)
    assert real["check_params"]["params"] == [{"params.yaml": None}]
    stages = {
        "check_params": real["check_params"],
        "distill": {"cmd": "python train.py", "deps": ["data/params.ok", "train.py"], "params": ["distill"]},
    }
    stages["distill"]["outs"] = ["model.txt"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    run(["git", "init", "-q"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    run(["dvc", "repro", "-q"], tmp_path, env)
    assert (tmp_path / "model.txt").read_text() == "weights"

    good = (tmp_path / "params.yaml").read_text()
    p = yaml.safe_load(good)
    p["distill"]["batch_size"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    res = subprocess.run(["dvc", "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "distill.batch_size" in res.stdout + res.stderr
    assert (tmp_path / "model.txt").read_text() == "weights"  # the last good output is still there

    (tmp_path / "params.yaml").write_text(good)  # typo fixed: nothing to retrain
    run(["dvc", "repro", "-q"], tmp_path, env)
    assert (tmp_path / "runs.log").read_text() == "trained\n"


def test_distill_outputs_come_back_from_the_run_cache_without_retraining(tmp_path):
    # fault 2, second half: every output of distill is cached, so after a run with other params,
    # going back to params already trained restores the model *and* its metrics, train log and
    # MLflow run file from DVC's run-cache instead of retraining (an uncached output disables it)
    import copy

    import yaml
    from pipeline_copy import ROOT, base_env, run

    env = base_env()
    real = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["distill"]
    stage = {k: copy.deepcopy(real[k]) for k in ("outs", "metrics", "plots") if k in real}
    paths = [next(iter(o)) if isinstance(o, dict) else o for k in stage for o in stage[k]]
    assert "models/student" in paths and "metrics/train.json" in paths and "metrics/mlflow_run.json" in paths
    (tmp_path / "train.py").write_text(
        "import os, sys, yaml\n"
        "lr = yaml.safe_load(open('params.yaml'))['distill']['lr']\n"
        f"for p in {paths!r}:\n"
        "    f = os.path.join(p, 'weights') if p == 'models/student' else p\n"
        "    os.makedirs(os.path.dirname(f), exist_ok=True)\n"
        "    open(f, 'w').write(f'{p} trained with lr {lr}\\n')\n"
        "open('runs.log', 'a').write(f'{lr}\\n')\n"
    )
    (tmp_path / "params.yaml").write_text("distill: {lr: 1}\n")
    stage |= {"cmd": "python train.py", "deps": ["train.py"], "params": ["distill"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"distill": stage}}, sort_keys=False))
    run(["git", "init", "-q"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    run(["dvc", "repro", "-q"], tmp_path, env)
    (tmp_path / "params.yaml").write_text("distill: {lr: 2}\n")
    run(["dvc", "repro", "-q"], tmp_path, env)
    (tmp_path / "params.yaml").write_text("distill: {lr: 1}\n")
    run(["dvc", "repro", "-q"], tmp_path, env)
    assert (tmp_path / "runs.log").read_text() == "1\n2\n"  # lr 1 came back without a third run
    assert (tmp_path / "metrics" / "train.json").read_text() == "metrics/train.json trained with lr 1\n"
    assert (tmp_path / "models" / "student" / "weights").read_text() == "models/student trained with lr 1\n"
