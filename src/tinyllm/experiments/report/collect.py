"""Collecting results: {row: {..., runs: {seed: run}}} from MLflow runs, from the DVC
experiments' metrics files (`dvc exp show --json`), or from an earlier reports/table1.csv."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tinyllm import tracking
from tinyllm.config import Params
from tinyllm.params import validate_params

from .columns import NAMES


def split_metrics(flat: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {benchmark|average: {accuracy, n, majority, chance, ...}}} from a run's MLflow
    metrics (`acc/valid/obqa`, `valid.obqa.n`; older runs' `valid.obqa.accuracy`): tracking's
    names, read where they are made."""
    return tracking.split_metrics(flat)


def _add_run(found: dict, run: dict, meta: dict) -> None:
    """Group runs (newest first) by row, keeping the newest run per seed."""
    res = found.setdefault(run["row"], {"row": run["row"], "runs": {}, **meta})
    if run["seed"] not in res["runs"]:
        res["runs"][run["seed"]] = run


def collect_mlflow(root: Path, experiment: str | None = None) -> dict[str, dict]:
    """{row: {row, student, headline, teachers, run_id, experiment_id, source, runs: {seed: run}}},
    run = {run_id, experiment_id, seed, exp_name, rev, metrics: split_metrics}; run_id of the
    row = its newest run."""
    found: dict[str, dict] = {}
    for r in tracking.row_runs(root, experiment):
        t = r["tags"]
        run = {
            "row": r["row"],
            "run_id": r["run_id"],
            "experiment_id": r["experiment_id"],
            "seed": r["seed"],
            "exp_name": t.get("dvc_exp_name", ""),
            "rev": "",
            "metrics": tracking.run_results(root, r["run_id"], r["metrics"]),
        }
        _add_run(
            found,
            run,
            {
                "student": t.get("student", ""),
                "headline": t.get("headline", "score"),
                "teachers": t.get("teachers", ""),
                "run_id": r["run_id"],
                "experiment_id": r["experiment_id"],
                "source": "mlflow",
            },
        )
    return found


def _walk_exp_show(nodes, out: list) -> None:
    for n in nodes or []:
        if isinstance(n, dict):
            if isinstance(n.get("data"), dict) and "rev" in n:
                out.append(n)
            for e in n.get("experiments") or []:
                _walk_exp_show(e.get("revs"), out)


def exp_show(root: Path) -> list[dict]:
    """Experiment nodes of `dvc exp show --json` (public DVC interface), newest first.

    Not `dvc.api.exp_show` (DVC 3.67): it returns one flat table row per experiment, whose
    `Created` is formatted to the minute ("04:21 PM", or "Dec 01, 2026" for other days: neither
    orders runs) and whose metric columns lose their file (`valid.obqa.accuracy` of
    metrics/eval.json is prefixed only when another metrics file has the same key), so it
    cannot give "the newest run per seed" nor "metrics/eval.json" as this does."""
    res = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "exp", "show", "--json", "--no-fetch"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise SystemExit(f"dvc exp show failed:\n{res.stderr[-2000:]}")
    nodes: list = []
    _walk_exp_show(json.loads(res.stdout), nodes)
    return sorted(
        (n for n in nodes if n.get("rev") != "workspace" and n.get("name")),
        key=lambda n: n["data"].get("timestamp") or "",
        reverse=True,
    )


def _exp_params(node: dict) -> Params | None:
    """The experiment's params.yaml through the typed config; None (said) when it does not
    validate with this code (an experiment of an older schema), so its defaults are never guessed."""
    raw = (((node["data"].get("params") or {}).get("params.yaml") or {}).get("data")) or {}
    try:
        return validate_params(raw)
    except ValueError as e:  # ParamsError, or a teacher entry that is not a mapping
        print(f"dvc experiment {node['name']} ({node['rev'][:7]}): skipped, its params.yaml does not validate: {e}")
        return None


def collect_dvc(root: Path) -> dict[str, dict]:
    """Like `collect_mlflow`, from each experiment's params.yaml and metrics/eval.json."""
    found: dict[str, dict] = {}
    for n in exp_show(root):
        d = n["data"]
        metrics = ((d.get("metrics") or {}).get("metrics/eval.json") or {}).get("data")
        cfg = _exp_params(n) if metrics else None
        if cfg is None:
            continue
        row, seed = cfg.tracking.row, cfg.distill.seed
        per = {
            s: {
                b: {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
                for b, m in bs.items()
                if isinstance(m, dict)
            }
            for s, bs in metrics.items()
            if isinstance(bs, dict)
        }
        run = {
            "row": row,
            "run_id": "",
            "experiment_id": "",
            "seed": seed,
            "exp_name": n["name"],
            "rev": n["rev"],
            "metrics": per,
        }
        _add_run(
            found,
            run,
            {
                "student": cfg.student.source,
                "headline": cfg.evaluate.headline,
                "teachers": "",
                "run_id": "",
                "experiment_id": "",
                "source": "dvc",
                "exp_name": n["name"],
            },
        )
    return found


def collect_table_csv(path: Path, n: int) -> dict[str, dict]:
    """Rows of an earlier reports/table1.csv as results (accuracy only, `n` questions per
    benchmark as that run evaluated): enough for Wilson intervals, not for paired tests. For
    re-rendering a committed table whose runs are gone."""
    found: dict[str, dict] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["source"] != "ours" or r["group"] not in ("baseline", "ablation"):
                continue
            per = {b: {"accuracy": float(r[f"{b}_acc_pct"]) / 100, "n": n} for b in NAMES if r.get(f"{b}_acc_pct")}
            run = {
                "row": r["row"],
                "run_id": r["run_id"],
                "experiment_id": "",
                "seed": None,
                "exp_name": "",
                "rev": "",
                "metrics": {r["split"]: per},
            }
            _add_run(
                found,
                run,
                {
                    "student": r["student"],
                    "headline": "score",
                    "teachers": "",
                    "run_id": r["run_id"],
                    "experiment_id": "",
                    "source": "csv",
                },
            )
    return found
