"""dvc.yaml, params.yaml and the stage scripts agree: every param key a stage lists exists,
every stage script exists and is a dependency of its stage, and every params section parses
into its typed config (unknown keys fail loudly)."""

import re
from pathlib import Path

import pytest
import yaml

from tinyllm.config import DataConfig, DistillConfig, EvaluateConfig, StudentConfig, from_dict

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def stages():
    for name, st in DVC["stages"].items():
        if "matrix" in st or "foreach" in st:
            yield name, st.get("do", st)
        else:
            yield name, st


def lookup(d, dotted):
    for part in dotted.split("."):
        if "${" in part:
            return True  # templated (matrix/foreach) key: checked by dvc itself
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


@pytest.mark.parametrize("name, stage", list(stages()))
def test_stage_params_exist_and_script_is_a_dep(name, stage):
    for p in stage.get("params", []):
        keys = p if isinstance(p, str) else None
        if keys is not None:
            assert lookup(PARAMS, keys), f"stage {name}: param {keys!r} not in params.yaml"
    script = stage["cmd"].split()[1]
    assert script.startswith("stages/") and (ROOT / script).exists(), f"stage {name}: {script} missing"
    assert script in stage.get("deps", []), f"stage {name}: {script} is not listed in deps"
    for dep in stage.get("deps", []):
        if dep.startswith(("src/", "stages/")):
            assert (ROOT / dep).exists(), f"stage {name}: dep {dep} missing"


def test_every_stage_script_is_used():
    used = {st["cmd"].split()[1] for _, st in stages()}
    scripts = {f"stages/{p.name}" for p in (ROOT / "stages").glob("*.py") if not p.name.startswith("_")}
    assert scripts <= used, f"stage scripts without a dvc.yaml stage: {scripts - used}"


def test_params_sections_parse_and_unknown_keys_fail():
    from_dict(DataConfig, PARAMS["data"], "data")
    from_dict(StudentConfig, PARAMS["student"], "student")
    from_dict(DistillConfig, PARAMS["distill"], "distill")
    from_dict(EvaluateConfig, PARAMS["evaluate"], "evaluate")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr_typo'\]"):
        from_dict(DistillConfig, {**PARAMS["distill"], "lr_typo": 1}, "distill")
    with pytest.raises(ValueError, match="alphas.flan_t5_xl"):
        from_dict(DistillConfig, {**PARAMS["distill"], "alphas": {"flan_t5_xl": -1}}, "distill")


def test_pre_commit_ruff_matches_the_pinned_ruff():
    # guards: the pre-commit hook and CI (`make lint`, requirements.txt) drifting to different ruff versions,
    # which disagree on formatting and rules, so a commit that passes the hook fails CI
    pin = re.search(r"^ruff==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pin, "requirements.txt pins no ruff"
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    revs = [r["rev"] for r in hooks["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    want = f"v{pin.group(1)}"
    assert revs == [want], f".pre-commit-config.yaml: ruff rev {revs}, but requirements.txt pins ruff {want}"
