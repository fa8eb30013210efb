"""The whole report: collect, build the table, write tables, statistics and plots, log the report run."""

from __future__ import annotations

from pathlib import Path

from tinyllm import tracking

from ..rows import ROOT
from .collect import collect_dvc, collect_mlflow
from .plots import plot_data, write_pngs, write_points
from .predictions import Predictions
from .render import report_metrics, write_csv, write_markdown, write_stats_csv
from .selection import SELECT_SPLIT, best_alpha, report_split, selection_note
from .table import build_table, comparisons, shares
from .vega import dvc_plots_html


def compare_url(results: dict, ui: str) -> str | None:
    """MLflow compare page of every run behind the table (all seeds of every row)."""
    runs = [r for res in results.values() for r in res["runs"].values() if r.get("run_id")]
    return tracking.compare_url([r["run_id"] for r in runs], [r["experiment_id"] for r in runs], ui)


def make_report(
    root: Path,
    grid: list[dict],
    out: Path,
    source: str = "mlflow",
    split: str = "auto",
    experiment: str | None = None,
    ui_url: str = "http://127.0.0.1:5000",
    vendor: Path | None = None,
    log_run: bool = True,
    pred_dir: Path | None = None,
    say=print,
    results: dict | None = None,
) -> dict:
    """Everything `python scripts/grid.py report` writes; returns {split, files, results, run_id}.
    `results` given: those (e.g. `collect_table_csv`) instead of collecting from `source`."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    experiment = tracking.experiment_name(root, experiment)
    if results is None:
        results = collect_mlflow(root, experiment) if source == "mlflow" else collect_dvc(root)
    if not results:
        say(f"no results in {source} (experiment {experiment!r}); table written with empty rows")
    results = {k: v for k, v in results.items() if k in {g["row"] for g in grid}}
    split = report_split(results, split)
    preds = Predictions(root, pred_dir, stores=source in ("mlflow", "dvc"))
    url = compare_url(results, ui_url) if source in ("mlflow", "dvc") else None
    table, size = build_table(grid, results, split, root, preds)
    comps = comparisons(table)
    opt = shares(table, results, split, preds)
    selection = selection_note(split, best_alpha(grid, results), results)
    write_markdown(out / "table1.md", table, size, split, results, url, source, selection, comps, opt)
    write_csv(out / "table1.csv", table, split)
    write_stats_csv(out / "stats.csv", comps, opt, split)
    files = [out / "table1.md", out / "table1.csv", out / "stats.csv"]
    bars, alpha = plot_data(grid, table)
    csvs = {}
    for name, pts in (("accuracy", bars), ("alpha", alpha)):
        if pts:
            csvs[name] = out / "plots" / f"{name}.csv"
            write_points(csvs[name], pts)
    files += write_pngs(out / "plots", bars, alpha, table, split)
    template = (vendor or ROOT / "vendor") / "dvc-plots-offline.html"
    if template.exists() and csvs:
        files += dvc_plots_html(root, out / "plots", csvs, template)
    elif csvs:
        say(f"{template} missing: `make vendor-vega` for the offline DVC plots (PNGs written)")
    say(f"wrote {out / 'table1.md'} and {out / 'table1.csv'} ({len(results)} of {len(grid)} rows with results)")
    missing = [g["row"] for g in grid if g["row"] not in results]
    if missing:
        say(f"rows without results: {', '.join(missing)}")
    run_id = None
    if source == "mlflow" and results and log_run:
        tags = {
            "split": split,
            "selection_split": SELECT_SPLIT,
            "grid_runs": ",".join(r["run_id"] for res in results.values() for r in res["runs"].values()),
        }
        run_id = tracking.log_report_run(
            root, experiment, [f for f in files if f.suffix != ".html"], tags, report_metrics(table, comps)
        )
        say(f"report run {run_id} (artifacts: tables, statistics, plots)")
    if url:
        say(f"MLflow compare page: {url}")
    preds.tmp.cleanup()
    return {"split": split, "files": files, "results": results, "table": table, "comparisons": comps, "run_id": run_id}
