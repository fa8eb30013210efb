"""The baselines/ablations grid (experiments/grid.yaml) as DVC experiments, and its report.

    python scripts/grid.py queue   [--rows a,b] [--seeds 0,1,2] [--profile experiments/paper.yaml --student ID]
    python scripts/grid.py start   [-j 1] [--wait]     # dvc queue start; --wait returns when the queue is done
    python scripts/grid.py status                      # queue + which rows have an MLflow run
    python scripts/grid.py report  [...]               # reports/table1.{md,csv}, stats, plots, compare URL
    python scripts/grid.py run     [--rows a,b] [--seeds 0,1,2]   # one by one (dvc exp run --temp)
    python scripts/grid.py screenshot [--out docs/mlflow-compare-grid.png]   # headless Chromium

A thin command line: rows and overrides live in tinyllm.experiments.rows, running them in
tinyllm.experiments.grid, the report in tinyllm.experiments.report (see their docstrings).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tinyllm.experiments import grid as gridrun
from tinyllm.experiments import mlflow_ui
from tinyllm.experiments import rows as gridrows

ROOT = gridrows.ROOT


def _commands(args, mode: str):
    rows, params, profile = gridrun.rows_to_run(args.root, args.grid, args.rows, args.profile, args.student)
    return rows, gridrun.commands(rows, params, profile, mode, args.suffix, gridrows.parse_seeds(args.seeds))


def cmd_queue(args) -> int:
    rows, cmds = _commands(args, "queue")
    gridrun.queue(args.root, cmds, args.dry_run)
    print(f"{len(cmds)} experiment(s) of {len(rows)} row(s) queued; next: python scripts/grid.py start --wait")
    return 0


def _say(s: str) -> None:
    print(s, flush=True)


def cmd_run(args) -> int:
    rows, cmds = _commands(args, "temp")
    if args.dry_run:
        gridrun.run_now(args.root, cmds, True, say=_say)
        return 0

    def work() -> int:
        gridrun.run_now(args.root, cmds, say=_say)
        return 0

    tags = {"rows": ",".join(r["row"] for r in rows), "experiments": ",".join(n for n, _ in cmds)}
    return gridrun.in_parent_run(args.root, f"grid {time.strftime('%Y-%m-%d %H:%M')}", work, tags, say=_say)


def cmd_start(args) -> int:
    if not args.wait:  # no parent run: nothing would end it
        print(gridrun.dvc(["dvc", "queue", "start", "-j", str(args.jobs)], args.root).stdout.strip())
        return 0
    return gridrun.in_parent_run(
        args.root,
        f"grid {time.strftime('%Y-%m-%d %H:%M')}",
        lambda: gridrun.start_and_wait(args.root, args.jobs, args.poll, args.restarts, _say),
        {"queue": "dvc queue"},
        say=_say,
    )


def cmd_status(args) -> int:
    from tinyllm.experiments import report

    print(gridrun.dvc(["dvc", "queue", "status"], args.root, check=False).stdout)
    found = report.collect_mlflow(args.root, args.experiment)
    for r in gridrows.load_grid(args.grid):
        res = found.get(r["row"])
        runs = ", ".join(
            f"seed {s}: {run['run_id']}" if s is not None else run["run_id"]
            for s, run in (res or {}).get("runs", {}).items()
        )
        print(f"{r['row']:<18} {'run ' + runs if res else '-- no MLflow run yet'}")
    return 0


def cmd_screenshot(args) -> int:
    from tinyllm.experiments import report

    found = report.collect_mlflow(args.root, args.experiment)
    names = {r["row"] for r in gridrows.select(gridrows.load_grid(args.grid), args.rows)}
    found = {k: v for k, v in found.items() if k in names}
    if not found:
        raise SystemExit("no MLflow runs for these rows yet")
    ids = [run["run_id"] for res in found.values() for run in res["runs"].values()]
    with mlflow_ui.MlflowUI(args.root) as ui:
        dom = mlflow_ui.chromium(report.compare_url(found, ui), screenshot=args.out.resolve())
    seen = [i for i in ids if i in dom]
    print(f"{args.out}: compare page of {len(ids)} run(s); {len(seen)} run ids found in the page")
    return 0 if len(seen) == len(ids) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path, default=gridrows.GRID)
    ap.add_argument("--root", type=Path, default=ROOT, help="the DVC repo (default: this one)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("queue", "run"):
        p = sub.add_parser(name)
        p.add_argument("--rows", help="comma-separated row names (default: all)")
        p.add_argument(
            "--seeds",
            help="comma-separated seeds for every trained row (experiments <row>-s<seed>); "
            "default: the row's `seeds`, else params.yaml's distill.seed",
        )
        p.add_argument("--profile", type=Path, help="a profile of overrides for every row (experiments/paper.yaml)")
        p.add_argument("--student", help="student.source for every row (a profile's students: pick one)")
        p.add_argument("--suffix", default="", help="appended to experiment names (re-queue a row)")
        p.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    p = sub.add_parser("start")
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        help="workers (default 1: each trains on all cores; DVC marks parallel workers experimental)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="return when nothing is queued or running; the queue's "
        "runs become children of one MLflow parent run (start no worker before this)",
    )
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
    if args.cmd == "report":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import report as report_cli

        return report_cli.main(["--grid", str(args.grid), "--root", str(args.root), *extra])
    if extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    return {"queue": cmd_queue, "run": cmd_run, "start": cmd_start, "status": cmd_status, "screenshot": cmd_screenshot}[
        args.cmd
    ](args)


if __name__ == "__main__":
    sys.exit(main())
