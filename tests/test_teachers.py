"""Teacher prompts, in-context examples, the transformers backend and the resumable cache.

Runs on CPU with tiny random models built here (a trained-in-the-test BPE tokenizer + a 2-layer
Llama / 1-layer T5): outputs are gibberish, but padding, resume, compaction and kill-safety are
exactly what a real teacher goes through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from teachers_testlib import (
    ONE_TRY,
    TimedServer,
    api_cfg,
    build_tiny_causal,
    build_tiny_seq2seq,
    toy_questions,
    write_prepared,
    write_source_cache,
)

from tinyllm.io import read_jsonl
from tinyllm.rationales import load_cache
from tinyllm.teachers.backends import Backend, Generation, make_backend
from tinyllm.teachers.config import teacher_config
from tinyllm.teachers.generate import TooManyFailures, generate_split, summary_path
from tinyllm.teachers.icl import ExampleSelector, build_pool
from tinyllm.teachers.prompts import build_prompt, parse_answer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> Path:
    return build_tiny_causal(tmp_path_factory.mktemp("tiny_llama"))


def cfg_for(model: Path | str, **kw):
    base = {
        "backend": "transformers",
        "model": str(model),
        "precision": "fp32",
        "max_new_tokens": 6,
        "batch_size": 4,
        "icl": {"k": 0, "source": None},
    }
    base.update(kw)
    return teacher_config(kw.pop("name", "tiny"), base)


def strip_timing(records):
    return [{**r, "gen": {k: v for k, v in r["gen"].items() if k != "seconds"}} for r in records]


# ----------------------------------------------------------------- config


def test_config_rejects_unknown_keys_bad_ranges_and_backends():
    # guards against a typo in params.yaml silently falling back to a default
    with pytest.raises(ValueError, match="unknown key.*max_new_token"):
        teacher_config("t", {"backend": "transformers", "model": "m", "max_new_token": 5})
    with pytest.raises(ValueError, match="icl.*unknown key.*kk"):
        teacher_config("t", {"backend": "transformers", "model": "m", "icl": {"kk": 2}})
    with pytest.raises(ValueError, match="batch_size = 0"):
        teacher_config("t", {"backend": "transformers", "model": "m", "batch_size": 0})
    with pytest.raises(ValueError, match="known: transformers, llama_cpp, openai"):
        teacher_config("t", {"backend": "vllm", "model": "m"})
    with pytest.raises(ValueError, match="needs base_url"):
        teacher_config("t", {"backend": "openai", "model": "m"})
    with pytest.raises(ValueError, match="variable \\*name\\*"):
        teacher_config("t", {"backend": "openai", "model": "m", "base_url": "http://x", "api_key_env": "sk-123"})


def test_params_validation_knows_exactly_the_implemented_backends():
    # guards: config.BACKEND_NAMES (validation, kept free of torch imports) drifting from backends.BACKENDS:
    # a new backend rejected by params validation, or a removed one accepted and failing only mid-stage
    from tinyllm.teachers.backends import BACKENDS
    from tinyllm.teachers.config import BACKEND_NAMES

    assert sorted(BACKEND_NAMES) == sorted(BACKENDS)


# ----------------------------------------------------------------- prompts


def test_prompt_holds_gold_answer_iff_teacher_forcing():
    # the paper's teacher forcing: the teacher explains a known answer; the ablation must not leak it
    q = toy_questions(n=3)[2]  # label 2
    gold = f"(c) {q['answer']}"
    for fmt in ("plain", "chat"):
        on = build_prompt(q, [], teacher_forcing=True, fmt=fmt)
        off = build_prompt(q, [], teacher_forcing=False, fmt=fmt)
        assert f"Answer:\n{gold}\nRationale:\nLet's think step by step." in on.key_text().replace("\\n", "\n")
        assert f"Answer:\n{gold}" not in off.key_text().replace("\\n", "\n")
        assert off.key_text().replace("\\n", "\n").rstrip('"}]').endswith("Answer:\n")
        assert on.hash != off.hash
    plain = build_prompt(q, [], teacher_forcing=True, fmt="plain").text
    assert plain.startswith("Question:\n") and "Options:\n(a) " in plain and plain.endswith("step by step.")
    chat = build_prompt(q, [], teacher_forcing=True, fmt="chat")
    assert chat.messages[0]["role"] == "system" and "teacher" in chat.messages[0]["content"]


def test_icl_examples_render_before_the_question_and_change_the_hash():
    qs = toy_questions(n=4)
    ex = [(qs[1], "Because one."), (qs[2], "Because two.")]
    p = build_prompt(qs[0], ex, teacher_forcing=True, fmt="plain")
    assert p.icl_ids == [qs[1]["id"], qs[2]["id"]]
    assert p.text.index("Because one.") < p.text.index("Because two.") < p.text.index(qs[0]["question"])
    c = build_prompt(qs[0], ex, teacher_forcing=True, fmt="chat")
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert c.messages[2]["content"] == "Because one."
    assert p.hash != build_prompt(qs[0], ex[:1], teacher_forcing=True, fmt="plain").hash
    assert p.hash != build_prompt(qs[0], ex, teacher_forcing=True, fmt="plain", decoding={"max_new_tokens": 9}).hash


def test_parse_answer_reads_letters_and_option_text():
    # teacher forcing off: an unreadable answer must be None (counted), never a guess
    ch = ["yes", "no", "maybe"]
    assert parse_answer("(b) no, because ...", ch) == 1
    assert parse_answer("Answer: c. maybe so", ch) == 2
    assert parse_answer("Thus, the answer is (a).", ch) == 0
    assert parse_answer("I think maybe.", ch) == 2
    assert parse_answer("Something else entirely.", ch) is None
    assert parse_answer("(f) out of range", ch) is None


# ----------------------------------------------------------------- in-context examples


def test_icl_never_picks_the_question_and_random_is_seeded():
    train = toy_questions(n=10)
    pool = [(r, f"rationale {r['id']}") for r in train]
    sel = ExampleSelector(pool, k=3, strategy="random", seed=0, benchmark="obqa")
    for q in train:  # the question itself is in the pool: it must never be its own example
        ids = [e["id"] for e, _ in sel.select(q)]
        assert q["id"] not in ids and len(ids) == len(set(ids)) == 3
    again = ExampleSelector(list(pool), k=3, strategy="random", seed=0, benchmark="obqa")

    def chosen(selector):
        return [[e["id"] for e, _ in selector.select(q)] for q in train]

    assert chosen(sel) == chosen(again)
    other = ExampleSelector(pool, k=3, strategy="random", seed=1, benchmark="obqa")
    assert chosen(sel) != chosen(other)
    # a duplicate question under another id would leak the answer: excluded too
    dup = {**train[0], "id": "dup-0"}
    sel2 = ExampleSelector(pool + [(dup, "r")], k=9, strategy="random", seed=0)
    assert "dup-0" not in [e["id"] for e, _ in sel2.select(train[0])]


def test_icl_similar_picks_the_lexically_nearest():
    train = toy_questions(n=10)
    near = {
        **train[3],
        "id": "near",
        "question": "Which metal spoon conducts heat fastest in hot soup?",
        "choices": ["steel spoon", "wooden spoon", "plastic spoon", "glass"],
    }
    pool = [(r, "r") for r in train] + [(near, "Metal conducts heat.")]
    q = {**near, "id": "q", "question": "Why does a metal spoon get hot in soup? heat conducts"}
    sel = ExampleSelector(pool, k=2, strategy="similar")
    picks = [e["id"] for e, _ in sel.select(q)]
    assert picks[0] == "near"
    assert [e["id"] for e, _ in sel.select(near)][0] != "near"  # never itself


def test_icl_pool_uses_only_ok_source_rationales(tmp_path):
    train = toy_questions(n=6)
    write_source_cache(tmp_path, "flan_t5_xl", "obqa", train)
    path = tmp_path / "flan_t5_xl" / "obqa" / "train.jsonl"
    rows = read_jsonl(path)
    rows[0]["status"], rows[1]["rationale"] = "missing", "  "
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = build_pool(train, tmp_path, "flan_t5_xl", "obqa")
    assert [r["id"] for r, _ in pool] == [q["id"] for q in train[2:]]
    with pytest.raises(Exception, match="no 'ok' rationale"):
        build_pool(train, tmp_path, "llama2_7b", "obqa")


def test_in_context_examples_come_from_train_only(tmp_path):
    # guards: examples drawn from valid (the question's own split) were caught only by a missing
    # fixture file; here valid has rationales in the source cache too, so only the split rule stops it
    from tinyllm.teachers.generate import generate_teacher

    train_qs, valid_qs = toy_questions(split="train", n=8), toy_questions(split="valid", n=8)
    for split, qs in (("train", train_qs), ("valid", valid_qs)):
        write_prepared(tmp_path / "prepared", "obqa", split, qs)
        path = tmp_path / "rationales" / "flan_t5_xl" / "obqa" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "id": q["id"],
                "teacher": "flan_t5_xl",
                "rationale": f"Because {q['answer']}.",
                "status": "ok",
                "flags": [],
            }
            for q in qs
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TimedServer(lambda n: 200, b"{}") as srv:
        c = api_cfg(
            srv.url, ONE_TRY, icl={"k": 2, "source": "flan_t5_xl", "seed": 0}, splits=["train", "valid"], batch_size=4
        )
        generate_teacher(c, "obqa", tmp_path / "prepared", tmp_path / "rationales", progress=False)
    train_ids = {q["id"] for q in train_qs}
    for split in ("train", "valid"):
        recs = load_cache(tmp_path / "rationales", "api", "obqa", split)
        assert len(recs) == 8
        for r in recs:
            ids = r["prompt"]["icl_ids"]
            assert len(ids) == 2 and set(ids) <= train_ids and r["id"] not in ids, (split, r["id"], ids)


# ----------------------------------------------------------------- transformers backend


def test_transformers_batched_left_padding_matches_one_at_a_time(tiny_causal):
    # guards against right padding / a missing attention mask corrupting batched generation
    qs = toy_questions(n=5)
    cfg = cfg_for(tiny_causal, max_new_tokens=8)
    be = make_backend(cfg)
    assert be.resolve_format() == "chat"
    prompts = [
        build_prompt(q, [], teacher_forcing=True, fmt="chat", max_words=3 + 4 * i) for i, q in enumerate(qs)
    ]  # different lengths -> real padding
    batched = be.generate_batch(prompts)
    single = [be.generate_batch([p])[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.new_tokens > 0 and g.prompt_text.startswith("<|im_start|>system") for g in batched)


def test_transformers_seq2seq_plain_prompts(tiny_causal, tmp_path):
    model = build_tiny_seq2seq(tmp_path / "t5", tiny_causal)
    be = make_backend(cfg_for(model, max_new_tokens=5))
    assert be.resolve_format() == "plain"
    p = build_prompt(toy_questions(n=1)[0], [], teacher_forcing=True, fmt="plain")
    (g,) = be.generate_batch([p])
    assert g.error is None and 0 < g.new_tokens <= 5 and g.prompt_text == p.text


# ----------------------------------------------------------------- cache: resume, compaction, failures


def test_resume_skips_done_keys_and_regenerates_changed_prompts(tiny_causal, tmp_path):
    qs = toy_questions(n=10)
    cfg = cfg_for(tiny_causal, limit_per_benchmark=6)
    s1 = generate_split(cfg, "obqa", "train", qs, tmp_path, progress=False)
    first = load_cache(tmp_path, "tiny", "obqa", "train")
    assert s1["last_run"]["generated"] == 6 and [r["id"] for r in first] == [q["id"] for q in qs[:6]]
    # same settings: nothing regenerated, file unchanged
    s2 = generate_split(cfg, "obqa", "train", qs, tmp_path, progress=False)
    assert s2["last_run"]["generated"] == 0 and s2["last_run"]["skipped"] == 6
    assert load_cache(tmp_path, "tiny", "obqa", "train") == first
    # more questions: only the new ones
    s3 = generate_split(cfg_for(tiny_causal, limit_per_benchmark=8), "obqa", "train", qs, tmp_path, progress=False)
    assert s3["last_run"]["generated"] == 2
    # a changed prompt setting: every selected record regenerated, one record per id remains
    s4 = generate_split(
        cfg_for(tiny_causal, limit_per_benchmark=8, teacher_forcing=False),
        "obqa",
        "train",
        qs,
        tmp_path,
        progress=False,
    )
    assert s4["last_run"]["generated"] == 8
    final = load_cache(tmp_path, "tiny", "obqa", "train")
    assert [r["id"] for r in final] == [q["id"] for q in qs[:8]]
    assert all(r["prompt"]["teacher_forcing"] is False and r["answer_match"] is not None for r in final)
    summary = json.loads(summary_path(tmp_path, "tiny", "obqa", "train").read_text())
    assert summary["records"] == 8 and "answer_agreement" in summary
    # timings live in the returned summary (the stage's metrics file), never in the hashed cache folder
    assert s4["tokens_per_s"] > 0 and "tokens_per_s" not in summary and "last_run" not in summary


class FlakyBackend(Backend):
    """Fails the ids in ``bad``; counts what it was asked to generate."""

    name = "flaky"

    def __init__(self, cfg, bad=(), crash=False):
        super().__init__(cfg)
        self.bad, self.crash, self.asked = set(bad), crash, []

    def generate_batch(self, prompts):
        self.asked += [p.qid for p in prompts]
        if self.crash:
            raise MemoryError("simulated out of memory")
        return [
            Generation(error="boom")
            if p.qid in self.bad
            else Generation(text=f"Because {p.qid} is so.", new_tokens=4, seconds=0.01)
            for p in prompts
        ]


def test_failed_requests_become_records_and_too_many_fail_after_saving(tmp_path):
    qs = toy_questions(n=10)
    cfg = cfg_for("unused", batch_size=3, max_failed_fraction=0.2)
    with pytest.raises(TooManyFailures, match="3 failed") as e:
        generate_split(
            cfg,
            "obqa",
            "train",
            qs,
            tmp_path,
            backend=FlakyBackend(cfg, bad={"train-1", "train-4", "train-7"}),
            progress=False,
        )
    assert e.value.summaries["train"]["failed"] == 3
    recs = load_cache(tmp_path, "tiny", "obqa", "train")
    assert len(recs) == 10 and sum(r["status"] == "ok" for r in recs) == 7
    assert {r["error"] for r in recs if r["status"] == "failed"} == {"boom"}
    # a rerun retries exactly the failed ones
    be = FlakyBackend(cfg)
    generate_split(cfg, "obqa", "train", qs, tmp_path, backend=be, progress=False)
    assert sorted(be.asked) == ["train-1", "train-4", "train-7"]
    assert all(r["status"] == "ok" for r in load_cache(tmp_path, "tiny", "obqa", "train"))


def test_a_crashing_backend_stops_early_and_keeps_the_file_valid(tmp_path):
    qs = toy_questions(n=12)
    cfg = cfg_for("unused", batch_size=2)
    be = FlakyBackend(cfg, crash=True)
    with pytest.raises(TooManyFailures, match="MemoryError") as err:
        generate_split(cfg, "obqa", "train", qs, tmp_path, backend=be, progress=False)
    assert len(be.asked) == 4  # two dead batches, then it stopped instead of trying all 12
    summary = json.loads(summary_path(tmp_path, "tiny", "obqa", "train").read_text())
    assert summary["failed"] == 4 and summary["not_generated"] == 8
    assert err.value.summaries["train"]["last_run"]["stopped_early"]


class BatchSensitive(Backend):
    """A stand-in for batched bf16 decoding: each reply depends on which prompts share its batch."""

    name = "batch_sensitive"
    batch_invariant = False

    def generate_batch(self, prompts):
        mates = ",".join(sorted(p.qid for p in prompts))
        return [Generation(text=f"Because {p.qid} (batch {mates}).", new_tokens=5) for p in prompts]


def test_resume_writes_what_an_uninterrupted_run_wrote(tmp_path):
    # guards: a9a0842 re-batched the questions left after a crash, so a batch-dependent model
    # (bf16, padding) wrote other texts on resume than in one go (17 of 78 differed)
    qs = toy_questions(n=11)
    for i, q in enumerate(qs):
        q["question"] += " and more" * (i % 4)  # varied lengths: the layout is not question order
    cfg = cfg_for("unused", batch_size=3)
    generate_split(cfg, "obqa", "train", qs, tmp_path / "ref", backend=BatchSensitive(cfg), progress=False)
    ref_file = tmp_path / "ref" / "tiny" / "obqa" / "train.jsonl"
    want = {r["id"]: r["rationale"] for r in read_jsonl(ref_file)}
    crashed = tmp_path / "crashed" / "tiny" / "obqa" / "train.jsonl"
    crashed.parent.mkdir(parents=True)
    crashed.write_text("".join(line + "\n" for line in ref_file.read_text().splitlines()[:5]))  # 5 survived
    s = generate_split(cfg, "obqa", "train", qs, tmp_path / "crashed", backend=BatchSensitive(cfg), progress=False)
    got = {r["id"]: r["rationale"] for r in read_jsonl(crashed)}
    assert s["last_run"]["generated"] == 6 and got == want


def test_quality_filter_flags(tmp_path):
    qs = toy_questions(n=4)
    cfg = cfg_for("unused", filters=["empty", "truncated", "answer_mismatch", "non_english"])

    class Scripted(Backend):
        def generate_batch(self, prompts):
            texts = {
                "train-0": "",
                "train-1": "It is cut off mid",
                "train-2": "Thus, the answer is (a).",
                "train-3": "这是一个非常好的答案因为太阳很热。",
            }
            return [Generation(text=texts[p.qid], new_tokens=3) for p in prompts]

    generate_split(cfg, "obqa", "train", qs, tmp_path, backend=Scripted(cfg), progress=False)
    recs = {r["id"]: r for r in load_cache(tmp_path, "tiny", "obqa", "train")}
    assert recs["train-0"]["status"] == "empty" and "filtered:empty" in recs["train-0"]["flags"]
    assert "filtered:truncated" in recs["train-1"]["flags"] and recs["train-1"]["status"] == "ok"
    assert "filtered:answer_mismatch" in recs["train-2"]["flags"]  # gold of train-2 is (c)
    assert "filtered:non_english" in recs["train-3"]["flags"]
    summary = json.loads(summary_path(tmp_path, "tiny", "obqa", "train").read_text())
    assert summary["filtered"] == 4 and summary["filtered_empty"] == 1


# ----------------------------------------------------------------- kill -9 mid-run

CHILD = """
import sys, time
sys.path.insert(0, {src!r})
import tinyllm.teachers.backends as b
orig = b.TransformersBackend.generate_batch
def slow(self, prompts):
    out = orig(self, prompts)
    time.sleep({delay})  # room for the parent to kill between and inside batches
    return out
b.TransformersBackend.generate_batch = slow
sys.argv = ["generate_rationales.py"] + {args!r}
sys.path.insert(0, {stages!r})
import generate_rationales
sys.exit(generate_rationales.main())
"""


def _stage_workspace(root: Path, model: Path, n: int, precision: str = "fp32") -> None:
    qs = toy_questions(n=n)
    write_prepared(root / "data" / "prepared", "obqa", "train", qs)
    write_source_cache(root / "data" / "rationales", "flan_t5_xl", "obqa", qs)
    import yaml
    from conftest import shrunk_params

    tiny = {
        "backend": "transformers",
        "model": str(model),
        "precision": precision,
        "max_new_tokens": 6,
        "batch_size": 3,
        "icl": {"k": 2, "strategy": "random", "source": "flan_t5_xl"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump({**shrunk_params(["obqa"]), "teachers": {"tiny": tiny}}))


def _run_child(cwd: Path, delay: float) -> subprocess.Popen:
    script = CHILD.format(
        src=str(REPO / "src"),
        stages=str(REPO / "stages"),
        delay=delay,
        args=["--teacher", "tiny", "--benchmark", "obqa", "--no-progress", "--metrics", "metrics.json"],
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(tiny_causal, tmp_path):
    # guards against lost, duplicated, torn or *different* records after a crash (the kill test)
    n = 18
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for ws in (ref, killed):  # default precision: bf16 where the CPU has it, as the real teacher runs
        _stage_workspace(ws, tiny_causal, n, precision="auto")
    p = _run_child(ref, 0.0)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out

    cache = killed / "data" / "rationales" / "tiny" / "obqa" / "train.jsonl"
    p = _run_child(killed, 0.4)
    deadline = time.time() + 90
    while time.time() < deadline:  # wait until at least one batch is on disk, then kill -9
        if cache.exists() and cache.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    partial = cache.read_text()
    assert 3 <= partial.count("\n") < n, "the kill must land mid-run"
    with open(cache, "a") as f:  # and as if the kill had landed inside a write: a torn last line
        f.write('{"id": "train-99", "rationale": "half a rec')
    p = _run_child(killed, 0.0)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out

    lines = cache.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]  # every line parses: nothing torn
    assert len(ids) == len(set(ids)) == n
    got = strip_timing(read_jsonl(cache))
    want = strip_timing(read_jsonl(ref / "data" / "rationales" / "tiny" / "obqa" / "train.jsonl"))
    # the texts, not only the ids: a resumed run must write what an uninterrupted run wrote
    # (a9a0842 re-batched the remaining questions; bf16 padding then changed 17 of 78 texts)
    differ = [g["id"] for g, w in zip(got, want, strict=True) if g["rationale"] != w["rationale"]]
    assert not differ, f"{len(differ)} of {n} rationales differ after resume: {differ}"
    assert got == want
    assert all(len(r["prompt"]["icl_ids"]) == 2 and r["id"] not in r["prompt"]["icl_ids"] for r in got)
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["train"]["ok"] + metrics["train"]["empty"] == n and metrics["train"]["failed"] == 0


def test_stage_names_unknown_teachers_and_benchmarks(tmp_path, monkeypatch, tiny_causal):
    # a typo in dvc.yaml's matrix must fail with the known names, not a KeyError traceback
    sys.path.insert(0, str(REPO / "stages"))
    import generate_rationales

    _stage_workspace(tmp_path, tiny_causal, 3)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError, match="known: \\['tiny'\\]"):
        generate_rationales.main(["--teacher", "tinny", "--benchmark", "obqa"])
    with pytest.raises(KeyError, match="known: obqa"):
        generate_rationales.main(["--teacher", "tiny", "--benchmark", "obqqa"])


def _dir_md5(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_inputs_give_the_same_output_hash(tmp_path, monkeypatch, tiny_causal):
    # guards: a9a0842 stored timings (tokens/s, seconds per record, last run) inside the DVC output,
    # so every run gave a new md5 and re-ran distill/evaluate for nothing
    sys.path.insert(0, str(REPO / "stages"))
    import generate_rationales

    hashes = []
    for ws, runs in ((tmp_path / "a", 2), (tmp_path / "b", 1)):
        _stage_workspace(ws, tiny_causal, 5)
        monkeypatch.chdir(ws)
        for _ in range(runs):
            assert (
                generate_rationales.main(
                    ["--teacher", "tiny", "--benchmark", "obqa", "--no-progress", "--metrics", "metrics.json"]
                )
                == 0
            )
            hashes.append(_dir_md5(ws / "data" / "rationales" / "tiny"))
    assert hashes[0] == hashes[1] == hashes[2]  # rerun in place, and a fresh workspace
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["train"]["tokens_per_s"] > 0  # timings land in the (cache: false) metrics file


def test_a_cached_rerun_of_a_teacher_stage_keeps_its_measured_speed(tmp_path, monkeypatch):
    # fault 7: a re-run with every record cached overwrote metrics/teachers/*.json with
    # tokens_per_s: null (DVC had deleted the file; now it is persist: true and the stage keeps it)
    import yaml

    sys_path = str(REPO / "stages")
    monkeypatch.syspath_prepend(sys_path)
    import generate_rationales

    _stage_workspace(tmp_path, build_tiny_causal(tmp_path / "model"), 4)
    monkeypatch.chdir(tmp_path)
    args = ["--teacher", "tiny", "--benchmark", "obqa", "--no-progress", "--metrics", "metrics.json"]
    assert generate_rationales.main(args) == 0
    first = json.loads((tmp_path / "metrics.json").read_text())["train"]
    assert first["tokens_per_s"] > 0 and first["timed_run"]["generated"] == 4 and first["machine"]["torch"]
    assert generate_rationales.main(args) == 0  # every record cached
    again = json.loads((tmp_path / "metrics.json").read_text())["train"]
    assert again["last_run"]["generated"] == 0 and again["last_run"]["tokens_per_s"] is None
    assert again["tokens_per_s"] == first["tokens_per_s"] and again["timed_run"] == first["timed_run"]
    metrics = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["generate_rationales"]["metrics"]
    assert next(iter(metrics[0].values()))["persist"] is True  # DVC keeps the file for the re-run
