"""The rationale caches exported as a Hub-ready dataset (tinyllm.rationale_export and
scripts/export_rationales.py) on a tiny cache made here: Parquet files that read back to the
cache's records, one config per teacher in the card's YAML header, settings and counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset

from tinyllm.benchmarks import DataError
from tinyllm.rationale_export import export_rationales

ROOT = Path(__file__).resolve().parents[1]


def record(rid, teacher, benchmark, split, status="ok", **kw) -> dict:
    prompt = {"teacher_forcing": True, "icl_ids": None, "hash": "h" + str(rid), "text": None}
    return {
        "id": rid,
        "benchmark": benchmark,
        "split": split,
        "teacher": teacher,
        "rationale": "" if status != "ok" else f"because {rid}",
        "status": status,
        "flags": [],
        "prompt": prompt,
        "source": "released:train_CoT_0.json",
        "teacher_answer": None,
        "answer_match": None,
        **kw,
    }


def make_cache(root: Path) -> Path:
    files = {
        ("flan_t5_xl", "arc", "train"): [
            record("a1", "flan_t5_xl", "arc", "train"),
            record("a2", "flan_t5_xl", "arc", "train", "empty"),
        ],
        ("flan_t5_xl", "piqa", "valid"): [record(7, "flan_t5_xl", "piqa", "valid")],  # PIQA ids are ints
        ("local_t", "arc", "train"): [
            record(
                "a1",
                "local_t",
                "arc",
                "train",
                prompt={"teacher_forcing": False, "icl_ids": ["x", 3], "hash": "p", "settings": "s1"},
                answer_match=True,
                flags=["truncated"],
            ),
        ],
    }
    for (t, b, s), recs in files.items():
        p = root / t / b / f"{s}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def test_export_writes_parquet_per_file_and_a_card_with_configs_settings_and_counts(tmp_path):
    # guards: rows lost or reshaped on the way to Parquet, a card whose YAML configs point at no
    # files (the Hub viewer shows nothing), settings or counts missing from the card
    cache = make_cache(tmp_path / "rationales")
    local = {"teacher_forcing": False, "icl": {"k": 0}, "model": "models/base", "max_new_tokens": 48}
    counts = export_rationales(cache, tmp_path / "out", {"flan_t5_xl": None, "local_t": local})
    assert counts["flan_t5_xl"]["arc"]["train"]["records"] == 2 and counts["flan_t5_xl"]["arc"]["train"]["empty"] == 1
    card = (tmp_path / "out" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    cfg = {c["config_name"]: c["data_files"] for c in header["configs"]}
    assert cfg["flan_t5_xl"] == [
        {"split": "train", "path": "flan_t5_xl/*/train.parquet"},
        {"split": "validation", "path": "flan_t5_xl/*/validation.parquet"},  # the Hub's split name
    ]
    ds = load_dataset("parquet", data_dir=str(tmp_path / "out"), data_files=cfg["local_t"][0]["path"], split="train")
    row = ds[0]
    assert row["id"] == "a1" and row["answer_match"] is True and row["flags"] == ["truncated"]
    assert (
        row["prompt_icl_ids"] == ["x", "3"]
        and row["prompt_settings"] == "s1"
        and row["prompt_teacher_forcing"] is False
    )
    piqa = load_dataset(
        "parquet", data_files=str(tmp_path / "out" / "flan_t5_xl" / "piqa" / "validation.parquet"), split="train"
    )
    assert piqa[0]["id"] == "7" and piqa.features == ds.features  # one schema in every file
    assert '"max_new_tokens": 48' in card and "Released with the TinyLLM paper" in card
    assert "| flan_t5_xl | arc | train | 2 | 1 | 1 | 0 | 0 |" in card


def test_export_names_the_file_and_record_of_a_bad_cache_line(tmp_path):
    # guards: a cache record without its status exported as a row of nulls
    cache = make_cache(tmp_path / "rationales")
    p = cache / "local_t" / "arc" / "train.jsonl"
    p.write_text(json.dumps({"id": "a1", "teacher": "local_t", "rationale": "r"}) + "\n")
    with pytest.raises(DataError, match=r"local_t/arc/train.jsonl: record 1: field 'status' is missing"):
        export_rationales(cache, tmp_path / "out", {"local_t": None})
    with pytest.raises(DataError, match="no rationale cache for teacher 'nobody'"):
        export_rationales(cache, tmp_path / "out", {"nobody": None})


def test_script_takes_settings_from_params_yaml(tmp_path, capsys):
    # guards: the command line exporting a local teacher without its settings from params.yaml
    sys.path.insert(0, str(ROOT / "scripts"))
    import export_rationales as cli

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    name = next(iter(params["teachers"]))
    cache = make_cache(tmp_path / "rationales")
    (cache / "local_t").rename(cache / name)
    assert cli.main(["--rationales", str(cache), "--out", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"### {name}" in card and f'"model": "{params["teachers"][name]["model"]}"' in card
    assert "flan_t5_xl: 3 records in 2 files" in capsys.readouterr().out


def test_the_exporter_deletes_only_what_it_wrote(tmp_path):
    # guards the probed fault: `--out .` in a clone erased the repository, .git included
    sys.path.insert(0, str(ROOT / "scripts"))
    import export_rationales as cli

    cache = make_cache(tmp_path / "rationales")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"--out .*repo: the folder has files the exporter did not write"):
        cli.main(["--rationales", str(cache), "--out", str(repo)])
    assert (repo / "keep.txt").read_text() == "mine" and (repo / ".git").is_dir()
    # a new folder, then the same export again with one teacher left out: nothing lingers
    out = tmp_path / "out"
    assert cli.main(["--rationales", str(cache), "--out", str(out)]) == 0
    assert (out / "local_t").is_dir()
    assert cli.main(["--rationales", str(cache), "--out", str(out), "--teachers", "flan_t5_xl"]) == 0
    assert not (out / "local_t").exists() and (out / "flan_t5_xl").is_dir()
    with pytest.raises(SystemExit, match="no rationale caches at .*nowhere; make them with `dvc repro"):
        cli.main(["--rationales", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")])


def test_export_rows_carry_their_question_and_a_benchmark_filter_keeps_the_rest_out(tmp_path):
    # guards the probed gaps: no question/choices/answer columns, no way to keep RiddleSense out
    # of a public upload, licences not named, an empty teacher folder crashing with a traceback
    cache = make_cache(tmp_path / "rationales")
    prep = tmp_path / "prepared" / "arc"
    prep.mkdir(parents=True)
    q = {"id": "a1", "benchmark": "arc", "split": "train", "question": "Why?", "choices": ["x", "y"], "answer": "y"}
    (prep / "train.jsonl").write_text(json.dumps({**q, "label": 1}) + "\n")
    out = tmp_path / "out"
    counts = export_rationales(cache, out, {"flan_t5_xl": None}, tmp_path / "prepared", benchmarks=["arc"])
    assert list(counts["flan_t5_xl"]) == ["arc"] and not (out / "flan_t5_xl" / "piqa").exists()
    rows = load_dataset("parquet", data_files=str(out / "flan_t5_xl" / "arc" / "train.parquet"), split="train")
    assert (rows[0]["question"], rows[0]["choices"], rows[0]["answer"]) == ("Why?", ["x", "y"], "y")
    assert rows[1]["id"] == "a2" and rows[1]["question"] is None  # not in data/prepared: null, not invented
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert header["license"] == "other" and "arc: cc-by-sa-4.0" in header["license_details"]
    (cache / "empty_t").mkdir()
    with pytest.raises(DataError, match=r"empty_t: no records; nothing to export"):
        export_rationales(cache, tmp_path / "o2", {"empty_t": None})
