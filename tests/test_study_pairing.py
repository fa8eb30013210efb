"""The study's arms of one seed see the same questions in the same order, read where the student
computes its losses, through the study's own ``run_one`` (issue 21)."""

from __future__ import annotations

import json
import re

from conftest import tiny_causal

from tinyllm.student import CausalStudent


def test_study_arms_of_one_seed_see_the_same_question_order(tiny_tokenizer, tmp_path, monkeypatch):
    # guards: pairing was asserted on batches() alone; here the order is read where the student
    # computes its losses, through the study's own run_one (examples, config, train)
    from teachers_testlib import toy_questions

    from tinyllm.experiments import study

    base = tmp_path / "base"
    tiny_causal(tiny_tokenizer).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    qs = toy_questions(n=8)
    for split in ("train", "valid"):
        d = tmp_path / "prepared" / "obqa"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{split}.jsonl").write_text("".join(json.dumps({**q, "split": split}) + "\n" for q in qs))
    cache = tmp_path / "rationales" / "teacher_a" / "obqa"
    cache.mkdir(parents=True)
    # rationales of very different lengths: an order that depended on them would show
    cache.joinpath("train.jsonl").write_text(
        "".join(
            json.dumps({"id": q["id"], "teacher": "teacher_a", "rationale": "so " * (1 + 7 * (i % 3)), "status": "ok"})
            + "\n"
            for i, q in enumerate(qs)
        )
    )
    cfg_ = study.StudyConfig(
        name="order",
        benchmarks=["obqa"],
        seeds=[0, 1],
        arms={"ft": {"alphas": {}}, "tinyllm": {"alphas": {"teacher_a": 1.0}}},
        distill={
            "steps": 4,
            "batch_size": 2,
            "lr": 1e-3,
            "max_input_tokens": 64,
            "max_rationale_tokens": 24,
            "precision": "fp32",
            "train_per_benchmark": 8,
            "valid_loss_per_benchmark": 0,
        },
        base=str(base),
        prepared=str(tmp_path / "prepared"),
        rationales=str(tmp_path / "rationales"),
        eval_per_benchmark=1,
        generate=False,
        mlflow=False,
    )
    seen: list[list[str]] = []
    real = CausalStudent.losses

    def spy(self, model, batch, *a, **kw):  # which questions ("item i)") each micro-batch holds
        if model.training:
            seen.append([re.search(r"item \d+\)", self.tok.decode(e.prefix_ids)).group(0) for e in batch])
        return real(self, model, batch, *a, **kw)

    monkeypatch.setattr(CausalStudent, "losses", spy)
    orders = {}
    for arm, seed in (("ft", 0), ("tinyllm", 0), ("ft", 1)):
        seen.clear()
        study.run_one(tmp_path, cfg_, arm, seed, tmp_path / "out")
        orders[arm, seed] = list(seen)
    assert len(orders["ft", 0]) == 4
    assert orders["ft", 0] == orders["tinyllm", 0]
    assert orders["ft", 0] != orders["ft", 1]  # the seed does change it: the spy sees the order
