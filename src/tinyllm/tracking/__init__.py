"""MLflow tracking: the only package that imports mlflow (~1-3 s), so stages that do not track stay fast.

What a run holds (one run per trained student, spanning the ``distill`` and ``evaluate`` stages):

- ``distill`` starts the run (name: grid row / DVC experiment, alphas, seed: ``no_icl a=1,1,0.5 s0``),
  logs params, tags and its input datasets (prepared splits and each used rationale cache, the DVC
  md5 from ``dvc.lock`` as digest), then the training losses *live* (``train/loss``, ``train/loss_<teacher>``,
  ``train/lr`` per logged step) and CPU/memory system metrics, and writes the run id to
  ``metrics/mlflow_run.json`` (a small DVC output of ``distill``, next to the metrics).
- ``evaluate`` resumes that run (``start_run(run_id=...)``) and adds the per-benchmark accuracy
  in percent (``accuracy/<split>/<benchmark>`` and ``accuracy/<split>/average``, the columns of the
  experiment's results view; n, CIs, rules and timings are the ``eval.json`` artifact:
  ``names.py``), the
  evaluation datasets, the metric files and the student as an MLflow model (transformers flavour,
  registered as a version of ``tracking.registered_model``). When there is no usable run to resume
  (no run file, a run id from another store, or a run already evaluated because DVC restored
  ``distill`` from its run-cache), it starts a fresh run that carries everything the distill run would
  have (params, training curve from ``metrics/train_log.tsv``, training datasets) and is linked by
  tag to the checkpoint's md5 (``tinyllm.student_md5``) and to the run that trained it
  (``tinyllm.distill_run_id``).
- A grid or study is one parent run (``parent_run``); a child finds its parent through the
  ``TINYLLM_PARENT_RUN_ID`` environment variable, which DVC passes through its queue workers to the
  stage commands (set it in the environment of ``dvc queue start`` / ``dvc exp run``).
  ``register_best`` points the alias ``@best-valid`` at the best child's registered student.

The experiment carries ``mlflow.experimentKind = custom_model_development`` so the UI opens on the
runs table, not on the GenAI traces overview.

Default store: SQLite at ``<repo>/mlflow.db`` (absolute path). Queued DVC experiments run in
``<repo>/.dvc/tmp/exps/tmpXXXX``; the store path is taken from the repo *outside* that copy so
every run lands in the same database. ``MLFLOW_TRACKING_URI`` overrides it (a team server).

This package exports what the stages, scripts and reports call (below); the rest is reached
through its module (``tracking.names.run_name``). Modules (each imports mlflow lazily, inside
the functions that use it):

- ``store``     the store: URI, whether it answers, the experiment, UI links
- ``names``     run names, tags, metric names
- ``lineage``   git commit, DVC md5s from ``dvc.lock``, the datasets of a run
- ``run``       ``Run``: one stage's run, its outage buffer, owner tags, orphaned runs
- ``handover``  the distill -> evaluate hand-over (start, finish, replay, resume)
- ``groups``    parent runs of grids and studies, the best child's alias, runs read back
"""

from .groups import (
    describe_run,
    download_artifacts,
    log_report_run,
    log_run,
    parent_run,
    register_best,
    row_runs,
    run_results,
)
from .handover import finish_distill_run, finish_evaluate_run, open_evaluate_run, start_distill_run
from .lineage import dvc_hashes
from .names import eval_metrics, split_metrics
from .store import (
    TrackingUnavailable,
    compare_url,
    ensure_results_view,
    experiment_name,
    results_view_state,
    runs_url,
    tracking_uri,
)

__all__ = [
    "TrackingUnavailable",
    "compare_url",
    "describe_run",
    "download_artifacts",
    "dvc_hashes",
    "ensure_results_view",
    "eval_metrics",
    "experiment_name",
    "finish_distill_run",
    "finish_evaluate_run",
    "log_report_run",
    "log_run",
    "open_evaluate_run",
    "parent_run",
    "register_best",
    "results_view_state",
    "row_runs",
    "run_results",
    "runs_url",
    "split_metrics",
    "start_distill_run",
    "tracking_uri",
]
