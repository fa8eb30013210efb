"""Loading and validating the benchmarks: every bad record gives an error naming file, record
and field; both JSON array and JSON Lines parse; a missing split is skipped, never invented."""

import json

import pytest

from tinyllm.benchmarks import DataError, load_benchmark, load_split

GOOD = {"id": "a1", "question": "Q?", "choices": ["x", "y"], "answer": "y"}


def write_split(root, bench, split, rows, jsonl=False):
    d = root / "datasets" / bench
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{bench}_{split}.json"
    p.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))
    return p


@pytest.mark.parametrize(
    "bad, field",
    [
        ({**GOOD, "answer": "z"}, "'answer'"),  # gold not among the options
        ({**GOOD, "choices": []}, "'choices'"),  # no options
        ({**GOOD, "choices": ["x", ""], "answer": "x"}, "'choices'[1]"),  # empty option
        ({k: v for k, v in GOOD.items() if k != "question"}, "'question'"),  # missing field
        ({**GOOD, "choices": "x,y"}, "'choices'"),  # wrong type
        ({**GOOD, "question": "  "}, "'question'"),  # empty question
        ({**GOOD, "choices": ["y", "y"], "answer": "y"}, "'answer'"),  # ambiguous gold
    ],
)
def test_bad_record_error_names_file_record_and_field(tmp_path, bad, field):
    # guards against silently dropping or mislabeling a question
    p = write_split(tmp_path, "arc", "train", [GOOD | {"id": "ok0"}, bad])
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "arc", "train")
    msg = str(e.value)
    assert str(p) in msg and "record 1" in msg and field in msg
    if "id" in bad:
        assert repr(bad["id"]) in msg


def test_duplicate_id_within_and_across_splits(tmp_path):
    write_split(tmp_path, "arc", "train", [GOOD, GOOD])
    with pytest.raises(DataError, match=r"record 1 \(id 'a1'\): field 'id' repeats record 0"):
        load_split(tmp_path, "arc", "train")
    write_split(tmp_path, "arc", "train", [GOOD])
    write_split(tmp_path, "arc", "valid", [GOOD])
    with pytest.raises(DataError, match=r"arc_valid.json: record id 'a1': field 'id' also appears in the train"):
        load_benchmark(tmp_path, "arc")


def test_torn_json_lines_names_line(tmp_path):
    p = write_split(tmp_path, "obqa", "train", [GOOD], jsonl=True)
    p.write_text(p.read_text() + '\n{"id": "b", "quest')
    with pytest.raises(DataError, match=r"obqa_train.json:2: not valid JSON Lines"):
        load_split(tmp_path, "obqa", "train")


def test_array_and_jsonl_give_same_records_and_missing_split_is_skipped(tmp_path):
    rows = [GOOD, {**GOOD, "id": "a2", "answer": "x"}]
    write_split(tmp_path, "arc", "train", rows)
    write_split(tmp_path / "l", "arc", "train", rows, jsonl=True)
    a, b = load_benchmark(tmp_path, "arc"), load_benchmark(tmp_path / "l", "arc")
    assert a == b and set(a) == {"train"}  # no valid/test invented
    assert [r["label"] for r in a["train"]] == [1, 0]


def test_piqa_split_local_ids_are_namespaced(tmp_path):
    # the release numbers PIQA questions 0..n-1 in every split; ids must stay unique
    write_split(tmp_path, "piqa", "train", [{**GOOD, "id": 0}])
    write_split(tmp_path, "piqa", "valid", [{**GOOD, "id": 0}])
    data = load_benchmark(tmp_path, "piqa")
    assert data["train"][0]["id"] == "train-0" and data["valid"][0]["id"] == "valid-0"


def test_real_mirror_loads_with_paper_split_sizes(mirror):
    sizes = {"arc": (1117, 295), "pubmedqa": (500, 100), "obqa": (4957, 500)}
    for b, (n_train, n_valid) in sizes.items():
        data = load_benchmark(mirror, b)
        assert "test" not in data  # the mirror withholds test
        assert (len(data["train"]), len(data["valid"])) == (n_train, n_valid)
        r = data["valid"][0]
        assert r["choices"][r["label"]] == r["answer"]


# ----------------------------------------------------------------- issue 12 item 10


def test_non_utf8_byte_names_file_and_offset(tmp_path):
    # guards: a9a0842 raised a bare UnicodeDecodeError naming neither file nor position
    p = write_split(tmp_path, "obqa", "train", [GOOD])
    data = p.read_bytes()
    at = data.index(b"Q?")
    p.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    with pytest.raises(DataError, match=rf"obqa_train\.json: byte offset {at} \(line 1\): not UTF-8"):
        load_split(tmp_path, "obqa", "train")


def test_empty_split_fails_in_prepare(tmp_path):
    # guards: `[]` gave a 0-record split that failed only later, in evaluate
    write_split(tmp_path, "obqa", "train", [])
    with pytest.raises(DataError, match=r"obqa_train\.json: holds no records"):
        load_split(tmp_path, "obqa", "train")


def test_whitespace_is_stripped_before_the_answer_checks(tmp_path):
    # guards: checks ran before stripping: "y " was not found among ["x", "y"], and ["y ", "y"]
    # (the same option twice once stripped) passed as an unambiguous gold
    write_split(tmp_path, "obqa", "train", [{**GOOD, "answer": "y "}])
    rec = load_split(tmp_path, "obqa", "train")[0]
    assert rec["answer"] == "y" and rec["label"] == 1
    write_split(tmp_path, "obqa", "train", [{**GOOD, "choices": ["y ", "y"], "answer": "y"}])
    with pytest.raises(DataError, match="appears more than once"):
        load_split(tmp_path, "obqa", "train")


def test_prepare_swaps_atomically_on_failure(tmp_path):
    # guards: a9a0842 wrote benchmarks one at a time, so a bad record in the second left
    # data/prepared with the first one new and the rest old
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    for name in ("stages", "src"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["data"]["benchmarks"] = ["obqa", "arc"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    raw = tmp_path / "data" / "raw"
    write_split(raw, "obqa", "train", [{**GOOD, "question": "New question?"}])
    write_split(raw, "arc", "train", [{**GOOD, "answer": "not an option"}])
    old = tmp_path / "data" / "prepared" / "obqa" / "train.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text('{"old": true}\n')
    res = subprocess.run(
        [sys.executable, "stages/prepare.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0 and "arc_train.json: record 0" in res.stderr
    assert old.read_text() == '{"old": true}\n'  # untouched: nothing of the failed run was swapped in
    assert sorted(q.name for q in (tmp_path / "data").iterdir()) == ["prepared", "raw"]  # no temp folder left
    write_split(raw, "arc", "train", [GOOD])
    res = subprocess.run(
        [sys.executable, "stages/prepare.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "New question?" in old.read_text() and (tmp_path / "data" / "prepared" / "arc" / "train.jsonl").exists()
