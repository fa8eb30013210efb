"""The study runner end to end on a tiny student: arms x seeds train and evaluate, the report
carries n / CIs / paired tests, and a restarted job resumes without redoing finished runs."""

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import RATIONALES, records, tiny_causal

from tinyllm.experiments.study import StudyConfig, conclusion, loss_curves, run_study, write_report
from tinyllm.experiments.study.layout import _read_preds
from tinyllm.io import write_json

ROOT = Path(__file__).resolve().parents[1]


def _setup(tmp_path, tok):
    base = tmp_path / "base"
    tiny_causal(tok).save_pretrained(base)
    tok.save_pretrained(base)
    for split in ("train", "valid"):
        d = tmp_path / "prepared" / "obqa"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(split)))
    c = tmp_path / "rationales" / "teacher_a" / "obqa"
    c.mkdir(parents=True)
    (c / "train.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "teacher": "teacher_a", "rationale": t, "status": "ok", "flags": []}) + "\n"
            for i, t in RATIONALES.items()
        )
    )
    return StudyConfig(
        name="tiny",
        benchmarks=["obqa"],
        seeds=[0, 1],
        arms={"untrained": {"steps": 0}, "ft": {"alphas": {}}, "tinyllm": {"alphas": {"teacher_a": 1.0}}},
        distill={
            "steps": 3,
            "batch_size": 2,
            "lr": 1e-2,
            "max_input_tokens": 64,
            "precision": "fp32",
            "train_per_benchmark": 4,
            "valid_loss_per_benchmark": 0,
        },
        base=str(base),
        prepared=str(tmp_path / "prepared"),
        rationales=str(tmp_path / "rationales"),
        eval_batch_size=3,
    )


def test_study_runs_reports_and_resumes(tiny_tokenizer, tmp_path, monkeypatch):
    cfg = _setup(tmp_path, tiny_tokenizer)
    out = tmp_path / "out"
    run_study(tmp_path, cfg, out)
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "ft-s0",
        "ft-s1",
        "tinyllm-s0",
        "tinyllm-s1",
        "untrained-s0",
    ]  # the untrained arm: one seed
    report = (out / "report.md").read_text()
    assert "| tinyllm | 2 |" in report and "n=4" in report and "tinyllm - ft" in report and "McNemar" in report
    tables = json.loads((out / "report.json").read_text())
    assert set(tables["comparisons"]) >= {"tinyllm - ft", "ft - untrained", "tinyllm - untrained"}
    # plots: written next to report.md, linked relatively; the profile logged no validation loss
    for png in ("accuracy_ci.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 0 and f"]({png})" in report
    assert "## Plots" in report and "`valid_loss_per_benchmark: 0`" in report
    m = json.loads((out / "runs" / "tinyllm-s1" / "metrics.json").read_text())
    assert m["teachers"] == ["teacher_a"] and m["train"]["sequences"] == 8
    # the MLflow parent run carries the report's one-sentence conclusion as its description
    from tinyllm import tracking

    client = tracking.store._mlflow(tmp_path).MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.study = 'tiny'")
    parent = next(r for r in parents if "mlflow.parentRunId" not in r.data.tags)
    sentence = parent.data.tags["mlflow.note.content"]
    assert sentence == parent.data.tags["conclusion"] and sentence in report
    assert sentence.startswith("On obqa (valid, n=4, rule score): ft − untrained = ")

    # resume: a finished run is not redone; a run without done.json is
    (out / "runs" / "ft-s1" / "done.json").unlink()
    import tinyllm.experiments.study.runner as study  # run_study calls the runner module's run_one

    redone = []
    real = study.run_one
    monkeypatch.setattr(
        study,
        "run_one",
        lambda root, cfg, arm, seed, out, progress=False: (
            redone.append((arm, seed)) or real(root, cfg, arm, seed, out, progress)
        ),
    )
    run_study(tmp_path, cfg, out)
    assert redone == [("ft", 1)]


def _fake_run(out, name, log=None, preds=()):
    d = out / "runs" / name
    (d / "predictions" / "valid").mkdir(parents=True)
    (d / "predictions" / "valid" / "obqa.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    if log is not None:
        (d / "train_log.tsv").write_text(log)
    (d / "done.json").write_text("{}")


def test_report_plots_and_loss_curves_average_seeds(tmp_path):
    """Two seeds with known losses: the loss plot's curves are their per-step mean/min/max (a
    task absent from a step, an empty cell, is left out); an untrained arm and a run without a
    train log are skipped; both PNGs are written and linked, with no model or training."""
    d = tmp_path / "prepared" / "obqa"
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records("train")))
    cfg = StudyConfig(
        name="fake",
        benchmarks=["obqa"],
        seeds=[0, 1],
        arms={"untrained": {"steps": 0}, "ft": {"alphas": {}}, "tinyllm": {"alphas": {"teacher_a": 1.0}}},
        distill={"steps": 2},
        prepared=str(tmp_path / "prepared"),
        mlflow=False,
    )
    out = tmp_path / "out"
    preds = [
        {"id": r["id"], "label": r["label"], "pred_score": (r["label"] + k) % 3, "scores": [0.0, 0.0, 0.0]}
        for k, r in enumerate(records("valid"))
    ]
    head = "step\tloss\tloss_answer\tloss_teacher_a\tlr\ttokens_per_s\telapsed_s\tvalid_loss_answer\n"
    _fake_run(out, "untrained-s0", "step\tloss\n", preds)
    _fake_run(out, "ft-s0", "step\tloss\tloss_answer\n1\t2\t2\n2\t1\t1\n", preds)
    _fake_run(out, "ft-s1", None, preds)  # no train log: skipped, not a crash
    _fake_run(out, "tinyllm-s0", head + "1\t5\t2\t3\t1e-4\t10\t1\t\n2\t3\t1\t\t1e-4\t10\t2\t4\n", preds)
    _fake_run(out, "tinyllm-s1", head + "1\t9\t4\t5\t1e-4\t10\t1\t\n2\t5\t2\t3\t1e-4\t10\t2\t6\n", preds)

    curves = loss_curves(cfg, out)
    assert set(curves) == {"ft", "tinyllm"}  # untrained: steps 0
    assert curves["ft"]["loss_answer"] == {"step": [1, 2], "mean": [2, 1], "min": [2, 1], "max": [2, 1], "seeds": 1}
    t = curves["tinyllm"]
    assert t["loss_answer"] == {"step": [1, 2], "mean": [3, 1.5], "min": [2, 1], "max": [4, 2], "seeds": 2}
    assert t["loss_teacher_a"]["mean"] == [4, 3] and t["loss_teacher_a"]["min"] == [3, 3]  # s0 step 2: absent
    v = t["valid_loss_answer"]
    assert math.isnan(v["mean"][0]) and v["mean"][1] == 5 and (v["min"][1], v["max"][1]) == (4, 6)
    assert "loss" not in t and "lr" not in t

    report = write_report(tmp_path, cfg, out)
    assert report == (out / "report.md").read_text()
    assert "| tinyllm | 2 |" in report and "| ft | 2 |" in report  # tables as before
    tail = report.split("## Plots", 1)[1]
    for png in ("accuracy_ci.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 0 and f"]({png})" in tail
    assert "dashed: validation loss" in tail and "no curve for untrained" in tail


def test_study_reports_the_report_half_and_checkpoints_selected_on_dev(tiny_tokenizer, tmp_path):
    """A cloze study with checkpoints: every run writes checkpoint predictions and a memory
    curve; the report's numbers count only report-half questions (q2-q4 of obqa; q1 is dev),
    and the checkpoint table selects on dev; the saved student keeps its answer format."""
    from tinyllm.benchmarks import valid_half
    from tinyllm.student import load_student

    cfg = _setup(tmp_path, tiny_tokenizer)
    cfg.seeds, cfg.mlflow, cfg.rule, cfg.report_half = [0], False, "norm", "report"
    cfg.checkpoint_every, cfg.save_models = 2, "models"
    cfg.distill = {**cfg.distill, "steps": 4, "answer_format": "cloze"}
    out = tmp_path / "out"
    run_study(tmp_path, cfg, out)
    n_report = sum(valid_half(r) == "report" for r in records("valid"))
    assert n_report == 3
    report = (out / "report.md").read_text()
    assert f"n={n_report}" in report and "n=4" not in report
    assert "**report** half" in report and "decision rule: **norm**" in report and "Answer format: **cloze**" in report
    assert "dev-selected step" in report and "| ft-s0 | 2, 4 |" in report
    assert "**Conclusion so far:** On obqa (report half of valid, n=3, rule norm): ft − untrained = " in report
    assert "; tinyllm − ft = " in report and "(seed 0, paired)." in report
    preds = _read_preds(out / "runs" / "ft-s0" / "checkpoints" / "step2" / "predictions" / "valid" / "obqa.jsonl")
    assert len(preds) == 4 and "dev" in {p["half"] for p in preds}  # checkpoints: every question, both halves
    rss = json.loads((out / "runs" / "ft-s0" / "rss.json").read_text())
    assert [r["step"] for r in rss] == [1, 2, 3, 4]
    if sys.platform.startswith("linux"):  # the peak within each step is at least the size after it
        assert all(r["peak_gb"] >= r["rss_gb"] - 0.01 for r in rss) and "Highest peak: ft-s0 " in report
    assert "](rss.png)" in report
    assert load_student(tmp_path / "models" / "tiny" / "ft-s0").answer_format == "cloze"


def test_saved_student_is_tracked_with_dvc_without_dvc_on_path(tmp_path, monkeypatch):
    # guards: the study ran `dvc add` from PATH; a job started as `.venv/bin/python scripts/...`
    # (no activated venv) had none, so tinyllm-s0's student was left untracked with a warning
    import subprocess

    from tinyllm.experiments.study.layout import dvc_add as _dvc_add

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    model = tmp_path / "models" / "study" / "arm-s0"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\0" * 64)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # git, but no dvc executable
    _dvc_add(tmp_path, model)
    assert (model.parent / "arm-s0.dvc").exists()
    assert "/arm-s0" in (model.parent / ".gitignore").read_text()


def _right_and_wrong():
    """The valid records, and predictions (score rule) that get every one right / every one wrong."""
    recs = records("valid")
    right = [{"id": r["id"], "label": r["label"], "pred_score": r["label"]} for r in recs]
    wrong = [{"id": r["id"], "label": r["label"], "pred_score": (r["label"] + 1) % 3} for r in recs]
    return recs, right, wrong


def test_trained_arms_are_compared_on_the_seeds_both_finished(tmp_path):
    # guards: with ft at seeds 0, 1 and tinyllm at seed 0 only, the comparison pitted ft's 2-seed
    # majority vote (a 1-1 tie counts as wrong) against one run: identical predictions at seed 0
    # came out as tinyllm − ft = +50 points, McNemar p = 0.002 (riddle-cloze-v1 printed p = 0.012
    # for a +0.2-point difference whose seed-0 pair had 5 discordant questions, p = 1)
    from tinyllm.experiments.study import study_tables

    recs, right, wrong = _right_and_wrong()
    cfg = StudyConfig(
        name="paired",
        benchmarks=["obqa"],
        seeds=[0, 1, 2],
        arms={"untrained": {"steps": 0}, "ft": {"alphas": {}}, "tinyllm": {"alphas": {"teacher_a": 1.0}}},
        mlflow=False,
    )
    out = tmp_path / "out"
    _fake_run(out, "untrained-s0", preds=wrong)
    _fake_run(out, "ft-s0", preds=right)
    _fake_run(out, "ft-s1", preds=wrong)
    _fake_run(out, "tinyllm-s0", preds=right)
    t = study_tables(cfg, out, rule="score", half=None)
    c = t["comparisons"]["tinyllm - ft"]["average"]
    assert t["comparison_seeds"]["tinyllm - ft"] == [0]
    assert c["diff"] == 0 and c["p_mcnemar"] == 1 and c["b"] == c["c"] == 0
    # against the deterministic untrained arm, every seed of the other arm counts
    assert t["comparison_seeds"]["ft - untrained"] == [0, 1]
    assert t["comparisons"]["ft - untrained"]["average"]["diff"] == 0.5
    assert t["summary"]["ft"]["average"]["accuracy"] == 0.5  # the arm's own row still pools both seeds
    # seed by seed: the pooled +50 is seed 0's +100 and seed 1's 0
    per = t["per_seed"]["ft - untrained"]
    assert per[0]["diff"] == 1.0 and per[1]["diff"] == 0.0 and per[0]["b"] == len(recs) and per[1]["b"] == 0
    assert "tinyllm - ft" not in t["per_seed"]  # one common seed: nothing to break down
    # same option chosen: per pair of runs, the untrained arm's one run against each seed
    n = len(recs)
    assert t["agreement"]["tinyllm - ft"] == {0: {"same": n, "n": n}}
    assert t["agreement"]["ft - untrained"] == {0: {"same": 0, "n": n}, 1: {"same": n, "n": n}}
    assert t["seed_agreement"] == {"ft": {"0-1": {"same": 0, "n": n}}}  # tinyllm has one seed
    from tinyllm.experiments.study.report import _per_seed_lines

    table = "\n".join(_per_seed_lines(t))
    assert f"| ft - untrained | +100.0 [+100.0, +100.0] {len(recs)}/0 | +0.0 [+0.0, +0.0] 0/0 |" in table


def test_a_killed_study_resumes_its_run_from_the_last_training_state(tiny_tokenizer, tmp_path, monkeypatch):
    """A study killed mid-run (step 3 of 4; training state saved at step 2) continues that run
    from step 2 when restarted: the same predictions as a study never killed, the memory curve
    kept and marked where it resumed, the training state removed once the run is done."""
    import pytest

    import tinyllm.experiments.study.layout as runner
    from tinyllm.checkpoints import Checkpoints

    cfg = _setup(tmp_path, tiny_tokenizer)
    cfg.seeds, cfg.mlflow, cfg.checkpoint_every, cfg.save_models = [0], False, 2, "models"
    cfg.arms = {"tinyllm": cfg.arms["tinyllm"]}
    cfg.distill = {**cfg.distill, "steps": 4}
    run_study(tmp_path, cfg, tmp_path / "whole")

    class Killed(Exception):
        pass

    real_hook, kills = Checkpoints.hook, []

    def killing_hook(*a, **kw):
        hook = real_hook(*a, **kw)

        def on_step(step):
            hook(step)
            if step == 3 and not kills:
                kills.append(step)
                raise Killed

        return on_step

    monkeypatch.setattr(Checkpoints, "hook", killing_hook)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_study(tmp_path, cfg, out)
    state = runner.train_state_dir(tmp_path, cfg, "tinyllm-s0")
    assert json.loads((state / "resume.json").read_text())["step"] == 2
    assert not (out / "runs" / "tinyllm-s0" / "done.json").exists()
    assert runner.study_status(tmp_path, cfg, out)["resumes_at_step"] == {"tinyllm-s0": 2}
    run_study(tmp_path, cfg, out)
    run, ref = out / "runs" / "tinyllm-s0", tmp_path / "whole" / "runs" / "tinyllm-s0"
    for rel in ("predictions/valid/obqa.jsonl.gz", "checkpoints/step2/predictions/valid/obqa.jsonl.gz"):
        assert (run / rel).read_bytes() == (ref / rel).read_bytes(), rel

    def losses(d):  # the train log without its clock columns (tokens_per_s, elapsed_s)
        head, *rows = [line.split("\t") for line in (d / "train_log.tsv").read_text().splitlines()]
        keep = [i for i, k in enumerate(head) if k in ("step", "lr") or k.startswith("loss")]
        return [[r[i] for i in keep] for r in rows]

    assert len(losses(run)) == 4 and losses(run) == losses(ref)
    rss = json.loads((run / "rss.json").read_text())
    assert [r["step"] for r in rss] == [1, 2, 3, 4] and [r.get("resumed", False) for r in rss] == [0, 0, 1, 0]
    assert json.loads((run / "metrics.json").read_text())["train"]["resumed_at_step"] == 2
    assert list(state.parent.iterdir()) == []  # the run is done: its training state is gone


def test_step_peak_is_the_high_water_mark_since_the_last_call():
    # guards: a peak that is never reset (the process's all-time high) or the size after the step
    import numpy as np
    import pytest

    from tinyllm.checkpoints import rss_gb as _rss_gb
    from tinyllm.checkpoints import step_peak_gb as _step_peak_gb

    if _step_peak_gb() is None:
        pytest.skip("no /proc/self/status here")
    block = np.ones(2**25)  # 256 MiB, touched
    del block
    first, second = _step_peak_gb(), _step_peak_gb()
    assert first - _rss_gb() > 0.2  # the freed block still counts in the peak of its step
    assert second - _rss_gb() < 0.05  # ... and not in the next one's


def test_first_puts_named_runs_ahead_and_rejects_unknown_names(tmp_path, monkeypatch):
    from tinyllm.experiments.study import runner

    cfg = StudyConfig(
        name="order",
        benchmarks=["obqa"],
        seeds=[0, 1, 2],
        arms={"untrained": {"steps": 0}, "ft": {"alphas": {}}, "tinyllm": {"alphas": {"t": 1.0}}},
        mlflow=False,
    )
    default = cfg.runs()
    assert default[:4] == [("untrained", 0), ("ft", 0), ("tinyllm", 0), ("ft", 1)]
    reordered = cfg.runs(["tinyllm-s2", "ft-s1", "tinyllm-s2"])
    assert reordered[:2] == [("tinyllm", 2), ("ft", 1)]
    assert sorted(reordered) == sorted(default)  # same runs, none twice
    with pytest.raises(ValueError, match="untrained-s1"):
        cfg.runs(["untrained-s1"])  # a deterministic arm has one seed

    calls = []

    def fake_run_one(root, cfg, arm, seed, out, progress):
        calls.append(f"{arm}-s{seed}")
        (out / "runs" / f"{arm}-s{seed}").mkdir(parents=True, exist_ok=True)
        return {cfg.eval_split: {"average": {"accuracy": 0.0}}, "train_s": 0.0, "eval_s": 0.0}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    monkeypatch.setattr(runner, "write_report", lambda *a, **k: "")
    monkeypatch.setattr(runner, "check_inputs", lambda *a: None)  # no data: the runs are fakes
    out = tmp_path / "out"
    (out / "runs" / "ft-s1").mkdir(parents=True)
    (out / "runs" / "ft-s1" / "done.json").write_text("{}")  # finished before: still skipped
    run_study(tmp_path, cfg, out, first=["ft-s1", "tinyllm-s2"])
    assert calls[0] == "tinyllm-s2"
    assert "ft-s1" not in calls and len(calls) == len(default) - 1


def test_conclusion_names_every_finished_arm_against_the_reference(tmp_path):
    from tinyllm.experiments.study import study_tables

    recs, right, wrong = _right_and_wrong()
    cfg = StudyConfig(
        name="sentence",
        benchmarks=["obqa"],
        seeds=[0, 1],
        arms={
            "untrained": {"steps": 0},
            "ft": {"alphas": {}},
            "tinyllm": {"alphas": {"a": 1.0}},
            "a_only": {"alphas": {"a": 1.0}},
            "b_only": {"alphas": {"b": 1.0}},
        },
        rule="score",
        mlflow=False,
    )
    out = tmp_path / "out"
    _fake_run(out, "untrained-s0", preds=wrong)
    for name in ("ft-s0", "ft-s1", "tinyllm-s0"):
        _fake_run(out, name, preds=wrong)
    _fake_run(out, "a_only-s0", preds=right)
    _fake_run(out, "a_only-s1", preds=right)
    sentence = conclusion(cfg, study_tables(cfg, out, rule="score", half=None))
    assert "tinyllm − ft = +0.0 points" in sentence
    assert "the other arms − ft: a_only +100.0 [" in sentence and "(seeds 0, 1)" in sentence
    assert "b_only" not in sentence  # not finished: not named


def test_same_option_counts_pair_each_seed_with_itself(tmp_path):
    # guards: seed 1 of an arm set against seed 0 of the reference would count 0 shared answers here
    from tinyllm.experiments.study import study_tables
    from tinyllm.experiments.study.report import _agreement_lines

    recs, right, wrong = _right_and_wrong()
    cfg = StudyConfig(name="agree", benchmarks=["obqa"], seeds=[0, 1], arms={"ft": {}, "tinyllm": {}}, mlflow=False)
    out = tmp_path / "out"
    for name, preds in [("ft-s0", right), ("ft-s1", wrong), ("tinyllm-s0", right), ("tinyllm-s1", wrong)]:
        _fake_run(out, name, preds=preds)
    t = study_tables(cfg, out, rule="score", half=None)
    n = len(recs)
    assert t["agreement"]["tinyllm - ft"] == {0: {"same": n, "n": n}, 1: {"same": n, "n": n}}
    assert t["seed_agreement"]["tinyllm"] == {"0-1": {"same": 0, "n": n}}
    table = "\n".join(_agreement_lines(t))
    assert f"| tinyllm - ft | s0 {n}/{n}, s1 {n}/{n} |" in table and f"| ft, seed against seed | s0/s1 0/{n} |" in table


def test_report_states_the_harness_agreement_of_a_cloze_study(tmp_path):
    from tinyllm.experiments.study.report import AGREEMENT, _peer_check_lines

    cfg = StudyConfig(name="peer", benchmarks=["obqa"], seeds=[0], arms={}, distill={"answer_format": "cloze"})
    assert _peer_check_lines(tmp_path, cfg) == []  # the check has not run: nothing claimed
    per = {"n": 100, "agree_acc": 1.0, "agree_acc_norm": 1.0, "max_abs_loglik_diff": 1e-4, "differ": []}
    record = {"obqa": {**per, "agree_acc": 0.99, "differ": ["q7"]}, "riddle": {**per, "max_abs_loglik_diff": 3e-4}}
    write_json(tmp_path / AGREEMENT, {"model": "models/base", "limit": 100, "benchmarks": record})
    line = "\n".join(_peer_check_lines(tmp_path, cfg))
    assert "`acc`'s option on 199/200 questions" in line and "`acc_norm`'s on 200/200" in line
    assert "obqa, riddle (n=200" in line and "3.0e-04" in line
    listed = StudyConfig(name="peer", benchmarks=["obqa"], seeds=[0], arms={}, distill={"answer_format": "listed"})
    assert _peer_check_lines(tmp_path, listed) == []  # harness agreement is a cloze-format claim


def test_missing_inputs_fail_before_any_run_naming_each_path(tiny_tokenizer, tmp_path):
    # a fresh clone has no data/prepared, data/rationales or models/base: one error up front with
    # every missing path and the command that makes them, not a hub error halfway into the study
    cfg = _setup(tmp_path, tiny_tokenizer)
    (tmp_path / "base" / "config.json").unlink()
    (tmp_path / "prepared" / "obqa" / "valid.jsonl").unlink()
    cfg.arms["both"] = {"alphas": {"teacher_a": 1.0, "teacher_b": 0.5}}  # teacher_b has no cache
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError) as e:
        run_study(tmp_path, cfg, out)
    msg = str(e.value)
    assert "3 input(s) missing" in msg and "dvc repro prepare import_rationales student_base" in msg
    for missing in ("base/config.json", "prepared/obqa/valid.jsonl", "rationales/teacher_b/obqa"):
        assert str(tmp_path / missing) in msg, missing
    assert not (out / "runs").exists()  # nothing started


def test_a_reused_arm_is_read_from_the_earlier_study_and_must_match_it(tiny_tokenizer, tmp_path):
    # guards: a study pairs a new arm with an earlier study's control arm without retraining it,
    # only when that arm's settings are the same there (a changed lr or eval split is refused)
    import dataclasses

    cfg = _setup(tmp_path, tiny_tokenizer)
    cfg = dataclasses.replace(cfg, arms={"ft": {"alphas": {}}}, mlflow=False, seeds=[0])
    run_study(tmp_path, cfg, tmp_path / "studies" / "tiny")
    ft_file = tmp_path / "studies" / "tiny" / "runs" / "ft-s0" / "predictions" / "valid" / "obqa.jsonl.gz"
    ft_pred = ft_file.read_bytes()
    arms = {"ft": {"alphas": {}}, "tinyllm": {"alphas": {"teacher_a": 1.0}}}
    v2 = dataclasses.replace(cfg, name="tiny2", arms=arms, reuse={"ft": "tiny"}, headline_arm="tinyllm")
    out = tmp_path / "studies" / "tiny2"
    run_study(tmp_path, v2, out)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["tinyllm-s0"]  # ft was not trained again
    assert ft_file.read_bytes() == ft_pred
    tables = json.loads((out / "report.json").read_text())
    assert "tinyllm - ft" in tables["comparisons"]
    assert v2.run_dir(out, "ft", 0) == tmp_path / "studies" / "tiny" / "runs" / "ft-s0"
    changed = dataclasses.replace(v2, distill={**cfg.distill, "lr": 1e-3}, name="tiny3")
    with pytest.raises(ValueError, match=r"reuse.ft: settings differ from study 'tiny' in \['distill'\]"):
        run_study(tmp_path, changed, tmp_path / "studies" / "tiny3")
    with pytest.raises(ValueError, match="reuse names arm"):
        StudyConfig(name="x", benchmarks=["obqa"], seeds=[0], arms={"ft": {}}, reuse={"ftt": "tiny"})


def test_arms_of_one_seed_train_on_the_same_batches_and_seeds_differ(tiny_tokenizer, tmp_path, monkeypatch):
    # guards the probed fault: `"seed": seed + len(arm)` in the runner passed every test, because 8
    # toy questions at batch 2 make the same batches for every seed (only their order changes, and
    # seeds 2 and 7 give the same order): here 120 questions in pools of 100 (distill.batches), so
    # two seeds give different batch contents, and the contents of every step are compared
    import dataclasses

    from teachers_testlib import toy_questions

    import tinyllm.distill

    cfg = _setup(tmp_path, tiny_tokenizer)
    qs = toy_questions("obqa", "train", 120)
    (tmp_path / "prepared" / "obqa" / "train.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (tmp_path / "rationales" / "teacher_a" / "obqa" / "train.jsonl").write_text(
        "".join(
            json.dumps({"id": q["id"], "teacher": "teacher_a", "rationale": f"Because {q['answer']}.", "status": "ok"})
            + "\n"
            for q in qs
        )
    )
    arms = {"ft": {"alphas": {}}, "tinyllm": {"alphas": {"teacher_a": 1.0}}}
    distill = {**cfg.distill, "train_per_benchmark": None, "steps": 8}
    cfg = dataclasses.replace(cfg, arms=arms, distill=distill, mlflow=False, seeds=[0, 1], eval_per_benchmark=2)
    seen: list[list[frozenset]] = []
    real = tinyllm.distill.batches

    def spy(encoded, batch_size, seed, *a, **k):
        log: list[frozenset] = []
        seen.append(log)
        for b in real(encoded, batch_size, seed, *a, **k):
            log.append(frozenset(b))  # the questions of this step (indices into the shared question list)
            yield b

    monkeypatch.setattr(tinyllm.distill, "batches", spy)
    run_study(tmp_path, cfg, tmp_path / "out")
    assert [len(s) >= 8 for s in seen] == [True] * 4  # ft-s0, tinyllm-s0, ft-s1, tinyllm-s1
    ft0, tl0, ft1, tl1 = (s[:8] for s in seen)
    assert ft0 == tl0 and ft1 == tl1  # same seed: the same questions at every step
    assert {q for b in ft0 for q in b} != {q for b in ft1 for q in b}  # another seed: other questions


def test_the_report_keeps_its_majority_row_without_data_prepared(tmp_path):
    # guards the probed fault: `study.py report` in a clone without data/prepared silently dropped
    # the majority-class row from the committed report
    import shutil

    d = tmp_path / "prepared" / "obqa"
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records("train")))
    cfg = StudyConfig(
        name="maj", benchmarks=["obqa"], seeds=[0], arms={"ft": {"alphas": {}}},
        prepared=str(tmp_path / "prepared"), mlflow=False,
    )  # fmt: skip
    out = tmp_path / "out"
    preds = [
        {"id": r["id"], "label": r["label"], "pred_score": r["label"], "scores": [0.0] * 3} for r in records("valid")
    ]
    _fake_run(out, "ft-s0", None, preds)
    with_data = write_report(tmp_path, cfg, out)
    assert "| majority class (train) |" in with_data
    shutil.rmtree(tmp_path / "prepared")
    assert write_report(tmp_path, cfg, out) == with_data  # from majority.json, byte for byte
    (out / "majority.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"majority-class row needs the train split of \['obqa'\].*dvc repro prepare"
    ):
        write_report(tmp_path, cfg, out)


def test_inputs_that_are_there_but_cannot_serve_fail_before_any_run(tiny_tokenizer, tmp_path):
    # guards the probed fault: the input check tested existence only: an empty base config, an
    # empty prepared file or an empty rationale folder passed, and a teacher arm failed an hour later
    cfg = _setup(tmp_path, tiny_tokenizer)
    out = tmp_path / "out"
    (tmp_path / "base" / "config.json").write_text("")
    (tmp_path / "prepared" / "obqa" / "valid.jsonl").write_text("")
    with pytest.raises(ValueError) as e:
        run_study(tmp_path, cfg, out)
    msg = str(e.value)
    assert "2 input(s) cannot serve its runs" in msg and "base/config.json is not a model config" in msg, msg
    assert "valid.jsonl has 0 question(s), the study needs 1" in msg and "dvc repro prepare" in msg, msg
    cfg = _setup(tmp_path / "b", tiny_tokenizer)
    (tmp_path / "b" / "rationales" / "teacher_a" / "obqa" / "train.jsonl").write_text("")  # an empty cache
    with pytest.raises(ValueError, match=r"arm 'tinyllm': teacher 'teacher_a' has no usable rationale for its 4"):
        run_study(tmp_path / "b", cfg, out)
    assert not (out / "runs").exists()  # nothing started


def _fake_checkpointed(out, name, preds_by_step: dict, final_step: int, losses: list[float]):
    """A finished run with checkpoints: ``preds_by_step`` {step: predictions} (the final step's are
    the run's own), a train log with these answer losses."""
    d = out / "runs" / name
    for step, preds in preds_by_step.items():
        folder = d if step == final_step else d / "checkpoints" / f"step{step}"
        (folder / "predictions" / "valid").mkdir(parents=True, exist_ok=True)
        (folder / "predictions" / "valid" / "obqa.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        if step != final_step:
            (folder / "metrics.json").write_text("{}")
    (d / "metrics.json").write_text(json.dumps({"train": {"steps": final_step}}))
    log = "step\tloss\tloss_answer\n" + "".join(f"{i + 1}\t{v}\t{v}\n" for i, v in enumerate(losses))
    (d / "train_log.tsv").write_text(log)
    (d / "done.json").write_text("{}")


def test_the_pooled_primary_analysis_and_the_diagnostics(tmp_path):
    # guards: the pre-registered primary analysis (final step, both halves, sign-flip p over every
    # seed), the dev-selected step's tie rule, the epoch curve and the answer-loss yardstick
    import numpy as np

    from tinyllm.benchmarks import valid_half
    from tinyllm.experiments.study import checkpoint_table
    from tinyllm.experiments.study.plots import answer_loss_differences
    from tinyllm.stats import sign_flip_p

    recs = [{**r, "id": f"q{i}"} for i, r in enumerate(records("valid") * 6)]

    def preds(right: set):
        return [
            {"id": r["id"], "label": r["label"], "pred_norm": r["label"] if i in right else (r["label"] + 1) % 3,
             "scores": [0.0] * 3, "half": valid_half(r)}
            for i, r in enumerate(recs)
        ]  # fmt: skip

    n = len(recs)
    base = set(range(0, n, 2))  # ft right on every other question
    extra = {1, 3, 5, 7, 9}  # tinyllm right on these too
    out = tmp_path / "out"
    for s in (0, 1, 2):
        _fake_checkpointed(out, f"ft-s{s}", {2: preds(base), 4: preds(base)}, 4, [3.0, 2.0 + s, 1.0, 0.5])
        both = base | extra
        _fake_checkpointed(out, f"tinyllm-s{s}", {2: preds(both), 4: preds(both)}, 4, [3.1, 2.0 + s, 1.0, 0.4])
    (tmp_path / "prepared" / "obqa").mkdir(parents=True)
    (tmp_path / "prepared" / "obqa" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records("train")))
    _fake_run(out, "untrained-s0", preds=preds(set()))
    arms = {"untrained": {"steps": 0}, "ft": {"alphas": {}}, "tinyllm": {"alphas": {"t": 1.0}}}
    cfg = StudyConfig(
        name="pooled", benchmarks=["obqa"], seeds=[0, 1, 2], arms=arms, rule="norm", report_half="report",
        primary_pooled=True, selection_ties="earlier", prepared=str(tmp_path / "prepared"), mlflow=False,
    )  # fmt: skip
    report = write_report(tmp_path, cfg, out)
    primary = json.loads((out / "primary.json").read_text())["comparisons"]["tinyllm - ft"]["average"]
    assert primary["n"] == n and primary["diff"] == pytest.approx(len(extra) / n)
    d = np.array([1.0 if i in extra else 0.0 for i in range(n)])
    assert primary["p_perm"] == pytest.approx(sign_flip_p([d], 10_000))
    assert f"## Primary analysis (pre-registered): final step, all {n} evaluated questions" in report
    assert "sign-flip p = " in report.split("**Conclusion so far:**")[1].split("\n")[0]  # the conclusion reads it
    rows = {r["run"]: r for r in checkpoint_table(cfg, out)}
    assert rows["ft-s0"]["dev_selected_step"] == 2  # a tie on dev: the earlier step, as profiled
    cfg.selection_ties = "later"
    assert checkpoint_table(cfg, out)[0]["dev_selected_step"] == 4
    assert "| tinyllm | 3 | " in report.split("Dev-half accuracy")[1]  # the epoch curve, per arm
    diffs = answer_loss_differences(cfg, out)
    assert diffs["tinyllm"]["mean"] == pytest.approx([0.1, 0.0, 0.0, -0.1])
    assert diffs["seed-to-seed"]["min"][1] == -2.0 and diffs["seed-to-seed"]["pairs"] == 3
    assert (out / "answer_loss_diff.png").stat().st_size > 0


def test_a_source_with_a_test_split_is_scored_on_it_too(tiny_tokenizer, tmp_path):
    # guards: every run is scored on `test` wherever the data source has it, with the same code as
    # valid (the offline mirror has none, so this path would otherwise never run)
    import dataclasses

    cfg = _setup(tmp_path, tiny_tokenizer)
    test = [{**r, "id": f"t-{r['id']}", "split": "test"} for r in records("test")]
    (tmp_path / "prepared" / "obqa" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    cfg = dataclasses.replace(cfg, arms={"untrained": {"steps": 0}, "ft": {"alphas": {}}}, mlflow=False, seeds=[0])
    out = tmp_path / "out"
    run_study(tmp_path, cfg, out)
    for run in ("untrained-s0", "ft-s0"):
        preds = _read_preds(out / "runs" / run / "predictions" / "test" / "obqa.jsonl")
        assert [p["id"] for p in preds] == [r["id"] for r in test]
        m = json.loads((out / "runs" / run / "metrics.json").read_text())
        assert m["test"]["obqa"]["n"] == len(test) and m["valid"]["obqa"]["n"] == len(records("valid"))
    report = (out / "report.md").read_text()
    assert "## Test split, final step" in report and f"n={len(test)}" in report.split("## Test split")[1]


def test_compact_predictions_rebuild_the_same_report(tmp_path):
    # guards: the per-run evidence kept in git compact (only the fields the report reads, gzip
    # without a time stamp) must give the report byte for byte; the same bytes twice
    import gzip
    import sys

    from tinyllm.experiments.study.layout import _read_preds, compact_runs, write_preds

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "scripts"))
    import study as cli

    d = tmp_path / "prepared" / "obqa"
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records("train")))
    cfg = StudyConfig(
        name="c", benchmarks=["obqa"], seeds=[0], arms={"untrained": {"steps": 0}, "ft": {"alphas": {}}},
        prepared=str(tmp_path / "prepared"), mlflow=False,
    )  # fmt: skip
    out = tmp_path / "out"
    full = [
        {"id": r["id"], "label": r["label"], "pred_score": (r["label"] + k) % 3, "pred_sum": r["label"],
         "generated": None, "scores": [-1.0, -2.0, -3.0], "totals": [1.0, 2.0, 3.0], "half": "dev"}
        for k, r in enumerate(records("valid"))
    ]  # fmt: skip
    _fake_run(out, "untrained-s0", preds=full)
    _fake_run(out, "ft-s0", preds=full[::-1])
    before = write_report(tmp_path, cfg, out)
    cli.ROOT = tmp_path
    assert cli.compact(cfg, out) == 0
    assert write_report(tmp_path, cfg, out) == before
    gz = out / "runs" / "ft-s0" / "predictions" / "valid" / "obqa.jsonl.gz"
    assert gz.exists() and not gz.with_suffix("").exists()
    kept = _read_preds(gz.with_suffix(""))
    assert set(kept[0]) == {"id", "label", "half", "pred_score", "pred_sum", "n_options"} and kept[0]["n_options"] == 3
    first = gz.read_bytes()
    write_preds(gz.with_suffix(""), kept)
    assert gz.read_bytes() == first and gzip.decompress(first).count(b"\n") == len(full)
    assert compact_runs(cfg, out, tmp_path / "bak") == []  # nothing left to compact


def test_study_students_live_in_a_dvc_subrepo_the_pipeline_status_ignores(tmp_path):
    # guards the probed noise: a fresh clone's `dvc status` listed 16 study students as "not in
    # cache" (nothing to pull them from); now models/study is a DVC subrepo (sharing the cache):
    # the pipeline's status is silent about them, the subrepo's own status names them
    import shutil
    import subprocess

    from tinyllm.experiments.study.layout import dvc_add as _dvc_add

    def dvc(*args, cwd):
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q", cwd=tmp_path)
    study = tmp_path / "models" / "study"
    study.mkdir(parents=True)
    assert dvc("init", "-q", "--subdir", cwd=study).returncode == 0
    assert dvc("config", "cache.dir", "../../.dvc/cache", cwd=study).returncode == 0
    model = study / "s" / "arm-s0"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\1" * 64)
    _dvc_add(tmp_path, model)
    assert (study / "s" / "arm-s0.dvc").exists()
    assert any((tmp_path / ".dvc" / "cache").rglob("*")), "the student's object went to the shared cache"
    shutil.rmtree(tmp_path / ".dvc" / "cache")  # a clone that has not pulled it
    assert "arm-s0" not in dvc("status", cwd=tmp_path).stdout  # the pipeline's status: silent
    assert "not in cache" in dvc("status", cwd=study).stdout  # the subrepo's: names it


def test_the_summary_puts_every_regime_in_one_table_with_holm_over_the_primary_family(tmp_path):
    # guards: one conclusion across studies: each regime's arm - ft pooled over both halves with
    # the sign-flip p, Holm-adjusted over the pre-registered primary family only
    import yaml

    from tinyllm.benchmarks import valid_half
    from tinyllm.experiments.study.summary import summary_rows, write_summary
    from tinyllm.stats import holm

    recs = [{**r, "id": f"q{i}"} for i, r in enumerate(records("valid") * 10)]

    def preds(right: set):
        return [
            {"id": r["id"], "label": r["label"], "pred_norm": r["label"] if i in right else (r["label"] + 1) % 3,
             "n_options": 3, "half": valid_half(r)}
            for i, r in enumerate(recs)
        ]  # fmt: skip

    studies = tmp_path / "studies"
    base = set(range(0, len(recs), 2))
    profiles = []
    for name, pooled, gain in (("v1", False, {1}), ("v2", True, {1, 3, 5, 7, 9, 11, 13, 15})):
        arms = {"untrained": {"steps": 0}, "ft": {"alphas": {}}, "tinyllm": {"alphas": {"t": 1.0}}}
        cfg = {"name": name, "benchmarks": ["obqa"], "seeds": [0, 1], "arms": arms, "rule": "norm",
               "report_half": "report", "primary_pooled": pooled, "mlflow": False}  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        profiles.append(tmp_path / f"{name}.yaml")
        out = studies / name
        _fake_run(out, "untrained-s0", preds=preds(set()))
        for s in (0, 1):
            _fake_run(out, f"ft-s{s}", preds=preds(base))
            _fake_run(out, f"tinyllm-s{s}", preds=preds(base | gain))
    rows = {(r["study"], r["comparison"]): r for r in summary_rows(profiles, studies)}
    assert set(rows) == {
        ("v1", "ft - untrained"),
        ("v1", "tinyllm - ft"),
        ("v2", "ft - untrained"),
        ("v2", "tinyllm - ft"),
    }
    fam = [k for k, r in rows.items() if r["family"]]
    assert fam == [("v2", "tinyllm - ft")] and rows[("v1", "tinyllm - ft")]["holm"] is None
    r = rows[("v2", "tinyllm - ft")]
    assert r["n"] == len(recs) and r["diff"] == pytest.approx(8 / len(recs)) and r["seeds"] == [0, 1]
    assert r["holm"] == pytest.approx(holm({0: r["p_perm"]})[0])
    text = write_summary(profiles, studies)
    assert "| v2 | tinyllm - ft * | 0, 1 |" in text and (studies / "summary.json").exists()

    # ...and on every study's MLflow parent run (a study without one yet is skipped, none is made)
    from tinyllm import tracking
    from tinyllm.experiments.study.summary import tag_parents

    for path in profiles:
        path.write_text(path.read_text().replace("mlflow: false", "mlflow: true"))
    pid = tracking.groups.start_parent(tmp_path, "study v2", "tinyllm", {"study": "v2"}, key="study:v2")
    tracking.groups.describe_run(tmp_path, pid, "v2's own conclusion")
    tracking.groups.end_parent(tmp_path, pid)
    assert tag_parents(tmp_path, profiles, studies) == {"v2": pid}
    run = tracking.store._mlflow(tmp_path).MlflowClient().get_run(pid)
    lines = run.data.tags["summary"].splitlines()
    assert [line.split(":")[0] for line in lines] == ["v1", "v2"]
    assert f"tinyllm - ft {100 * r['diff']:+.1f} [" in lines[1] and f"Holm {r['holm']:.2g})" in lines[1]
    assert run.data.tags["mlflow.note.content"] == "v2's own conclusion" and run.info.status == "FINISHED"
    got = tracking.download_artifacts(tmp_path, pid, "summary", tmp_path / "dl")
    assert (got / "summary.md").read_text() == text


@pytest.mark.parametrize("profile", sorted(p.name for p in (ROOT / "experiments").glob("study*.yaml")))
def test_every_profile_is_a_params_overlay_that_gives_its_runs_own_settings(profile):
    # guards: the study's settings drifting from the pipeline's typed config (issue #31 item 1): each
    # arm x seed validates as params.yaml sections, and gives exactly the DistillConfig the
    # committed runs were trained under (built from the profile and the dataclass defaults)
    import dataclasses

    from tinyllm.config import DistillConfig
    from tinyllm.experiments.study.config import STUDY_DISTILL_BASE

    cfg = StudyConfig.load(ROOT / "experiments" / profile)
    for arm, seed in cfg.runs():
        p = cfg.params(arm, seed)
        trained = DistillConfig(**{**STUDY_DISTILL_BASE, **cfg.distill, **cfg.arms[arm], "seed": seed})
        scoring = {"checkpoint_every": cfg.checkpoint_every, "checkpoint_half": "all", "checkpoint_rule": cfg.rule}
        assert p.distill == dataclasses.replace(trained, **scoring), (arm, seed)  # scoring keys change no weight
        # every distill key is the profile's or the pinned base's: a change of a library default
        # (params.yaml is the pipeline's only set of values) can never move a study
        assert set(cfg.overlay(arm, seed)["distill"]) == {f.name for f in dataclasses.fields(DistillConfig)}
        assert p.data.benchmarks == cfg.benchmarks
    e = cfg.evaluation()
    assert (e.headline, e.batch_size, e.max_input_tokens, e.precision) == (
        cfg.rule,
        cfg.eval_batch_size,
        cfg.eval_max_input_tokens,
        "fp32",
    )
    assert (e.generate_per_benchmark == 0) == (not cfg.generate)


def test_a_study_run_and_the_pipeline_stages_give_the_same_student_and_predictions(tiny_tokenizer, tmp_path):
    # "same bytes through either door" (issue #31 item 2): one arm x seed through the study runner,
    # and through the stages' own library entry points (trainset, distill, evaluate) under the
    # study's params overlay, give byte-identical weights and the same prediction for every question
    import dataclasses

    import torch

    from tinyllm.distill import distill_student
    from tinyllm.evaluation import evaluate_splits
    from tinyllm.experiments.study.runner import run_one
    from tinyllm.student import load_student
    from tinyllm.trainset import make_trainset

    cfg = _setup(tmp_path, tiny_tokenizer)
    (tmp_path / "rationales" / "teacher_a").rename(tmp_path / "rationales" / "flan_t5_xl")  # a released teacher
    cfg = dataclasses.replace(
        cfg,
        arms={"tinyllm": {"alphas": {"flan_t5_xl": 1.0}}},
        distill={**cfg.distill, "train_per_benchmark": 3},  # a subset: both doors must pick the same one
        mlflow=False,
        save_models=str(tmp_path / "models"),
        rule="norm",
    )
    out = tmp_path / "out"
    run_one(tmp_path, cfg, "tinyllm", 1, out)  # seed 1: not the default a lost seed would fall back to

    p = cfg.params("tinyllm", 1)
    make_trainset(tmp_path / "prepared", tmp_path / "rationales", tmp_path / "trainset", p)
    distill_student(tmp_path / "base", tmp_path / "trainset", tmp_path / "student", p.distill)
    student = load_student(tmp_path / "student")
    results, predictions = evaluate_splits(
        student, tmp_path / "prepared", p.data.benchmarks, p.evaluate, torch.device("cpu"), p.evaluate.precision
    )
    study_weights = (tmp_path / "models" / "tiny" / "tinyllm-s1" / "model.safetensors").read_bytes()
    assert (tmp_path / "student" / "model.safetensors").read_bytes() == study_weights
    study_preds = _read_preds(out / "runs" / "tinyllm-s1" / "predictions" / "valid" / "obqa.jsonl")
    stage_preds = predictions["valid"]["obqa"]
    assert len(stage_preds) == len(study_preds) == 4
    for mine, theirs in zip(study_preds, stage_preds, strict=True):
        shared = set(mine) & set(theirs) - {"half"}
        assert {"pred_norm", "pred_sum", "pred_pmi"} <= shared
        assert {k: mine[k] for k in shared} == {k: theirs[k] for k in shared}
    study_metrics = json.loads((out / "runs" / "tinyllm-s1" / "metrics.json").read_text())
    assert study_metrics["valid"]["obqa"]["accuracy"] == results["valid"]["obqa"]["accuracy"]
