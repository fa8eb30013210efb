"""Resumable training (``train_state``): a run killed after a save and started again ends with
the same weights, log and step count as a run never interrupted."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_causal, tiny_seq2seq
from test_train import cfg, examples

from tinyllm.distill import train
from tinyllm.student import CausalStudent, Seq2SeqStudent
from tinyllm.train_state import find_state


class Killed(Exception):
    pass


def tied_causal(tok, seed=0):
    model = tiny_causal(tok, seed)
    model.config.tie_word_embeddings = True  # like SmolLM2: one tensor saved under two names
    model.tie_weights()
    return model


# T5 keeps dropout on in training (p = 0.1): its masks come from the torch RNG the save restores
KINDS = [(tied_causal, CausalStudent), (tiny_seq2seq, Seq2SeqStudent)]


def weights(s):
    return torch.cat([p.detach().flatten() for p in s.model.parameters()])


def run(tok, make, cls, tmp_path, name, kill_at=None, log=None, **kw):
    s = cls(make(tok, seed=0), tok)
    rows, steps = [], []

    def on_step(step):
        steps.append(step)
        if step == kill_at:
            raise Killed

    torch.manual_seed(0)
    train(
        s,
        examples(),
        cfg(steps=7, batch_size=2, lr=1e-3, **kw),
        log_path=tmp_path / f"{name}.tsv",
        progress=False,
        on_log=rows.append,
        on_step=on_step,
        state_dir=log,
        state_every=3,
    )
    return s, rows, steps


@pytest.mark.parametrize("make, cls", KINDS)
def test_a_killed_run_resumes_to_the_same_weights(tiny_tokenizer, make, cls, tmp_path):
    # guards: the batch stream restarted at batch 0, the AdamW moments or the LR schedule not
    # restored, the dropout RNG not restored, the log losing the steps before the kill
    whole, whole_rows, _ = run(tiny_tokenizer, make, cls, tmp_path, "whole")
    state = tmp_path / "state"
    with pytest.raises(Killed):
        run(tiny_tokenizer, make, cls, tmp_path, "killed", kill_at=5, log=state)
    assert json.loads((find_state(state) / "resume.json").read_text())["step"] == 3  # saves at 3, 6, 7
    resumed, rows, steps = run(tiny_tokenizer, make, cls, tmp_path, "resumed", log=state)
    assert steps == [4, 5, 6, 7]  # on_step only for the steps this call trained
    assert torch.equal(weights(resumed), weights(whole))
    assert [r["loss"] for r in rows] == [r["loss"] for r in whole_rows]  # steps 1-3 replayed
    assert (tmp_path / "resumed.tsv").read_text().count("\n") == 8  # header + all 7 steps
    again, _, steps = run(tiny_tokenizer, make, cls, tmp_path, "again", log=state)  # saved after the last step
    assert steps == [] and torch.equal(weights(again), weights(whole))


def test_an_interrupted_save_leaves_the_previous_one(tiny_tokenizer, tmp_path):
    state = tmp_path / "state"
    with pytest.raises(Killed):
        run(tiny_tokenizer, tied_causal, CausalStudent, tmp_path, "a", kill_at=5, log=state)
    # a crash while writing the next save (a half folder beside it), and one between the two
    # renames (only the previous save, renamed aside)
    (tmp_path / "state.tmp").mkdir()
    (tmp_path / "state.tmp" / "model.safetensors").write_bytes(b"half")
    state.rename(tmp_path / "state.old")
    assert find_state(state) == tmp_path / "state.old"
    _, _, steps = run(tiny_tokenizer, tied_causal, CausalStudent, tmp_path, "b", log=state)
    assert steps == [4, 5, 6, 7]
    assert find_state(state) == state and not (tmp_path / "state.tmp").exists()


def _fresh(tok, seed=0, state_dir=None, examples_=None, **kw):
    """A run (steps 7, state every 3) from a fresh student (``seed``: its random init), unkilled:
    (student, the steps on_step saw)."""
    s = CausalStudent(tied_causal(tok, seed=seed), tok)
    steps = []
    torch.manual_seed(0)
    c = cfg(**{"steps": 7, "batch_size": 2, "lr": 1e-3, **kw})
    train(s, examples_ or examples(), c, progress=False, on_step=steps.append, state_dir=state_dir, state_every=3)
    return s, steps


def _killed_state(tok, tmp_path):
    state = tmp_path / "state"
    with pytest.raises(Killed):
        run(tok, tied_causal, CausalStudent, tmp_path, "a", kill_at=4, log=state)
    assert find_state(state) is not None
    return state


def _starts_over(tok, tmp_path, caplog, why: str, seed=0, **kw):
    """A run that must discard the killed run's save (one warning naming ``why``) and train every
    step from the start, ending with the weights of the same run never killed."""
    state = _killed_state(tok, tmp_path)
    with caplog.at_level("WARNING", logger="tinyllm.train_state"):
        resumed, steps = _fresh(tok, seed, state_dir=state, **kw)
    lines = [r.getMessage() for r in caplog.records if "not resumed" in r.getMessage()]
    assert len(lines) == 1 and why in lines[0] and str(state) in lines[0], lines
    assert steps == list(range(1, 8))  # started over, not resumed at step 3
    whole, _ = _fresh(tok, seed, **kw)
    assert resumed.model is not whole.model and torch.equal(weights(resumed), weights(whole))


def test_a_save_under_other_settings_is_discarded_with_one_line(tiny_tokenizer, tmp_path, caplog):
    # guards: resuming under another lr (a mix of two runs), or refusing and blocking every rerun
    _starts_over(tiny_tokenizer, tmp_path, caplog, "lr differ ([0.001] then, [0.002] now)", lr=2e-3)


def test_a_save_on_other_training_questions_is_discarded(tiny_tokenizer, tmp_path, caplog):
    # same number of questions, one rationale changed: the save belongs to another run
    changed = examples()
    changed[0]["rationales"]["teacher_a"] += " Really."
    _starts_over(tiny_tokenizer, tmp_path, caplog, "examples_sha256 differ", examples_=changed)


def test_a_save_from_another_base_student_is_discarded(tiny_tokenizer, tmp_path, caplog):
    # guards the probed fault: student.source changed to another checkpoint of the same
    # architecture after a kill; the stage resumed and saved the old base's weights
    _starts_over(tiny_tokenizer, tmp_path, caplog, "start_weights differ", seed=1)


def test_a_save_from_other_training_code_is_discarded(tiny_tokenizer, tmp_path, caplog, monkeypatch):
    # guards the probed fault: src/tinyllm/loss.py edited after a kill; the stage resumed and
    # mixed old- and new-code steps
    import tinyllm.distill

    state = _killed_state(tiny_tokenizer, tmp_path)
    monkeypatch.setattr(tinyllm.distill, "code_digest", lambda: "edited")
    with caplog.at_level("WARNING", logger="tinyllm.train_state"):
        _, steps = _fresh(tiny_tokenizer, state_dir=state)
    assert steps == list(range(1, 8)) and "code_digest differ" in caplog.text


def test_the_code_digest_covers_the_training_code_only(tmp_path):
    from tinyllm import train_state

    assert train_state.code_digest() == train_state.code_digest()
    files = {p.relative_to(train_state.Path(train_state.__file__).parent).as_posix() for p in
             train_state.Path(train_state.__file__).parent.rglob("*.py")}  # fmt: skip
    assert "loss.py" in files and "student/base.py" in files and "experiments/study/runner.py" in files


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin"])
def test_a_damaged_save_is_discarded_with_one_line(tiny_tokenizer, tmp_path, caplog, name):
    # guards the probed fault: a truncated file in the live state failed every later run with a
    # raw PytorchStreamReader/SafetensorError traceback naming neither the folder nor a remedy
    state = tmp_path / "state"
    with pytest.raises(Killed):
        run(tiny_tokenizer, tied_causal, CausalStudent, tmp_path, "a", kill_at=4, log=state)
    f = state / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="tinyllm.train_state"):
        resumed, steps = _fresh(tiny_tokenizer, state_dir=state)
    assert f"{name} cannot be read" in caplog.text and steps == list(range(1, 8))
    assert torch.equal(weights(resumed), weights(_fresh(tiny_tokenizer)[0]))


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_a_killed_distill_stage_resumes_and_removes_its_state(tiny_tokenizer, tmp_path, lora, monkeypatch):
    # the `distill` stage's path (distill_student): base student from disk, trainset folder, saved
    # student; guards: the state not passed through, not removed after the save, LoRA not resumable,
    # a save after the last step (the student itself is saved right after: GBs written for nothing)
    from safetensors.torch import load_file

    import tinyllm.distill
    from tinyllm.distill import distill_student
    from tinyllm.trainset import write_trainset

    base, trainset = tmp_path / "base", tmp_path / "trainset"
    tied_causal(tiny_tokenizer).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    write_trainset(trainset, {"train": examples()}, {"teachers": ["teacher_a", "teacher_b"]})
    c = cfg(steps=5, batch_size=2, lr=1e-3, log_every=1, lora=lora)

    def stage(out, state=None, kill_at=None):
        def on_log(row):
            if row["step"] == kill_at:
                raise Killed

        torch.manual_seed(0)
        distill_student(base, trainset, out, c, "causal", on_log=on_log, state_dir=state, state_every=2)
        return load_file(out / "model.safetensors")

    saved_at, real_save = [], tinyllm.distill.save_state
    monkeypatch.setattr(
        tinyllm.distill, "save_state", lambda acc, d, step, s: (saved_at.append(step), real_save(acc, d, step, s))
    )
    whole = stage(tmp_path / "whole")
    state = tmp_path / "state"
    with pytest.raises(Killed):
        stage(tmp_path / "resumed", state, kill_at=3)
    assert json.loads((find_state(state) / "resume.json").read_text())["step"] == 2
    saved_at.clear()
    resumed = stage(tmp_path / "resumed", state)
    assert saved_at == [4]  # every 2 steps from the step-2 save on; none after the last step (5)
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert not any(tmp_path.glob("state*"))  # the student is saved: no state is left to resume from


def test_the_documented_profile_saves_a_training_state():
    # guards the probed fault: 24 steps with a save every 100 (a CLI flag) and none after the last
    # step: the README's "a killed run continues" never happened for the profile it documents
    from pathlib import Path

    import yaml

    d = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["distill"]
    assert 0 < d["state_every"] < d["steps"]
