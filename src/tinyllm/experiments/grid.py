"""Running the grid (rows.py) as DVC experiments: queue, run one by one, start and wait on the
queue, and look at the MLflow runs in a headless browser.

Why a DVC queue and not `foreach`/`matrix` in dvc.yaml: a row is the whole pipeline under other
parameters, not another stage. A matrix would copy `distill` and `evaluate` once per row (their
outputs would need per-row paths and a second set of stage definitions to keep in sync), and
every `dvc repro` would consider all rows. Queued experiments reuse dvc.yaml unchanged, each row
is an ordinary experiment (`dvc exp show`, `dvc exp apply <row>`), unchanged stages come from the
run-cache, and a row is a list of `-S` overrides a reader can diff.

Only DVC's public interfaces are used: `dvc exp run`, `dvc queue start|status|logs`. Waiting on
the queue watches the worker *process* instead of polling `dvc queue status`: each status call
broadcasts a celery control message through DVC's filesystem broker, and a worker that reads such
a file half-written dies (kombu JSONDecodeError; treeverse/dvc-task#73), leaving the rest of the
queue unrun. A live worker is found by scanning `ps` for a `dvc exp queue-worker` command line
whose working directory is this repo (the command DVC's `queue start` spawns; Linux /proc for the
directory). Status is asked only when no worker is left; if rows are still queued then, the
worker died and a new one is started (at most `restarts` times).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import rows as gridrows

WORKER_CMD = re.compile(r"\bexp\s+queue-worker\b")
STATUSES = ("Queued", "Running", "Success", "Failed")


def dvc(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run `dvc ...` (this interpreter's dvc) in `root`, this venv first on PATH (stage commands
    say `python`, and queue workers inherit the environment)."""
    venv_dvc = Path(sys.executable).parent / "dvc"  # also when the venv is not activated
    exe = [str(venv_dvc)] if args[0] == "dvc" and venv_dvc.exists() else args[:1]
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    res = subprocess.run(exe + args[1:], cwd=root, capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-3000:]}")
    return res


def quote(s: str) -> str:
    return s if re.match(r"^[\w@%+=:,./-]+$", s) else "'" + s.replace("'", "'\\''") + "'"


# ----------------------------------------------------------------------------- queue / run


def rows_to_run(
    root: Path, grid: Path, names: str | None, profile_path: Path | None, student: str | None, say=print
) -> tuple[list[dict], dict, list[str]]:
    """Selected rows whose rationale caches exist (others skipped with a message), params.yaml,
    and the profile's overrides."""
    rows = gridrows.select(gridrows.load_grid(grid), names)
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    profile = gridrows.load_profile(profile_path, student)
    runnable = []
    for r in rows:
        miss = gridrows.missing_caches(r, root)
        if miss:
            say(
                f"skip {r['row']}: rationale cache(s) {', '.join('data/rationales/' + m for m in miss)} not found "
                "(add the teacher to params.yaml `teachers:` and dvc.yaml's generate_rationales matrix, "
                "then `dvc repro`)"
            )
        else:
            runnable.append(r)
    return runnable, params, profile


def commands(
    rows: list[dict], params: dict, profile: list[str], mode: str, suffix: str = "", seeds: list[int] | None = None
) -> list[tuple[str, list[str]]]:
    """(experiment name, `dvc exp run` command) for every row and seed."""
    out = []
    for r in rows:
        for s in gridrows.row_seeds(r, seeds, profile):
            out.append((gridrows.exp_name(r, s, suffix), gridrows.exp_command(r, params, profile, mode, suffix, s)))
    return out


def queue(root: Path, cmds: list[tuple[str, list[str]]], dry_run: bool = False, say=print) -> None:
    for name, cmd in cmds:
        say("$ " + " ".join(quote(c) for c in cmd))
        if dry_run:
            continue
        res = dvc(cmd, root, check=False)
        if res.returncode != 0:
            raise SystemExit(
                f"queueing {name} failed:\n{res.stderr[-2000:]}\n(an experiment of that name exists "
                f"for this commit? `dvc exp remove {name}` or --suffix -2)"
            )


def run_now(root: Path, cmds: list[tuple[str, list[str]]], dry_run: bool = False, say=print) -> None:
    """The experiments one after another, each `dvc exp run --temp` (from HEAD + its overrides,
    in a temp dir like a queued run, without the queue's worker processes)."""
    for name, cmd in cmds:
        say("$ " + " ".join(quote(c) for c in cmd))
        if not dry_run:
            t0 = time.perf_counter()
            dvc(cmd, root)
            say(f"  {name}: done in {time.perf_counter() - t0:.0f} s")


# ----------------------------------------------------------------------------- waiting on the queue


def queue_status(root: Path) -> list[tuple[str, str]]:
    """(experiment name, status) for each task `dvc queue status` lists."""
    return parse_queue_status(dvc(["dvc", "queue", "status"], root).stdout)


def parse_queue_status(out: str) -> list[tuple[str, str]]:
    """Rows of `dvc queue status` (Task, Name, Created, Status): the name, or the task's short
    rev when the experiment has no name (Created is `10:00 AM` or `Nov 23, 2026`)."""
    found = []
    for ln in out.splitlines():
        fields = ln.split()
        if len(fields) < 3 or not re.fullmatch(r"[0-9a-f]{7}", fields[0]) or fields[-1] not in STATUSES:
            continue
        named = not re.fullmatch(r"\d{1,2}:\d\d|[A-Z][a-z]{2}", fields[1])
        found.append((fields[1] if named else fields[0], fields[-1]))
    return found


def queue_active(root: Path) -> list[str]:
    """Names of experiments still queued or running (one `dvc queue status` call)."""
    return [n for n, s in queue_status(root) if s in ("Queued", "Running")]


def _ps() -> list[tuple[int, str]]:
    # -ww: whole command lines (ps cuts them at $COLUMNS otherwise, and pytest sets COLUMNS)
    res = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True)
    out = []
    for ln in res.stdout.splitlines():
        pid, _, args = ln.strip().partition(" ")
        if pid.isdigit():
            out.append((int(pid), args))
    return out


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()
    except OSError:
        return None


def workers_alive(root: Path) -> list[int]:
    """PIDs of live `dvc exp queue-worker` processes working in `root` (from `ps`, not DVC's files)."""
    root = Path(root).resolve()
    return [pid for pid, args in _ps() if WORKER_CMD.search(args) and _cwd(pid) == root]


def start_and_wait(root: Path, jobs: int = 1, poll: float = 30.0, restarts: int = 3, say=print) -> int:
    """`dvc queue start`, wait until the queue is done, restart a worker that died with rows
    left; 0 when every experiment succeeded. See the module docstring for why it waits on the
    worker process."""
    dvc(["dvc", "queue", "start", "-j", str(jobs)], root)
    t0, done = time.perf_counter(), 0
    while True:
        time.sleep(5)  # the worker daemonizes after `queue start` returns
        while workers_alive(root):
            time.sleep(poll)
        active = queue_active(root)
        if not active:
            break
        if done >= restarts:
            say(f"queue worker gone with {len(active)} experiment(s) left after {done} restart(s): {', '.join(active)}")
            return 1
        done += 1
        say(
            f"[{time.perf_counter() - t0:6.0f} s] queue worker exited with {len(active)} experiment(s) left: "
            f"restarting it ({done}/{restarts})"
        )
        dvc(["dvc", "queue", "start", "-j", str(jobs)], root)
    status = queue_status(root)
    say(f"queue done in {time.perf_counter() - t0:.0f} s ({done} worker restart(s))")
    failed = [n for n, s in status if s == "Failed"]
    for name in failed:
        logs = dvc(["dvc", "queue", "logs", name], root, check=False).stdout
        say(f"--- {name} failed; last lines of `dvc queue logs {name}`:\n" + "\n".join(logs.splitlines()[-20:]))
    return 1 if failed else 0


# ----------------------------------------------------------------------------- MLflow parent run


def in_parent_run(
    root: Path,
    name: str,
    work,
    tags: dict | None = None,
    experiment: str | None = None,
    register: bool = True,
    say=print,
) -> int:
    """`work()` (returns an exit code) inside one MLflow parent run: every experiment started
    meanwhile (`dvc exp run --temp`, or a queue worker started inside) logs a child run, so the UI
    compares the sweep in one view. Afterwards the best child *on valid* becomes the registered
    student's `@best-valid` alias (tracking.register_best), when the rows logged their models."""
    from tinyllm import tracking

    with tracking.parent_run(root, name, tracking.experiment_name(root, experiment), tags) as pid:
        say(f"MLflow parent run {pid} ({name}); each experiment logs a child run")
        code = work()
    if register and code == 0:
        try:
            run_id, version = tracking.register_best(root, pid)
            say(f"registered student version {version} (run {run_id}) as @best-valid")
        except ValueError as e:
            say(f"no @best-valid alias set: {e}")
    return code
