"""The DVC graph tells the truth about code: every stage depends on every file its script runs.

A stage script's code is the script, ``stages/_stage.py`` and every module of ``src/tinyllm`` it
imports, transitively, including imports inside functions (a lazy import still runs). A change
to any of them can change the stage's outputs, so each must be in the stage's ``deps`` (or under
a folder that is); a ``src``/``stages`` dep that the script never imports makes the stage rerun
for nothing. The set is derived from the imports, never from a list, so new modules force
dvc.yaml to follow (issue 12 item 1).

    python tests/test_dvc_graph.py    # prints each stage's required code deps
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "tinyllm"


def module_file(name: str) -> Path | None:
    """The file of module ``name`` (``tinyllm.teachers.config``) under src/, or None."""
    base = SRC.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the tinyllm modules (and packages) that ``path`` imports anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    here = module_name(path).split(".") if path.is_relative_to(SRC) else []
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here if is_pkg else here[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


def code_closure(script: Path) -> set[Path]:
    """The script, _stage.py if used, and every tinyllm file reached from it (with parent packages)."""
    seen: set[Path] = {script}
    todo = [script]
    src = script.read_text(encoding="utf-8")
    if "import _stage" in src:
        seen.add(ROOT / "stages" / "_stage.py")
        todo.append(ROOT / "stages" / "_stage.py")
    while todo:
        f = todo.pop()
        for mod in imported_modules(f):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                target = module_file(".".join(parts[:i]))
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append(target)
    return seen


def stages():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, st in dvc["stages"].items():
        yield name, st.get("do", st)


def script_of(stage: dict) -> Path:
    return ROOT / stage["cmd"].split()[1]


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def code_deps(stage: dict) -> tuple[set[str], set[str]]:
    """(files covered by the stage's src/stages deps, the folder deps among them)."""
    files, folders = set(), set()
    for d in stage.get("deps", []):
        if not d.startswith(("src/", "stages/")):
            continue
        p = ROOT / d
        if p.is_dir():
            folders.add(d)
            files.update(rel(f) for f in p.rglob("*.py") if "__pycache__" not in f.parts)
        else:
            files.add(d)
    return files, folders


@pytest.mark.parametrize("name, stage", list(stages()), ids=[n for n, _ in stages()])
def test_stage_deps_cover_every_imported_module(name, stage):
    # guards: a9a0842's evaluate did not depend on distill.py/modeling.py/config.py, which it
    # imports: changing them re-ran nothing
    need = {rel(p) for p in code_closure(script_of(stage))}
    have, _ = code_deps(stage)
    missing = sorted(need - have)
    assert not missing, f"dvc.yaml stage {name}: add to deps (the script imports them): {missing}"


@pytest.mark.parametrize("name, stage", list(stages()), ids=[n for n, _ in stages()])
def test_stage_code_deps_are_all_used(name, stage):
    # guards: a code dep the script never imports reruns the stage (and all below it) for nothing
    need = {rel(p) for p in code_closure(script_of(stage))}
    have, folders = code_deps(stage)
    extra = sorted(
        d for d in stage.get("deps", []) if d.startswith(("src/", "stages/")) and d not in folders and d not in need
    )
    assert not extra, f"dvc.yaml stage {name}: deps never imported by its script: {extra}"
    for folder in folders:  # a folder dep is fine only when all of it is code the stage runs
        unused = sorted(f for f in have if f.startswith(folder + "/") and f not in need)
        assert not unused, f"dvc.yaml stage {name}: folder dep {folder} holds code it never imports: {unused}"


def test_closure_follows_lazy_and_relative_imports(tmp_path, monkeypatch):
    # guards the walker itself: an import inside a function and `from ..x import y` both count
    pkg = tmp_path / "src" / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("from ..c import x\n")
    (pkg / "c.py").write_text("x = 1\n")
    (pkg / "unused.py").write_text("")
    (tmp_path / "stages").mkdir()
    script = tmp_path / "stages" / "s.py"
    script.write_text("def main():\n    import tinyllm.a\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "src")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    got = {p.relative_to(tmp_path).as_posix() for p in code_closure(script)}
    assert got == {
        "stages/s.py",
        "src/tinyllm/__init__.py",
        "src/tinyllm/a.py",
        "src/tinyllm/sub/__init__.py",
        "src/tinyllm/sub/b.py",
        "src/tinyllm/c.py",
    }


def resolved_stages(tmp_path: Path, params: dict) -> dict[str, dict]:
    """{stage name: {"deps", "outs", "params"}} of this dvc.yaml under ``params`` (nothing is run)."""
    from dvc.repo import Repo

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    Repo.init(str(tmp_path))
    out = {}
    with Repo(str(tmp_path)) as repo:
        for st in repo.index.stages:
            out[st.name] = {
                "deps": [d.def_path for d in st.deps],
                "outs": [o.def_path for o in st.outs],
                "params": sorted(k for d in st.params for k in d.params),
            }
    return out


def test_generate_stages_follow_the_benchmark_subset_and_a_new_teacher(tmp_path):
    # guards: a9a0842 hard-coded the teachers and the six benchmarks in the matrix, so
    # `data.benchmarks: [obqa, arc]` still asked for piqa's prepared data, and a new teacher
    # needed a dvc.yaml edit
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["benchmarks"] = ["obqa", "arc"]
    params["teachers"]["qwen"] = {
        "backend": "openai",
        "model": "qwen",
        "base_url": "http://127.0.0.1:8000/v1",
        "icl": {"k": 0},
    }
    stages = resolved_stages(tmp_path, params)
    gen = sorted(n for n in stages if n.startswith("generate_rationales@"))
    want = sorted(f"generate_rationales@{t}-{b}" for t in params["teachers"] for b in ("obqa", "arc"))
    assert gen == want
    qwen = stages["generate_rationales@qwen-arc"]
    assert "data/prepared/arc" in qwen["deps"] and qwen["outs"][0] == "data/rationales/qwen/arc"
    assert not any("piqa" in d for st in stages.values() for d in st["deps"] + st["outs"])


def test_committed_lock_holds_only_stages_of_this_pipeline(tmp_path):
    # guards: dvc.lock kept 12 generate_rationales entries of grid teachers (smollm2_135m_noicl,
    # _notf) that params.yaml no longer defines; `dvc status` is silent about them and a reader
    # takes them for outputs of the default run. Prune with: delete the entries this test names.
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    stale = sorted(set(lock["stages"]) - set(resolved_stages(tmp_path, params)))
    assert not stale, f"dvc.lock has stages that dvc.yaml under params.yaml does not define: {stale}"


# ----------------------------------------------------------------------------- params and data paths


@pytest.mark.parametrize("name, stage", list(stages()), ids=[n for n, _ in stages()])
def test_stage_reads_only_the_params_it_declares(name, stage):
    # guards: stages/trainset.py read distill.valid_loss_per_benchmark, which the trainset stage
    # did not declare: changing it re-ran nothing, and distill trained with a stale valid split
    # (issue 22). The reads are found by walking the script and the tinyllm code it hands its
    # configs to (tests/stage_reads.py says how, and what it cannot see)
    from stage_reads import undeclared_reads

    bad = undeclared_reads(script_of(stage), stage)
    assert not bad, f"dvc.yaml stage {name}: reads params it does not declare under `params:`: {bad}"


@pytest.mark.parametrize("name, stage", list(stages()), ids=[n for n, _ in stages()])
def test_stage_opens_only_paths_among_its_deps_and_outputs(name, stage):
    # guards: a stage reading a pipeline file (an option's default the cmd never passes) that is
    # not among its deps: DVC neither orders the stages by it nor re-runs when it changes
    from stage_reads import undeclared_paths

    bad = undeclared_paths(script_of(stage), stage)
    assert not bad, f"dvc.yaml stage {name}: uses paths that are neither deps nor outputs: {bad}"


def test_params_walker_sees_aliases_getattr_raw_reads_and_helpers(tmp_path):
    # guards the walker itself: each way a stage reaches a key must count, and membership tests,
    # error messages and params handed whole to tracking must not
    from stage_reads import Reads, undeclared_reads

    script = tmp_path / "s.py"
    script.write_text(
        "import _stage\n"
        "from tinyllm import tracking\n"
        "def main():\n"
        "    p = _stage.sections()\n"
        "    d = p.distill\n"
        "    n = getattr(d, 'valid_loss_per_benchmark', 0)\n"
        "    helper(p.data)\n"
        "    raw = _stage.params('evaluate')\n"
        "    h = raw.get('headline') or 'score'\n"
        "    print(h)\n"
        "    if 'x' not in p.teachers:\n"
        "        raise SystemExit(f'known: {sorted(p.teachers)}')\n"
        "    t = p.teachers['x']\n"
        "    k = [t.icl.k for _ in range(2)]\n"
        "    tracking.start_distill_run(None, _stage.params())\n"
        "def helper(data):\n"
        "    return data.benchmarks\n"
    )
    got = {".".join(r) for r in Reads(script).found}
    assert got == {"distill.valid_loss_per_benchmark", "data.benchmarks", "evaluate.headline", "teachers.x.icl.k"}
    stage = {"params": ["data", "teachers.${item.teacher}", {"params.yaml": ["distill.valid_loss_per_benchmark"]}]}
    assert undeclared_reads(script, stage) == ["evaluate.headline"]
    assert undeclared_reads(script, {"params": [{"params.yaml": None}]}) == []  # every key of the file


if __name__ == "__main__":
    for n, st in stages():
        print(n)
        for f in sorted(rel(p) for p in code_closure(script_of(st))):
            print(f"      - {f}")


def test_a_teacher_schema_edit_reruns_only_what_reads_teachers():
    # guards (issue #31 item 4): config.py imported the teacher schema, so all nine stages depended
    # on it and an edit of it re-ran fetch through evaluate. Only check_params (its output is a
    # constant line: nothing below it re-runs for that alone), the generate stages and trainset
    # read teachers.
    schema = {"src/tinyllm/teachers", "src/tinyllm/teachers/config.py", "src/tinyllm/params.py"}
    readers = {name for name, st in stages() if schema & set(st.get("deps", []))}
    assert readers == {"check_params", "generate_rationales", "trainset"}, readers
    closure = {rel(p) for p in code_closure(ROOT / "stages" / "distill.py")}
    assert "src/tinyllm/teachers/config.py" not in closure and "src/tinyllm/config.py" in closure
    import check_params  # noqa: F401  (stages/ is on sys.path through conftest)

    assert check_params.OK.count("\n") == 1 and "{" not in check_params.OK  # a constant: no value of params in it
