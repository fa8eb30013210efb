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
