"""The grid's Table 1 with statistics: reports/table1.{md,csv}, reports/stats.csv, option
shares, plots (PNG + offline DVC plots), the MLflow compare URL and a report run.

Results come from MLflow (per `row` tag and seed, the latest finished run with accuracy
metrics; the evaluate stage logs one per experiment) or, with source `dvc`, from the metrics
files of the DVC experiments (`dvc exp show --json`; row = the experiment's `tracking.row`).
Per-question predictions, which every statistic beyond a Wilson interval needs, come from a
folder given on the command line (`<dir>/<row>[/seed<k>]/<split>/<b>.jsonl`), else from the
run's MLflow artifacts (`predictions/<split>/<b>.jsonl`), else from the DVC experiment's
`eval/predictions` through `dvc.api.open` at its revision. A row without predictions keeps its
accuracy and Wilson interval (from accuracy and n) but gets no paired test.

Selection never reads test: the best alpha is chosen on `valid`; the table shows `test` for
every row (as selected on valid) when every row has test, else `valid`, labelled
"selected and reported on valid (no test split)". Statistics: see stats.py.

One concept per module (imports flow down this list; no cycles):

- ``columns.py``     the benchmarks and the average, in the paper's order
- ``paper.py``       the paper's Table 1 (data: experiments/paper_table1.yaml)
- ``collect.py``     results from MLflow, `dvc exp show` or an earlier table1.csv
- ``predictions.py`` per-question predictions (local folder, MLflow artifacts, DVC revision)
- ``rownumbers.py``  one row's accuracy / CI / sd / n, and the majority and chance rows
- ``selection.py``   the reported split and the best alpha (selected on valid)
- ``table.py``       the table's rows, paired comparisons, option shares
- ``render.py``      Markdown, CSV and the report run's metrics
- ``plots.py``       plot points and PNGs (matplotlib)
- ``vega.py``        offline `dvc plots show` pages
- ``make.py``        ``make_report``: all of the above, and the MLflow report run

This package's namespace re-exports the public functions, so callers write ``report.make_report``.
"""

from .collect import collect_dvc, collect_mlflow, collect_table_csv, exp_show, split_metrics
from .columns import AVERAGE, BENCHMARKS, HEADER, NAMES, blank
from .make import compare_url, make_report
from .paper import PAPER, PAPER_LABEL, PAPER_STUDENTS, PAPER_TEACHERS, RELEASE_NOTE
from .plots import plot_data, write_pngs, write_points
from .predictions import Predictions
from .render import report_metrics, write_csv, write_markdown, write_stats_csv
from .rownumbers import reference_rows, row_matrices, row_numbers
from .selection import SELECT_SPLIT, best_alpha, mean_average, report_split, selection_note
from .table import REFERENCES, build_table, comparisons, rel_gain, shares
from .vega import build_offline_template, dvc_plots_html

__all__ = [
    "AVERAGE",
    "BENCHMARKS",
    "HEADER",
    "NAMES",
    "PAPER",
    "PAPER_LABEL",
    "PAPER_STUDENTS",
    "PAPER_TEACHERS",
    "REFERENCES",
    "RELEASE_NOTE",
    "SELECT_SPLIT",
    "Predictions",
    "best_alpha",
    "blank",
    "build_offline_template",
    "build_table",
    "collect_dvc",
    "collect_mlflow",
    "collect_table_csv",
    "compare_url",
    "comparisons",
    "dvc_plots_html",
    "exp_show",
    "make_report",
    "mean_average",
    "plot_data",
    "reference_rows",
    "rel_gain",
    "report_metrics",
    "report_split",
    "row_matrices",
    "row_numbers",
    "selection_note",
    "shares",
    "split_metrics",
    "write_csv",
    "write_markdown",
    "write_pngs",
    "write_points",
    "write_stats_csv",
]
