"""The released-rationale splitter on real released strings (incl. PIQA, which has no LLaMA
part), alignment to question ids, and counting of defects."""

import json

import pytest

from tinyllm.benchmarks import DataError, load_split
from tinyllm.rationales import import_released, split_released, summarize

# Two released strings, verbatim (test fixtures; the files themselves stay out of git).
OBQA = (
    "Sun is responsible for plants sprouting, blooming and wilting. Thus, the answer is (d) plants "
    "sprouting, blooming and wilting\n\nQ: The sun is responsible for\nAnswer Choices:\n(a) puppies "
    "learning new tricks\n(b) children growing up and getting old\n(c) flowers wilting in a vase\n(d) "
    "plants sprouting, blooming and wilting llama rationale: Let's think step by step.\nMount Rushmore "
    "is a very famous mountain.\nSo, the mountains seem very close.\n#\n# 17.\nQuestion:\nWh"
)
PIQA = (
    "Butter is a solid at room temperature. When boiling butter, when it's ready, you can pour it into "
    "a jar. Thus, the answer is (b) Pour it into a jar\n\nQ: When boiling butter, when it's ready, you "
    "can\nAnswer Choices:\n(a) Pour it onto a plate\n(b) Pour it into a jar"
)


def test_split_obqa_string_into_two_teachers():
    p = split_released(OBQA)
    assert p.flan == "Sun is responsible for plants sprouting, blooming and wilting."
    assert p.stated_answer.startswith("(d) plants sprouting")
    # "Let's think step by step." opener dropped; the run-on next exercise ("#\n# 17.") cut
    assert p.llama == "Mount Rushmore is a very famous mountain.\nSo, the mountains seem very close."
    assert "runon_cut" in p.flags["llama2_7b"] and "truncated" not in p.flags["llama2_7b"]


def test_split_piqa_string_has_no_llama_part():
    p = split_released(PIQA)
    assert p.llama is None
    assert p.flan.endswith("you can pour it into a jar.")


def test_truncated_and_non_english_are_flagged():
    s = (
        "Reason one. Thus, the answer is (a) x\n\nQ: q\nAnswer Choices:\n(a) x llama rationale: "
        "这是一个非常好的答案因为它很好"
    )
    p = split_released(s)
    assert "non_english" in p.flags["llama2_7b"] and "truncated" in p.flags["llama2_7b"]


def test_import_aligns_to_ids_and_counts(tmp_path):
    d = tmp_path / "datasets" / "piqa"
    (d / "llm").mkdir(parents=True)
    qs = [
        {
            "id": 0,
            "question": "When boiling butter, when it's ready, you can",
            "choices": ["Pour it onto a plate", "Pour it into a jar"],
            "answer": "Pour it into a jar",
        }
    ]
    (d / "piqa_train.json").write_text(json.dumps(qs))
    (d / "llm" / "train_CoT_0.json").write_text(json.dumps([PIQA]))
    recs = load_split(tmp_path, "piqa", "train")
    out = import_released(tmp_path, "piqa", "train", recs)
    assert out["flan_t5_xl"][0]["id"] == "train-0" and out["flan_t5_xl"][0]["status"] == "ok"
    assert out["llama2_7b"][0]["status"] == "missing"
    assert summarize(out["llama2_7b"])["missing"] == 1
    # one rationale too many: refuse rather than misalign every question after it
    (d / "llm" / "train_CoT_1.json").write_text(json.dumps([PIQA]))
    with pytest.raises(DataError, match="hold 2 rationales for 1 train questions"):
        import_released(tmp_path, "piqa", "train", recs)


def test_real_release_files_split_cleanly(mirror):
    # every released string of two benchmarks parses; FLAN parts never empty; PIQA has no LLaMA
    for b in ("arc", "piqa"):
        recs = load_split(mirror, b, "valid")
        out = import_released(mirror, b, "valid", recs)
        assert len(out["flan_t5_xl"]) == len(recs)
        assert all(r["status"] == "ok" for r in out["flan_t5_xl"])
        assert not any("answer_mismatch" in r["flags"] for r in out["flan_t5_xl"])
    assert all(r["status"] == "missing" for r in out["llama2_7b"])


def test_jsonl_reader_splits_on_newlines_only(tmp_path):
    # guards: str.splitlines() cutting a record at a U+2028 / U+0085 inside a rationale (released
    # LLaMA-2 text has them), which read as a torn line
    from tinyllm.io import read_jsonl, write_jsonl

    recs = [{"id": "a", "rationale": "line\u2028separator and \x85 next-line"}, {"id": "b", "rationale": "ok"}]
    write_jsonl(tmp_path / "c.jsonl", recs)
    assert read_jsonl(tmp_path / "c.jsonl") == recs
    (tmp_path / "torn.jsonl").write_text('{"id": "a"}\n{"id": "b", "ratio')
    assert read_jsonl(tmp_path / "torn.jsonl", tolerate_torn_tail=True) == [{"id": "a"}]


def test_import_stage_writes_only_the_splits_something_reads(tmp_path):
    # guards: a9a0842 imported the released test rationales too, which nothing uses (item 8)
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    for name in ("stages", "src"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["data"]["benchmarks"] = ["piqa"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    d = tmp_path / "data" / "raw" / "datasets" / "piqa"
    (d / "llm").mkdir(parents=True)
    q = {
        "question": "When boiling butter, when it's ready, you can",
        "choices": ["Pour it onto a plate", "Pour it into a jar"],
        "answer": "Pour it into a jar",
    }
    for split in ("train", "valid", "test"):
        (d / f"piqa_{split}.json").write_text(json.dumps([{**q, "id": 0}]))
        (d / "llm" / f"{split}_CoT_0.json").write_text(json.dumps([PIQA]))
    for stage in ("prepare", "import_rationales"):
        res = subprocess.run(
            [sys.executable, f"stages/{stage}.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr[-2000:]
    written = sorted(f.name for f in (tmp_path / "data" / "rationales" / "flan_t5_xl" / "piqa").iterdir())
    assert written == ["train.jsonl", "valid.jsonl"]
