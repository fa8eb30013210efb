"""The baselines/ablations grid (experiments/grid.yaml) as DVC experiments, and its report.

    python scripts/grid.py queue   [--rows a,b] [--profile experiments/paper.yaml --student ID]
    python scripts/grid.py start   [-j 1] [--wait]     # dvc queue start; --wait polls until done
    python scripts/grid.py status                      # queue + which rows have an MLflow run
    python scripts/grid.py report  [...]               # reports/table1.{md,csv}, plots, compare URL
    python scripts/grid.py run     [--rows a,b]        # the same rows one by one (dvc exp run --temp)
    python scripts/grid.py screenshot [--out docs/mlflow-compare-grid.png]   # headless Chromium

Why a DVC queue and not `foreach`/`matrix` in dvc.yaml: a row is the whole pipeline under other
parameters, not another stage. A matrix would copy `distill` and `evaluate` once per row (their
outputs, `models/student`, metrics, would need per-row paths and a second set of stage
definitions to keep in sync), and every `dvc repro` would consider all rows. Queued experiments
reuse dvc.yaml unchanged, each row is an ordinary experiment (`dvc exp show`, `dvc exp apply
<row>` to get its checkpoint), unchanged stages are restored from the run-cache, and a row is
just a list of `-S` overrides a reader can diff.

Every run logs into one MLflow store: `tinyllm.tracking` resolves the default SQLite path to the
main repo even inside `.dvc/tmp/exps/tmpXXXX`, where queued runs execute.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "experiments" / "grid.yaml"
GROUPS = ("baseline", "ablation")
ROW_KEYS = {"row", "group", "label", "paper", "alpha", "needs", "set"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------------- grid file


def load_grid(path: Path = GRID) -> list[dict]:
    """Rows of the grid file, checked: unique valid names, known keys and groups."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    rows, seen = data.get("rows") or [], set()
    for i, r in enumerate(rows):
        where = f"{path}: rows[{i}]"
        unknown = set(r) - ROW_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(ROW_KEYS)}")
        name = r.get("row")
        if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".") or ".." in name:
            raise ValueError(f"{where}: row name {name!r} must match {_NAME.pattern} (it is a git ref)")
        if name in seen:
            raise ValueError(f"{where}: row {name!r} appears twice")
        seen.add(name)
        if r.get("group") not in GROUPS:
            raise ValueError(f"{where} ({name}): group {r.get('group')!r} not in {GROUPS}")
        if not all(isinstance(s, str) and "=" in s for s in r.get("set") or []):
            raise ValueError(f"{where} ({name}): set must be a list of 'key=value' strings")
        r.setdefault("label", name)
        r.setdefault("set", [])
        r.setdefault("needs", [])
    return rows


def select(rows: list[dict], names: str | None) -> list[dict]:
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


def row_overrides(row: dict, params: dict, profile: list[str] = ()) -> list[str]:
    """All `-S` overrides of one row: its MLflow tag, the profile, then the row's own."""
    return [f"tracking.row={row['row']}", *expand_overrides([*profile, *row["set"]], params)]


def missing_caches(row: dict, root: Path = ROOT) -> list[str]:
    return [n for n in row["needs"] if not (root / "data" / "rationales" / n).is_dir()]


def exp_command(row: dict, params: dict, profile: list[str], mode: str, suffix: str = "") -> list[str]:
    """`dvc exp run` for one row: mode `queue` (--queue) or `temp` (run now in a temp dir)."""
    cmd = ["dvc", "exp", "run", f"--{mode}", "-n", row["row"] + suffix]
    for o in row_overrides(row, params, profile):
        cmd += ["-S", o]
    return cmd


# ----------------------------------------------------------------------------- commands


def _dvc(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    venv_dvc = Path(sys.executable).parent / "dvc"  # this interpreter's dvc, also when not activated
    exe = [str(venv_dvc)] if args[0] == "dvc" and venv_dvc.exists() else args[:1]
    # stage commands say `python`: put this venv first on PATH (queue workers inherit it)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(exe + args[1:], cwd=root, capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
    return res


def _rows_to_run(args) -> tuple[list[dict], dict, list[str]]:
    rows = select(load_grid(args.grid), args.rows)
    params = yaml.safe_load((args.root / "params.yaml").read_text()) or {}
    profile = load_profile(args.profile, args.student)
    runnable = []
    for r in rows:
        miss = missing_caches(r, args.root)
        if miss:
            print(f"skip {r['row']}: rationale cache(s) {', '.join('data/rationales/' + m for m in miss)} "
                  f"not found (add the teacher to params.yaml `teachers:` and dvc.yaml's generate_rationales matrix, then `dvc repro`)")
        else:
            runnable.append(r)
    return runnable, params, profile


def cmd_queue(args) -> int:
    rows, params, profile = _rows_to_run(args)
    for r in rows:
        cmd = exp_command(r, params, profile, "queue", args.suffix)
        print("$", " ".join(_quote(c) for c in cmd))
        if not args.dry_run:
            res = _dvc(cmd, args.root, check=False)
            if res.returncode != 0:
                raise SystemExit(f"queueing {r['row']} failed:\n{res.stderr[-2000:]}\n(an experiment of that "
                                 f"name exists for this commit? `dvc exp remove {r['row']}` or --suffix -2)")
    print(f"{len(rows)} row(s) queued; next: python scripts/grid.py start --wait")
    return 0


def cmd_run(args) -> int:
    """The rows one after another, each `dvc exp run --temp` (from HEAD + its overrides, in a
    temp dir like a queued run, without the queue's worker processes)."""
    rows, params, profile = _rows_to_run(args)
    for r in rows:
        cmd = exp_command(r, params, profile, "temp", args.suffix)
        print("$", " ".join(_quote(c) for c in cmd), flush=True)
        if not args.dry_run:
            t0 = time.perf_counter()
            _dvc(cmd, args.root)
            print(f"  {r['row']}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def queue_active(root: Path) -> list[str]:
    """Lines of `dvc queue status` for experiments still queued or running."""
    out = _dvc(["dvc", "queue", "status"], root).stdout
    return [ln for ln in out.splitlines() if re.search(r"\b(Queued|Running)\b", ln)]


def workers_alive(root: Path) -> list[int]:
    """PIDs of this repo's live DVC queue workers, from their pid files (no broker traffic)."""
    alive = []
    for f in (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        try:
            pid = int(f.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, OSError):
            continue
        alive.append(pid)
    return alive


def cmd_start(args) -> int:
    # -j 1 by default: each worker loads the student and trains on all cores; on a small machine
    # two workers only contend (and DVC marks parallel queue workers experimental)
    print(_dvc(["dvc", "queue", "start", "-j", str(args.jobs)], args.root).stdout.strip())
    if not args.wait:
        return 0
    # Wait on the worker processes, not on `dvc queue status`: every status call broadcasts a
    # celery control message through DVC's filesystem broker, and a worker that reads such a file
    # half-written dies (kombu JSONDecodeError in .dvc/tmp/exps/celery/dvc-exp-worker-*.out),
    # leaving the rest of the queue unrun. Status is asked only when no worker is left; if rows are
    # still queued then, the worker died: start a new one (at most --restarts times).
    t0, restarts = time.perf_counter(), 0
    while True:
        while workers_alive(args.root):
            time.sleep(args.poll)
        active = queue_active(args.root)
        if not active:
            break
        if restarts >= args.restarts:
            print(f"queue worker gone with {len(active)} row(s) left after {restarts} restart(s):\n" + "\n".join(active))
            return 1
        restarts += 1
        print(f"[{time.perf_counter() - t0:6.0f} s] queue worker exited with {len(active)} row(s) left: "
              f"restarting it ({restarts}/{args.restarts})", flush=True)
        _dvc(["dvc", "queue", "start", "-j", str(args.jobs)], args.root)
        time.sleep(5)
    status = _dvc(["dvc", "queue", "status"], args.root).stdout
    print(status)
    print(f"queue done in {time.perf_counter() - t0:.0f} s ({restarts} worker restart(s))")
    failed = [ln for ln in status.splitlines() if "Failed" in ln]
    if failed:
        print("failed experiments (see `dvc queue logs <name>`):\n" + "\n".join(failed))
        return 1
    return 0


def cmd_status(args) -> int:
    print(_dvc(["dvc", "queue", "status"], args.root, check=False).stdout)
    import report

    rows = load_grid(args.grid)
    found = report.collect_mlflow(args.root, args.experiment)
    for r in rows:
        run = found.get(r["row"])
        print(f"{r['row']:<18} {'run ' + run['run_id'] if run else '-- no MLflow run yet'}")
    return 0


# ----------------------------------------------------------------------------- MLflow UI in Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000"]


class MlflowUI:
    """`mlflow server` on the repo's store (or MLFLOW_TRACKING_URI) on a free local port, as a
    context manager; the server runs in its own process group, killed on exit."""

    def __init__(self, root: Path, timeout: float = 120.0):
        self.root, self.timeout, self.proc = root, timeout, None

    def __enter__(self) -> str:
        import socket
        import urllib.request

        sys.path.insert(0, str(ROOT / "src"))
        from tinyllm.tracking import tracking_uri

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", tracking_uri(self.root),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        import tempfile

        self.log = tempfile.NamedTemporaryFile("w", prefix="mlflow-ui-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(1)
        self.__exit__()
        raise RuntimeError(f"mlflow server not healthy after {self.timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its worker, nothing else
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def chromium(url: str, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """Load `url` in headless Chromium; return the rendered DOM (and save a screenshot)."""
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        base = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        if screenshot:
            subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=180)
        res = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return res.stdout


def cmd_screenshot(args) -> int:
    import report

    found = report.collect_mlflow(args.root, args.experiment)
    rows = {r["row"] for r in select(load_grid(args.grid), args.rows)}
    found = {k: v for k, v in found.items() if k in rows}
    if not found:
        raise SystemExit("no MLflow runs for these rows yet")
    with MlflowUI(args.root) as ui:
        url = report.compare_url(found, ui)
        dom = chromium(url, screenshot=args.out.resolve())
    seen = [r["run_id"] for r in found.values() if r["run_id"] in dom]
    print(f"{args.out}: compare page of {len(found)} run(s); {len(seen)} run ids found in the page")
    return 0 if len(seen) == len(found) else 1


def cmd_report(args, extra: list[str]) -> int:
    import report

    return report.main(["--grid", str(args.grid), "--root", str(args.root), *extra])


def _quote(s: str) -> str:
    return s if re.match(r"^[\w@%+=:,./-]+$", s) else "'" + s.replace("'", "'\\''") + "'"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path, default=GRID)
    ap.add_argument("--root", type=Path, default=ROOT, help="the DVC repo (default: this one)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("queue", "run"):
        p = sub.add_parser(name)
        p.add_argument("--rows", help="comma-separated row names (default: all)")
        p.add_argument("--profile", type=Path, help="a profile of overrides for every row (experiments/paper.yaml)")
        p.add_argument("--student", help="student.source for every row (a profile's students: pick one)")
        p.add_argument("--suffix", default="", help="appended to experiment names (re-queue a row)")
        p.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    p = sub.add_parser("start")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--wait", action="store_true", help="return when nothing is queued or running")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between worker liveness checks")
    p.add_argument("--restarts", type=int, default=3, help="restart a dead queue worker at most this often")
    p = sub.add_parser("status")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: tracking.experiment)")
    p = sub.add_parser("screenshot", help="headless Chromium screenshot of the MLflow compare page")
    p.add_argument("--rows", help="comma-separated row names (default: all)")
    p.add_argument("--experiment", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow-compare-grid.png")
    sub.add_parser("report", add_help=False)
    args, extra = ap.parse_known_args(argv)
    args.root = args.root.resolve()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.cmd == "report":
        return cmd_report(args, extra)
    if extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    return {"queue": cmd_queue, "run": cmd_run, "start": cmd_start, "status": cmd_status,
            "screenshot": cmd_screenshot}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
