"""Grid rows as parameter overrides: the grid file (experiments/grid.yaml), profiles
(experiments/paper.yaml), seeds, and the `dvc exp run -S` overrides of one row.

A row is a list of DVC `-S` overrides (Hydra syntax) of params.yaml plus report metadata; no
row has a code path of its own. One rule is added to Hydra's: `key={...}` REPLACES a mapping
(Hydra merges one into the existing mapping, so `-S distill.alphas={}` alone would keep every
teacher; `expand_overrides` turns it into deletions and assignments).

Seeds: a row runs once with params.yaml's `distill.seed` unless it has `seeds: [..]` in the
grid file or the command line passes `--seeds`; with seeds, each seed is its own experiment
`<row>-s<seed>` with `-S distill.seed=<seed>`, tagged with the same `row` in MLflow, and the
report pools them (mean ± sd; see stats.py). Untrained rows (`distill.steps=0`) never get
seeds: their predictions do not depend on the seed.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tinyllm.schema import ParamsError
from tinyllm.teachers.config import teacher_config

ROOT = Path(__file__).resolve().parents[3]  # the repo (src/tinyllm/experiments/rows.py)
GRID = ROOT / "experiments" / "grid.yaml"
GROUPS = ("baseline", "ablation")
ROW_KEYS = {"row", "group", "label", "paper", "alpha", "needs", "set", "seeds", "teacher"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_row(r: dict, where: str, seen: set) -> None:
    unknown = set(r) - ROW_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(ROW_KEYS)}")
    name = r.get("row")
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".") or ".." in name:
        raise ValueError(f"{where}: row name {name!r} must match {_NAME.pattern} (it is a git ref)")
    if name in seen:
        raise ValueError(f"{where}: row {name!r} appears twice")
    if r.get("group") not in GROUPS:
        raise ValueError(f"{where} ({name}): group {r.get('group')!r} not in {GROUPS}")
    if not all(isinstance(s, str) and "=" in s for s in r.get("set") or []):
        raise ValueError(f"{where} ({name}): set must be a list of 'key=value' strings")
    teacher = r.get("teacher")
    if teacher is not None and (
        not isinstance(teacher, dict)
        or set(teacher) - {"name", "like", "with"}
        or not all(isinstance(teacher.get(k), str) and _NAME.match(teacher[k]) for k in ("name", "like"))
        or not isinstance(teacher.get("with", {}), dict)
    ):
        raise ValueError(
            f"{where} ({name}): teacher must be {{name: <new>, like: <teacher>, with: {{...}}}}, got {teacher!r}"
        )
    seeds = r.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds)
    ):
        raise ValueError(f"{where} ({name}): seeds must be a list of distinct integers, got {seeds!r}")


def load_grid(path: Path = GRID) -> list[dict]:
    """Rows of the grid file, checked: unique valid names, known keys and groups."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    rows, seen = data.get("rows") or [], set()
    for i, r in enumerate(rows):
        _check_row(r, f"{path}: rows[{i}]", seen)
        seen.add(r["row"])
        r.setdefault("label", r["row"])
        r.setdefault("set", [])
        r.setdefault("needs", [])
    return rows


def select(rows: list[dict], names: str | None) -> list[dict]:
    """The rows named in a comma-separated list (all when empty); unknown names are an error."""
    if not names:
        return rows
    want = [n.strip() for n in names.split(",") if n.strip()]
    known = {r["row"] for r in rows}
    bad = [n for n in want if n not in known]
    if bad:
        raise SystemExit(f"unknown row(s) {bad}; grid rows: {sorted(known)}")
    return [r for r in rows if r["row"] in want]


def load_profile(path: Path | None, student: str | None) -> list[str]:
    """The overrides every row gets from a profile file (experiments/paper.yaml) + the student."""
    sets = []
    if path:
        prof = yaml.safe_load(Path(path).read_text()) or {}
        sets += list(prof.get("set") or [])
        students = prof.get("students") or []
        if students and student is None:
            raise SystemExit(f"{path}: pick one student with --student (one of {students})")
    if student:
        sets.append(f"student.source={student}")
    return sets


# ----------------------------------------------------------------------------- overrides


def _get(params: dict, dotted: str):
    d = params
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def expand_overrides(sets: list[str], params: dict) -> list[str]:
    """`-S` strings for DVC, with `key={...}` meaning *replace this mapping*.

    Hydra (DVC's override parser) merges a mapping into an existing one: `distill.alphas={}`
    would keep both default teachers and `distill.alphas={llama2_7b: 1}` would keep flan_t5_xl.
    When the current value is a mapping, a mapping value becomes deletions of the keys it lacks
    (`~key.k`), then assignments (`key.k=v`, or `+key.k=v` for keys not there yet).
    """
    out = []
    for s in sets:
        key, _, value = s.partition("=")
        key = key.strip()
        current = _get(params, key.lstrip("+~"))
        if value.strip().startswith("{") and isinstance(current, dict):
            new = yaml.safe_load(value)
            if not isinstance(new, dict):
                raise ValueError(f"override {s!r}: not a mapping")
            out += [f"~{key}.{k}" for k in current if k not in new]
            out += [f"{'' if k in current else '+'}{key}.{k}={_scalar(v)}" for k, v in new.items()]
        else:
            out.append(s)
    return out


def teacher_override(row: dict, params: dict) -> list[str]:
    """`+teachers.<name>={...}`: the local teacher a row adds (its ``teacher`` key), a copy of
    params.yaml's `teachers.<like>` with the settings in ``with`` replaced; [] without one."""
    t = row.get("teacher")
    if not t:
        return []
    base = (params.get("teachers") or {}).get(t["like"])
    if not isinstance(base, dict):
        raise ValueError(f"row {row['row']}: teacher.like {t['like']!r} is not a teacher in params.yaml `teachers:`")
    spec = {**base, **(t.get("with") or {})}
    try:  # the typed config: a bad `with` fails here, naming the key, not in the queued experiment
        teacher_config(t["name"], spec)
    except ParamsError as e:
        raise ValueError(f"row {row['row']}: teacher.with gives an invalid teacher: {e}") from None
    flow = yaml.safe_dump(spec, default_flow_style=True, sort_keys=False, width=1 << 16).strip()
    return [f"+teachers.{t['name']}={flow}"]


def row_overrides(row: dict, params: dict, profile: list[str] = (), seed: int | None = None) -> list[str]:
    """All `-S` overrides of one row: its MLflow tag, the profile, the teacher it adds, the
    row's own, then the seed."""
    sets = [*profile, *teacher_override(row, params), *row["set"]]
    out = [f"tracking.row={row['row']}", *expand_overrides(sets, params)]
    return out + ([f"distill.seed={seed}"] if seed is not None else [])


def is_trained(row: dict, profile: list[str] = ()) -> bool:
    """False for rows that set `distill.steps=0` (the untrained student): seeds change nothing there."""
    sets = [s.partition("=") for s in [*profile, *row["set"]]]
    steps = [v.strip() for k, _, v in sets if k.strip() == "distill.steps"]
    return not steps or steps[-1] != "0"


def row_seeds(row: dict, seeds: list[int] | None = None, profile: list[str] = ()) -> list[int | None]:
    """Seeds to run a row with: the command line's, else the row's `seeds`, else [None] (the
    params.yaml seed, experiment named after the row alone)."""
    chosen = seeds if seeds else row.get("seeds")
    if not chosen or not is_trained(row, profile):
        return [None]
    return list(chosen)


def exp_name(row: dict, seed: int | None, suffix: str = "") -> str:
    """The DVC experiment name of one (row, seed): `<row>` or `<row>-s<seed>`, then the suffix."""
    return row["row"] + ("" if seed is None else f"-s{seed}") + suffix


def missing_caches(row: dict, root: Path = ROOT) -> list[str]:
    """Rationale caches the row trains on that do not exist under `root`/data/rationales (a
    teacher the row adds generates its own cache in the row's experiment)."""
    own = (row.get("teacher") or {}).get("name")
    return [n for n in row["needs"] if n != own and not (root / "data" / "rationales" / n).is_dir()]


def exp_command(
    row: dict, params: dict, profile: list[str], mode: str, suffix: str = "", seed: int | None = None
) -> list[str]:
    """`dvc exp run` for one row: mode `queue` (--queue) or `temp` (run now in a temp dir)."""
    cmd = ["dvc", "exp", "run", f"--{mode}", "-n", exp_name(row, seed, suffix)]
    for o in row_overrides(row, params, profile, seed):
        cmd += ["-S", o]
    return cmd


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` -> [0, 1, 2] (None when not given)."""
    if not text:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds {text!r}: expected comma-separated integers") from None
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {text!r}: a seed appears twice")
    return seeds
