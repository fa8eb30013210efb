"""Mutation check: apply each breakage of ``mutations.py`` to a temporary copy of the tree (never
the working tree), run its tests there, and count the breakages the tests catch.

    nice -n 19 python tests/mutations/run.py            # all; prints caught/total, exit 1 if any survived
    python tests/mutations/run.py -k position           # the ones whose name contains "position"
    python tests/mutations/run.py --baseline            # also check each test set passes unbroken first
    python tests/mutations/run.py --list

A breakage is *caught* when pytest exits 1 (tests failed). Exit 0 = *survived*; any other exit
(collection error, no test selected) or an ``original`` that is not exactly once in its file
(*stale*: the code moved) is reported as an error and not counted as caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from mutations import MUTATIONS  # noqa: E402


def copy_tree(dst: Path) -> None:
    """The files git knows or would add (tracked + untracked, not ignored), nothing else."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if not src.is_file() or src.is_symlink():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def pytest(tree: Path, args: list[str], timeout: int) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree / 'stages'}", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not slow"]
    try:
        p = subprocess.run(cmd + args, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    tail = (p.stdout + p.stderr).strip().splitlines()
    return p.returncode, tail[-1] if tail else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only mutations whose name contains this")
    ap.add_argument("--baseline", action="store_true", help="first check each test set passes on the unbroken copy")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per pytest run")
    args = ap.parse_args()
    todo = [m for m in MUTATIONS if args.k.lower() in m["name"].lower()]
    if args.list:
        for m in todo:
            print(f"{m['name']}  [{m['file']}]  {' '.join(m['tests'])}")
        return 0
    caught, rows, t0 = 0, [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinyllm-mutations-") as d:
        tree = Path(d) / ROOT.name
        copy_tree(tree)
        if (ROOT.parent / "shared").is_dir():  # ../shared beside the copy too (the offline mirror)
            (Path(d) / "shared").symlink_to(ROOT.parent / "shared")
        if args.baseline:
            for tests in sorted({tuple(m["tests"]) for m in todo}):
                rc, last = pytest(tree, list(tests), args.timeout)
                print(f"baseline {'ok  ' if rc == 0 else 'FAIL'} {' '.join(tests)}: {last}", flush=True)
                if rc != 0:
                    return 2
        for i, m in enumerate(todo, 1):
            path = tree / m["file"]
            text = path.read_text()
            n = text.count(m["original"])
            if n != 1:
                verdict, last = "stale", f"original found {n} times in {m['file']}"
            else:
                path.write_text(text.replace(m["original"], m["broken"]))
                try:
                    rc, last = pytest(tree, m["tests"], args.timeout)
                finally:
                    path.write_text(text)
                verdict = {1: "caught", 0: "SURVIVED"}.get(rc, f"error(rc={rc})")
            caught += verdict == "caught"
            rows.append((verdict, m["name"]))
            print(f"[{i}/{len(todo)}] {verdict:9s} {m['name']}  ({last})", flush=True)
    print(f"\ncaught {caught}/{len(todo)} in {time.perf_counter() - t0:.0f} s")
    for verdict, name in rows:
        if verdict != "caught":
            print(f"  not caught: {name} ({verdict})")
    return 0 if caught == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
