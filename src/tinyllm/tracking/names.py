"""What things are called in MLflow: the run's name, the tags that link runs, the environment
variable that makes a run a child, and the metric names of flattened results and training rows."""

from __future__ import annotations

import os

from .store import section

PARENT_ENV = "TINYLLM_PARENT_RUN_ID"  # a queued/temp DVC experiment's parent run (grid or study)
TAG_DISTILLED = "tinyllm.distilled"
TAG_EVALUATED = "tinyllm.evaluated"
TAG_ORIGIN = "tinyllm.run_origin"
TAG_STUDENT_MD5 = "tinyllm.student_md5"
TAG_DISTILL_RUN = "tinyllm.distill_run_id"
TAG_KIND = "tinyllm.kind"  # training | grid (parent) | report


def run_name(params: dict) -> str:
    """What the run is: ``<DVC experiment or grid row> a=<alphas> s<seed>``, e.g. ``no_icl a=1,1,0.5 s0``.

    The name comes first from ``DVC_EXP_NAME`` (set by ``dvc exp run``), else ``tracking.row``, else
    the experiment name for the default profile; the alphas are those > 0 in params order (``a=-``:
    label-only fine-tuning); ``+lora`` marks a LoRA run.
    """
    track, distill = section(params, "tracking"), section(params, "distill")
    name = os.environ.get("DVC_EXP_NAME") or (track.row if track.row != "default" else track.experiment)
    alphas = [f"{float(a):g}" for a in distill.alphas.values() if a and float(a) > 0]
    lora = " +lora" if distill.lora else ""
    untrained = " untrained" if distill.steps == 0 else ""
    return f"{name} a={','.join(alphas) or '-'} s{distill.seed}{lora}{untrained}"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _row_metric(key: str) -> str:
    return f"valid.{key[len('valid_') :]}" if key.startswith("valid_") else f"train.{key}"
