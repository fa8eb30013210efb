"""The study runner end to end on a tiny student: arms x seeds train and evaluate, the report
carries n / CIs / paired tests, and a restarted job resumes without redoing finished runs."""

import json

from conftest import RATIONALES, records, tiny_causal

from tinyllm.experiments.study import StudyConfig, run_study


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
    m = json.loads((out / "runs" / "tinyllm-s1" / "metrics.json").read_text())
    assert m["teachers"] == ["teacher_a"] and m["train"]["sequences"] == 8

    # resume: a finished run is not redone; a run without done.json is
    (out / "runs" / "ft-s1" / "done.json").unlink()
    import tinyllm.experiments.study as study

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
