"""The distill -> evaluate hand-over: ``distill`` starts the run and writes its id to the run file
(with the logging calls an outage kept, ``pending``); ``evaluate`` replays those, resumes the run
or starts a fresh one linked to the checkpoint, and ends it with the evaluation."""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import logging
import os
from pathlib import Path

from ..config import active_teachers
from .lineage import dvc_md5, evaluation_datasets, git_info, training_datasets
from .names import (
    PARENT_ENV,
    TAG_DISTILL_RUN,
    TAG_DISTILLED,
    TAG_EVALUATED,
    TAG_KIND,
    TAG_ORIGIN,
    TAG_STUDENT_MD5,
    eval_metrics,
    param_values,
    run_name,
)
from .run import Run, mark_orphans, owner_tags
from .store import (
    FAST_HTTP,
    TrackingUnavailable,
    _mlflow,
    _short,
    check_server,
    ensure_experiment,
    fast_http,
    section,
    shown_uri,
)

log = logging.getLogger(__name__)

RUN_FILE = "metrics/mlflow_run.json"  # distill -> evaluate hand-over of the run id


def _is_main_process() -> bool:
    """Rank 0 under ``accelerate launch`` / ``torchrun`` (only it logs), True without them."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _params_of(params: dict, sections: tuple[str, ...]) -> dict[str, str]:
    return param_values({k: params[k] for k in sections if k in params})


def _tags_of(root: Path, params: dict) -> dict[str, str]:
    alphas = section(params, "distill").alphas
    teachers = sorted(active_teachers(alphas))
    return {
        TAG_KIND: "training",
        "row": section(params, "tracking").row,
        "student": section(params, "student").source,
        "teachers": ",".join(teachers) or "none",
        "alphas": json.dumps(alphas, sort_keys=True),
        "headline": section(params, "evaluate").headline,
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        **git_info(root),
    }


def _start(root: Path, params: dict, run_id: str | None = None) -> Run:
    """Start (or resume, with ``run_id``) the stage's run, with CPU/memory system metrics.

    A tracking server that does not answer is reported within ``PROBE_S`` seconds
    (:class:`TrackingUnavailable`); the run is tagged with the process that holds it, and runs left
    RUNNING by dead processes of this host are ended KILLED (:func:`mark_orphans`)."""
    check_server(root)
    mlflow = _mlflow(root)
    experiment = section(params, "tracking").experiment
    exp_id = ensure_experiment(root, experiment)
    if run_id:
        # make the run's own experiment the active one: MLflow refuses to resume a run while another
        # experiment is active (mlflow.set_experiment earlier in the process, a user's shell)
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
        run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
    else:
        parent = os.environ.get(PARENT_ENV) or None
        run = mlflow.start_run(
            experiment_id=exp_id, run_name=run_name(params, root), parent_run_id=parent, log_system_metrics=True
        )
    log.info(
        "MLflow run %s (%s) in experiment %r at %s",
        run.info.run_id,
        run.info.run_name,
        experiment,
        shown_uri(root),
    )
    out = Run(mlflow, run.info.run_id, resumed=bool(run_id), root=Path(root))
    out.experiment_id = run.info.experiment_id
    out.set_tags(owner_tags())
    try:
        mark_orphans(root, run.info.experiment_id, keep=run.info.run_id)
    except Exception as e:  # noqa: BLE001  (housekeeping must not stop the stage)
        log.warning("could not check for orphaned runs: %s", _short(e))
    return out


def start_distill_run(root: Path, params: dict, enabled: bool = True) -> Run:
    """The run a training starts: params, tags, training datasets; losses follow via ``log_row``."""
    if not enabled or not _is_main_process():
        return Run()
    for k, v in FAST_HTTP.items():  # every call of this stage (system metrics too) fails in seconds
        os.environ.setdefault(k, v)
    run = _start(root, params)
    run.log_params(_params_of(params, ("data", "student", "distill", "tracking")))
    run.log_params(_params_of({"teachers": _used_teachers(params)}, ("teachers",)))
    run.set_tags(_tags_of(root, params))
    run.log_datasets(training_datasets(root, params))
    return run


def _used_teachers(params: dict) -> dict:
    alphas = section(params, "distill").alphas
    return {t: v for t, v in (params.get("teachers") or {}).items() if alphas.get(t)}


def finish_distill_run(run: Run, root: Path, train_metrics: dict, run_file: Path | str = RUN_FILE) -> None:
    """The training summary (artifact ``train.json``), the hand-over file for ``evaluate``, and the
    run ended FINISHED.

    The file is written also without a run (``{"run_id": null}``): it is a DVC output of distill.
    """
    from ..io import write_json

    info = {"run_id": run.run_id}
    if run.run_id:
        run.set_tags({TAG_DISTILLED: "true"})
        if not run.pending:
            # the training summary is bookkeeping, not a chart: one artifact (evaluate replaces it
            # with the whole metrics/train.json); the curves went live, one point per step
            run.log_dict({"train": train_metrics}, "train.json")
        info.update(experiment_id=run.experiment_id, tracking_uri=shown_uri(root))
        if run.flush():
            try:
                with fast_http():
                    run.end("FINISHED")
            except Exception as e:  # noqa: BLE001
                log.warning("could not end MLflow run %s (%s); evaluate ends it", run.run_id, _short(e))
                info["pending"] = []
        if run.pending:
            # the server is still down: the files are written all the same, evaluate replays these
            info["pending"] = run.pending
            log.warning(
                "MLflow did not answer before the end: %d logging calls kept in %s, replayed into run %s by "
                "evaluate (or tinyllm.tracking.replay_pending)",
                len(run.pending),
                run_file,
                run.run_id,
            )
            atexit.unregister(run._fail_if_open)
            with contextlib.suppress(Exception), fast_http():
                _forget_active_run(run.mlflow)
    write_json(Path(root) / run_file, info)


def _forget_active_run(mlflow) -> None:
    """Drop the active run from MLflow's stack without calling the server (it is down): its exit hook
    would otherwise retry ``end_run`` at exit. The run stays RUNNING in the store until replayed."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack:
        rid = stack.pop().info.run_id
        mon = fluent.run_id_to_system_metrics_monitor.pop(rid, None)
        if mon is not None:
            mon._shutdown_event.set()


REPLAYED_DIR = ".tinyllm/mlflow-replayed"  # what was replayed (git-ignored; never a DVC output)


def _replay_marker(root: Path, info: dict) -> Path:
    import hashlib

    digest = hashlib.sha1(json.dumps(info["pending"], sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / REPLAYED_DIR / f"{info['run_id']}-{digest}"


def replay_pending(root: Path, run_file: Path | str = RUN_FILE) -> int:
    """Replay the logging calls ``distill`` kept in the run file during an outage into their run
    (ended FINISHED when distill could not end it); returns how many (0 when already replayed).

    The run file is ``distill``'s DVC output and is never rewritten here (rewriting it made every
    later ``dvc repro`` restore it from the run-cache and re-run ``evaluate``); a marker under
    ``REPLAYED_DIR`` records the replay, so the calls are replayed once."""
    path = Path(root) / run_file
    info = json.loads(path.read_text()) if path.exists() else {}
    if not info.get("run_id") or not info.get("pending"):
        return 0
    marker = _replay_marker(root, info)
    if marker.exists():
        return 0
    mlflow = _mlflow(root)
    client = mlflow.MlflowClient()
    n = len(info["pending"])
    try:
        with fast_http():
            status = client.get_run(info["run_id"]).info.status
    except Exception as e:  # noqa: BLE001  (another store: the training curve comes from train_log.tsv)
        log.warning(
            "run %s of the run file is not in this store (%s): %d kept calls dropped", info["run_id"], _short(e), n
        )
        status = None
    if status is not None:
        run = Run(mlflow, None, root=Path(root))
        run.run_id, run.pending = info["run_id"], list(info["pending"])
        if not run.flush():
            raise TrackingUnavailable(f"MLflow at {shown_uri(root)} still does not answer")
        if status == "RUNNING":
            client.set_terminated(run.run_id, "FINISHED")
        log.info("replayed %d logging calls of an outage into run %s", n, info["run_id"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": info["run_id"], "calls": n, "replayed": status is not None}) + "\n")
    return n if status is not None else 0


def _resumable(mlflow, info: dict) -> tuple[str | None, str]:
    """The run id ``evaluate`` may resume, and why (or why not): ``distill``,
    ``fresh:no-run-file``, ``fresh:other-store``, ``fresh:already-evaluated``."""
    run_id = info.get("run_id")
    if not run_id:
        return None, "fresh:no-run-file"
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except Exception:  # not in this store: a pulled checkpoint, another machine's mlflow.db
        return None, "fresh:other-store"
    if run.info.lifecycle_stage != "active":
        return None, "fresh:run-deleted"
    if run.data.tags.get(TAG_EVALUATED) == "true":  # distill restored from DVC's run-cache
        return None, "fresh:already-evaluated"
    return run_id, "distill"


def open_evaluate_run(
    root: Path,
    params: dict,
    run_file: Path | str = RUN_FILE,
    train_log: Path | None = None,
    student: str = "models/student",
    enabled: bool = True,
) -> Run:
    """Resume the run ``distill`` started, or start a fresh one linked to the checkpoint.

    A fresh run gets everything the distill run would have had (params, tags, training datasets,
    the training curve from ``train_log``; evaluate adds the metric files), so it is complete on its own.
    """
    if not enabled or not _is_main_process():
        return Run()
    check_server(root)
    replay_pending(root, run_file)  # what distill logged while the server was down, if anything
    mlflow = _mlflow(root)
    path = Path(root) / run_file
    info = json.loads(path.read_text()) if path.exists() else {}
    run_id, origin = _resumable(mlflow, info)
    run = _start(root, params, run_id)
    link = {TAG_ORIGIN: origin}
    md5 = dvc_md5(root, student)
    if md5:
        link[TAG_STUDENT_MD5] = md5
    if run_id is None:
        if info.get("run_id"):
            link[TAG_DISTILL_RUN] = info["run_id"]
        run.log_params(_params_of(params, ("data", "student", "distill")))
        run.log_params(_params_of({"teachers": _used_teachers(params)}, ("teachers",)))
        run.set_tags(_tags_of(root, params))
        run.log_datasets(training_datasets(root, params))
        for row in _read_tsv(train_log):
            run.log_row(row)
    run.log_params(_params_of(params, ("evaluate", "tracking")))
    run.set_tags(link)
    log.info("evaluate logs into run %s (%s)", run.run_id, origin)
    return run


def _read_tsv(path: Path | None) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f, delimiter="\t")]


def finish_evaluate_run(
    run: Run,
    results: dict,
    extra: dict[str, dict] | None = None,
    artifacts: list[Path] = (),
    eval_splits: list[str] = (),
    model=None,
    tokenizer=None,
    log_model: bool = False,
    registered_model: str | None = None,
    seq2seq: bool = False,
    prepared: str = "data/prepared",
    predictions: Path | None = None,
) -> None:
    """The accuracy per benchmark and split in percent as metrics (``accuracy/valid/obqa``,
    ``accuracy/valid/average``: names.py), the evaluated splits as datasets, the metric files as
    artifacts (n, CIs, every rule: ``eval.json``), ``extra`` as JSON artifacts (``{name: dict}``,
    e.g. ``rationales.json``), optionally the student as a registered model; the run ended FINISHED."""
    if not run.run_id:
        return
    run.set_tags({"mlflow.note.content": results_markdown(results)})  # the run's description: results first
    run.log_datasets(evaluation_datasets(run.root, eval_splits, prepared))
    run.log_metrics(eval_metrics(results))
    run.log_artifacts(list(artifacts))
    for name, data in (extra or {}).items():
        run.log_dict(data, name)
    for split_dir in sorted(Path(predictions).glob("*")) if predictions else []:
        # per-question predictions: the report's paired tests read them back (predictions/<split>/<b>.jsonl)
        run.log_artifacts(sorted(split_dir.glob("*.jsonl")), f"predictions/{split_dir.name}")
    if log_model and model is not None:
        run.log_model(model, tokenizer, registered_model, seq2seq)
    run.set_tags({TAG_EVALUATED: "true"})
    run.end("FINISHED")


def results_markdown(results: dict) -> str:
    """The run's description in the MLflow UI: per evaluated split, accuracy % with its 95% CI and n
    per benchmark and the average, with the majority-class and chance rates beside the average."""
    lines = []
    for split, per in results.items():
        if not isinstance(per, dict) or "average" not in per:
            continue
        avg = per["average"]
        lines += [
            f"**{split}**: accuracy % [95% CI], n (the `evaluate.headline` rule; majority class "
            f"{100 * avg.get('majority', float('nan')):.1f}, chance {100 * avg.get('chance', float('nan')):.1f})",
            "",
            "| benchmark | accuracy % [95% CI] | n |",
            "|---|---|---|",
        ]
        for b in ["average", *(k for k in per if k != "average")]:
            m = per[b]
            ci = f" [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]" if "ci_low" in m else ""
            lines.append(f"| {b} | {100 * m['accuracy']:.1f}{ci} | {m.get('n', '')} |")
        lines.append("")
    return "\n".join(lines).strip() or "no evaluation results"
