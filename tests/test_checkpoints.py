"""Scoring while training (tinyllm.checkpoints, distill.checkpoint_every): the distill stage's
option, and a study's per-epoch curves."""

from __future__ import annotations

import dataclasses
import json

import torch
from safetensors.torch import load_file
from test_study import _setup

from tinyllm.benchmarks import valid_half
from tinyllm.checkpoints import Checkpoints, checkpoint_evaluation, checkpoint_questions, score_student
from tinyllm.distill import distill_student
from tinyllm.evaluation import read_predictions
from tinyllm.student import load_student
from tinyllm.trainset import make_trainset


def _params(tmp_path, tok, **distill):
    cfg = _setup(tmp_path, tok)
    p = cfg.params("tinyllm", 1)
    p = dataclasses.replace(p, distill=dataclasses.replace(p.distill, lr_schedule="constant", **distill))
    make_trainset(tmp_path / "prepared", tmp_path / "rationales", tmp_path / "trainset", p)
    return p


def test_a_checkpoint_scores_the_student_of_that_step_and_leaves_training_alone(tiny_tokenizer, tmp_path):
    # guards: a checkpoint scored with another model state (before the step, after the next), in
    # bf16/with generation, on other questions, at the last step (the final evaluation's job), or
    # scoring that perturbs training (train mode, RNG, autocast wrapper lost)
    p = _params(tmp_path, tiny_tokenizer, steps=4, checkpoint_every=2, checkpoint_half="all")
    questions = checkpoint_questions(tmp_path / "prepared", ["obqa"], "all")
    evaluation = checkpoint_evaluation(p.distill)
    ck = Checkpoints(tmp_path / "ck", 2, questions, evaluation)
    base, trainset = tmp_path / "base", tmp_path / "trainset"
    distill_student(base, trainset, tmp_path / "scored", p.distill, checkpoints=ck, progress=False)
    distill_student(base, trainset, tmp_path / "plain", p.distill, progress=False)
    two = dataclasses.replace(p.distill, steps=2)  # constant lr: step 2 of 4 is a 2-step run
    distill_student(base, trainset, tmp_path / "two", two, progress=False)

    scored = load_file(tmp_path / "scored" / "model.safetensors")
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    assert scored.keys() == plain.keys() and all(torch.equal(scored[k], plain[k]) for k in scored)
    assert sorted(d.name for d in (tmp_path / "ck").iterdir()) == ["memory.json", "step2"]
    memory = json.loads((tmp_path / "ck" / "memory.json").read_text())
    assert [r["step"] for r in memory] == [1, 2, 3, 4] and all(r["rss_gb"] > 0 for r in memory)

    per, preds = score_student(load_student(tmp_path / "two"), questions, evaluation)
    kept = read_predictions(tmp_path / "ck" / "step2" / "predictions" / "valid" / "obqa.jsonl")
    assert len(kept) == 4 and {p["half"] for p in kept} == {"dev", "report"}
    for mine, theirs in zip(kept, preds["obqa"], strict=True):
        assert {k: mine[k] for k in ("id", "pred_norm", "pred_sum", "pred_pmi")} == {
            k: theirs[k] for k in ("id", "pred_norm", "pred_sum", "pred_pmi")
        }
    step2 = json.loads((tmp_path / "ck" / "step2" / "metrics.json").read_text())
    assert step2["step"] == 2 and step2["valid"]["obqa"]["acc_norm"] == per["obqa"]["acc_norm"]
    assert "acc_generate" not in step2["valid"]["obqa"] or step2["valid"]["obqa"].get("n_generate", 0) == 0


def test_checkpoints_on_dev_see_no_report_question(tmp_path, tiny_tokenizer):
    # guards: checkpoint_half ignored (a step selected on report questions)
    _setup(tmp_path, tiny_tokenizer)
    dev = checkpoint_questions(tmp_path / "prepared", ["obqa"], "dev")["obqa"]
    every = checkpoint_questions(tmp_path / "prepared", ["obqa"], "all")["obqa"]
    assert dev and len(dev) < len(every) and {valid_half(r) for r in dev} == {"dev"}
