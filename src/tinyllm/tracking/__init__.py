"""MLflow tracking: the only package that imports mlflow (~1-3 s), so stages that do not track stay fast.

What a run holds (one run per trained student, spanning the ``distill`` and ``evaluate`` stages):

- ``distill`` starts the run (name: grid row / DVC experiment, alphas, seed: ``no_icl a=1,1,0.5 s0``),
  logs params, tags and its input datasets (prepared splits and each used rationale cache, the DVC
  md5 from ``dvc.lock`` as digest), then the training losses *live* (``train/loss``, ``train/loss_<teacher>``,
  ``train/lr`` per logged step) and CPU/memory system metrics, and writes the run id to
  ``metrics/mlflow_run.json`` (a small DVC output of ``distill``, next to the metrics).
- ``evaluate`` resumes that run (``start_run(run_id=...)``) and adds the per-benchmark metrics
  (``acc/valid/<benchmark>`` and ``acc/valid/average`` first in the UI; n, CIs and the rest as
  ``valid.<benchmark>.<key>``: ``names.py``), the
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

Modules (each imports mlflow lazily, inside the functions that use it):

- ``store``     the store: URI, whether it answers, the experiment, UI links
- ``names``     run names, tags, metric names
- ``lineage``   git commit, DVC md5s from ``dvc.lock``, the datasets of a run
- ``run``       ``Run``: one stage's run, its outage buffer, owner tags, orphaned runs
- ``handover``  the distill -> evaluate hand-over (start, finish, replay, resume)
- ``groups``    parent runs of grids and studies, the best child's alias, runs read back
"""

from .groups import (
    child_runs,
    describe_run,
    download_artifacts,
    end_parent,
    log_report_run,
    log_run,
    parent_run,
    register_best,
    row_runs,
    run_results,
    start_parent,
)
from .handover import (
    RUN_FILE,
    finish_distill_run,
    finish_evaluate_run,
    open_evaluate_run,
    replay_pending,
    start_distill_run,
)
from .lineage import DatasetRef, dvc_hashes, dvc_md5, evaluation_datasets, git_info, training_datasets
from .names import (
    ACC,
    PARENT_ENV,
    TAG_DISTILL_RUN,
    TAG_DISTILLED,
    TAG_EVALUATED,
    TAG_KIND,
    TAG_ORIGIN,
    TAG_STUDENT_MD5,
    acc_metric,
    changed_params,
    eval_metrics,
    flatten,
    has_accuracy,
    row_metric,
    run_name,
    split_metrics,
)
from .run import (
    MODEL_ARTIFACT,
    RETRY_EVERY_S,
    TAG_ENDED_BY,
    TAG_HOST,
    TAG_PID,
    TAG_PROC_START,
    Run,
    mark_orphans,
    owner_tags,
)
from .store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FAST_HTTP,
    PROBE_S,
    RESULTS_VIEW,
    TrackingUnavailable,
    _mlflow,
    check_server,
    compare_url,
    ensure_experiment,
    ensure_results_view,
    experiment_name,
    fast_http,
    main_repo_root,
    results_view_state,
    runs_url,
    section,
    shown_uri,
    tracking_config,
    tracking_uri,
)

__all__ = [
    "ACC",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "FAST_HTTP",
    "MODEL_ARTIFACT",
    "PARENT_ENV",
    "PROBE_S",
    "RETRY_EVERY_S",
    "RUN_FILE",
    "TAG_DISTILLED",
    "TAG_DISTILL_RUN",
    "TAG_ENDED_BY",
    "TAG_EVALUATED",
    "TAG_HOST",
    "TAG_KIND",
    "TAG_ORIGIN",
    "TAG_PID",
    "TAG_PROC_START",
    "TAG_STUDENT_MD5",
    "DatasetRef",
    "Run",
    "TrackingUnavailable",
    "_mlflow",
    "acc_metric",
    "check_server",
    "child_runs",
    "compare_url",
    "describe_run",
    "download_artifacts",
    "changed_params",
    "dvc_hashes",
    "dvc_md5",
    "end_parent",
    "RESULTS_VIEW",
    "ensure_experiment",
    "ensure_results_view",
    "results_view_state",
    "eval_metrics",
    "evaluation_datasets",
    "experiment_name",
    "fast_http",
    "finish_distill_run",
    "finish_evaluate_run",
    "flatten",
    "git_info",
    "has_accuracy",
    "log_report_run",
    "log_run",
    "main_repo_root",
    "mark_orphans",
    "open_evaluate_run",
    "owner_tags",
    "parent_run",
    "register_best",
    "replay_pending",
    "row_metric",
    "row_runs",
    "run_results",
    "run_name",
    "runs_url",
    "section",
    "shown_uri",
    "split_metrics",
    "start_distill_run",
    "start_parent",
    "tracking_config",
    "tracking_uri",
    "training_datasets",
]
