"""Per-question predictions of a run, wherever they are: a local folder, MLflow, a DVC experiment."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tinyllm import tracking

from .collect import exp_show
from .columns import BENCHMARKS


def _read_jsonl(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


class Predictions:
    """Per-question predictions of a run: a local folder, the run's MLflow artifacts, or its DVC
    experiment revision (`dvc.api.open`), tried in that order; cached per (run, split)."""

    def __init__(self, root: Path, pred_dir: Path | None = None, stores: bool = True):
        """`stores`: also look in MLflow and DVC (False: the local folder only)."""
        self.root, self.pred_dir, self.cache, self._revs, self.stores = root, pred_dir, {}, None, stores
        self.tmp = tempfile.TemporaryDirectory(prefix="tinyllm-report-")

    def get(self, run: dict, split: str) -> dict[str, list[dict]]:
        key = (run["row"], run["seed"], run["run_id"], run["rev"], split)
        if key not in self.cache:
            self.cache[key] = (
                self._local(run, split) or (self.stores and (self._mlflow(run, split) or self._dvc(run, split))) or {}
            )
        return self.cache[key]

    def _local(self, run: dict, split: str) -> dict[str, list[dict]]:
        if not self.pred_dir:
            return {}
        d = self.pred_dir / run["row"] / ("" if run["seed"] is None else f"seed{run['seed']}") / split
        return {f.stem: _read_jsonl(f.read_text()) for f in sorted(d.glob("*.jsonl"))}

    def _mlflow(self, run: dict, split: str) -> dict[str, list[dict]]:
        if not run["run_id"]:
            return {}
        try:
            got = tracking.download_artifacts(
                self.root, run["run_id"], f"predictions/{split}", Path(self.tmp.name) / run["run_id"]
            )
        except Exception as e:  # noqa: BLE001 - a run of another store, or gone: no predictions from it
            print(f"run {run['run_id']}: predictions not readable from MLflow ({type(e).__name__})")
            return {}
        return {f.stem: _read_jsonl(f.read_text()) for f in sorted(got.glob("*.jsonl"))} if got else {}

    def _rev(self, run: dict) -> str:
        if run["rev"] or not run["exp_name"] or not (self.root / ".dvc").is_dir():
            return run["rev"]
        if self._revs is None:
            self._revs = {}
            for n in exp_show(self.root):
                self._revs.setdefault(n["name"], n["rev"])
        return self._revs.get(run["exp_name"], "")

    def _dvc(self, run: dict, split: str) -> dict[str, list[dict]]:
        rev = self._rev(run)
        if not rev:
            return {}
        import dvc.api

        out = {}
        for b in BENCHMARKS:
            try:
                with dvc.api.open(f"eval/predictions/{split}/{b}.jsonl", repo=str(self.root), rev=rev) as f:
                    out[b] = _read_jsonl(f.read())
            except Exception:  # noqa: BLE001 - not evaluated, or not in the local cache: no predictions
                continue
        return out
