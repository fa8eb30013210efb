"""Peer agreement: the project's cloze predictions against lm-evaluation-harness's on the same
questions.

``experiments/lm_eval_tasks/tinyllm_<benchmark>.yaml`` are lm-evaluation-harness task files over
this repo's prepared splits in the cloze format the student is scored in (``Question: q`` /
``Answer:`` + `` option``). ``compare`` runs both on one checkpoint and counts, per benchmark,
the questions where the harness's ``acc`` choice (highest summed log-likelihood) equals the
project's ``sum`` rule and its ``acc_norm`` choice (divided by the option's characters) equals
``norm``, with the largest log-likelihood difference seen. Inputs are not cut (the harness does
not cut short prompts), so the check runs on the benchmarks with short questions.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

TASKS_DIR = "experiments/lm_eval_tasks"


def harness_choices(model_dir: Path, benchmarks: list[str], limit: int | None, root: Path, batch_size: int = 16):
    """{benchmark: [per question (doc index, [summed log-likelihood of each option])]} from
    lm-evaluation-harness (fp32, CPU), in the split's file order."""
    import os

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    here = os.getcwd()
    os.chdir(root)  # the task files name data/prepared/... relative to the repo root
    try:
        out = simple_evaluate(
            model="hf",
            model_args=f"pretrained={Path(model_dir).resolve()},dtype=float32,device=cpu",
            tasks=[f"tinyllm_{b}" for b in benchmarks],
            task_manager=TaskManager(include_path=str(root / TASKS_DIR)),
            limit=limit,
            batch_size=batch_size,
            log_samples=True,
        )
    finally:
        os.chdir(here)
    result = {}
    for b in benchmarks:
        samples = sorted(out["samples"][f"tinyllm_{b}"], key=lambda s: s["doc_id"])
        result[b] = [(s["doc_id"], [float(r[0]) for r in s["filtered_resps"]]) for s in samples]
    return result


def compare(model_dir: Path, benchmarks: list[str], limit: int | None, root: Path, batch_size: int = 16) -> dict:
    """Per benchmark: n, agreement of ``sum`` with ``acc`` and of ``norm`` with ``acc_norm``, the
    largest absolute difference of an option's summed log-likelihood, and the ids that differ."""
    import torch

    from ..benchmarks import load_prepared
    from ..evaluate import argmax, evaluate_records
    from ..student import load_student

    theirs = harness_choices(model_dir, benchmarks, limit, root, batch_size)
    student = load_student(model_dir)
    student.set_format("cloze")
    student.model.eval()
    report = {}
    for b in benchmarks:
        records = load_prepared(root / "data" / "prepared", b, "valid")[: limit or None]
        with torch.no_grad():
            _, ours = evaluate_records(
                student,
                records,
                max_input_tokens=4096,
                max_new_tokens=None,
                batch_size=batch_size,
                device="cpu",
                progress=False,
                generate=False,
                pmi=False,
            )
        pairs = list(zip(records, ours, theirs[b], strict=True))
        same_acc = [p["pred_sum"] == argmax(lls) for _, p, (_, lls) in pairs]
        same_norm = [
            p["pred_norm"] == argmax([ll / len(c) for ll, c in zip(lls, r["choices"], strict=True)])
            for r, p, (_, lls) in pairs
        ]
        diff = max(abs(a - t) for _, p, (_, lls) in pairs for a, t in zip(p["totals"], lls, strict=True))
        report[b] = {
            "n": len(pairs),
            "agree_acc": sum(same_acc) / len(pairs),
            "agree_acc_norm": sum(same_norm) / len(pairs),
            "max_abs_loglik_diff": diff,
            "differ": [r["id"] for (r, _, _), a, n in zip(pairs, same_acc, same_norm, strict=True) if not (a and n)],
        }
        log.info("%s: n=%d, acc agreement %.4f, acc_norm agreement %.4f", b, len(pairs), *_agree(report[b]))
    return report


def _agree(r: dict) -> tuple[float, float]:
    return r["agree_acc"], r["agree_acc_norm"]
