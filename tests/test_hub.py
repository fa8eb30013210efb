"""The Hugging Face Hub copies of the benchmarks (data.source: hf-hub): each Hub dataset's rows
mapped to the release's record format and split names, on small `datasets.Dataset` objects built
here with the Hub datasets' own field names (no network); the loader is called with the pinned
revision; the written files pass the release's own validation (load_benchmark)."""

from __future__ import annotations

import re

import pytest
from datasets import Dataset

from tinyllm import hub
from tinyllm.benchmarks import DataError, load_benchmark
from tinyllm.sources import fetch

SPLITS = ("train", "validation", "test")


def lettered(i: int, question_key: str, split: str = "", n: int = 4, key: str = "B", with_id: bool = True) -> dict:
    labels = ["A", "B", "C", "D", "E"][:n]
    row = {question_key: f"question {i}?", "choices": {"text": [f"opt {i}{x}" for x in labels], "label": labels}}
    row["answerKey"] = key
    return {"id": f"{split}q{i}", **row} if with_id else row  # ids unique across splits, as the Hub's


def hub_rows(benchmark: str) -> dict[str, Dataset]:
    """A few rows per Hub split, with the fields each Hub dataset has."""
    if benchmark == "obqa":
        return {s: Dataset.from_list([lettered(i, "question_stem", s) for i in range(3)]) for s in SPLITS}
    if benchmark == "arc":
        return {
            s: Dataset.from_list(
                [lettered(0, "question", s), lettered(1, "question", s, n=5), lettered(2, "question", s, key="D")]
            )
            for s in SPLITS
        }
    if benchmark == "riddle":
        rows = [lettered(i, "question", n=5, key="E", with_id=False) for i in range(3)]
        return {s: Dataset.from_list(rows) for s in ("train", "validation")}
    if benchmark == "piqa":
        rows = [{"goal": f"goal {i}", "sol1": f"a{i}", "sol2": f"b{i}", "label": i % 2} for i in range(3)]
        return {s: Dataset.from_list(rows) for s in ("train", "validation")}
    if benchmark == "pubmedqa":
        rows = [
            {
                "pubid": 1000 + i,
                "question": f"does {i} work?",
                "context": {"contexts": [f"passage {i}a", f"passage {i}b"], "labels": ["X", "Y"]},
                "final_decision": ["yes", "no", "maybe"][i % 3],
            }
            for i in range(700)
        ]
        return {"train": Dataset.from_list(rows)}
    raise AssertionError(benchmark)


def test_every_benchmark_with_a_hub_copy_is_pinned_to_a_full_commit():
    # guards: a branch name (main) as revision: the data would change under an unchanged dvc.lock
    for b, src in hub.HUB.items():
        if src is not None:
            assert re.fullmatch(r"[0-9a-f]{40}", src.revision), (b, src.revision)
    assert set(hub.HUB) == {"obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"}


@pytest.mark.parametrize("benchmark", ["obqa", "arc", "riddle", "piqa", "pubmedqa"])
def test_hub_rows_become_release_records_that_prepare_accepts(benchmark, tmp_path):
    # guards: a Hub field mapped to the wrong release field (question_stem vs question, answerKey
    # as a letter instead of the option text), or a release split name (valid) lost
    splits = hub.to_release(benchmark, hub_rows(benchmark))
    hub.write_release(tmp_path, benchmark, splits)
    loaded = load_benchmark(tmp_path, benchmark)  # the release's own validation of every record
    assert set(loaded) == set(hub.HUB[benchmark].splits)
    for records in loaded.values():
        for r in records:
            assert r["choices"][r["label"]] == r["answer"]


def test_field_by_field_mapping_on_known_rows():
    # guards: the mapping details a user would see in a question: answer = the option answerKey
    # names, ARC's 5-option item left out (the release keeps 4-option items), PIQA's label index,
    # PubMedQA's passages then question, and its 500/100/rest split of PQA-L
    obqa = hub.to_release("obqa", hub_rows("obqa"))
    assert obqa["valid"][0] == {
        "id": "validationq0",
        "question": "question 0?",
        "choices": ["opt 0A", "opt 0B", "opt 0C", "opt 0D"],
        "answer": "opt 0B",
    }
    arc = hub.to_release("arc", hub_rows("arc"))
    assert [r["id"] for r in arc["train"]] == ["trainq0", "trainq2"] and arc["train"][1]["answer"] == "opt 2D"
    riddle = hub.to_release("riddle", hub_rows("riddle"))
    assert [r["id"] for r in riddle["valid"]] == ["validation-0", "validation-1", "validation-2"] and riddle["valid"][
        0
    ]["answer"] == "opt 0E"
    piqa = hub.to_release("piqa", hub_rows("piqa"))
    assert piqa["train"][1] == {"id": 1, "question": "goal 1", "choices": ["a1", "b1"], "answer": "b1"}
    assert "test" not in piqa  # the official test has no labels
    pqa = hub.to_release("pubmedqa", hub_rows("pubmedqa"))
    assert [len(pqa[s]) for s in ("train", "valid", "test")] == [500, 100, 100]
    assert pqa["valid"][0]["id"] == "1500" and pqa["train"][4]["answer"] == "no"
    assert pqa["train"][0]["question"] == "passage 0a \n passage 0b \n does 0 work?"


def test_bad_hub_rows_name_dataset_split_row_and_field():
    # guards: a Hub revision whose schema differs failing deep in prepare with a KeyError
    rows = hub_rows("obqa")
    rows["validation"] = Dataset.from_list([lettered(0, "question")])  # `question`, not `question_stem`
    with pytest.raises(DataError, match=r"allenai/openbookqa@388097e split validation: row 0: field 'question_stem'"):
        hub.to_release("obqa", rows)
    bad = [{**lettered(0, "question_stem"), "answerKey": "Z"}]
    with pytest.raises(DataError, match=r"'answerKey' = 'Z' is not among the choice labels"):
        hub.to_release("obqa", {**hub_rows("obqa"), "train": Dataset.from_list(bad)})
    unlabeled = [{"goal": "g", "sol1": "a", "sol2": "b", "label": -1}]
    with pytest.raises(DataError, match=r"ybisk/piqa@142c512 split train: row 0: field 'label' = -1"):
        hub.to_release("piqa", {**hub_rows("piqa"), "train": Dataset.from_list(unlabeled)})
    with pytest.raises(DataError, match="bioasq: no public Hugging Face Hub copy"):
        hub.to_release("bioasq", {})


def test_fetch_hf_hub_loads_each_split_at_the_pinned_revision(tmp_path, monkeypatch):
    # guards: load_dataset called without the revision (the Hub's latest, unpinned) or with the
    # release's split names; the fetch stage's data/raw then holds the release layout
    import datasets

    calls = []

    def fake_load(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return hub_rows("arc")[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    found = fetch(hub.HUB_SOURCE, ["arc"], tmp_path / "raw")
    assert found == {"arc": ["train", "valid", "test"]}
    rev = hub.HUB["arc"].revision
    assert calls == [("allenai/ai2_arc", "ARC-Challenge", s, rev) for s in ("train", "validation", "test")]
    assert len(load_benchmark(tmp_path / "raw", "arc")["valid"]) == 2
