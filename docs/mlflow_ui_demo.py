"""Build a small real grid in a temp MLflow store through ``tinyllm.tracking`` and screenshot the UI.

    python docs/mlflow_ui_demo.py [--out docs] [--keep /tmp/demo-store]

Three rows (full TinyLLM alphas, one teacher, label-only) under one parent run, each a tiny
random-init causal student trained for real with ``tinyllm.distill.train`` (losses logged live
through ``on_log``), evaluated with ``tinyllm.evaluate.evaluate_records`` on the four fixture
questions, logged as a transformers model and registered; the best row on valid gets
``tinyllm-student@best-valid``. Dataset digests are the real DVC md5s from this repo's dvc.lock.
Nothing touches the repo's mlflow.db. Takes about a minute on 2 cores, then the screenshots
(headless Chromium, /usr/bin/chromium) land in ``--out`` as ``mlflow-ui-*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

ROWS = [  # (row, alphas): the shape of experiments/grid.yaml rows
    ("tinyllm", {"flan_t5_xl": 1.0, "llama2_7b": 1.0, "smollm2_135m": 0.5}),
    ("flan_only", {"flan_t5_xl": 1.0}),
    ("label_only", {}),
]


def fake_repo(tmp: Path) -> Path:
    """A folder with this repo's dvc.lock and params.yaml and the data folders the datasets name."""
    import yaml

    root = tmp / "repo"
    root.mkdir()
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    for trained in ("distill", "evaluate"):  # the tiny students are not the checkpoint dvc.lock records
        lock["stages"].pop(trained, None)
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"].startswith("data/"):
                (root / out["path"]).mkdir(parents=True, exist_ok=True)
    return root


def run_row(root: Path, params: dict, row: str, alphas: dict, tok) -> None:
    from conftest import RATIONALES, records, tiny_causal

    from tinyllm import tracking
    from tinyllm.config import DistillConfig
    from tinyllm.distill import train
    from tinyllm.evaluate import average, evaluate_records
    from tinyllm.student import CausalStudent

    p = json.loads(json.dumps(params))
    p["distill"].update(alphas=alphas, steps=30, seed=0)
    p["tracking"]["row"] = row
    os.environ["DVC_EXP_NAME"] = row  # as in a queued DVC experiment
    run = tracking.start_distill_run(root, p)
    teachers = list(alphas)
    examples = [{"record": r, "rationales": {t: RATIONALES[r["id"]] for t in teachers}} for r in records()]
    cfg = DistillConfig(
        alphas=alphas,
        steps=30,
        batch_size=2,
        lr=5e-3,
        max_input_tokens=64,
        max_rationale_tokens=24,
        precision="fp32",
        log_every=100,
        valid_loss_per_benchmark=0,
    )
    student = CausalStudent(tiny_causal(tok), tok)
    result = train(student, examples, cfg, progress=False, on_log=run.log_row)
    result = {k: v for k, v in result.items() if not k.startswith("_")}
    tracking.finish_distill_run(run, root, result)

    ev = tracking.open_evaluate_run(root, p)
    student.model.eval()
    m, _ = evaluate_records(
        student, records("valid"), max_input_tokens=64, max_new_tokens=4, batch_size=4, device="cpu", progress=False
    )
    results = {"valid": {"obqa": m, "average": average({"obqa": m})}}
    tracking.finish_evaluate_run(
        ev,
        results,
        eval_splits=["valid"],
        model=student.model,
        tokenizer=tok,
        log_model=True,
        registered_model="tinyllm-student",
    )


def screenshots(root: Path, out: Path, parent: str, node_modules: Path | None) -> None:
    """The runs table (parent expanded), the best run, its datasets and system metrics, the model.

    With playwright-core (npm; ``--node-modules``) the pages are clicked through by
    docs/mlflow_ui_shots.js; without it, plain Chromium screenshots (parent row collapsed)."""
    import subprocess

    from tinyllm import tracking
    from tinyllm.experiments.mlflow_ui import MlflowUI, chromium

    client = tracking.store._mlflow(root).MlflowClient()
    exp_id = client.get_run(parent).info.experiment_id
    best = client.get_run(parent).data.tags["best.best-valid"]
    with MlflowUI(root) as ui:
        if node_modules:
            env = {**os.environ, "NODE_PATH": str(node_modules)}
            subprocess.run(
                ["node", str(ROOT / "docs" / "mlflow_ui_shots.js"), ui, exp_id, best, str(out.resolve())],
                env=env,
                check=True,
                timeout=600,
            )
            print(f"screenshots in {out}: runs, run, datasets, system-metrics, model")
            return
        ml = "?workflowType=machine_learning"
        pages = {
            "runs": f"{ui}/#/experiments/{exp_id}/runs{ml}",
            "run": f"{ui}/#/experiments/{exp_id}/runs/{best}{ml}",
            "system-metrics": f"{ui}/#/experiments/{exp_id}/runs/{best}/system-metrics{ml}",
            "model": f"{ui}/#/models/tinyllm-student{ml}",
        }
        for name, url in pages.items():
            png = out / f"mlflow-ui-{name}.png"
            chromium(url, screenshot=png.resolve(), budget_ms=25000)
            print(f"{png}: {url}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--keep", type=Path, help="build the store here and keep it (default: a temp dir)")
    ap.add_argument("--shots-only", action="store_true", help="screenshot the store in --keep again")
    ap.add_argument("--node-modules", type=Path, help="a node_modules holding playwright-core (clicks)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlflow-demo-")) if not args.keep else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"  # rows take seconds, not minutes
    import yaml
    from conftest import build_tiny_tokenizer

    from tinyllm import tracking

    if args.shots_only:
        root = tmp / "repo"
        client = tracking.store._mlflow(root).MlflowClient()
        name = yaml.safe_load((root / "params.yaml").read_text())["tracking"]["experiment"]
        exp = client.get_experiment_by_name(name)
        parent = client.search_runs([exp.experiment_id], "tags.`tinyllm.kind` = 'grid'")[0].info.run_id
        screenshots(root, args.out, parent, args.node_modules)
        return 0
    root = fake_repo(tmp)
    params = yaml.safe_load((root / "params.yaml").read_text())
    tok = build_tiny_tokenizer()
    t0 = time.perf_counter()
    with tracking.parent_run(
        root,
        "grid demo (tiny students)",
        experiment=params["tracking"]["experiment"],
        tags={"grid": "experiments/grid.yaml", "rows": ",".join(r for r, _ in ROWS)},
    ) as parent:
        for row, alphas in ROWS:
            run_row(root, params, row, alphas, tok)
            time.sleep(2)  # a few system-metrics samples per row
    best, version = tracking.register_best(root, parent)
    print(f"grid of {len(ROWS)} rows in {time.perf_counter() - t0:.0f} s; best {best} -> version {version}")
    args.out.mkdir(parents=True, exist_ok=True)
    screenshots(root, args.out, parent, args.node_modules)
    print(f"store: {os.environ['MLFLOW_TRACKING_URI']} ({quote(str(tmp))})")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
