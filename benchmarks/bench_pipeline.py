"""Pipeline overhead: `dvc status` and no-op `dvc repro` on the default pipeline (run it after a
complete `dvc repro`), and the start-up time of every stage script (`--help`: module-level
imports only; heavy imports live inside main()). Also prints the peak RSS the distill and
evaluate stages recorded in their metrics.

    python benchmarks/bench_pipeline.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import ROOT, machine, table, timeit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = os.path.join(os.path.dirname(sys.executable), "dvc")

    def sh(cmd):
        return lambda: subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)

    rows = []
    for name, cmd in (("dvc status", [dvc, "status"]), ("dvc repro (no-op)", [dvc, "repro"])):
        med, _ = timeit(sh(cmd), args.repeats)
        rows.append({"what": name, "median s": f"{med:.2f}", "goal": "<= 3 s"})
    for script in sorted((ROOT / "stages").glob("[!_]*.py")):
        med, _ = timeit(sh([sys.executable, str(script), "--help"]), args.repeats)
        rows.append({"what": f"start-up: stages/{script.name}", "median s": f"{med:.2f}", "goal": ""})
    for name, path, key in (
        ("distill", "metrics/train.json", ("train", "peak_rss_gb")),
        ("evaluate", "metrics/eval.json", ("peak_rss_gb",)),
    ):
        p = ROOT / path
        if p.exists():
            v = json.loads(p.read_text())
            for k in key:
                v = v.get(k, {}) if isinstance(v, dict) else {}
            if isinstance(v, (int, float)):
                rows.append({"what": f"peak RSS of stage {name}", "median s": f"{v:.2f} GB", "goal": "<= 8 GB"})
    print(f"machine: {machine()}")
    print(table(rows, ["what", "median s", "goal"]))


if __name__ == "__main__":
    main()
