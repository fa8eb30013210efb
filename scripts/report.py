"""The grid's Table 1 with statistics: reports/table1.{md,csv}, reports/stats.csv, plots, compare URL.

    python scripts/report.py [--source mlflow|dvc] [--split auto|valid|test] [--predictions DIR] [--no-mlflow-run]
    python scripts/report.py html-template [--vendor vendor]   # offline `dvc plots show` template

A thin command line over tinyllm.experiments.report (where the sources, the selection rule and
the statistics are described).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tinyllm.experiments import report
from tinyllm.experiments.rows import GRID, ROOT, load_grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="table", choices=["table", "html-template"])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--grid", type=Path, default=GRID)
    ap.add_argument("--out", type=Path, default=None, help="default: <root>/reports")
    ap.add_argument("--source", choices=["mlflow", "dvc"], default="mlflow")
    ap.add_argument(
        "--split",
        choices=["auto", "valid", "test"],
        default="auto",
        help="the split the tables show (auto: test when every row has it, else valid); "
        "selection (best alpha) always uses valid",
    )
    ap.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="per-question predictions as DIR/<row>[/seed<k>]/<split>/<benchmark>.jsonl "
        "(default: the runs' MLflow artifacts, else the DVC experiments' eval/predictions)",
    )
    ap.add_argument("--experiment", default=None, help="MLflow experiment (default: tracking.experiment)")
    ap.add_argument("--ui-url", default=os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"))
    ap.add_argument("--vendor", type=Path, default=ROOT / "vendor")
    ap.add_argument("--no-mlflow-run", action="store_true", help="do not log the report run")
    ap.add_argument(
        "--from-csv",
        type=Path,
        default=None,
        help="re-render an earlier table1.csv (accuracy only; needs --n): intervals, no paired tests",
    )
    ap.add_argument("--n", type=int, default=None, help="questions per benchmark of the --from-csv runs")
    args = ap.parse_args(argv)
    if args.what == "html-template":
        print(report.build_offline_template(args.vendor))
        return 0
    root = args.root.resolve()
    results, source = None, args.source
    if args.from_csv:
        if not args.n:
            ap.error("--from-csv needs --n (questions per benchmark of those runs)")
        results = report.collect_table_csv(args.from_csv, args.n)
        source = f"{args.from_csv.name} (n = {args.n} per benchmark; no predictions, so no paired tests)"
    report.make_report(
        root,
        load_grid(args.grid),
        (args.out or root / "reports").resolve(),
        source,
        args.split,
        args.experiment,
        args.ui_url,
        args.vendor,
        not args.no_mlflow_run and not args.from_csv,
        args.predictions,
        results=results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
