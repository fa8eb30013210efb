"""What a stage script reads, found statically: the params.yaml keys and the data paths.

Params. The walker follows config values from where a stage gets them (``_stage.sections()``,
``tinyllm.params.stage_config()``, ``_stage.params(...)``, ``from_dict(Cls, <params>, "section")``)
through names, attributes (typed configs: dataclass fields, known from the classes themselves),
``getattr(x, "k")``,
``x.get("k")`` and ``x["k"]`` (``*`` when the key is not a constant), and into the functions
they are passed to: functions of the script and of ``src/tinyllm`` are walked with the argument
bound to its parameter; any other use (a method call, a class, a library outside tinyllm) reads
the whole value. A read is the longest chain used, e.g. ``distill.valid_loss_per_benchmark``.

Not reads: ``k in cfg`` (membership), anything inside ``raise`` (error messages list keys), and
a section or the whole params handed to ``tinyllm.tracking``, which records them as MLflow run
params and tags (the MLflow run, not a DVC output); a single key read to pass there still counts.

Data paths. Every argparse option the script uses (``args.<dest>`` appears) whose value (from the
stage's ``cmd``, else the option's default) is a pipeline path (data/, models/, metrics/, eval/).

Limits (so the test's silence is not over-read): values that pass through containers built by the
script (``{t: cfg.teachers.get(t) ...}``) are read where they are built, not where used; paths
that library code builds from params (a teacher's in-context examples cache) are not seen.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SINKS = {"tinyllm.tracking"}  # record params in MLflow; see the docstring
DATA_PREFIXES = ("data/", "models/", "metrics/", "eval/")
TEACHERS = "teachers-mapping"  # Params.teachers: name -> TeacherConfig


@dataclass(frozen=True)
class Val:
    """A config value: its params path and what it is (a dataclass, TEACHERS, "raw" dict, or None: a leaf)."""

    path: tuple[str, ...]
    kind: object = None


@dataclass(frozen=True)
class Method:
    """``<config value>.<name>`` that is not a field: a method about to be called on the value."""

    of: Val
    name: str


def _params_class():
    from tinyllm.config import Params

    return Params


def _field_kind(cls, name: str):
    if cls is _params_class() and name == "teachers":
        return TEACHERS
    hint = typing.get_type_hints(cls)[name]
    return hint if dataclasses.is_dataclass(hint) else None


def _child(v: Val, key: str) -> Val:
    if v.kind == TEACHERS:
        from tinyllm.teachers.config import TeacherConfig

        return Val((*v.path, key), TeacherConfig)
    return Val((*v.path, key), "raw" if v.kind == "raw" else None)


def _typed_at(path: tuple[str, ...]):
    kind = _params_class()
    for p in path:
        if dataclasses.is_dataclass(kind) and p in {f.name for f in dataclasses.fields(kind)}:
            kind = _field_kind(kind, p)
        elif kind == TEACHERS:
            kind = _child(Val((), TEACHERS), p).kind
        else:
            return None
    return kind


def _whole(v) -> bool:
    """The whole params or a section (what tracking records), not one key read from it."""
    return isinstance(v, Val) and (v.kind == "raw" and len(v.path) <= 1 or v.kind not in ("raw", None))


def _const(node) -> str:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "*"


class Module:
    """A parsed file: its top-level functions and what its names import."""

    cache: dict[Path, Module] = {}

    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.name = ".".join(path.relative_to(SRC).with_suffix("").parts) if path.is_relative_to(SRC) else ""
        self.name = self.name.removesuffix(".__init__")
        self.funcs = {n.name: n for n in self.tree.body if isinstance(n, ast.FunctionDef)}
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, attribute or None)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                base = self._absolute(node)
                for a in node.names:
                    self.imports[a.asname or a.name] = (base, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    self.imports[a.asname or top] = (a.name if a.asname else top, None)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        here = self.name.split(".")
        anchor = here if self.path.name == "__init__.py" else here[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        return ".".join(anchor + ([node.module] if node.module else []))

    @classmethod
    def of(cls, name: str) -> Module | None:
        base = SRC.joinpath(*name.split("."))
        for f in (base.with_suffix(".py"), base / "__init__.py"):
            if f.is_file():
                if f not in cls.cache:
                    cls.cache[f] = Module(f)
                return cls.cache[f]
        return None

    def resolve(self, func) -> tuple[Module, ast.FunctionDef] | str | None:
        """The function a call runs: (module, def), "sink" for tinyllm.tracking, None when unknown."""
        mod, attr = None, None
        if isinstance(func, ast.Name):
            if func.id in self.funcs:
                return self, self.funcs[func.id]
            if func.id in self.imports:
                base, attr = self.imports[func.id]
                if attr is not None and Module.of(f"{base}.{attr}") is not None:  # `from pkg import module`
                    return "sink" if f"{base}.{attr}" in SINKS else None
                mod = base
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in self.imports:
            base, sub = self.imports[func.value.id]
            mod, attr = (f"{base}.{sub}" if sub else base), func.attr
        if mod is None or not mod.startswith("tinyllm"):
            return None
        if mod in SINKS:
            return "sink"
        m = Module.of(mod)
        return (m, m.funcs[attr]) if m is not None and attr in m.funcs else None


class Reads:
    """The params paths one stage script reads (walk from its ``main``)."""

    def __init__(self, script: Path):
        self.found: set[tuple[str, ...]] = set()
        self.seen: set = set()
        m = Module(script)
        self.function(m, m.funcs["main"], {})

    # ------------------------------------------------------------------ values

    def value(self, m: Module, e, env: dict):
        """The config value an expression stands for (Val / Method), else None. Records method calls."""
        if isinstance(e, ast.Name):
            return env.get(e.id)
        if isinstance(e, ast.Attribute):
            v = self.value(m, e.value, env)
            if isinstance(e.value, ast.Name) and e.value.id == "_stage":
                return None
            if isinstance(v, Val):
                if dataclasses.is_dataclass(v.kind) and e.attr in {f.name for f in dataclasses.fields(v.kind)}:
                    return Val((*v.path, e.attr), _field_kind(v.kind, e.attr))
                return Method(v, e.attr)
            return None
        if isinstance(e, ast.Subscript):
            v = self.value(m, e.value, env)
            return _child(v, _const(e.slice)) if isinstance(v, Val) else None
        if isinstance(e, ast.Call):
            return self.call_value(m, e, env)
        if isinstance(e, ast.BoolOp) and isinstance(e.op, ast.Or):  # `cfg.get("x") or {}`
            return self.value(m, e.values[0], env)
        return None

    def call_value(self, m: Module, e: ast.Call, env: dict):
        f = e.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "_stage":
            if f.attr in ("config", "sections"):
                return Val((), _params_class())
            if f.attr == "params":
                return Val((_const(e.args[0]),) if e.args else (), "raw")
        if isinstance(f, ast.Name) and f.id == "stage_config":  # tinyllm.params: the whole file
            return Val((), _params_class())
        if isinstance(f, ast.Name) and f.id == "from_dict" and len(e.args) >= 2:
            v = self.value(m, e.args[1], env)
            return Val(v.path, _typed_at(v.path)) if isinstance(v, Val) else None
        if isinstance(f, ast.Name) and f.id == "getattr" and len(e.args) >= 2:
            v = self.value(m, e.args[0], env)
            if isinstance(v, Val):
                return Val((*v.path, _const(e.args[1])), None)
        v = self.value(m, f, env)
        if isinstance(v, Method):
            if v.name == "get" and v.of.kind in ("raw", TEACHERS) and e.args:
                return _child(v.of, _const(e.args[0]))
            self.found.add(v.of.path)  # .items(), .startswith(), ...: the whole value is used
        return None

    # ------------------------------------------------------------------ walking

    def function(self, m: Module, fn: ast.FunctionDef, bound: dict) -> None:
        key = (m.path, fn.name, tuple(sorted((k, v.path, str(v.kind)) for k, v in bound.items())))
        if key in self.seen or len(self.seen) > 2000:
            return
        self.seen.add(key)
        env = dict(bound)
        for stmt in fn.body:
            self.stmt(m, stmt, env)

    def stmt(self, m: Module, s, env: dict) -> None:
        if isinstance(s, ast.Raise):
            return
        if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
            v = self.value(m, s.value, env)
            if isinstance(v, Val) and v.kind is not None:  # an alias of a section or a teacher
                env[s.targets[0].id] = v
                return
            env.pop(s.targets[0].id, None)
        for child in ast.iter_child_nodes(s):
            if isinstance(child, ast.stmt | ast.excepthandler):
                self.stmt(m, child, env)
            elif isinstance(child, ast.expr):
                self.expr(m, child, env)

    def expr(self, m: Module, e, env: dict) -> None:
        if isinstance(e, ast.Compare) and all(isinstance(o, ast.In | ast.NotIn) for o in e.ops):
            self.expr(m, e.left, env)  # `k in cfg`: membership, not a read of cfg's values
            return
        v = self.value(m, e, env)
        if isinstance(v, Val):
            self.found.add(v.path)
            return
        if isinstance(v, Method):
            self.found.add(v.of.path)
            return
        if isinstance(e, ast.Call):
            self.call(m, e, env)
            return
        for child in ast.iter_child_nodes(e):
            for sub in [child] if isinstance(child, ast.expr) else ast.iter_child_nodes(child):  # comprehensions
                if isinstance(sub, ast.expr):
                    self.expr(m, sub, env)

    def call(self, m: Module, e: ast.Call, env: dict) -> None:
        self.expr(m, e.func, env) if not isinstance(e.func, ast.Name) else None
        target = m.resolve(e.func)
        bound = {}
        params = []
        if isinstance(target, tuple):
            a = target[1].args
            params = [p.arg for p in a.posonlyargs + a.args]
        for i, arg in enumerate(e.args):
            v = self.value(m, arg, env)
            if isinstance(v, Val) and v.kind is not None and isinstance(target, tuple) and i < len(params):
                bound[params[i]] = v
            elif not (target == "sink" and _whole(v)):
                self.expr(m, arg, env)
        for kw in e.keywords:
            v = self.value(m, kw.value, env)
            if isinstance(v, Val) and v.kind is not None and isinstance(target, tuple) and kw.arg:
                bound[kw.arg] = v
            elif not (target == "sink" and _whole(v)):
                self.expr(m, kw.value, env)
        if isinstance(target, tuple) and bound:
            self.function(target[0], target[1], bound)


def declared_params(stage: dict) -> set[tuple[str, ...]]:
    """params.yaml keys of a stage as tuples; a `${item.x}` part is `*`; `params.yaml:` with no
    keys (every key of the file) is the empty tuple, above every read."""
    keys: list[str] = []
    for p in stage.get("params") or []:
        if isinstance(p, str):
            keys.append(p)
        elif isinstance(p, dict) and "params.yaml" in p:
            if not p["params.yaml"]:
                return {()}
            keys += list(p["params.yaml"])
    return {tuple(re.sub(r"\$\{[^}]*\}", "*", k).split(".")) for k in keys}


def covered(read: tuple[str, ...], declared: set[tuple[str, ...]]) -> bool:
    """A read is covered by a declared key that is it or above it (`*` in a key matches any name)."""
    return any(len(d) <= len(read) and all(a in ("*", b) for a, b in zip(d, read, strict=False)) for d in declared)


def undeclared_reads(script: Path, stage: dict) -> list[str]:
    declared = declared_params(stage)
    return sorted(".".join(r) for r in Reads(script).found if r and not covered(r, declared))


def used_path_args(script: Path, cmd: str) -> dict[str, str]:
    """{--option: path} of the argparse options the script uses whose value is a pipeline path."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", "") == "args"}
    tokens = shlex.split(cmd.replace("${", "{"))
    given = {t: tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t.startswith("--")}
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument" and n.args:
            opt = _const(n.args[0])
            default = next((_const(k.value) for k in n.keywords if k.arg == "default"), "*")
            value = given.get(opt, default)
            if opt.lstrip("-").replace("-", "_") in used and value.startswith(DATA_PREFIXES):
                out[opt] = value
    return out


def undeclared_paths(script: Path, stage: dict) -> list[str]:
    """Used path options whose path is neither a dep or output, nor above or below one."""

    def names(key):
        return [next(iter(x)) if isinstance(x, dict) else x for x in stage.get(key) or []]

    known = [p.replace("${", "{") for k in ("deps", "outs", "metrics", "plots") for p in names(k)]
    bad = []
    for opt, path in used_path_args(script, stage["cmd"]).items():
        if not any(k == path or path.startswith(k + "/") or k.startswith(path + "/") for k in known):
            bad.append(f"{opt} {path}")
    return bad
