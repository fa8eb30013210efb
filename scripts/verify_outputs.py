"""Re-hash every cached DVC output in the workspace and compare with dvc.lock / *.dvc.

Why: `dvc pull` from a remote whose `verify` option is off (DVC's default for local and S3
remotes) copies a corrupted object into the workspace without a word, and `dvc status` then
says "up to date" because it trusts the hashes it recorded at checkout. This check trusts
nothing but the bytes on disk: each file is hashed again (md5, as DVC 3 does) and compared
with the hash in the lock file (or, for a directory output, in its `.dir` manifest).

Usage: python scripts/verify_outputs.py [TARGET ...]   (default: every cached output)
Exit 0 when all match; 1 with one line per bad output, naming it, otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_output(out, cache) -> list[str]:
    """Problems with one output, each a line naming the output; [] when its bytes match."""
    name = str(out.def_path)
    want = out.hash_info.value if out.hash_info else None
    if not want:
        return [f"{name}: no hash recorded (run `dvc repro` or `dvc commit`)"]
    if out.hash_name != "md5":
        return [f"{name}: legacy hash '{out.hash_name}' not checked by this script (use `dvc status`)"]
    path = Path(out.fs_path)
    if not out.hash_info.isdir:
        if not path.is_file():
            return [f"{name}: missing in the workspace"]
        got = md5_file(path)
        return [] if got == want else [f"{name}: content hash {got} != {want} recorded in the lock file"]
    manifest = Path(cache.oid_to_path(want))
    if not manifest.is_file():
        return [f"{name}: directory manifest {want} is not in the cache"]
    problems = []
    entries = json.loads(manifest.read_text())
    for e in entries:
        f = path / e["relpath"]
        if not f.is_file():
            problems.append(f"{name}: file {e['relpath']} missing")
        elif md5_file(f) != e["md5"]:
            problems.append(f"{name}: file {e['relpath']} does not match its recorded hash {e['md5']}")
    expected = {e["relpath"] for e in entries}
    if path.is_dir():
        for dirpath, _, files in os.walk(path):
            for fn in files:
                rel = os.path.relpath(os.path.join(dirpath, fn), path).replace(os.sep, "/")
                if rel not in expected:
                    problems.append(f"{name}: unexpected file {rel}")
    return problems


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from dvc.repo import Repo

    repo = Repo(".")
    targets = [t.rstrip("/") for t in argv]
    outs = [o for o in repo.index.outs if o.use_cache]
    if targets:
        outs = [
            o
            for o in outs
            if any(
                str(o.def_path) == t or str(o.def_path).startswith(t + "/") or t.startswith(str(o.def_path) + "/")
                for t in targets
            )
        ]
        if not outs:
            print(f"verify: no cached DVC output matches {targets}", file=sys.stderr)
            return 1
    problems = []
    for o in outs:
        problems += check_output(o, repo.cache.local)
    for p in problems:
        print(f"verify: {p}", file=sys.stderr)
    if problems:
        bad = sorted({p.split(":")[0] for p in problems})
        print(f"verify: FAILED for {len(bad)} output(s): {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"verify: {len(outs)} output(s) match their recorded hashes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
