"""Screenshots of the MLflow UI over this repo's own store, as a newcomer sees it after
`dvc repro` and one `dvc exp run` (docs/tracking.md):

    dvc repro
    dvc exp run --temp -n smoke-steps12 -S distill.steps=12 -S evaluate.generate_per_benchmark=0
    python docs/mlflow_ui_pipeline.py [--out docs]

Serves the store (``mlflow server`` on a free local port, ended afterwards) and renders in headless
Chromium (``/usr/bin/chromium``; ``apt-get install -y chromium``), from the links the repo prints:

- ``mlflow-pipeline-runs.png``: the runs table as ``make mlflow-ui``'s link opens it (the results
  view: accuracy columns, newest run first);
- ``mlflow-pipeline-run.png``: the first screen of the newest evaluated run (its description, the
  results table);
- ``mlflow-pipeline-compare.png``: the compare page of the two newest evaluated runs.

Each page's rendered text is checked for what it must show (the accuracy column, the results
table, both runs), so a UI upgrade that hides them fails here instead of in a screenshot nobody
opens. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]


def _text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def main(argv: list[str] | None = None) -> int:
    from tinyllm import tracking
    from tinyllm.config import load_sections as load_config
    from tinyllm.experiments import mlflow_ui

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    if not Path(mlflow_ui.CHROMIUM).exists():
        print(f"{mlflow_ui.CHROMIUM} not installed: apt-get install -y chromium", file=sys.stderr)
        return 2
    runs = tracking.row_runs(args.root, load_config(args.root / "params.yaml").tracking.experiment)
    if len(runs) < 2:
        print("need two evaluated runs: dvc repro, then one dvc exp run (see --help)", file=sys.stderr)
        return 2
    newest, other = runs[0], runs[1]
    exp_id = newest["experiment_id"]
    tracking.ensure_results_view(args.root, exp_id)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = []
    with mlflow_ui.MlflowUI(args.root) as ui:
        pages = [  # (file, link, what the page must show, window size: the first screen a person sees)
            ("mlflow-pipeline-runs.png", tracking.runs_url(ui, exp_id), ["accuracy/valid/average"], "2200,900"),
            (
                "mlflow-pipeline-run.png",
                tracking.runs_url(ui, exp_id, newest["run_id"]),
                ["Description", "average", "95% CI"],
                "2200,1100",
            ),
            (
                "mlflow-pipeline-compare.png",
                tracking.compare_url([newest["run_id"], other["run_id"]], [exp_id], ui),
                ["accuracy/valid/average"],
                "2200,2400",  # down to the metrics table
            ),
        ]
        for name, url, must, size in pages:
            shot = (args.out / name).resolve()
            text = _text(mlflow_ui.chromium(url, screenshot=shot, budget_ms=30000, size=size))
            missing = [m for m in must if m not in text]
            print(f"{name}: {url}" + (f"  MISSING {missing}" if missing else ""))
            failures += [f"{name}: {m!r} not on the page" for m in missing]
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
