"""params.yaml is validated as a whole, up front, with types and ranges, naming the full key.

One test per rule (issue 12 item 9). On a9a0842 most of these values were accepted (a string
`steps`, a float `batch_size`, negative counts) or failed late (an unknown `evaluate` key only
after `distill` had trained).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinyllm.config import DistillConfig, ParamsError
from tinyllm.params import validate_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(dotted: str, value, params: dict | None = None) -> dict:
    """A deep copy of params.yaml with ``dotted`` set to ``value``."""
    p = copy.deepcopy(params or PARAMS)
    *head, last = dotted.split(".")
    d = p
    for part in head:
        d = d.setdefault(part, {})
    d[last] = value
    return p


def rejects(dotted: str, value, match: str | None = None) -> None:
    """Validation of params.yaml with ``dotted = value`` fails naming the key."""
    with pytest.raises(ParamsError, match=match or re.escape(dotted)):
        validate_params(with_value(dotted, value))


def test_the_repo_params_validate():
    # guards: the shipped params.yaml itself must pass its own schema
    p = validate_params(PARAMS)
    assert p.distill.lr == pytest.approx(5e-5) and p.data.benchmarks == PARAMS["data"]["benchmarks"]


def test_string_int_is_rejected_not_coerced():
    # guards: `steps: '40'` was accepted (and compared as a string) on a9a0842
    rejects("distill.steps", "40", r"distill\.steps = '40' is not an int")


def test_float_for_int_is_rejected():
    # guards: `batch_size: 2.5` reached the training loop
    rejects("distill.batch_size", 2.5, r"distill\.batch_size = 2\.5 is not an int")


def test_bool_for_int_is_rejected():
    # guards: YAML `true` is an int subclass in Python and would pass isinstance(x, int)
    rejects("evaluate.batch_size", True, r"evaluate\.batch_size = true is not an int")


def test_null_where_not_allowed():
    # guards: `steps: null` crashed deep in the training loop
    rejects("distill.steps", None, r"distill\.steps = null")


@pytest.mark.parametrize(
    "key, value",
    [
        ("distill.batch_size", 0),
        ("distill.grad_accum", 0),
        ("distill.steps", -1),
        ("distill.train_per_benchmark", -3),
        ("distill.answer_weight", -0.5),
        ("distill.max_input_tokens", -1),
        ("distill.max_rationale_tokens", 0),
        ("distill.lr", 0.0),
        ("distill.warmup_ratio", 1.5),
        ("evaluate.max_per_benchmark", -1),
        ("evaluate.max_input_tokens", 0),
        ("evaluate.batch_size", 0),
        ("evaluate.max_new_tokens", 0),
    ],
)
def test_ranges(key, value):
    # guards: negative/zero counts and weights were accepted on a9a0842 (train_per_benchmark: -3
    # silently dropped the last 3 questions, max_per_benchmark: -1 dropped one)
    rejects(key, value, re.escape(f"{key} = {value!r}; must be"))


def test_yaml_1_1_exponent_string_is_a_float():
    # guards: `dvc exp run -S distill.lr=5e-05` writes 5e-05, which PyYAML reads as a string
    p = validate_params(with_value("distill.lr", "5e-05"))
    assert p.distill.lr == 5e-5 and isinstance(p.distill.lr, float)
    assert validate_params(with_value("distill.answer_weight", 1)).distill.answer_weight == 1.0


def test_quoted_plain_number_is_not_a_float():
    # guards: only the exponent form is the YAML quirk; a quoted '0.5' is a mistake to report
    rejects("distill.lr", "0.5", r"distill\.lr = '0\.5' is not a number")


def test_unknown_key_in_any_section():
    # guards: a typo under `evaluate` surfaced only after distill had trained
    for section in ("data", "student", "distill", "evaluate", "tracking"):
        with pytest.raises(ParamsError, match=rf"\[{section}\]: unknown key\(s\) \['typo_key'\]"):
            validate_params(with_value(f"{section}.typo_key", 1))


def test_unknown_section():
    # guards: a misspelt section (`evalute:`) was ignored and its defaults used
    with pytest.raises(ParamsError, match=r"unknown section\(s\) \['evalute'\]"):
        validate_params({**PARAMS, "evalute": {"max_per_benchmark": 5}})


def test_enums():
    # guards: a misspelt choice must name the key and list the allowed values
    rejects("distill.precision", "fp16", r"distill\.precision = 'fp16' is not one of auto, bf16, fp32")
    rejects("evaluate.headline", "acc", r"evaluate\.headline")
    rejects("evaluate.splits", ["valid", "dev"], r"evaluate\.splits\[1\] = 'dev'")
    rejects("student.kind", "decoder", r"student\.kind")


def test_benchmarks_known_unique_nonempty():
    # guards: an empty or repeated benchmark list made every downstream stage do nothing or twice
    rejects("data.benchmarks", ["obqa", "obqqa"], r"data\.benchmarks has unknown benchmark\(s\) \['obqqa'\]")
    rejects("data.benchmarks", ["obqa", "obqa"], r"data\.benchmarks lists \['obqa'\] more than once")
    rejects("data.benchmarks", [], r"data\.benchmarks = \[\] must not be empty")


def test_alphas_values_and_names():
    # guards: a negative alpha, a string alpha and an alpha for a cache no stage writes
    rejects("distill.alphas.flan_t5_xl", -1, r"distill\.alphas\.flan_t5_xl = -1\.0; must be >= 0")
    rejects("distill.alphas.flan_t5_xl", "high", r"distill\.alphas\.flan_t5_xl = 'high' is not a number")
    rejects("distill.alphas.gpt9", 1.0, r"distill\.alphas\.gpt9 names no rationale cache")


def test_lora_mapping_is_checked():
    # guards: `lora: {rank: 8}` or `r: 0` failed only after the base model was loaded
    rejects("distill.lora", {"rank": 8}, r"\[distill\.lora\]: unknown key\(s\) \['rank'\]")
    rejects("distill.lora", {"r": 0}, r"distill\.lora\.r = 0; must be >= 1")
    assert validate_params(with_value("distill.lora", {"r": 8, "alpha": 16, "dropout": 0.05})).distill.lora["r"] == 8


def test_teacher_entries_are_typed_and_cross_checked():
    # guards: a teacher's string temperature raised a bare ValueError from float(); an ICL source
    # naming no cache failed only inside the generate stage
    rejects("teachers.smollm2_135m.temperature", "hot", r"teachers\.smollm2_135m\.temperature = 'hot' is not a number")
    rejects(
        "teachers.smollm2_135m.max_new_tokens", "48", r"teachers\.smollm2_135m\.max_new_tokens = '48' is not an int"
    )
    rejects("teachers.smollm2_135m.limit_per_benchmark", -1, r"teachers\.smollm2_135m\.limit_per_benchmark = -1")
    rejects("teachers.smollm2_135m.icl", {"k": 2, "source": "nobody"}, r"teachers\.smollm2_135m\.icl\.source")


def test_dataclass_built_in_code_is_checked_too():
    # guards: tests and scripts build configs directly; the same schema applies
    with pytest.raises(ParamsError, match=r"distill\.batch_size = 2\.5 is not an int"):
        DistillConfig(batch_size=2.5)


STAGE_ARGS = {"generate_rationales.py": ["--teacher", "smollm2_135m", "--benchmark", "obqa"]}


@pytest.fixture(scope="module")
def bad_evaluate_repo(tmp_path_factory) -> Path:
    """A copy of stages/ + src/ whose params.yaml has a typo under `evaluate`."""
    d = tmp_path_factory.mktemp("badparams")
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", d / "dvc.yaml")
    (d / "params.yaml").write_text(yaml.safe_dump(with_value("evaluate.max_per_benchmarks", 5)))
    return d


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "stages").glob("*.py") if not p.name.startswith("_")))
def test_every_stage_validates_the_whole_file_before_work(script, bad_evaluate_repo):
    # guards: an unknown key under `evaluate` surfaced only after distill had trained (a9a0842):
    # every stage script must stop on it, before writing anything
    def files():
        return sorted(
            p.relative_to(bad_evaluate_repo) for p in bad_evaluate_repo.rglob("*") if "__pycache__" not in p.parts
        )

    before = files()
    res = subprocess.run(
        [sys.executable, f"stages/{script}", *STAGE_ARGS.get(script, [])],
        cwd=bad_evaluate_repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "unknown key(s) ['max_per_benchmarks']" in res.stderr, res.stderr[-2000:]
    after = files()
    assert after == before, f"{script} wrote {set(after) - set(before)} before validating"


def _every_key() -> list[str]:
    import dataclasses

    from tinyllm.config import SECTIONS

    return [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("dotted", _every_key())
def test_a_key_missing_from_params_yaml_is_refused_not_taken_from_code(dotted):
    # guards: one set of values (issue #31 item 4): a key left out of params.yaml silently took the
    # dataclass default (answer_format listed, headline score) where params.yaml says cloze, norm
    section, key = dotted.split(".")
    p = copy.deepcopy(PARAMS)
    del p[section][key]
    with pytest.raises(ParamsError, match=re.escape(dotted) + r".*missing.*library default"):
        validate_params(p)
