"""Peer agreement: the project's cloze rules choose what lm-evaluation-harness's acc / acc_norm
choose, on a tiny random student and a few questions (the real check: scripts/check_lm_eval.py)."""

import json
import shutil

import pytest
from conftest import ROOT, records, tiny_causal

pytest.importorskip("lm_eval")


@pytest.mark.slow  # ~2 min: importing and running the harness
def test_cloze_rules_agree_with_lm_evaluation_harness(tiny_tokenizer, tmp_path):
    from tinyllm.experiments.harness import TASKS_DIR, compare

    model = tmp_path / "model"
    tiny_causal(tiny_tokenizer, seed=11).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    d = tmp_path / "data" / "prepared" / "obqa"
    d.mkdir(parents=True)
    recs = records("valid") * 2
    recs = [{**r, "id": f"{r['id']}-{i}"} for i, r in enumerate(recs)]
    (d / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    shutil.copytree(ROOT / TASKS_DIR, tmp_path / TASKS_DIR)
    report = compare(model, ["obqa"], None, tmp_path, batch_size=4)["obqa"]
    assert report["n"] == len(recs)
    assert report["agree_acc"] == 1.0 and report["agree_acc_norm"] == 1.0 and report["differ"] == []
    assert report["max_abs_loglik_diff"] < 1e-3  # the same log-likelihoods, not only the same choices
