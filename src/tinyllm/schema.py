"""Checking values against type annotations and ranges, with errors that name the full
params.yaml key. Generic (no section knows about another): ``config.py`` (the sections) and
``teachers/config.py`` (a teacher's entry) both build on it, so neither imports the other's
module to validate.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

# the exponent form YAML 1.1 leaves as a string (`5e-05`); a quoted '0.5' stays an error
_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_TYPE_NAMES = {int: "an int", float: "a number", bool: "true or false", str: "a string"}


class ParamsError(ValueError):
    """A bad value in params.yaml; the message names the full key (``distill.batch_size``)."""


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML (null/true/false), else its Python repr."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _fail(key: str, msg: str) -> typing.NoReturn:
    raise ParamsError(f"params.yaml: {key} {msg}")


def check_value(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp``; returns it (floats normalised). Errors name ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if value is None:
            _fail(key, "= null is not allowed here")
        if len(rest) == 1:
            return check_value(value, rest[0], key)
        for a in rest:
            try:
                return check_value(value, a, key)
            except ParamsError:
                pass
        _fail(key, f"= {_show(value)} matches none of {rest}")
    if origin is Literal:
        if isinstance(value, bool) or value not in args:
            _fail(key, f"= {_show(value)} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            _fail(key, f"= {_show(value)} is not a list")
        return [check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            _fail(key, f"= {_show(value)} is not a mapping")
        for k in value:
            if not isinstance(k, str):
                _fail(key, f"has key {k!r}; keys must be names (strings)")
        return {k: check_value(v, args[1], f"{key}.{k}") for k, v in value.items()} if args else value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            _fail(key, f"= {_show(value)} is not a mapping")
        return from_dict(tp, value, key)
    if tp is float:
        if isinstance(value, str) and _EXP_FLOAT.match(value.strip()):
            return float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp in (int, bool, str):
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
    else:
        raise TypeError(f"{key}: unsupported annotation {tp!r}")
    _fail(key, f"= {_show(value)} is not {_TYPE_NAMES[tp]}")


def check_range(value: Any, rule: str, key: str) -> None:
    """Rules: ``>=N``, ``>N``, ``A..B`` (inclusive), ``nonempty``; a list or mapping checks each item."""
    if value is None:
        return
    if rule == "nonempty":
        if not value or (isinstance(value, str) and not value.strip()):
            _fail(key, f"= {_show(value)} must not be empty")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_range(v, rule, f"{key}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_range(v, rule, f"{key}.{k}")
        return
    if rule.startswith(">="):
        ok, want = value >= float(rule[2:]), f">= {rule[2:]}"
    elif rule.startswith(">"):
        ok, want = value > float(rule[1:]), f"> {rule[1:]}"
    else:
        lo, hi = rule.split("..")
        ok, want = float(lo) <= value <= float(hi), f"in [{lo}, {hi}]"
    if not ok:
        _fail(key, f"= {_show(value)}; must be {want}")


def validate_fields(obj: Any, where: str) -> None:
    """Check (and normalise) every field of dataclass ``obj`` against its annotation and ``RANGES``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{where}.{f.name}"
        setattr(obj, f.name, check_value(getattr(obj, f.name), hints[f.name], key))
    for name, rules in getattr(obj, "RANGES", {}).items():
        for rule in rules.split(","):
            check_range(getattr(obj, name), rule.strip(), f"{where}.{name}")


def from_dict(cls, data: dict | None, section: str):
    """Build dataclass ``cls`` from ``data``; unknown keys raise with the known ones listed."""
    if data is not None and not isinstance(data, dict):
        raise ParamsError(f"params.yaml: {section} = {data!r} is not a mapping")
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamsError(f"params.yaml [{section}]: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


def _no_duplicates(items: list, key: str) -> None:
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        _fail(key, f"lists {dup} more than once")
