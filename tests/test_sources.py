"""Where data comes from: a local release folder and a downloaded release tarball (the GitHub
path, exercised offline through a file:// URL) give the same data/raw layout."""

import json
import tarfile

import pytest

from tinyllm.benchmarks import DataError
from tinyllm.sources import fetch, resolve_url


def make_release(root):
    d = root / "datasets" / "arc"
    (d / "llm").mkdir(parents=True)
    (d / "arc_train.json").write_text(json.dumps([{"id": "a", "question": "q", "choices": ["x", "y"], "answer": "x"}]))
    (d / "arc_test.json").write_text(json.dumps([{"id": "t", "question": "q", "choices": ["x", "y"], "answer": "y"}]))
    (d / "llm" / "train_CoT_0.json").write_text(json.dumps(["r. Thus, the answer is (a) x"]))
    return root


def test_github_source_resolves_to_pinned_tarball():
    assert (
        resolve_url("github:YikunHan42/TinyLLM@9f5bebe")
        == "https://codeload.github.com/YikunHan42/TinyLLM/tar.gz/9f5bebe"
    )
    assert resolve_url("../shared/benchmarks/tinyllm-release") is None


def test_local_and_tarball_sources_give_same_files(tmp_path):
    rel = make_release(tmp_path / "TinyLLM-9f5bebe")
    found = fetch(str(rel), ["arc"], tmp_path / "raw_local")
    assert found == {"arc": ["train", "test"]}  # no valid in this source: not invented
    tar = tmp_path / "release.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(rel, arcname="TinyLLM-9f5bebe")
    fetch(tar.as_uri(), ["arc"], tmp_path / "raw_tar")
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(tmp_path / "raw_local") == files(tmp_path / "raw_tar")
    assert "datasets/arc/llm/train_CoT_0.json" in files(tmp_path / "raw_tar")


def test_missing_benchmark_names_the_file(tmp_path):
    rel = make_release(tmp_path / "rel")
    with pytest.raises(DataError, match=r"datasets/obqa/obqa_train.json: missing"):
        fetch(str(rel), ["obqa"], tmp_path / "raw")
