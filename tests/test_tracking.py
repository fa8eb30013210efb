"""MLflow as its users expect (issue 14 item 4), read back with ``MlflowClient`` from a temp SQLite
store: one run spans distill and evaluate, named by what it is, with datasets (DVC md5 digests),
system metrics, a parent per grid, and the registered student with its alias."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from tinyllm import tracking
from tinyllm.redact import redact_uri

PREPARED_MD5 = "0123456789abcdef0123456789abcdef.dir"
CACHE_MD5 = "fedcba9876543210fedcba9876543210.dir"
STUDENT_MD5 = "aaaabbbbccccddddeeeeffff00001111.dir"
PARAMS = {
    "data": {"benchmarks": ["obqa"]},
    "student": {"source": "tiny", "kind": "auto"},
    "teachers": {"local_t": {"backend": "transformers"}, "unused_t": {"backend": "transformers"}},
    "distill": {"alphas": {"flan_t5_xl": 1.0, "local_t": 0.5, "unused_t": 0.0}, "seed": 3, "steps": 3},
    "evaluate": {"splits": ["valid"], "headline": "score"},
    "tracking": {"experiment": "exp", "row": "no_icl"},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def repo(tmp_path, store, monkeypatch, request):
    """A repo with prepared data, two rationale caches and a dvc.lock recording their md5s; a fresh
    experiment per test in the shared temp store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv(tracking.names.PARENT_ENV, raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    for rel in (
        "data/prepared/obqa/train.jsonl",
        "data/prepared/obqa/valid.jsonl",
        "data/rationales/flan_t5_xl/obqa/train.jsonl",
        "data/rationales/local_t/obqa/train.jsonl",
        "data/rationales/unused_t/obqa/train.jsonl",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('{"id": "q1"}\n')
    lock = {
        "schema": "2.0",
        "stages": {
            "prepare": {"outs": [{"path": "data/prepared", "md5": PREPARED_MD5}]},
            "import_rationales": {"outs": [{"path": "data/rationales/flan_t5_xl", "md5": CACHE_MD5}]},
            "distill": {"outs": [{"path": "models/student", "md5": STUDENT_MD5}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    params = json.loads(json.dumps(PARAMS))
    params["tracking"]["experiment"] = request.node.name[:60]
    yield tmp_path, params
    import mlflow

    while mlflow.active_run():  # a failed test must not leave a run active for the next one
        mlflow.end_run("FAILED")


def client():
    import mlflow

    return mlflow.MlflowClient()


def distill_and_evaluate(root, params, rows=3, results=None, **finish):
    run = tracking.start_distill_run(root, params)
    for step in range(1, rows + 1):
        run.log_row(
            {
                "step": step,
                "loss": 3.0 / step,
                "loss_answer": 1.0 / step,
                "loss_flan_t5_xl": 2.0,
                "lr": 1e-4,
                "valid_loss_answer": 0.9,
            }
        )
    tracking.finish_distill_run(run, root, {"loss_last": 1.0, "steps": rows})
    ev = tracking.open_evaluate_run(root, params)
    tracking.finish_evaluate_run(
        ev,
        results or {"valid": {"obqa": {"accuracy": 0.5}, "average": {"accuracy": 0.5}}},
        eval_splits=["valid"],
        **finish,
    )
    return run.run_id, ev.run_id


def test_one_run_spans_distill_and_evaluate(repo):
    # guards: evaluate creating its own run (training not inside the run that has the accuracies)
    root, params = repo
    distill_id, eval_id = distill_and_evaluate(root, params)
    assert eval_id == distill_id
    run = client().get_run(distill_id)
    assert [m.step for m in client().get_metric_history(distill_id, "train/loss")] == [1, 2, 3]
    assert run.data.metrics["accuracy/valid/obqa"] == 50.0  # percent, as DVC and the README show it
    import mlflow

    assert mlflow.artifacts.load_dict(f"runs:/{distill_id}/train.json") == {"train": {"loss_last": 1.0, "steps": 3}}
    assert run.data.metrics["valid/loss_answer"] == 0.9  # train()'s valid_loss_<task> rows
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.names.TAG_ORIGIN] == "distill"
    assert run.data.tags[tracking.names.TAG_STUDENT_MD5] == STUDENT_MD5
    assert run.data.params["distill.seed"] == "3" and run.data.params["evaluate.headline"] == "score"
    assert "teachers.local_t.backend" in run.data.params and "teachers.unused_t.backend" not in run.data.params
    assert json.loads((root / tracking.handover.RUN_FILE).read_text())["run_id"] == distill_id


def _ui_sections(names) -> list[tuple[str, list[str]]]:
    """Chart sections of a run as MLflow 3.17's UI orders them (RunsChartsCardConfig's
    extractChartSectionName and getBaseChartAndSectionConfigs): a section is the name before the
    last "/"; named sections alphabetically, then "Model metrics" (no "/"), then "System metrics"."""
    sections: dict[str, list[str]] = {}
    for n in sorted(names):
        s = n.rpartition("/")[0]
        sections.setdefault({"": "Model metrics", "system": "System metrics"}.get(s, s), []).append(n)
    named = sorted(s for s in sections if s not in ("Model metrics", "System metrics"))
    return [(s, sections[s]) for s in [*named, "Model metrics", "System metrics"] if s in sections]


def test_accuracy_sorts_first_in_the_ui_then_the_training_curves(repo):
    # guards: the headline accuracy buried among CIs, counts and timings (issue 22: 451 charts led
    # by single-value bars; issue 34: 555 bookkeeping charts, accuracy as 0.48 beside DVC's 48.0);
    # the results dict (metrics/eval.json, a DVC output) renamed in place
    import mlflow

    root, params = repo
    obqa = {"accuracy": 0.5, "n": 10, "ci_low": 0.2, "ci_high": 0.8, "acc_sum": 0.4}
    results = {"valid": {"obqa": obqa, "average": {"accuracy": 0.25, "n": 10}}, "eval_wall_s": 3.0}
    before = json.loads(json.dumps(results))
    caches = {"flan_t5_xl": {"obqa": {"train": {"ok": 9, "missing": 1}}}}
    run_id, _ = distill_and_evaluate(root, params, results=results, extra={"rationales.json": caches})
    assert results == before
    metrics = {k: v for k, v in client().get_run(run_id).data.metrics.items() if not k.startswith("system/")}
    assert sorted(metrics)[:2] == ["accuracy/valid/average", "accuracy/valid/obqa"]  # the run page's metrics table
    assert metrics["accuracy/valid/average"] == 25.0 and metrics["accuracy/valid/obqa"] == 50.0
    sections = _ui_sections(metrics)
    assert sections[0] == ("accuracy/valid", ["accuracy/valid/average", "accuracy/valid/obqa"])
    assert sections[1][0] == "train" and {"train/loss", "train/loss_flan_t5_xl", "train/lr"} <= set(sections[1][1])
    assert sections[2] == ("valid", ["valid/loss_answer"])  # the loss on valid questions while training
    assert len(sections) == 3  # no bookkeeping charts: n, CIs, timings, cache counts are artifacts
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/rationales.json") == caches


def test_reports_read_exact_results_from_the_artifact_and_old_runs_from_metrics(repo):
    # guards: the grid report losing n and CIs once they left the metrics, and misreading the
    # percent accuracy (48.0) or an older run's fraction (0.48) as the other
    root, params = repo
    (root / "metrics").mkdir(exist_ok=True)
    results = {"valid": {"obqa": {"accuracy": 1 / 3, "n": 3, "ci_low": 0.06, "ci_high": 0.79}}, "eval_wall_s": 2.0}
    (root / "metrics" / "eval.json").write_text(json.dumps(results))
    run_id, _ = distill_and_evaluate(root, params, results=results, artifacts=[root / "metrics" / "eval.json"])
    (got,) = [r for r in tracking.row_runs(root, params["tracking"]["experiment"]) if r["run_id"] == run_id]
    got["results"] = tracking.run_results(root, run_id, got["metrics"])
    assert got["results"] == {"valid": results["valid"]}  # exact: 1/3, not 33.33.../100
    old = {"acc/valid/obqa": 0.5, "valid.obqa.n": 4.0, "valid.obqa.ci_low": 0.1, "train/loss": 1.0}
    assert tracking.split_metrics(old) == {"valid": {"obqa": {"accuracy": 0.5, "n": 4.0, "ci_low": 0.1}}}
    assert tracking.split_metrics({"accuracy/test/average": 48.0}) == {"test": {"average": {"accuracy": 0.48}}}


def test_runs_link_opens_the_results_view_with_columns_the_runs_have(repo):
    # guards: the runs table opening without any accuracy column (issue 34 item 3): the link names a
    # shared view whose columns are metrics the runs really log
    root, params = repo
    run_id, _ = distill_and_evaluate(root, params)
    run = client().get_run(run_id)
    tags = client().get_experiment(run.info.experiment_id).tags
    state = json.loads(tags["mlflow.sharedViewState." + tracking.store.RESULTS_VIEW])
    metric_columns = [c for c in state["selectedColumns"] if c.startswith("metrics.")]
    assert metric_columns[0] == "metrics.`accuracy/valid/average`"
    assert {"metrics.`accuracy/valid/average`", "metrics.`accuracy/valid/obqa`"} <= set(metric_columns)
    assert {f"metrics.`{m}`" for m in run.data.metrics if m.startswith("accuracy/")} <= set(metric_columns)
    url = tracking.runs_url("http://127.0.0.1:5000", run.info.experiment_id)
    assert url.endswith(f"&viewStateShareKey={tracking.store.RESULTS_VIEW}")


def test_run_named_by_row_alphas_and_seed(repo, monkeypatch):
    # guards: every run named `default` (issue 14 item 4)
    root, params = repo
    run_id, _ = distill_and_evaluate(root, params)
    assert client().get_run(run_id).info.run_name == "no_icl a=1,0.5 s3"
    monkeypatch.setenv("DVC_EXP_NAME", "exp-abc12")
    assert tracking.names.run_name(params) == "exp-abc12 a=1,0.5 s3"
    params["tracking"]["row"] = "default"
    params["distill"]["alphas"] = {}
    monkeypatch.delenv("DVC_EXP_NAME")
    assert tracking.names.run_name(params) == f"{params['tracking']['experiment']} a=- s3"


def test_run_names_show_the_params_that_differ_from_the_committed_file(repo, monkeypatch):
    # guards the probed fault: an unnamed `dvc exp run -S distill.lr=1e-4` got the baseline's exact
    # name, and DVC's made-up names were recognised by reading DVC's word lists from bytecode
    import subprocess

    root, params = repo
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for cmd in (
        ["init", "-q"],
        ["add", "params.yaml"],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"],
    ):
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    base = tracking.names.run_name(params, root)
    assert base == "no_icl a=1,0.5 s3"  # the committed settings: nothing to add
    params["distill"]["lr"] = 1e-4
    params["evaluate"] = {**params.get("evaluate", {}), "headline": "sum"}
    monkeypatch.setenv("DVC_EXP_NAME", "bumpy-scup")  # as `dvc exp show` lists it, made up or given
    name = tracking.names.run_name(params, root)
    assert name == "bumpy-scup a=1,0.5 s3 lr=0.0001 evaluate.headline=sum" and name != base
    assert tracking.names.changed_params(params, root / "nowhere") == []  # not a repository: nothing to diff


def test_dvc_exp_run_hands_its_name_to_the_run_name(tmp_path):
    # guards: the variable `dvc exp run` passes the experiment name to a stage command in (the
    # installed DVC's DVC_EXP_NAME): `-n NAME` names the run, and so does a name DVC makes up
    from pipeline_copy import ROOT, base_env, run

    env = base_env()
    params = {"tracking": {"experiment": "exp", "row": "no_icl"}, "distill": {"alphas": {}, "seed": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "name.py").write_text(
        f"import sys, yaml\nsys.path.insert(0, {str(ROOT / 'src')!r})\nfrom tinyllm.tracking.names import run_name\n"
        "open('name.txt', 'w').write(run_name(yaml.safe_load(open('params.yaml'))))\n"
    )
    stage = {"cmd": "python name.py", "deps": ["name.py"], "params": ["tracking", "distill"], "outs": ["name.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"name": stage}}))
    run(["git", "init", "-q"], tmp_path, env)
    run(["git", "config", "user.email", "t@t"], tmp_path, env)
    run(["git", "config", "user.name", "t"], tmp_path, env)
    run(["dvc", "init", "-q"], tmp_path, env)
    run(["git", "add", "-A"], tmp_path, env)
    run(["git", "commit", "-q", "-m", "stage"], tmp_path, env)
    run(["dvc", "exp", "run", "-q", "-n", "my-try"], tmp_path, env)
    assert (tmp_path / "name.txt").read_text() == "my-try a=- s2"
    run(["dvc", "exp", "run", "-q", "-S", "distill.seed=3"], tmp_path, env)  # no -n: DVC makes one up
    made_up = (tmp_path / "name.txt").read_text()
    assert made_up.endswith(" a=- s3") and made_up != "my-try a=- s3"  # DVC's name, as `dvc exp show` lists it


def test_losses_are_visible_while_training(repo):
    # guards: losses written only at the end (no live curve while a run trains)
    root, params = repo
    run = tracking.start_distill_run(root, params)
    run.log_row({"step": 1, "loss": 2.5, "lr": 1e-4})
    live = client().get_run(run.run_id)
    assert live.info.status == "RUNNING" and live.data.metrics["train/loss"] == 2.5
    tracking.finish_distill_run(run, root, {})


def test_experiment_kind_opens_on_training_runs(repo):
    # guards: the UI opening on the GenAI traces overview ("No data") instead of the runs table
    root, params = repo
    distill_and_evaluate(root, params)
    exp = client().get_experiment_by_name(params["tracking"]["experiment"])
    assert exp.tags[tracking.store.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_datasets_logged_with_dvc_md5_digests(repo):
    # guards: empty Dataset column; a digest that is not the DVC md5; an alpha-0 cache listed as used
    root, params = repo
    run_id, _ = distill_and_evaluate(root, params)
    inputs = {
        (i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"]): i
        for i in client().get_run(run_id).inputs.dataset_inputs
    }
    assert set(inputs) == {
        ("prepared/train", "training"),
        ("rationales/flan_t5_xl", "training"),
        ("rationales/local_t", "training"),
        ("prepared/valid", "evaluation"),
    }
    assert inputs["prepared/train", "training"].dataset.digest == PREPARED_MD5
    assert inputs["prepared/valid", "evaluation"].dataset.digest == PREPARED_MD5
    assert inputs["rationales/flan_t5_xl", "training"].dataset.digest == CACHE_MD5
    local = inputs["rationales/local_t", "training"]  # not in dvc.lock: a content digest, labelled so
    assert {t.key: t.value for t in local.tags}["digest_source"] == "content"
    assert len(local.dataset.digest) == 32


def test_evaluate_after_restored_distill_starts_linked_run(repo):
    # guards: a run-cache-restored distill (stale run id) making evaluate overwrite an older run's metrics
    root, params = repo
    first, _ = distill_and_evaluate(root, params)
    (root / "metrics" / "train_log.tsv").write_text("step\tloss\n1\t2.0\n2\t1.5\n")
    ev = tracking.open_evaluate_run(root, params, train_log=root / "metrics" / "train_log.tsv")
    tracking.finish_evaluate_run(ev, {"valid": {"average": {"accuracy": 0.7}}}, eval_splits=["valid"])
    assert ev.run_id != first
    run = client().get_run(ev.run_id)
    assert run.data.tags[tracking.names.TAG_ORIGIN] == "fresh:already-evaluated"
    assert run.data.tags[tracking.names.TAG_DISTILL_RUN] == first
    assert run.data.tags[tracking.names.TAG_STUDENT_MD5] == STUDENT_MD5
    assert [m.value for m in client().get_metric_history(ev.run_id, "train/loss")] == [2.0, 1.5]
    assert client().get_run(first).data.metrics["accuracy/valid/average"] == 50.0  # the old run untouched


def test_run_id_from_another_store_starts_fresh_run(repo):
    # guards: a pulled checkpoint's run id crashing evaluate (or logging nowhere)
    root, params = repo
    (root / "metrics").mkdir()
    (root / tracking.handover.RUN_FILE).write_text(json.dumps({"run_id": "0" * 32}))
    ev = tracking.open_evaluate_run(root, params)
    tracking.finish_evaluate_run(ev, {"valid": {"average": {"accuracy": 0.1}}})
    assert client().get_run(ev.run_id).data.tags[tracking.names.TAG_ORIGIN] == "fresh:other-store"


def test_not_tracked_without_mlflow_or_off_rank0(repo, monkeypatch):
    # guards: --no-mlflow still logging; every process of a multi-process training starting a run
    root, params = repo
    run = tracking.start_distill_run(root, params, enabled=False)
    run.log_row({"step": 1, "loss": 1.0})
    tracking.finish_distill_run(run, root, {"loss_last": 1.0})
    assert json.loads((root / tracking.handover.RUN_FILE).read_text()) == {"run_id": None}
    monkeypatch.setenv("RANK", "1")
    assert tracking.start_distill_run(root, params).run_id is None
    assert client().get_experiment_by_name(params["tracking"]["experiment"]) is None


def test_parent_run_with_child_rows(repo):
    # guards: grid rows not nested under one parent (no single view of a sweep)
    root, params = repo
    exp = params["tracking"]["experiment"]
    with tracking.parent_run(root, "grid test", experiment=exp) as pid:
        # the mechanism a queued DVC experiment relies on: subprocesses inherit the parent id
        out = subprocess.run(
            [sys.executable, "-c", f"import os; print(os.environ['{tracking.names.PARENT_ENV}'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == pid
        for seed in (0, 1):
            params["distill"]["seed"] = seed
            distill_and_evaluate(root, params)
    assert tracking.names.PARENT_ENV not in os.environ
    children = tracking.groups.child_runs(root, pid)
    assert [c.info.run_name for c in children] == ["no_icl a=1,0.5 s0", "no_icl a=1,0.5 s1"]
    assert client().get_run(pid).info.status == "FINISHED"


def test_register_best_sets_alias_on_best_child(repo, tiny_tokenizer):
    # guards: the alias pointing at a row that is not the best on valid; the student not a model
    from conftest import tiny_causal

    root, params = repo
    model = tiny_causal(tiny_tokenizer)
    exp = params["tracking"]["experiment"]
    name = f"student-{exp}"
    ids = {}
    t0 = time.perf_counter()
    with tracking.parent_run(root, "grid", experiment=exp) as pid:
        for seed, acc in ((0, 0.4), (1, 0.6), (2, 0.5)):
            params["distill"]["seed"] = seed
            ids[seed], _ = distill_and_evaluate(
                root,
                params,
                results={"valid": {"average": {"accuracy": acc}}},
                model=model,
                tokenizer=tiny_tokenizer,
                log_model=True,
                registered_model=name,
            )
    print(f"3 runs with log_model: {time.perf_counter() - t0:.1f} s")
    best, version = tracking.register_best(root, pid, registered_model=name)
    assert best == ids[1]
    mv = client().get_model_version_by_alias(name, "best-valid")
    assert mv.run_id == ids[1] and mv.version == version
    import mlflow

    assert "transformers" in mlflow.models.get_model_info(f"models:/{name}@best-valid").flavors


def test_register_best_without_models_names_the_run(repo):
    # guards: a silent no-op when the rows did not log their student
    root, params = repo
    with tracking.parent_run(root, "grid", experiment=params["tracking"]["experiment"]) as pid:
        distill_and_evaluate(root, params)
    with pytest.raises(ValueError, match="no_icl a=1,0.5 s3.*log_model"):
        tracking.register_best(root, pid, registered_model="nothing-registered")


def test_experiment_and_model_names_come_from_params_yaml_through_the_typed_config(repo):
    # guards: tracking re-reading params.yaml with defaults of its own: register_best looked for
    # 'tinyllm-student' whatever tracking.registered_model said, parent runs went to `tinyllm`,
    # and a misspelt key fell back to the default without a word
    from tinyllm.config import ParamsError

    root, params = repo
    exp = params["tracking"]["experiment"]
    (root / "params.yaml").write_text(yaml.safe_dump({"tracking": {"experiment": exp, "registered_model": "mine"}}))
    assert tracking.experiment_name(root) == exp and tracking.experiment_name(root, "other") == "other"
    with tracking.parent_run(root, "grid") as pid:
        distill_and_evaluate(root, params)
    assert client().get_run(pid).info.experiment_id == client().get_experiment_by_name(exp).experiment_id
    with pytest.raises(ValueError, match="no version of model 'mine'"):
        tracking.register_best(root, pid)
    (root / "params.yaml").write_text(yaml.safe_dump({"tracking": {"experimnt": exp}}))
    with pytest.raises(ParamsError, match="experimnt"):
        tracking.experiment_name(root)


def test_system_metrics_logged_per_run(repo, monkeypatch):
    # guards: no CPU/memory curves in the run (system metrics not enabled)
    root, params = repo
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    run = tracking.start_distill_run(root, params)
    deadline = time.time() + 15
    cpu = "system/cpu_utilization_percentage"
    while time.time() < deadline and cpu not in client().get_run(run.run_id).data.metrics:
        time.sleep(0.2)
    tracking.finish_distill_run(run, root, {})
    metrics = client().get_run(run.run_id).data.metrics
    assert cpu in metrics and "system/system_memory_usage_megabytes" in metrics


def test_tracking_uri_redacted_in_logs():
    # guards: user:password of a tracking URI printed in the stage log (issue 12 item 13)
    shown = redact_uri("postgresql://alice:s3cret@db:5432/mlflow")
    assert "s3cret" not in shown and shown.endswith("@db:5432/mlflow")
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_report_run_logs_more_metrics_than_one_request_holds(repo):
    # guards: the hand-made 500-metric chunks removed from log_report_run: MlflowClient.log_batch
    # splits a larger batch itself (the store refuses over 1000 metrics a request)
    root, params = repo
    metrics = {f"row.b{i}.accuracy": i / 2500 for i in range(2500)} | {"not_a_number": float("nan")}
    run_id = tracking.log_report_run(root, params["tracking"]["experiment"], [], {"grid": "g"}, metrics)
    run = client().get_run(run_id)
    assert len(run.data.metrics) == 2500 and run.data.metrics["row.b2499.accuracy"] == 2499 / 2500
    assert run.info.run_name == "report" and run.data.tags["kind"] == "report"


def test_train_callback_logs_every_step_live(repo, tiny_tokenizer):
    # guards: stages/distill.py's wiring — train()'s on_log rows reaching the run step by step
    from conftest import RATIONALES, distill_cfg, records, tiny_causal

    from tinyllm.distill import train
    from tinyllm.student import CausalStudent

    root, params = repo
    examples = [{"record": r, "rationales": {"flan_t5_xl": RATIONALES[r["id"]]}} for r in records()]
    cfg = distill_cfg(alphas={"flan_t5_xl": 1.0}, steps=4, batch_size=2)
    run = tracking.start_distill_run(root, params)
    train(CausalStudent(tiny_causal(tiny_tokenizer), tiny_tokenizer), examples, cfg, progress=False, on_log=run.log_row)
    tracking.finish_distill_run(run, root, {})
    for key in ("train/loss", "train/loss_answer", "train/loss_flan_t5_xl", "train/lr"):
        assert [m.step for m in client().get_metric_history(run.run_id, key)] == [1, 2, 3, 4], key


def test_only_the_tracking_package_imports_mlflow_and_only_when_used():
    # guards: mlflow calls spreading outside tinyllm.tracking, and an import of tinyllm.tracking
    # loading mlflow (~1-3 s) in stages and scripts that never track
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    outside = []
    for folder in ("src", "stages", "scripts", "benchmarks"):
        for f in sorted((root / folder).rglob("*.py")):
            if f.is_relative_to(root / "src" / "tinyllm" / "tracking"):
                continue
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                outside += [f"{f.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "mlflow"]
    assert not outside
    code = "import sys, tinyllm.tracking; print('mlflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout == "False\n"


def test_ui_links_open_on_the_runs_table():
    # guards: printed links landing on the GenAI overview (MLflow 3.17 follows the workflowType toggle)
    url = tracking.runs_url("http://127.0.0.1:5000/", "7")
    assert url.startswith("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")


def test_evaluate_resumes_its_run_whatever_experiment_is_active(repo, monkeypatch):
    # guards: MLFLOW_EXPERIMENT_ID (a user's shell, or mlflow.set_experiment in the same process)
    # making evaluate's resume of distill's run fail with "active experiment ID does not match"
    root, params = repo
    import mlflow
    import mlflow.tracking.fluent as fluent

    tracking.store.ensure_experiment(root, "someone-elses")
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    other = mlflow.set_experiment("someone-elses").experiment_id
    try:
        run_id, _ = distill_and_evaluate(root, params)
    finally:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment exports it
    assert client().get_run(run_id).info.experiment_id != other


def test_a_token_in_a_source_url_never_reaches_mlflow_params(repo):
    # guards the probed fault: data/raw/SOURCE.json had the redacted URL, but the MLflow param
    # data.source held the token in full (and a tracking-server password the same way)
    root, params = repo
    params["data"]["source"] = "https://user:pa55word@host/release.tar.gz?token=hunter2secret&x=1"
    distill, evaluate = distill_and_evaluate(root, params)
    for run_id in (distill, evaluate):
        logged = client().get_run(run_id).data.params
        values = " ".join(logged.values())
        assert "hunter2secret" not in values and "pa55word" not in values
        assert logged["data.source"] == "https://user:***@host/release.tar.gz?token=***&x=1"


def test_a_run_opens_on_its_results_and_curves_never_end_in_nan(repo):
    # guards the probed gaps: an empty run description (the headline table was nowhere on the run's
    # first screen), and the local teacher's loss curve not drawn because its last value was NaN
    root, params = repo
    run = tracking.start_distill_run(root, params)
    run.log_row({"step": 1, "loss": 2.0, "loss_answer": 1.0, "loss_local_t": 3.0})
    run.log_row({"step": 2, "loss": 1.5, "loss_answer": 0.9, "loss_local_t": float("nan")})  # absent
    tracking.finish_distill_run(run, root, {"steps": 2})
    ev = tracking.open_evaluate_run(root, params)
    results = {
        "valid": {
            "average": {
                "accuracy": 0.48,
                "ci_low": 0.454,
                "ci_high": 0.505,
                "n": 20,
                "majority": 0.418,
                "chance": 0.339,
            },
            "obqa": {"accuracy": 0.276, "ci_low": 0.239, "ci_high": 0.317, "n": 10},
        }
    }
    tracking.finish_evaluate_run(ev, results, eval_splits=["valid"])
    got = client().get_run(run.run_id)
    note = got.data.tags["mlflow.note.content"]
    assert "| average | 48.0 [45.4, 50.5] | 20 |" in note and "| obqa | 27.6 [23.9, 31.7] | 10 |" in note
    assert "majority class 41.8, chance 33.9" in note
    hist = client().get_metric_history(run.run_id, "train/loss_local_t")
    assert [(m.step, m.value) for m in hist] == [(1, 3.0)]  # the NaN step is left out, not logged


def test_the_pipelines_own_writes_do_not_make_a_run_dirty(tmp_path):
    # guards the probed fault: every fresh run was git_dirty: true because dvc repro rewrites
    # dvc.lock and metrics/ before training
    import subprocess

    from tinyllm.tracking.lineage import git_info

    def git(*a):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=tmp_path, check=True)

    (tmp_path / "metrics").mkdir()
    for f in ("dvc.lock", "metrics/train.json", "params.yaml"):
        (tmp_path / f).write_text("a\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    (tmp_path / "dvc.lock").write_text("b\n")
    (tmp_path / "metrics" / "train.json").write_text("b\n")
    assert git_info(tmp_path)["git_dirty"] == "false"
    (tmp_path / "params.yaml").write_text("b\n")  # a real edit still counts
    assert git_info(tmp_path)["git_dirty"] == "true"
