"""tinyllm.experiments.report: selection on valid only, best alpha by max, and the statistics
sections (paired tests, seeds, majority/chance, option shares) from predictions built here.

The selection tests use result dicts (no MLflow, < 1 s); one end-to-end test builds an MLflow
store in a temp dir with three seeds of a row and predictions as run artifacts (~10 s).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as st

from tinyllm.experiments import report

GRID = [
    {"row": "inference", "group": "baseline", "label": "inference", "set": ["distill.steps=0"], "needs": []},
    {"row": "full_ft", "group": "baseline", "label": "full FT", "set": [], "needs": []},
    {"row": "alpha_0.1", "group": "ablation", "label": "alpha 0.1", "alpha": 0.1, "set": [], "needs": []},
    {"row": "alpha_0.5", "group": "ablation", "label": "alpha 0.5", "alpha": 0.5, "set": [], "needs": []},
    {"row": "alpha_2", "group": "ablation", "label": "alpha 2", "alpha": 2.0, "set": [], "needs": []},
]


def result(row: str, averages: dict[str, float], n: int = 100) -> dict:
    """A row's result as collect_mlflow returns it: one run, each split's two benchmarks at the
    given average (arc = piqa = average)."""
    metrics = {s: {b: {"accuracy": a, "n": n} for b in ("arc", "piqa", "average")} for s, a in averages.items()}
    run = {"row": row, "run_id": "", "experiment_id": "", "seed": None, "exp_name": "", "rev": "", "metrics": metrics}
    return {
        "row": row,
        "runs": {None: run},
        "student": "s",
        "headline": "score",
        "run_id": "",
        "experiment_id": "",
        "source": "mlflow",
    }


def test_best_alpha_is_chosen_on_valid_even_when_test_would_pick_another():
    # guards: selection reading test (issue 13 item 5), and the best alpha taken by min (issue 14:
    # its old fixture had one alpha row, so min == max went unnoticed)
    results = {
        "alpha_0.1": result("alpha_0.1", {"valid": 0.40, "test": 0.70}),
        "alpha_0.5": result("alpha_0.5", {"valid": 0.50, "test": 0.45}),
        "alpha_2": result("alpha_2", {"valid": 0.45, "test": 0.60}),
        "full_ft": result("full_ft", {"valid": 0.42, "test": 0.41}),
    }
    assert report.best_alpha(GRID, results) == (0.5, "alpha_0.5", 0.50)
    split = report.report_split(results)
    assert split == "test"  # every row has test: it is what the table shows
    table, _ = report.build_table(GRID, results, split)
    rows = {t["row"]: t for t in table if t["source"] == "ours"}
    assert rows["alpha_0.5"]["note"].startswith("selected on valid")
    assert "selected" not in rows["alpha_2"]["note"] and "selected" not in rows["alpha_0.1"]["note"]
    assert rows["alpha_0.5"]["values"][6] == pytest.approx(45.0)  # reported on test, as selected on valid
    note = report.selection_note(split, report.best_alpha(GRID, results), results)
    assert "best alpha = 0.5" in note and "on `test`" in note and "test never chose" in note
    # ties: the first alpha row in grid order
    tie = {k: result(k, {"valid": 0.5}) for k in ("alpha_0.1", "alpha_0.5", "alpha_2")}
    assert report.best_alpha(GRID, tie)[1] == "alpha_0.1"


def test_without_test_split_the_report_says_selected_and_reported_on_valid():
    # guards: a table silently mixing splits when only some rows have test, and the optimistic
    # valid-on-valid number presented without its label
    results = {
        "alpha_0.1": result("alpha_0.1", {"valid": 0.40}),
        "alpha_2": result("alpha_2", {"valid": 0.45}),
        "full_ft": result("full_ft", {"valid": 0.42, "test": 0.41}),
    }
    split = report.report_split(results)
    assert split == "valid"
    note = report.selection_note(split, report.best_alpha(GRID, results), results)
    assert "best alpha = 2" in note and "selected and reported on valid" in note
    only_valid = {k: v for k, v in results.items() if k != "full_ft"}
    assert "selected and reported on valid (no test split)" in report.selection_note(
        "valid", report.best_alpha(GRID, only_valid), only_valid
    )


def test_multi_seed_average_is_the_mean_over_seeds_for_selection():
    # guards: one lucky seed selecting an alpha (selection must use the seeds' mean)
    res = result("alpha_0.5", {"valid": 0.60})
    res["runs"] = {
        s: {**res["runs"][None], "seed": s, "metrics": {"valid": {"average": {"accuracy": a}}}}
        for s, a in ((0, 0.60), (1, 0.30), (2, 0.30))
    }
    results = {"alpha_0.5": res, "alpha_2": result("alpha_2", {"valid": 0.45})}
    assert report.best_alpha(GRID, results)[1] == "alpha_2"


# ----------------------------------------------------------------------------- end to end


N = 40


def make_preds(correct: list[int], k: int, labels: list[int]) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "label": lab,
            "pred_score": lab if c else (lab + 1) % k,
            "pred_generate": None,
            "generated": "",
            "scores": [0.0] * k,
        }
        for i, (c, lab) in enumerate(zip(correct, labels, strict=True))
    ]


# obqa (4 options): full_ft right on 12, tinyllm on 30 (b = 20 right only in tinyllm, c = 2)
FULL = [1] * 10 + [0] * 20 + [1] * 2 + [0] * 8
TINY = [1] * 10 + [1] * 20 + [0] * 2 + [0] * 8
INFER = [1] * 5 + [0] * 35
LABELS = [i % 4 for i in range(N)]
YN_LABELS = [0] * 30 + [1] * 10  # bioasq: "yes" 30 of 40


def _log(mlflow, row, seed, correct_by_b, artifacts_dir: Path | None):
    metrics, files = {}, []
    for b, (correct, k, labels) in correct_by_b.items():
        metrics[f"acc/valid/{b}"], metrics[f"valid.{b}.n"] = float(np.mean(correct)), N
        p = make_preds(correct, k, labels)
        if artifacts_dir is not None:
            f = artifacts_dir / row / f"seed{seed}" / "valid" / f"{b}.jsonl"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("".join(json.dumps(x) + "\n" for x in p))
            files.append(f)
    metrics["acc/valid/average"] = float(np.mean([np.mean(c) for c, _, _ in correct_by_b.values()]))
    with mlflow.start_run():
        mlflow.set_tags({"row": row, "student": "tiny", "headline": "score"})
        mlflow.log_params({"distill.seed": seed})
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="predictions/valid")


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tracking": {"experiment": "tinyllm"}}))
    prepared = tmp_path / "data" / "prepared"
    for b, recs in {
        "obqa": [{"choices": [f"o{i}{j}" for j in range(4)], "label": 1 if i < 5 else i % 4} for i in range(12)],
        "bioasq": [{"choices": ["yes", "no"], "label": 0 if i < 7 else 1} for i in range(10)],
    }.items():
        (prepared / b).mkdir(parents=True)
        (prepared / b / "train.jsonl").write_text(
            "".join(json.dumps({"id": str(i), **r}) + "\n" for i, r in enumerate(recs))
        )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.create_experiment("tinyllm", artifact_location=(tmp_path / "mlartifacts").as_uri())
    mlflow.set_experiment("tinyllm")
    arts, local = tmp_path / "arts", tmp_path / "local"
    yes = [1 if lab == 0 else 0 for lab in YN_LABELS]  # always "yes"
    _log(mlflow, "full_ft", 0, {"obqa": (FULL, 4, LABELS), "bioasq": (yes, 2, YN_LABELS)}, arts)
    for seed in (0, 1, 2):
        _log(mlflow, "tinyllm", seed, {"obqa": (TINY, 4, LABELS), "bioasq": (yes, 2, YN_LABELS)}, arts)
    # inference: predictions only in the local folder (`--predictions`), not in MLflow
    _log(mlflow, "inference", 0, {"obqa": (INFER, 4, LABELS), "bioasq": ([0] * N, 2, YN_LABELS)}, local)
    return tmp_path, local


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_has_paired_tests_seeds_reference_rates_and_option_shares(store):
    # guards: paired tests missing or computed on the wrong pairs, seeds not pooled (or a row's
    # latest seed replacing the others), majority/chance from the wrong split, option bias hidden,
    # the statistics missing from the MLflow report run
    import mlflow

    root, local = store
    grid = [g for g in GRID if g["row"] in ("inference", "full_ft")] + [
        {"row": "tinyllm", "group": "baseline", "label": "TinyLLM", "set": [], "needs": []}
    ]
    out = report.make_report(root, grid, root / "reports", pred_dir=local, say=lambda s: None)
    assert out["split"] == "valid"
    comps = {(c["row"], c["reference"], c["benchmark"]): c for c in out["comparisons"]}
    c = comps[("tinyllm", "full_ft", "obqa")]
    assert (c["b"], c["c"], c["n"]) == (20, 2, N) and c["diff"] == pytest.approx(18 / N)
    assert c["p_mcnemar"] == pytest.approx(st.binomtest(20, 22).pvalue)
    assert comps[("tinyllm", "full_ft", "bioasq")]["p_mcnemar"] == 1.0  # identical answers
    assert comps[("tinyllm", "full_ft", "average")]["diff"] == pytest.approx(18 / N / 2)
    # inference's predictions came from the local folder: it is compared too
    assert ("full_ft", "inference", "obqa") in comps and ("tinyllm", "inference", "average") in comps
    rows = {r["row"]: r for r in _csv(root / "reports" / "table1.csv") if r["source"] == "ours"}
    assert rows["tinyllm"]["seeds"] == "3" and float(rows["tinyllm"]["obqa_acc_pct"]) == pytest.approx(75.0)
    assert float(rows["tinyllm"]["average_sd_pct"]) == 0.0  # three identical seeds
    lo, hi = float(rows["full_ft"]["obqa_ci_low_pct"]), float(rows["full_ft"]["obqa_ci_high_pct"])
    assert (lo, hi) == pytest.approx(tuple(100 * x for x in st.binomtest(12, N).proportion_ci(method="wilson")))
    # majority from train: obqa position 1 (7 of 12 train labels) -> 10 of 40 valid labels are 1;
    # bioasq answer "yes" (7 of 10) -> 30 of 40
    assert float(rows["majority"]["obqa_acc_pct"]) == pytest.approx(25.0)
    assert float(rows["majority"]["bioasq_acc_pct"]) == pytest.approx(75.0)
    assert float(rows["chance"]["average_acc_pct"]) == pytest.approx((25 + 50) / 2)
    md = (root / "reports" / "table1.md").read_text()
    assert "## Paired tests on `valid`" in md and "vs `full_ft`:" in md and "vs `inference`:" in md
    assert "| tinyllm | +45.0 [" in md and "| +0.0 [+0.0, +0.0] p=1.000 | +22.5 [" in md
    assert "| *gold* | 25/25/25/25 | – | – | – | – | 75/25 |" in md
    shares = [
        r
        for r in _csv(root / "reports" / "stats.csv")
        if r["kind"] == "share" and r["row"] == "full_ft" and r["benchmark"] == "obqa"
    ]
    assert [float(r["value"]) for r in shares] == pytest.approx(
        [np.mean([(lab if c else (lab + 1) % 4) == j for c, lab in zip(FULL, LABELS, strict=True)]) for j in range(4)]
    )
    assert (root / "reports" / "plots" / "accuracy_ci.png").stat().st_size > 10_000
    run = mlflow.MlflowClient().get_run(out["run_id"])
    assert run.data.metrics["tinyllm.vs_full_ft.obqa.p_mcnemar"] == pytest.approx(c["p_mcnemar"])
    assert run.data.metrics["full_ft.obqa.n"] == N and "full_ft.average.ci_low" in run.data.metrics


def test_paper_table1_file_is_checked_column_by_column(tmp_path):
    # guards: the paper's numbers moved from Python literals to experiments/paper_table1.yaml; a
    # row with a missing benchmark would shift every later column of the report silently
    from tinyllm.experiments.report import paper

    good = yaml.safe_load(paper.TABLE1.read_text())
    teachers, students, rows, labels = paper.load_table1()
    assert rows["250M"]["tinyllm"][-1] == 64.94 and students["google/flan-t5-base"] == "250M"
    assert all(len(v) == len(report.NAMES) for r in rows.values() for v in r.values())
    bad = dict(good, rows={**good["rows"], "80M": {**good["rows"]["80M"], "lora": [37.8, 27.12]}})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"t\.yaml: rows\.80M\.lora must be 7 numbers"):
        paper.load_table1(tmp_path / "t.yaml")
    bad = dict(good, rows={**good["rows"], "80M": {**good["rows"]["80M"], "distil": [1] * 7}})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"rows\.80M has setting\(s\) \['distil'\] without a label"):
        paper.load_table1(tmp_path / "t.yaml")


def test_collect_dvc_reads_each_experiments_params_through_the_typed_config(monkeypatch, capsys):
    # guards: DVC experiments' params read raw with defaults typed again beside the config
    # (`evaluate.headline` defaulting to "score" in two places); an experiment whose params.yaml
    # does not validate is skipped and said, never read with guessed defaults
    from tinyllm.experiments.report import collect

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    eval_json = {"valid": {"arc": {"accuracy": 0.5, "n": 10}, "average": {"accuracy": 0.5, "n": 10}}}

    def node(name, rev, p, ts):
        data = {"params": {"params.yaml": {"data": p}}, "metrics": {"metrics/eval.json": {"data": eval_json}}}
        return {"name": name, "rev": rev, "data": {**data, "timestamp": ts}}

    seeded = {**params, "tracking": {**params["tracking"], "row": "full_ft"}, "distill": {**params["distill"]}}
    seeded["distill"]["seed"] = 3
    seeded["evaluate"] = {**params["evaluate"], "headline": "generate"}
    old = {**params, "tracking": {**params["tracking"], "row": "inference"}, "distill": {"stepz": 0}}
    nodes = [node("full_ft-s3", "a" * 40, seeded, "2"), node("inference", "b" * 40, old, "1")]
    monkeypatch.setattr(collect, "exp_show", lambda root: nodes)
    found = collect.collect_dvc(Path("."))
    assert set(found) == {"full_ft"}
    run = found["full_ft"]["runs"][3]
    assert run["exp_name"] == "full_ft-s3" and run["metrics"]["valid"]["arc"]["accuracy"] == 0.5
    assert found["full_ft"]["headline"] == "generate" and found["full_ft"]["student"] == params["student"]["source"]
    assert "dvc experiment inference (bbbbbbb): skipped" in capsys.readouterr().out
