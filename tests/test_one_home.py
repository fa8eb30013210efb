"""One home per fact (issue #31 item 4): the decision rules, the benchmarks and "alpha > 0 makes
a task" are defined once and imported everywhere; the core never imports the experiments layer.
Each test walks the package's source (AST) and fails when a copy appears."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "tinyllm"


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path.relative_to(PKG).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _strings(node) -> set[str]:
    return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def test_the_decision_rules_are_listed_once():
    copies = [
        f"{name}:{node.lineno}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and {"score", "sum", "norm", "pmi"} <= _strings(node)
        if name != "config.py"
    ]
    assert not copies, f"a copy of config.RULES: {copies}"


def test_the_benchmarks_are_listed_once():
    names = {"obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"}
    copies = [
        f"{name}:{node.lineno}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and len(_strings(node) & names) >= 4
    ]
    assert not copies, f"a copy of benchmarks.BENCHMARKS: {copies}"


def test_alpha_above_zero_is_decided_in_one_function():
    def iterates_alphas(gen: ast.comprehension) -> bool:
        it = gen.iter
        target = it.func.value if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) else it
        return "alphas" in ast.unparse(target)

    copies = [
        f"{name}:{node.lineno}"
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp)
        for gen in node.generators
        if gen.ifs and iterates_alphas(gen) and name != "config.py"
    ]
    assert not copies, f"alpha > 0 decided outside config.active_teachers: {copies}"


def test_the_core_never_imports_the_experiments_layer():
    upward = []
    for name, tree in _modules():
        if name.startswith("experiments/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                if "experiments" in mod.split(".") or any(a.name == "experiments" for a in node.names):
                    upward.append(f"{name}:{node.lineno} {mod}")
    assert not upward, upward
