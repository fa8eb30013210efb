"""The training set holds only current rationales of the teachers in use (issue 12 items 2 and 5).

On a9a0842 distill read every record of every cache: records from older settings and limits
(measured: 24 of 32 used records came from an old setting), and it depended on every cache, so
regenerating an ablation teacher's cache re-ran the default distill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from teachers_testlib import toy_questions, write_prepared

from tinyllm.config import DistillConfig
from tinyllm.rationales import names_gold, quality_flags, starts_with_glitch
from tinyllm.teachers.config import teacher_config
from tinyllm.trainset import COUNTS, build_trainset, load_trainset, write_trainset

ROOT = Path(__file__).resolve().parents[1]


def local_cfg(**kw):
    base = {
        "backend": "transformers",
        "model": "models/base",
        "limit_per_benchmark": 8,
        "icl": {"k": 2, "source": "flan_t5_xl"},
    }
    return teacher_config("local", {**base, **kw})


def cache_rows(teacher, questions, settings, text="r", status="ok", flags=()):
    return [
        {
            "id": q["id"],
            "benchmark": q["benchmark"],
            "split": q["split"],
            "teacher": teacher,
            "rationale": f"{text} {q['id']}.",
            "status": status,
            "flags": list(flags),
            "prompt": {"hash": "h", "settings": settings},
        }
        for q in questions
    ]


def write_cache(root: Path, teacher: str, benchmark: str, rows: list[dict], split="train") -> None:
    path = root / teacher / benchmark / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _exclusive(counts: dict) -> dict:
    """The mutually exclusive counts (what happened to each question), without the flag counts."""
    return {k: counts[k] for k in COUNTS}


@pytest.fixture
def data(tmp_path):
    qs = toy_questions("obqa", "train", 40)
    write_prepared(tmp_path / "prepared", "obqa", "train", qs)
    return tmp_path, qs


def test_records_from_an_old_setting_or_limit_are_not_trained_on(data):
    # guards the measured failure: limit 8 now, 32 earlier under another setting; a9a0842 trained
    # on all 32 (24 of them stale)
    tmp, qs = data
    cfg = local_cfg()
    old = local_cfg(teacher_forcing=False, limit_per_benchmark=32)
    assert cfg.settings_hash() != old.settings_hash()
    rows = cache_rows("local", qs[:8], cfg.settings_hash(), "new") + cache_rows(
        "local", qs[8:32], old.settings_hash(), "old"
    )
    rows[3] = cache_rows("local", [qs[3]], old.settings_hash(), "old")[0]  # within the limit, old setting
    write_cache(tmp / "rat", "local", "obqa", rows)
    examples, counts = build_trainset(tmp / "prepared", tmp / "rat", ["obqa"], {"local": cfg}, 32)
    used = {e["record"]["id"]: e["rationales"]["local"] for e in examples if "local" in e["rationales"]}
    assert sorted(used) == sorted(q["id"] for q in qs[:8] if q is not qs[3])
    assert all(t.startswith("new") for t in used.values())
    assert _exclusive(counts["local"]["obqa"]) == {
        "used": 7,
        "missing": 0,
        "not_ok": 0,
        "dropped_flags": 0,
        "stale": 25,
        "out_of_limit": 0,
    }
    assert len(examples) == 32  # every question is still trained on its answer


def test_current_records_beyond_the_current_limit_are_out_of_limit(data):
    # guards: lowering limit_per_benchmark must not keep training on the records of the old limit
    tmp, qs = data
    cfg = local_cfg()
    write_cache(tmp / "rat", "local", "obqa", cache_rows("local", qs[:20], cfg.settings_hash()))
    _, counts = build_trainset(tmp / "prepared", tmp / "rat", ["obqa"], {"local": cfg}, 32)
    assert counts["local"]["obqa"]["used"] == 8 and counts["local"]["obqa"]["out_of_limit"] == 12
    assert counts["local"]["obqa"]["missing"] == 12


def test_released_cache_status_and_flags(data):
    # guards: only ok records without dropped flags are used; released caches have no settings
    tmp, qs = data
    rows = cache_rows("flan_t5_xl", qs[:4], None)
    rows[0]["status"] = "empty"
    rows[1]["flags"] = ["non_english"]
    rows[2]["flags"] = ["filtered:truncated"]
    write_cache(tmp / "rat", "flan_t5_xl", "obqa", rows)
    examples, counts = build_trainset(
        tmp / "prepared", tmp / "rat", ["obqa"], {"flan_t5_xl": None}, 4, ["non_english", "filtered"]
    )
    assert [bool(e["rationales"]) for e in examples] == [False, False, False, True]
    assert _exclusive(counts["flan_t5_xl"]["obqa"]) == {
        "used": 1,
        "missing": 0,
        "not_ok": 1,
        "dropped_flags": 2,
        "stale": 0,
        "out_of_limit": 0,
    }


def test_load_trainset_refuses_a_set_built_for_other_teachers(tmp_path):
    # guards: running distill by hand after changing alphas must not train on the old teacher set
    write_trainset(tmp_path, {"train": []}, {"teachers": ["flan_t5_xl"]})
    with pytest.raises(ValueError, match="run `dvc repro trainset`"):
        load_trainset(tmp_path, ["flan_t5_xl", "llama2_7b"])


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def stage_repo(tmp_path):
    """stages/ + src/ + params with two released teachers (alpha 1) and an ablation cache (alpha 0)."""
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["benchmarks"] = ["obqa"]
    p["teachers"]["smollm2_135m_noicl"] = {**p["teachers"]["smollm2_135m"], "icl": {"k": 0}}  # as grid row no_icl
    p["distill"]["alphas"] = {"flan_t5_xl": 1.0, "smollm2_135m_noicl": 0.0}
    p["distill"]["train_per_benchmark"] = 6
    p["distill"]["drop_flags"] = ["filtered"]
    p["distill"]["valid_loss_per_benchmark"] = 0  # (test_params checks the repo's params.yaml itself)
    known = {f.name for f in dataclasses.fields(DistillConfig)}
    p["distill"] = {k: v for k, v in p["distill"].items() if k in known}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    qs = toy_questions("obqa", "train", 10)
    write_prepared(tmp_path / "data" / "prepared", "obqa", "train", qs)
    rat = tmp_path / "data" / "rationales"
    write_cache(rat, "flan_t5_xl", "obqa", cache_rows("flan_t5_xl", qs, None))
    write_cache(rat, "smollm2_135m_noicl", "obqa", cache_rows("smollm2_135m_noicl", qs, "x"))
    return tmp_path


def _run_stage(repo: Path) -> None:
    res = subprocess.run([sys.executable, "stages/trainset.py"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


def test_stage_output_ignores_caches_of_unused_teachers(stage_repo):
    # guards: regenerating an alpha-0 ablation cache changed distill's inputs (a9a0842: distill
    # depended on all of data/rationales); now the trainset bytes, distill's only data dep, stay the same
    _run_stage(stage_repo)
    out = stage_repo / "data" / "trainset" / "train.jsonl"
    before = _md5(out)
    write_cache(
        stage_repo / "data" / "rationales",
        "smollm2_135m_noicl",
        "obqa",
        cache_rows("smollm2_135m_noicl", toy_questions("obqa", "train", 10), "y", "regenerated"),
    )
    _run_stage(stage_repo)
    assert _md5(out) == before
    metrics = json.loads((stage_repo / "metrics" / "trainset.json").read_text())
    assert metrics["totals"]["train"]["flan_t5_xl"]["used"] == 6
    assert "smollm2_135m_noicl" not in metrics["totals"]["train"]
    examples, cov = load_trainset(stage_repo / "data" / "trainset", ["flan_t5_xl"])
    assert len(examples) == 6 and cov["obqa"]["rationales_flan_t5_xl"] == 6


def test_distill_depends_on_the_trainset_not_on_caches():
    # guards: item 2, the DVC side: distill's data deps are the trainset, the base model and the
    # questions its checkpoints are scored on (distill.checkpoint_every), never a rationale cache
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["distill"]
    data_deps = [d for d in stage["deps"] if d.startswith(("data/", "models/"))]
    assert sorted(data_deps) == ["data/prepared", "data/trainset", "models/base"]
    assert "data/trainset" in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["trainset"]["outs"]


RIDDLE = {"question": "What has a neck but no head?", "choices": ["bottle", "shirt", "giraffe"], "answer": "bottle"}


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("A bottle has a neck and no head.", []),
        ("Bottles have necks, so the answer is clear.", []),  # plural of the gold counts
        ("The answer is (a). A neck without a head.", ["misses_gold", "cites_letter"]),  # letters never name it
        ("Option b is wrong; think of glass BOTTLE!", ["cites_letter"]),
        ("Unterscheidung is the key: a bottle.", ["glitch_start"]),
        ("Hinweis: Denken Sie nach. bottle", ["glitch_start"]),
        ("sierp = bottle", ["glitch_start"]),
        ("\u00d1\u0084\u00d0\u00b5 bottle", ["glitch_start"]),  # mojibake first word
        ("A bottleneck is narrow.", ["misses_gold"]),  # whole words only
        ("", ["misses_gold"]),
    ],
)
def test_quality_flags_of_crafted_rationales(text, flags):
    assert quality_flags(text, RIDDLE) == flags


def test_names_gold_normalises_case_punctuation_and_multiword_answers():
    assert names_gold("It is a Sex-Kitten, clearly.", "sex kitten")
    assert not names_gold("It is a sex toy.", "sex kitten")
    assert not names_gold("anything", "  ")
    assert not starts_with_glitch("Nobody knows.") and starts_with_glitch("kwietnik is")


def test_quality_flags_are_counted_and_selectable(data):
    # guards: each usable rationale's quality flags are counted per teacher and benchmark, and
    # drop_flags removes exactly the flagged ones (the answer task keeps every question)
    tmp, qs = data
    rows = cache_rows("flan_t5_xl", qs[:6], None)
    for i, r in enumerate(rows):  # even rows name their gold option, odd rows do not
        r["rationale"] = f"It must be {qs[i]['answer']}." if i % 2 == 0 else "No idea."
    rows[4]["rationale"] = "Hinweis: " + rows[4]["rationale"]
    rows[5]["status"] = "empty"  # not usable: not counted for its flags
    write_cache(tmp / "rat", "flan_t5_xl", "obqa", rows)
    kept, counts = build_trainset(tmp / "prepared", tmp / "rat", ["obqa"], {"flan_t5_xl": None}, 6, [])
    c = counts["flan_t5_xl"]["obqa"]
    assert (c["flag_misses_gold"], c["flag_glitch_start"], c["flag_cites_letter"], c["used"]) == (2, 1, 0, 5)
    examples, counts = build_trainset(
        tmp / "prepared", tmp / "rat", ["obqa"], {"flan_t5_xl": None}, 6, ["misses_gold", "glitch_start"]
    )
    assert [bool(e["rationales"]) for e in examples] == [True, False, True, False, False, False]
    assert counts["flan_t5_xl"]["obqa"]["dropped_flags"] == 3
    assert [e["record"] for e in examples] == [e["record"] for e in kept]


def test_an_unknown_drop_flag_is_refused_naming_the_key(data):
    tmp, qs = data
    write_cache(tmp / "rat", "flan_t5_xl", "obqa", cache_rows("flan_t5_xl", qs[:2], None))
    with pytest.raises(ValueError, match=r"distill.drop_flags: unknown flag\(s\) \['misses_answer'\]"):
        build_trainset(tmp / "prepared", tmp / "rat", ["obqa"], {"flan_t5_xl": None}, 2, ["misses_answer"])
