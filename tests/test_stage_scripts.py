"""The trainset, distill and evaluate stage scripts run to completion on a tiny random student
and a few records (in this process, ``runpy`` as ``python stages/<name>.py <dvc.yaml args>``),
with every file they open recorded by an audit hook:

- distill trains on the train questions of the trainset and nothing else (valid questions only
  feed the validation-loss curve), evaluate scores exactly the valid questions;
- every data or model path a stage reads is a declared dep (or out) of that stage in dvc.yaml,
  and every path it writes is a declared out, metric or plot: deleting ``data/prepared`` from
  evaluate's deps fails here (tests/test_dvc_graph.py checks the code deps).
"""

from __future__ import annotations

import json
import runpy
import shlex
import sys
from pathlib import Path

import _stage
import pytest
import yaml
from conftest import shrunk_params, tiny_causal
from teachers_testlib import toy_questions

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["trainset", "distill", "evaluate"]
# Reads that only feed MLflow logging (not the stage's outputs), allowed without a dep: making
# them deps would re-run evaluate on every distill re-run (timings change even when the model does not).
MLFLOW_ONLY_READS = {
    "evaluate": ["metrics/train.json", "metrics/train_log.tsv", "metrics/rationales_released.json", "metrics/teachers"],
}
TRACKED = ("data/", "models/", "metrics/", "eval/")  # what a stage may only touch through dvc.yaml

_AUDIT: dict = {"on": False, "reads": set(), "writes": set()}


def _audit(event, args):
    if not _AUDIT["on"]:
        return
    if event == "open" and args and isinstance(args[0], (str, Path)):
        path, mode = args[0], args[1] if len(args) > 1 else "r"
        if mode is None and len(args) > 2:  # os.open: (path, None, flags)
            import os

            write = bool(args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        else:
            write = isinstance(mode, str) and any(c in mode for c in "wax+")
        _AUDIT["writes" if write else "reads"].add(str(path))
    elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, Path)):
        _AUDIT["reads"].add(str(args[0]))
    elif event in ("os.rename", "os.replace") and len(args) > 1:
        _AUDIT["writes"].add(str(args[1]))


sys.addaudithook(_audit)  # cannot be removed: it does nothing while _AUDIT["on"] is False


def _records(split, n):
    return [{**q, "benchmark": "obqa"} for q in toy_questions("obqa", split, n)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_tokenizer):
    return make_workspace(tmp_path_factory.mktemp("stages"), tiny_tokenizer)


def make_workspace(root: Path, tiny_tokenizer, steps: int = 2) -> Path:
    """A repo layout with params.yaml shrunk to one benchmark, a tiny random base student, six
    train and four valid questions and a released-style rationale cache for both splits."""
    root.mkdir(parents=True, exist_ok=True)
    p = shrunk_params(  # train_per_benchmark 4: the first 4 of 6 train questions
        ["obqa"],
        steps=steps,
        distill=dict(
            alphas={"flan_t5_xl": 1.0},
            grad_accum=1,
            valid_loss_per_benchmark=2,
            log_every=1,
            precision="fp32",
            gradient_checkpointing=False,
            checkpoint_every=1,  # step 1 of 2 scored on valid's dev half (distill reads data/prepared)
        ),
        evaluate=dict(splits=["valid", "test"], generate_per_benchmark=2, precision="fp32"),
    )
    p.setdefault("tracking", {})
    p["tracking"]["log_model"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    base = root / "models" / "base"
    tiny_causal(tiny_tokenizer).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    for split, n in (("train", 6), ("valid", 4)):
        recs = _records(split, n)
        d = root / "data" / "prepared" / "obqa"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        c = root / "data" / "rationales" / "flan_t5_xl" / "obqa"
        c.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "id": r["id"],
                "teacher": "flan_t5_xl",
                "rationale": f"Because {r['answer']}.",
                "status": "ok",
                "flags": [],
            }
            for r in recs
        ]
        (c / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return root


def _run_stage(root: Path, name: str, monkeypatch, extra=()) -> tuple[set, set]:
    """Run ``name``'s dvc.yaml command in this process; return the (reads, writes) under ``root``."""
    cmd = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]["cmd"])
    assert cmd[0] == "python" and cmd[1] == f"stages/{name}.py", cmd
    monkeypatch.setattr(_stage, "ROOT", root)
    monkeypatch.setattr(sys, "argv", [str(ROOT / cmd[1]), *cmd[2:], *extra])
    monkeypatch.chdir(root)
    _AUDIT.update(on=True, reads=set(), writes=set())
    try:
        runpy.run_path(str(ROOT / cmd[1]), run_name="__main__")
    finally:
        _AUDIT["on"] = False

    def rel(paths):
        out = set()
        for p in paths:
            if any(part.startswith(".") and ".tmp" in part for part in Path(p).parts):
                continue  # an atomic write's temporary file or folder: its rename target is recorded
            full = (root / p).resolve() if not Path(p).is_absolute() else Path(p).resolve()
            if full.is_relative_to(root.resolve()):
                out.add(full.relative_to(root.resolve()).as_posix())
        return out

    return rel(_AUDIT["reads"]), rel(_AUDIT["writes"])


def _declared(name: str) -> tuple[list[str], list[str]]:
    """(deps, outs + metrics + plots) of a stage in dvc.yaml."""
    st = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]

    def paths(entries):
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]

    return paths(st.get("deps")), paths(st.get("outs")) + paths(st.get("metrics")) + paths(st.get("plots"))


def _covered(path: str, declared: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


@pytest.fixture(scope="module")
def ran(workspace, tiny_tokenizer):
    """Run the three stages once (module scope), spying on what distill trains on."""
    mp = pytest.MonkeyPatch()
    import tinyllm.distill

    trained: dict = {}
    real = tinyllm.distill.train

    def spy(student, examples, cfg, **kw):
        trained["train"] = [ex["record"]["id"] for ex in examples]
        trained["valid"] = [ex["record"]["id"] for ex in kw.get("valid_examples") or []]
        return real(student, examples, cfg, **kw)

    mp.setattr(tinyllm.distill, "train", spy)
    io = {}
    try:
        for name in STAGES:
            extra = ["--no-mlflow"] if name in ("distill", "evaluate") else []
            io[name] = _run_stage(workspace, name, mp, extra)
    finally:
        mp.undo()
    return workspace, io, trained


def test_distill_trains_on_the_train_questions_only(ran):
    root, _, trained = ran
    assert trained["train"] == ["train-0", "train-1", "train-2", "train-3"]  # train_per_benchmark = 4 of 6
    assert trained["valid"] == ["valid-0", "valid-1"]  # the validation-loss questions, never trained on
    assert (root / "models" / "student" / "tinyllm.json").exists()
    train = json.loads((root / "metrics" / "train.json").read_text())["train"]
    assert train["steps"] == 2 and train["examples"] == 4


def test_distill_scores_its_checkpoints_on_the_dev_half_with_dvc_repro_s_own_command(ran):
    # guards: distill.checkpoint_every ignored by the stage, a checkpoint on report questions or
    # at the last step, the memory curve missing (issue #31 item 1: an option dvc repro can use)
    from tinyllm.benchmarks import valid_half
    from tinyllm.evaluation import read_predictions

    root, _, _ = ran
    ck = root / "metrics" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["memory.json", "step1"]
    preds = read_predictions(ck / "step1" / "predictions" / "valid" / "obqa.jsonl")
    valid = [json.loads(x) for x in (root / "data" / "prepared" / "obqa" / "valid.jsonl").read_text().splitlines()]
    dev = [r["id"] for r in valid if valid_half(r) == "dev"]
    assert dev and [p["id"] for p in preds] == dev and {p["half"] for p in preds} == {"dev"}
    step = json.loads((ck / "step1" / "metrics.json").read_text())
    assert step["step"] == 1 and set(step["valid"]) == {"obqa", "average"}
    assert {f"acc_{r}" for r in ("norm", "sum", "pmi", "score")} <= set(step["valid"]["obqa"])
    assert [r["step"] for r in json.loads((ck / "memory.json").read_text())] == [1, 2]


def test_evaluate_scores_exactly_the_valid_questions(ran):
    root, _, _ = ran
    preds = [json.loads(x) for x in (root / "eval" / "predictions" / "valid" / "obqa.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["valid-0", "valid-1", "valid-2"]  # max_per_benchmark = 3
    assert not (root / "eval" / "predictions" / "test").exists()  # no test split in the data: none invented
    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    assert metrics["valid"]["obqa"]["n"] == 3


def test_evaluate_writes_the_headline_file_from_the_same_numbers(ran):
    root, _, _ = ran
    full = json.loads((root / "metrics" / "eval.json").read_text())["valid"]
    head = json.loads((root / "metrics" / "headline.json").read_text())
    cfg = yaml.safe_load((root / "params.yaml").read_text())
    assert head["rule"] == cfg["evaluate"]["headline"] and head["format"] == cfg["distill"]["answer_format"]
    # `dvc metrics show` sorts columns by the flattened key: the average leads, numbers only (diffable)
    flat = sorted(f"{k}.{s}" for k, v in head.items() if isinstance(v, dict) for s in v)
    assert flat[0] == "average.valid", flat
    for b, m in full.items():
        row = head["average"]["valid"] if b == "average" else head["valid"][b]
        assert row["acc"] == round(100 * m["accuracy"], 1) and row["n"] == m["n"]
        assert (row["ci_low"], row["ci_high"]) == (round(100 * m["ci_low"], 1), round(100 * m["ci_high"], 1))
        assert all(isinstance(v, int | float) for v in row.values())
    assert head["average"]["valid"]["majority"] == round(100 * full["average"]["majority"], 1)


@pytest.mark.parametrize("name", STAGES)
def test_every_path_a_stage_opens_is_declared_in_dvc_yaml(ran, name):
    root, io, _ = ran
    reads, writes = io[name]
    deps, outs = _declared(name)
    allowed = MLFLOW_ONLY_READS.get(name, [])
    tracked = lambda p: p.startswith(TRACKED)  # noqa: E731
    undeclared_reads = sorted(
        p for p in reads if tracked(p) and not _covered(p, deps + outs) and not _covered(p, allowed)
    )
    undeclared_writes = sorted(p for p in writes if tracked(p) and not _covered(p, outs))
    assert not undeclared_reads, f"dvc.yaml stage {name}: reads {undeclared_reads} without declaring a dep"
    assert not undeclared_writes, f"dvc.yaml stage {name}: writes {undeclared_writes} without declaring an out"
    assert any(_covered(p, deps) for p in reads if p.startswith("data/")) or name == "distill"
