"""What things are called in MLflow: the run's name, the tags that link runs, the environment
variable that makes a run a child, and the metric names (accuracy first in the UI, see below)."""

from __future__ import annotations

import os

from ..config import active_teachers
from .store import section

PARENT_ENV = "TINYLLM_PARENT_RUN_ID"  # a queued/temp DVC experiment's parent run (grid or study)
TAG_DISTILLED = "tinyllm.distilled"
TAG_EVALUATED = "tinyllm.evaluated"
TAG_ORIGIN = "tinyllm.run_origin"
TAG_STUDENT_MD5 = "tinyllm.student_md5"
TAG_DISTILL_RUN = "tinyllm.distill_run_id"
TAG_KIND = "tinyllm.kind"  # training | grid (parent) | report


def run_name(params: dict, root=None) -> str:
    """What the run is: ``<name> a=<alphas> s<seed>[ +lora][ untrained][ <changes>]``, e.g.
    ``no_icl a=1,1,0.5 s0`` or ``bumpy-scup a=1,1,0.5 s0 lr=0.0001``.

    ``<name>``: the DVC experiment's as ``dvc exp show`` lists it (``DVC_EXP_NAME``: the ``-n`` name,
    a grid row's ``<row>[-s<seed>]``, or the one DVC makes up), else ``tracking.row``, else the
    experiment name for the default profile; the alphas are those > 0 in params order (``a=-``:
    label-only fine-tuning). ``<changes>``: the params that differ from ``params.yaml`` as
    committed at ``HEAD`` in ``root`` (what ``dvc exp run -S`` changed; seed, alphas and names left
    out, they are shown already), so two runs of different settings never share a name.
    """
    track, distill = section(params, "tracking"), section(params, "distill")
    exp = os.environ.get("DVC_EXP_NAME", "")
    name = exp or (track.row if track.row != "default" else track.experiment)
    alphas = [f"{float(distill.alphas[t]):g}" for t in active_teachers(distill.alphas)]
    lora = " +lora" if distill.lora else ""
    untrained = " untrained" if distill.steps == 0 else ""
    changes = changed_params(params, root) if root is not None else []
    tail = f" {' '.join(changes)}" if changes else ""
    return f"{name} a={','.join(alphas) or '-'} s{distill.seed}{lora}{untrained}{tail}"[:250]


_SHOWN = ("distill.alphas", "distill.seed", "tracking.row", "tracking.experiment")


def changed_params(params: dict, root) -> list[str]:
    """``key=value`` of every param that differs from ``params.yaml`` at git ``HEAD`` in ``root``
    (``distill.`` dropped from the key; [] outside a git repository or without a committed file)."""
    import subprocess

    import yaml

    try:
        done = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=root, capture_output=True, text=True, timeout=10)
        base = yaml.safe_load(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, yaml.YAMLError):
        base = None
    if not isinstance(base, dict):
        return []
    now, before = flatten(params), flatten(base)
    out = []
    for k in sorted(now.keys() | before.keys()):
        if k.startswith(_SHOWN) or now.get(k) == before.get(k):
            continue
        key = k.removeprefix("distill.")
        out.append(f"{key}={now.get(k, '-')}")
    return out


def param_values(params: dict) -> dict[str, str]:
    """``params`` flattened for ``log_params``: strings of at most 6,000 characters (MLflow's
    limit), ``null`` for None, every credential masked (``redact``: a token in a
    ``data.source`` URL or a password in a URI never reaches the tracking server)."""
    from ..redact import redact

    return {k: redact("null" if v is None else str(v))[:6000] for k, v in flatten(params).items()}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# Metric names, for the MLflow UI: it groups a run's charts into sections by the name before the
# last "/" and lists sections alphabetically, then "Model metrics" (names without "/"), then
# "System metrics" ("system/..."); charts and metric tables are alphabetical within. So a run's
# metrics are only what reads as a chart or a column:
# - accuracy/<split>/<benchmark|average>  the headline accuracy in percent to 0.01 (47.98; DVC
#                                         and the README show 48.0): first section, first metrics;
# - train/<key>, valid/<key>              the live training curves (loss, loss_<task>, lr; the loss
#                                         on the valid questions), right after.
# Everything else (n, CIs, every rule's accuracy, chance, majority, timings, training summary,
# rationale-cache counts) is bookkeeping: it stays in the run's artifacts, in the layout of the
# files DVC tracks (eval.json, train.json, rationales.json), instead of one single-bar chart each.
# Runs logged before 2026-12-05 have acc/<split>/<benchmark> as a fraction and the bookkeeping as
# <split>.<benchmark>.<key> metrics; `split_metrics` reads both.
ACC = "accuracy"
OLD_ACC = "acc"  # fraction; runs logged before 2026-12-05
SPLITS = ("train", "valid", "test")


def acc_metric(split: str, benchmark: str) -> str:
    """``accuracy/valid/obqa``: the MLflow name of a split's headline accuracy (percent) on a
    benchmark (or ``average``)."""
    return f"{ACC}/{split}/{benchmark}"


def row_metric(key: str) -> str:
    """A training-log column as a live curve: ``valid/<loss_task>`` for ``valid_<loss_task>``, else
    ``train/<key>`` (loss, loss_answer, loss_<teacher>, lr, tokens_per_s)."""
    return f"valid/{key[len('valid_') :]}" if key.startswith("valid_") else f"train/{key}"


def eval_metrics(results: dict) -> dict:
    """Evaluation results ``{split: {benchmark: {accuracy, n, ci_low, ...}}, <key>: value}`` as MLflow
    metrics: each split's ``accuracy`` per benchmark, in percent to 0.01 (a readable column), as
    ``accuracy/<split>/<benchmark>``; nothing else (the rest, and the exact values, are the
    ``eval.json`` artifact)."""
    out = {}
    for split, per in results.items():
        if split not in SPLITS or not isinstance(per, dict):
            continue
        for benchmark, m in per.items():
            if isinstance(m, dict) and isinstance(m.get("accuracy"), (int, float)):
                out[acc_metric(split, benchmark)] = round(100 * float(m["accuracy"]), 2)  # exact: eval.json
    return out


def split_metrics(flat: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{split: {benchmark|average: {accuracy, n, ...}}}`` (accuracy as a fraction) from a run's
    MLflow metrics: ``accuracy/<split>/<b>`` (percent), and older runs' ``acc/<split>/<b>``
    (fraction) and ``valid.obqa.<key>``."""
    out: dict = {}
    for k, v in flat.items():
        if not isinstance(v, (int, float)):
            continue
        head = k.split("/")[0]
        if head in (ACC, OLD_ACC) and k.count("/") == 2:
            (split, benchmark), name = k.split("/")[1:], "accuracy"
            v = v / 100 if head == ACC else v
        elif "/" not in k and k.count(".") == 2:
            split, benchmark, name = k.split(".")
        else:
            continue
        if split in SPLITS:
            out.setdefault(split, {}).setdefault(benchmark, {})[name] = float(v)
    return out


def has_accuracy(metrics: dict) -> bool:
    """Whether a run's metrics hold an evaluation's accuracy (any naming)."""
    return any(k.startswith((ACC + "/", OLD_ACC + "/")) or k.endswith(".accuracy") for k in metrics)
