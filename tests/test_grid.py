"""The baselines/ablations grid (experiments/grid.yaml; tinyllm.experiments.rows/grid, the
command line scripts/grid.py) and its report (tinyllm.experiments.report, scripts/report.py).

Fast: every row's overrides, applied by DVC's own override code to the real params.yaml, give
exactly the parameters the row promises; the report on fabricated MLflow runs in a temp SQLite
store. Slow (`pytest -m slow`): a 2-row mini grid of real `dvc exp run`s on the shrunk pipeline,
the report's numbers against the experiments' metrics files, and the MLflow compare page in
headless Chromium.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(Path(__file__).resolve().parent)]
import grid as grid_cli  # noqa: E402  (scripts/grid.py)
import report as report_cli  # noqa: E402  (scripts/report.py)

from tinyllm.config import DistillConfig, from_dict  # noqa: E402
from tinyllm.experiments import grid as gridrun  # noqa: E402
from tinyllm.experiments import mlflow_ui, report  # noqa: E402
from tinyllm.experiments import rows as gridrows  # noqa: E402

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
ROWS = gridrows.load_grid()


def apply_like_dvc(tmp_path: Path, overrides: list[str]) -> dict:
    """params.yaml after `dvc exp run -S ...` (DVC's own function, on a copy)."""
    from dvc.utils.hydra import apply_overrides

    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    apply_overrides(p, overrides)
    return yaml.safe_load(p.read_text())


# ----------------------------------------------------------------------------- grid file


def test_grid_has_every_table1_row_and_the_papers_alpha_grid():
    # guards: a baseline or an alpha value dropped from the grid file unnoticed
    names = {r["row"] for r in ROWS}
    assert {
        "inference",
        "lora",
        "full_ft",
        "tinyllm",
        "dss_flan_t5_xl",
        "dss_llama2_7b",
        "only_flan_t5_xl",
        "only_llama2_7b",
        "no_icl",
        "no_tf",
        "teachers_3",
    } <= names
    assert sorted(r["alpha"] for r in ROWS if "alpha" in r) == [0.01, 0.1, 0.5, 1.0, 2.0, 3.0]
    assert {r["paper"] for r in ROWS if "paper" in r} == set(report.PAPER["80M"])


@pytest.mark.parametrize("row", ROWS, ids=[r["row"] for r in ROWS])
def test_row_overrides_give_exactly_the_rows_parameters(row, tmp_path):
    # guards: Hydra (DVC's -S parser) MERGES a mapping into the default, so a plain
    # `-S distill.alphas={}` silently keeps both teachers and "full fine-tuning" would be TinyLLM
    p = apply_like_dvc(tmp_path, gridrows.row_overrides(row, PARAMS))
    assert p["tracking"]["row"] == row["row"]
    declared = [s for s in row["set"] if s.startswith("distill.alphas=")]
    if declared:
        assert p["distill"]["alphas"] == yaml.safe_load(declared[0].partition("=")[2])
    else:
        assert p["distill"]["alphas"] == PARAMS["distill"]["alphas"]
    cfg = from_dict(DistillConfig, p["distill"], "distill")  # every row is a valid config
    if row["row"] == "inference":
        assert cfg.steps == 0
    if row["row"] == "lora":
        assert cfg.lora == {"r": 8, "alpha": 16, "dropout": 0.05} and cfg.alphas == {}
    if row["row"].startswith("dss_"):  # alpha*L_answer + (1-alpha)*L_rationale, alpha 0.5
        assert cfg.answer_weight == 0.5 and list(cfg.alphas.values()) == [0.5]
    # nothing else changes: the data, the student and the evaluation are the same for every row
    for section in ("data", "student", "evaluate"):
        assert p[section] == PARAMS[section]
    # a row's own local teacher: params.yaml's `like` teacher with only `with` changed, added
    # beside the default teachers (which stay as they are)
    t = row.get("teacher")
    if t:
        assert p["teachers"] == {**PARAMS["teachers"], t["name"]: {**PARAMS["teachers"][t["like"]], **t["with"]}}
        assert t["name"] in cfg.alphas
    else:
        assert p["teachers"] == PARAMS["teachers"]


def test_a_rows_own_teacher_gets_its_generate_stages_only_in_that_experiment(tmp_path):
    # guards: the prompt-ablation teachers generating in every default `dvc repro` (they cost 12
    # of 18 generate stages), or an ablation row whose teacher never reaches DVC's matrix
    import subprocess

    def stages(params: dict) -> set[str]:
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
        (d / "params.yaml").write_text(yaml.safe_dump(params))
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=d, check=True)
        out = subprocess.run(
            [sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=d, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return {s for s in out.stdout.split() if s.startswith("generate_rationales@")}

    benchmarks = PARAMS["data"]["benchmarks"]
    assert stages(PARAMS) == {f"generate_rationales@smollm2_135m-{b}" for b in benchmarks}
    row = next(r for r in ROWS if r["row"] == "no_icl")
    applied = apply_like_dvc(tmp_path, gridrows.row_overrides(row, PARAMS))
    assert stages(applied) - stages(PARAMS) == {f"generate_rationales@smollm2_135m_noicl-{b}" for b in benchmarks}
    assert gridrows.missing_caches(row, tmp_path) == []  # it generates its own cache: not skipped


def test_a_rows_teacher_is_checked_by_the_typed_config_before_queueing():
    # guards: a typo in a row's `teacher.with` (a string temperature, an unknown key) reaching the
    # queue and failing only inside the experiment, after its teacher model loaded
    like = next(iter(PARAMS["teachers"]))
    for bad, msg in (({"temperature": "hot"}, "temperature"), ({"temprature": 0.5}, "temprature")):
        row = {"row": "r", "teacher": {"name": "t2", "like": like, "with": bad}}
        with pytest.raises(ValueError, match=rf"row r: teacher.with gives an invalid teacher: .*{msg}"):
            gridrows.teacher_override(row, PARAMS)


def test_load_grid_rejects_bad_rows(tmp_path):
    # guards: a typo in the grid file (unknown key, duplicate name) silently changing the grid
    for bad, msg in (
        ({"row": "a", "group": "baseline", "sett": []}, "unknown key"),
        ({"row": "a b", "group": "baseline"}, "must match"),
        ({"row": "a", "group": "baselines"}, "group"),
        ({"row": "a", "group": "ablation", "teacher": {"name": "x", "with": {}}}, "teacher must be"),
    ):
        f = tmp_path / "g.yaml"
        f.write_text(yaml.safe_dump({"rows": [bad]}))
        with pytest.raises(ValueError, match=msg):
            gridrows.load_grid(f)
    f.write_text(yaml.safe_dump({"rows": [{"row": "a", "group": "baseline"}] * 2}))
    with pytest.raises(ValueError, match="twice"):
        gridrows.load_grid(f)


def test_queue_skips_rows_whose_local_teacher_cache_is_missing(tmp_path, capsys):
    # guards: queueing a row whose teacher cache does not exist (it would fail minutes later in
    # the queue) and, conversely, skipping rows that can run
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for t in ("flan_t5_xl", "llama2_7b"):
        (tmp_path / "data" / "rationales" / t).mkdir(parents=True)
    assert grid_cli.main(["--root", str(tmp_path), "queue", "--dry-run"]) == 0
    out = capsys.readouterr().out
    cmds = [ln for ln in out.splitlines() if ln.startswith("$ dvc exp run --queue")]
    needs = {r["row"] for r in ROWS if r["needs"]}
    assert len(cmds) == len(ROWS) - len(needs)
    for r in needs:
        assert f"skip {r}: rationale cache" in out and f"-n {r} " not in out
    assert "$ dvc exp run --queue -n full_ft -S tracking.row=full_ft -S '~distill.alphas.flan_t5_xl'" in out


def test_workers_alive_finds_this_repos_queue_worker_by_its_command_line(tmp_path):
    # guards: a dead (or another repo's) worker counted as alive (the wait would hang), or a live
    # one missed (the wait would restart a worker that is still running)
    other = tmp_path / "other"
    other.mkdir()
    fake = [sys.executable, "-c", "import time; time.sleep(60)", "exp", "queue-worker", "dvc-exp-abc123-1@localhost"]
    mine, theirs = subprocess.Popen(fake, cwd=tmp_path), subprocess.Popen(fake, cwd=other)
    try:
        assert gridrun.workers_alive(tmp_path) == [mine.pid]
    finally:
        for proc in (mine, theirs):
            proc.kill()
            proc.wait()
    assert gridrun.workers_alive(tmp_path) == []


def test_parse_queue_status_reads_names_and_states():
    # guards: a task without a name or a dated `Created` column read as the wrong experiment
    out = (
        "Task     Name        Created    Status\n"
        "3f2a1b4  full_ft     10:01 AM   Success\n"
        "9c0ffee  alpha_0.1   Nov 23, 2026  Failed\n"
        "1234567              10:02 AM   Queued\n"
        "abcdef0  tinyllm-s1  10:03 PM   Running\n\nWorker status: 1 active, 0 idle\n"
    )
    assert gridrun.parse_queue_status(out) == [
        ("full_ft", "Success"),
        ("alpha_0.1", "Failed"),
        ("1234567", "Queued"),
        ("tinyllm-s1", "Running"),
    ]


def test_start_wait_restarts_a_worker_that_died_with_rows_left(tmp_path, monkeypatch):
    # guards: the wait loop polling forever (or returning early) after the queue worker dies
    # mid-grid, which DVC's filesystem broker does now and then (kombu JSONDecodeError), and a
    # failed experiment not turning the exit code non-zero
    calls, said = [], []
    alive = iter([[1], [], [2], []])  # worker 1 runs, dies; worker 2 runs, exits
    status = iter([[("only_llama2_7b", "Queued")], [("only_llama2_7b", "Success")], [("only_llama2_7b", "Success")]])
    monkeypatch.setattr(
        gridrun,
        "dvc",
        lambda args, root, check=True: calls.append(args) or subprocess.CompletedProcess(args, 0, "log line\n", ""),
    )
    monkeypatch.setattr(gridrun, "workers_alive", lambda root: next(alive))
    monkeypatch.setattr(gridrun, "queue_status", lambda root: next(status))
    monkeypatch.setattr(gridrun.time, "sleep", lambda s: None)
    assert gridrun.start_and_wait(tmp_path, restarts=3, say=said.append) == 0
    starts = [c for c in calls if c[:3] == ["dvc", "queue", "start"]]
    assert len(starts) == 2 and any("restarting it (1/3)" in s for s in said)
    # a worker that keeps dying: give up after `restarts`, non-zero exit
    alive, status = iter([[]] * 3), iter([[("x", "Queued")]] * 3)
    assert gridrun.start_and_wait(tmp_path, restarts=1, say=said.append) == 1
    # the queue ends with a failed experiment: its `dvc queue logs` are shown, exit non-zero
    alive, status, calls[:] = iter([[]]), iter([[("x", "Failed")], [("x", "Failed")]]), []
    assert gridrun.start_and_wait(tmp_path, say=said.append) == 1
    assert ["dvc", "queue", "logs", "x"] in calls


def test_seeds_make_one_experiment_per_seed_for_trained_rows_only(tmp_path):
    # guards: seeds not reaching the experiment (three identical runs pooled as "3 seeds"), or
    # the untrained student run three times for nothing
    rows = {r["row"]: r for r in ROWS}
    cmds = gridrun.commands([rows["inference"], rows["full_ft"]], PARAMS, [], "queue", seeds=[0, 1, 2])
    names = [n for n, _ in cmds]
    assert names == ["inference", "full_ft-s0", "full_ft-s1", "full_ft-s2"]
    p = apply_like_dvc(tmp_path, [c for c in cmds[2][1][cmds[2][1].index("-S") :] if c != "-S"])
    assert p["distill"]["seed"] == 1 and p["tracking"]["row"] == "full_ft" and p["distill"]["alphas"] == {}
    assert gridrows.row_seeds({**rows["tinyllm"], "seeds": [3, 4]}) == [3, 4]
    assert gridrows.row_seeds(rows["tinyllm"]) == [None]
    with pytest.raises(SystemExit, match="twice"):
        gridrows.parse_seeds("1,1")


def test_grid_runs_inside_one_mlflow_parent_run(tmp_path, monkeypatch):
    # guards: grid experiments started outside the parent run (no child runs: the sweep is not one
    # view in the UI), a failing grid reported as success, the alias step crashing the grid
    import mlflow

    from tinyllm import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    seen, said = [], []
    code = gridrun.in_parent_run(
        tmp_path,
        "grid test",
        lambda: seen.append(os.environ.get(tracking.names.PARENT_ENV)) or 3,
        experiment="tinyllm",
        say=said.append,
    )
    assert code == 3 and seen[0] and tracking.names.PARENT_ENV not in os.environ
    parent = mlflow.MlflowClient().get_run(seen[0])
    assert parent.info.run_name == "grid test" and parent.info.status == "FINISHED"
    assert gridrun.in_parent_run(tmp_path, "grid 2", lambda: 0, experiment="tinyllm", say=said.append) == 0
    assert any("no @best-valid alias set" in s for s in said)  # no child evaluated: said, not raised


def test_profile_adds_the_papers_overrides_to_every_row(tmp_path):
    # guards: the paper profile not reaching a row (e.g. the student or full data missing)
    prof = gridrows.load_profile(ROOT / "experiments" / "paper.yaml", "google/flan-t5-base")
    row = next(r for r in ROWS if r["row"] == "tinyllm")
    p = apply_like_dvc(tmp_path, gridrows.row_overrides(row, PARAMS, prof))
    assert p["student"]["source"] == "google/flan-t5-base"
    assert p["data"]["source"].startswith("github:YikunHan42/TinyLLM@9f5bebec8b22037f80ffa8d17bfeb01a2a524a3b")
    assert p["distill"]["train_per_benchmark"] is None and p["evaluate"]["max_per_benchmark"] is None
    assert (p["distill"]["lr"], p["distill"]["max_input_tokens"], p["evaluate"]["headline"]) == (5e-5, 1024, "generate")
    assert p["evaluate"]["splits"] == ["valid", "test"] and p["distill"]["steps"] == 1699
    from_dict(DistillConfig, p["distill"], "distill")  # every value reads back with its type
    with pytest.raises(SystemExit, match="--student"):
        gridrows.load_profile(ROOT / "experiments" / "paper.yaml", None)


# ----------------------------------------------------------------------------- report (fabricated runs)


def _fake_store(root: Path, runs: list[tuple[dict, dict]]) -> dict[str, str]:
    """Runs with the evaluate stage's tag/metric names in `root`/mlflow.db; returns {row: run_id}
    of the last run logged per row."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    if mlflow.get_experiment_by_name("tinyllm") is None:  # artifacts in the test's dir, not ./mlruns
        mlflow.create_experiment("tinyllm", artifact_location=(root / "mlartifacts").as_uri())
    mlflow.set_experiment("tinyllm")
    ids = {}
    for tags, metrics in runs:
        with mlflow.start_run() as r:
            mlflow.set_tags(tags)
            mlflow.log_metrics(metrics)
            if "row" in tags:
                ids[tags["row"]] = r.info.run_id
    return ids


def _metrics(accs: dict[str, float], split="valid", n: int = 100) -> dict:
    m = {f"acc/{split}/{b}": a for b, a in accs.items()} | {f"{split}.{b}.n": n for b in accs}
    m[f"acc/{split}/average"] = sum(accs.values()) / len(accs)
    return m


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "tracking": {"experiment": "tinyllm", "row": "tinyllm"},
                "teachers": {
                    "smollm2_135m": {"backend": "transformers", "model": "models/base"},
                    "remote": {"backend": "transformers", "model": "some/other-model"},
                },
            }
        )
    )
    g = tmp_path / "grid.yaml"
    g.write_text(
        yaml.safe_dump(
            {
                "rows": [
                    {"row": "inference", "group": "baseline", "paper": "inference", "set": ["distill.steps=0"]},
                    {"row": "full_ft", "group": "baseline", "paper": "full_ft", "set": ["distill.alphas={}"]},
                    {"row": "tinyllm", "group": "baseline", "paper": "tinyllm"},
                    {"row": "alpha_0.1", "group": "ablation", "alpha": 0.1},
                    {"row": "no_icl", "group": "ablation", "needs": ["smollm2_135m_noicl"]},
                ]
            }
        )
    )
    return tmp_path, g


def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_takes_the_latest_run_per_row_and_equals_its_metrics(fake_repo):
    # guards: an older run of a row winning, the report's own run (no `row` tag) becoming a row,
    # fractions not turned into %, a wrong relative gain
    root, g = fake_repo
    student = {"student": "gguf-pypi:smollm2-135m-instruct", "headline": "score"}
    ids = _fake_store(
        root,
        [
            ({"row": "full_ft", **student}, _metrics({"arc": 0.10, "piqa": 0.20})),  # older: superseded
            ({"row": "full_ft", **student}, _metrics({"arc": 0.30, "piqa": 0.50})),
            ({"row": "tinyllm", **student}, _metrics({"arc": 0.40, "piqa": 0.60})),
            ({"row": "alpha_0.1", **student}, _metrics({"arc": 0.35, "piqa": 0.55})),
            ({"row": "inference", **student}, _metrics({"arc": 0.25, "piqa": 0.45})),
            ({"kind": "other"}, _metrics({"arc": 0.99, "piqa": 0.99})),  # no row tag: ignored
        ],
    )
    assert report_cli.main(["--root", str(root), "--grid", str(g)]) == 0
    rows = {(r["row"], r["source"]): r for r in _read_csv(root / "reports" / "table1.csv")}
    ours = rows[("full_ft", "ours")]
    assert ours["run_id"] == ids["full_ft"] and ours["split"] == "valid"
    assert float(ours["arc_acc_pct"]) == pytest.approx(30.0) and float(ours["average_acc_pct"]) == pytest.approx(40.0)
    assert ours["obqa_acc_pct"] == ""  # a benchmark not evaluated stays empty, not 0
    assert float(rows[("tinyllm", "ours")]["rel_gain_vs_full_ft_pct"]) == pytest.approx(100 * (50 - 40) / 40)
    no_icl = rows[("no_icl", "ours")]
    assert no_icl["average_acc_pct"] == "" and "smollm2_135m_noicl not generated" in no_icl["note"]
    # teachers: the paper's numbers, never ours; SmolLM2 is not a paper student -> no paper row beside ours
    assert rows[("teacher_flan_t5_xl", "paper")]["average_acc_pct"] == "64.49"
    assert ("full_ft", "paper") not in rows
    # the local teacher runs on the student's base weights: its row is the inference run, named so
    local = rows[("teacher_local", "ours")]
    assert local["run_id"] == ids["inference"] and float(local["average_acc_pct"]) == pytest.approx(35.0)
    assert "smollm2_135m" in local["label"] and "remote" not in local["label"]
    md = (root / "reports" / "table1.md").read_text()
    assert "cannot be computed from the release" in md and "reference only" in md
    # the only alpha row: (35 + 55) / 2; no test split, so it is said to be selected and reported on valid
    assert (
        "best alpha = 0.1 (row `alpha_0.1`, valid average 45.00); selected and reported on valid (no test split)"
    ) in md
    # accuracy with its Wilson interval (30 of 100: [21.9, 39.6]); seeds 1
    assert "| full_ft | full_ft | 1 | – | 30.0 [21.9, 39.6] | 50.0 [40.4, 59.6] | – | – | – | 40.0 [" in md
    # the compare URL lists exactly the grid's latest runs
    url = md.split("MLflow compare page for these runs: <")[1].split(">")[0]
    run_ids = json.loads(unquote(url.split("runs=")[1].split("&")[0]))
    assert sorted(run_ids) == sorted(ids.values())
    # the report's own run: artifacts logged, and it does not count as a row next time
    import mlflow

    rep = mlflow.search_runs(experiment_names=["tinyllm"], filter_string="tags.kind = 'report'", output_format="list")
    assert len(rep) == 1
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(rep[0].info.run_id, "report")}
    assert {
        "report/table1.md",
        "report/table1.csv",
        "report/stats.csv",
        "report/accuracy.png",
        "report/alpha.png",
        "report/accuracy_ci.png",
    } <= arts
    assert set(report.collect_mlflow(root)) == {"full_ft", "tinyllm", "alpha_0.1", "inference"}


def test_report_reads_runs_logged_with_the_older_metric_names(fake_repo):
    # guards: runs logged before the acc/<split>/<benchmark> names (valid.arc.accuracy) vanishing
    # from the report, the grid's status and the UI link once evaluate logs the new names
    root, _ = fake_repo
    old = {"valid.arc.accuracy": 0.3, "valid.arc.n": 100, "valid.average.accuracy": 0.3}
    ids = _fake_store(root, [({"row": "full_ft", "student": "tiny", "headline": "score"}, old)])
    found = report.collect_mlflow(root)
    assert found["full_ft"]["run_id"] == ids["full_ft"]
    assert found["full_ft"]["runs"][None]["metrics"] == {
        "valid": {"arc": {"accuracy": 0.3, "n": 100.0}, "average": {"accuracy": 0.3}}
    }


def test_report_puts_the_papers_row_beside_ours_for_a_paper_student(fake_repo):
    # guards: comparing against the wrong student size (or none) when the setting matches
    root, g = fake_repo
    tags = {"student": "google/flan-t5-base", "headline": "generate"}
    _fake_store(
        root,
        [({"row": r, **tags}, _metrics({b: 0.5 for b in report.BENCHMARKS}, "test")) for r in ("full_ft", "tinyllm")],
    )
    report_cli.main(["--root", str(root), "--grid", str(g), "--no-mlflow-run"])
    rows = _read_csv(root / "reports" / "table1.csv")
    paper = {r["row"]: r for r in rows if r["source"] == "paper" and r["group"] != "teacher"}
    assert float(paper["tinyllm"]["average_acc_pct"]) == 64.94 and "250M" in paper["tinyllm"]["label"]
    assert all(r["split"] == "test" for r in rows)  # every run has test: it is reported
    assert "reference only" not in (root / "reports" / "table1.md").read_text()


# ----------------------------------------------------------------------------- mini grid (slow)


@pytest.fixture(scope="module")
def mini_grid(request, tmp_path_factory, mirror):
    from pipeline_copy import base_env, git_commit, make_shrunk_repo, remove_if_passed, run

    failed = request.session.testsfailed
    d = make_shrunk_repo(tmp_path_factory.mktemp("grid"), mirror, extra_files=(".gitignore",))
    env = {k: v for k, v in base_env().items() if k != "MLFLOW_TRACKING_URI"}  # the default store
    run(["dvc", "repro"], d, env)
    git_commit(d, env, "shrunk pipeline")
    out = run(
        [sys.executable, str(ROOT / "scripts" / "grid.py"), "--root", str(d), "run", "--rows", "inference,full_ft"],
        ROOT,
        env,
    )
    out += run([sys.executable, str(ROOT / "scripts" / "grid.py"), "--root", str(d), "report"], ROOT, env)
    yield d, env, out
    remove_if_passed(request.session, failed, d)


def _exp_metrics(d: Path, name: str) -> dict:
    """metrics/eval.json as committed in the DVC experiment `name` (read with git, not DVC)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=d, capture_output=True, text=True, check=True
    ).stdout.split()
    ref = next(r for r in refs if r.endswith("/" + name))
    return json.loads(
        subprocess.run(
            ["git", "show", f"{ref}:metrics/eval.json"], cwd=d, capture_output=True, text=True, check=True
        ).stdout
    )


@pytest.mark.slow
def test_mini_grid_report_equals_the_experiments_metrics_files(mini_grid):
    # guards: the report reading another run or row than the experiment's, a % conversion or
    # averaging slip, and runs of queued/temp experiments (in .dvc/tmp/exps) missing from the store
    d, env, out = mini_grid
    rows = {r["row"]: r for r in _read_csv(d / "reports" / "table1.csv") if r["source"] == "ours"}
    for name in ("inference", "full_ft"):
        m = _exp_metrics(d, name)["valid"]
        for b in ("arc", "piqa", "average"):
            assert float(rows[name][f"{b}_acc_pct"]) == pytest.approx(100 * m[b]["accuracy"], abs=1e-9)
        assert rows[name]["run_id"]
    # the same numbers through the fallback (DVC's view of the metrics files)
    report_cli.main(["--root", str(d), "--source", "dvc", "--out", str(d / "reports_dvc"), "--no-mlflow-run"])
    via_dvc = {r["row"]: r for r in _read_csv(d / "reports_dvc" / "table1.csv") if r["source"] == "ours"}
    for name in ("inference", "full_ft"):
        assert via_dvc[name]["average_acc_pct"] == rows[name]["average_acc_pct"]
    # per-question predictions reached the report (from the DVC experiments through dvc.api):
    # full_ft is compared with inference question by question, on every evaluated question
    paired = [r for r in _read_csv(d / "reports" / "stats.csv") if r["kind"] == "paired"]
    pair = {(r["row"], r["reference"], r["benchmark"]): r for r in paired}
    for b in ("arc", "piqa"):
        assert int(pair[("full_ft", "inference", b)]["n"]) == int(_exp_metrics(d, "full_ft")["valid"][b]["n"])
    assert ("full_ft", "inference", "average") in pair
    assert "vs `inference`:" in (d / "reports" / "table1.md").read_text()
    assert float(rows["full_ft"]["arc_ci_low_pct"]) <= float(rows["full_ft"]["arc_acc_pct"])


@pytest.mark.slow
def test_mini_grid_runs_carry_their_row_parameters(mini_grid):
    # guards: -S overrides not reaching the experiment (full_ft secretly training on rationales)
    d, env, _ = mini_grid
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{d / 'mlflow.db'}")
    runs = {
        r.data.tags["row"]: r
        for r in mlflow.search_runs(experiment_names=["tinyllm"], output_format="list")
        if "row" in r.data.tags
    }
    assert {"inference", "full_ft"} <= set(runs)
    assert runs["full_ft"].data.tags["teachers"] == "none" and runs["full_ft"].data.tags["alphas"] == "{}"
    assert runs["inference"].data.params["distill.steps"] == "0"
    assert runs["full_ft"].data.tags["dvc_exp_name"] == "full_ft"


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(mlflow_ui.CHROMIUM).exists(),
    reason=f"{mlflow_ui.CHROMIUM} not installed "
    "(apt-get install -y chromium) - the MLflow compare page cannot be rendered",
)
def test_compare_url_opens_a_page_listing_the_grid_runs(mini_grid):
    # guards: a compare URL of the wrong shape (MLflow then shows an empty or error page)
    d, env, out = mini_grid
    # the report's runs: the latest per grid row (the mini grid's two + `tinyllm` from `dvc repro`)
    found = {k: v for k, v in report.collect_mlflow(d).items() if k in {r["row"] for r in ROWS}}
    assert {"inference", "full_ft"} <= set(found)
    printed = next(ln for ln in out.splitlines() if ln.startswith("MLflow compare page:")).split(": ", 1)[1]
    with mlflow_ui.MlflowUI(d) as ui:
        url = report.compare_url(found, ui)
        assert url.split("#", 1)[1] == printed.split("#", 1)[1]  # the URL the report printed
        dom = mlflow_ui.chromium(url)
    for r in found.values():
        assert r["run_id"] in dom
