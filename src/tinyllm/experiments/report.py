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
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from tinyllm import tracking

from . import stats
from .rows import ROOT

BENCHMARKS = ["obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"]
HEADER = ["OBQA", "ARC", "PIQA", "Riddle", "PQA", "BioASQ", "Avg"]
NAMES = BENCHMARKS + ["average"]
REFERENCES = ("full_ft", "inference")  # every row is compared with these (paired)
SELECT_SPLIT = "valid"

# Paper v1, Table 1 (accuracy %, six benchmarks + average); docs: ../shared/docs/tinyllm-paper.md
PAPER_TEACHERS = {
    "flan_t5_xl": ("Teacher FLAN-T5 xlarge (3B)", [69.20, 68.24, 58.43, 53.73, 71.50, 65.85, 64.49]),
    "llama2_7b": ("Teacher LLaMA 2 (7B)", [58.60, 45.90, 78.80, 47.65, 54.50, 73.75, 59.87]),
}
PAPER_STUDENTS = {"google/flan-t5-small": "80M", "google/flan-t5-base": "250M", "google/flan-t5-large": "780M"}
PAPER = {
    "80M": {
        "inference": [16.60, 19.31, 20.78, 13.33, 38.00, 47.97, 26.00],
        "lora": [37.80, 27.12, 39.93, 39.80, 53.75, 78.05, 46.08],
        "full_ft": [41.60, 27.47, 42.33, 42.75, 56.25, 78.86, 48.21],
        "tinyllm": [47.60, 31.93, 52.77, 49.22, 62.00, 82.11, 54.27],
    },
    "250M": {
        "inference": [31.00, 23.00, 30.47, 30.78, 48.00, 57.72, 36.83],
        "lora": [51.40, 37.25, 47.66, 53.14, 62.00, 82.93, 55.73],
        "full_ft": [56.60, 38.88, 47.55, 52.55, 64.75, 89.43, 58.29],
        "tinyllm": [64.20, 47.98, 60.17, 60.78, 66.25, 90.24, 64.94],
    },
    "780M": {
        "inference": [50.40, 51.07, 51.90, 39.80, 64.25, 63.41, 53.47],
        "lora": [64.00, 57.77, 57.02, 68.63, 70.25, 86.18, 67.31],
        "full_ft": [71.20, 62.92, 58.43, 68.82, 70.25, 90.24, 70.31],
        "tinyllm": [74.40, 64.29, 67.90, 70.98, 73.00, 92.68, 73.88],
    },
}
PAPER_LABEL = {
    "inference": "inference (no training)",
    "lora": "LoRA",
    "full_ft": "full fine-tuning",
    "tinyllm": "TinyLLM",
}
RELEASE_NOTE = (
    "The released teachers' own accuracy cannot be computed from the release: it holds "
    "their rationales, written *given the gold answer*, not their answers. The paper's "
    "teacher numbers are shown for reference."
)


# ----------------------------------------------------------------------------- collecting results


def _params(root: Path) -> dict:
    p = root / "params.yaml"
    return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}


def split_metrics(flat: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {benchmark|average: {accuracy, n, majority, chance, ...}}} from flat
    `valid.obqa.accuracy`-style keys (MLflow metrics)."""
    out: dict = {}
    for k, v in flat.items():
        parts = k.split(".")
        if len(parts) == 3 and parts[0] in ("train", "valid", "test") and isinstance(v, (int, float)):
            out.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = float(v)
    return out


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
            "metrics": split_metrics(r["metrics"]),
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
    """Experiment nodes of `dvc exp show --json` (public DVC interface), newest first."""
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


def collect_dvc(root: Path) -> dict[str, dict]:
    """Like `collect_mlflow`, from each experiment's params.yaml and metrics/eval.json."""
    found: dict[str, dict] = {}
    for n in exp_show(root):
        d = n["data"]
        params = ((d.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((d.get("metrics") or {}).get("metrics/eval.json") or {}).get("data")
        row = (params.get("tracking") or {}).get("row")
        if not row or not metrics:
            continue
        seed = (params.get("distill") or {}).get("seed")
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
                "student": (params.get("student") or {}).get("source", ""),
                "headline": (params.get("evaluate") or {}).get("headline", "score"),
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


# ----------------------------------------------------------------------------- predictions


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


# ----------------------------------------------------------------------------- per-row numbers


def row_matrices(res: dict, split: str, preds: Predictions) -> tuple[dict, dict, list[str]]:
    """For one row on one split: ({b: (ids, seeds x questions)} from predictions — the paired
    data — , {b: seeds x n} for every benchmark with a metric (reconstructed from accuracy and n
    where predictions are missing: enough for intervals, not for paired tests), notes)."""
    runs = [res["runs"][s] for s in sorted(res["runs"], key=lambda s: (s is None, s))]
    rule = res.get("headline") or "score"
    paired, mats, notes = {}, {}, []
    for b in BENCHMARKS:
        per_run = [preds.get(r, split).get(b) for r in runs]
        if all(per_run):
            ids, mat = stats.seed_matrix(per_run, rule, f"{res['row']}/{split}/{b}")
            paired[b], mats[b] = (ids, mat), mat
            logged = [r["metrics"].get(split, {}).get(b, {}).get("accuracy") for r in runs]
            if any(x is not None and abs(x - m) > 1e-6 for x, m in zip(logged, mat.mean(axis=1), strict=True)):
                notes.append(f"{b}: predictions disagree with the logged accuracy")
            continue
        ms = [r["metrics"].get(split, {}).get(b, {}) for r in runs]
        if all("accuracy" in m and m.get("n") for m in ms):
            n = int(min(m["n"] for m in ms))
            mats[b] = np.array([[1.0] * round(m["accuracy"] * n) + [0.0] * (n - round(m["accuracy"] * n)) for m in ms])
        elif all("accuracy" in m for m in ms) and ms:
            mats[b] = None  # accuracy without n (old runs): the number, no interval
            notes.append(f"{b}: no n logged, no interval")
    return paired, mats, notes


def _pct(x):
    return None if x is None or x != x else 100.0 * x


def row_numbers(res: dict | None, split: str, preds: Predictions) -> dict:
    """values/ci/sd/n (in %, six benchmarks + average), seeds, paired data, notes of one row."""
    empty = {
        "values": [None] * 7,
        "ci": [None] * 7,
        "sd": [None] * 7,
        "n": [None] * 7,
        "seeds": 0,
        "paired": {},
        "notes": [],
    }
    if not res or not any(split in r["metrics"] for r in res["runs"].values()):
        return empty
    paired, mats, notes = row_matrices(res, split, preds)
    with_ci = {b: m for b, m in mats.items() if m is not None}
    summ = stats.accuracy_summary(with_ci) if with_ci else {}
    runs = list(res["runs"].values())
    out = dict(empty, seeds=len(runs), paired=paired, notes=notes)
    for i, b in enumerate(NAMES):
        if b in summ and (b != "average" or len(with_ci) == len(mats)):
            s = summ[b]
            out["values"][i], out["ci"][i] = _pct(s["accuracy"]), (_pct(s["ci_low"]), _pct(s["ci_high"]))
            out["sd"][i], out["n"][i] = _pct(s["sd"]), s["n"]
        else:  # the logged number without an interval (no n, or the average of such)
            accs = [r["metrics"].get(split, {}).get(b, {}).get("accuracy") for r in runs]
            if accs and all(a is not None for a in accs):
                out["values"][i] = _pct(float(np.mean(accs)))
    return out


def reference_rows(root: Path, results: dict, split: str, preds: Predictions) -> list[dict]:
    """`majority` and `chance` rows on the reported split: from any row's predictions and the
    train split in data/prepared when both are there, else from the rates evaluate logged."""
    majority = {}
    if (root / "data" / "prepared").is_dir():
        majority = stats.majority_classes(root / "data" / "prepared", BENCHMARKS)
    rates: dict[str, dict] = {}
    for res in results.values():
        for run in res["runs"].values():
            for b, p in preds.get(run, split).items():
                if b not in rates and p:
                    rates[b] = {**stats.reference_rates(p, majority.get(b)), "n": len(p)}
            for b, m in run["metrics"].get(split, {}).items():
                if b in BENCHMARKS and b not in rates and "chance" in m:
                    rates[b] = {k: m[k] for k in ("chance", "majority", "n") if k in m}
    if not rates:
        return []
    rows = []
    for key, label, note in (
        (
            "majority",
            "Majority class (train's most frequent answer)",
            "PubMedQA/BioASQ: most frequent answer text; others: most frequent gold option position",
        ),
        ("chance", "Chance (1 / number of options)", "expected accuracy of a uniform guess"),
    ):
        vals, cis = [], []
        for b in BENCHMARKS:
            r = rates.get(b, {})
            v = r.get(key)
            vals.append(_pct(v))
            n = int(r.get("n") or 0)
            cis.append(
                tuple(map(_pct, stats.wilson_ci(round(v * n), n)))
                if key == "majority" and v is not None and n
                else None
            )
        have = [v for v in vals if v is not None]
        vals.append(float(np.mean(have)) if have and len(have) == len([b for b in BENCHMARKS if b in rates]) else None)
        cis.append(None)
        rows.append(
            {
                "row": key,
                "group": "reference",
                "label": label,
                "source": "ours",
                "student": "",
                "run_id": "",
                "values": vals,
                "ci": cis,
                "sd": [None] * 7,
                "n": [rates.get(b, {}).get("n") for b in BENCHMARKS] + [None],
                "seeds": 0,
                "rel_gain": None,
                "note": note if have else "no rates logged",
                "paired": {},
            }
        )
    return rows


# ----------------------------------------------------------------------------- selection


def report_split(results: dict, requested: str = "auto") -> str:
    """The split the table shows: `requested`, or with `auto` test when every row's every run
    has test, else valid. Never used to select anything."""
    if requested != "auto":
        return requested
    runs = [r for res in results.values() for r in res["runs"].values()]
    return "test" if runs and all("test" in r["metrics"] for r in runs) else "valid"


def mean_average(res: dict | None, split: str) -> float | None:
    """The row's average accuracy on `split`, mean over its seeds (None if a seed lacks it)."""
    if not res:
        return None
    accs = [r["metrics"].get(split, {}).get("average", {}).get("accuracy") for r in res["runs"].values()]
    return float(np.mean(accs)) if accs and all(a is not None for a in accs) else None


def best_alpha(grid: list[dict], results: dict, split: str = SELECT_SPLIT) -> tuple[float, str, float] | None:
    """(alpha, row, average) of the alpha-grid row with the highest average on `split` (valid:
    selection never reads test); the first such row on ties."""
    pts = [
        (g["alpha"], g["row"], mean_average(results.get(g["row"]), split)) for g in grid if g.get("alpha") is not None
    ]
    pts = [p for p in pts if p[2] is not None]
    return max(pts, key=lambda p: p[2]) if pts else None


def selection_note(split: str, best: tuple | None, results: dict) -> str:
    """How selection and reporting relate, for the report's header."""
    has_test = any("test" in r["metrics"] for res in results.values() for r in res["runs"].values())
    what = (
        f"best alpha = {best[0]:g} (row `{best[1]}`, valid average {100 * best[2]:.2f})"
        if best
        else "nothing to select (no alpha rows with results)"
    )
    if split == "test":
        return (
            f"Selection on `valid` only: {what}. Every number in the tables is on `test`, for the rows as "
            "selected on valid; test never chose anything."
        )
    if has_test:
        return (
            f"Selection on `valid`: {what}; selected and reported on valid (test exists but `--split valid` was asked)."
        )
    return f"Selection on `valid`: {what}; selected and reported on valid (no test split)" + (
        ", so the selected row's number is optimistic." if best else "."
    )


# ----------------------------------------------------------------------------- the table


def rel_gain(avg: float | None, ref: float | None) -> float | None:
    return None if avg is None or not ref else 100.0 * (avg - ref) / ref


def build_table(
    grid: list[dict], results: dict, split: str, root: Path | None = None, preds: Predictions | None = None
) -> tuple[list[dict], str | None]:
    """Table rows (dicts) in report order, and the paper's student size when it matches.
    With `root`, rows whose `needs` caches are missing there say so instead of "not run yet"."""
    preds = preds or Predictions(root or ROOT)
    students = {r["student"] for r in results.values() if r.get("student")}
    size = PAPER_STUDENTS.get(next(iter(students))) if len(students) == 1 else None
    numbers = {g["row"]: row_numbers(results.get(g["row"]), split, preds) for g in grid}
    ref = numbers.get("full_ft", {}).get("values", [None] * 7)[6]
    best = best_alpha(grid, results)
    table = []
    for t, (label, nums) in PAPER_TEACHERS.items():
        table.append(
            {
                "row": f"teacher_{t}",
                "group": "teacher",
                "label": label,
                "source": "paper",
                "student": "",
                "run_id": "",
                "values": list(nums),
                "rel_gain": None,
                "seeds": 0,
                "note": "the paper's reported accuracy; not computable from the release (rationales only)",
            }
        )
    table += _local_teacher_rows(root, results, numbers.get("inference"), ref)
    if root is not None and results:
        table += reference_rows(root, results, split, preds)
    for g in grid:
        res, num = results.get(g["row"]), numbers[g["row"]]
        note = "; ".join(num["notes"]) if res else _why_empty(g, root)
        if best and g["row"] == best[1]:
            note = "selected on valid (best alpha)" + (f"; {note}" if note else "")
        table.append(
            {
                "row": g["row"],
                "group": g["group"],
                "label": g["label"],
                "source": "ours",
                "alpha": g.get("alpha"),
                "student": (res or {}).get("student", ""),
                "run_id": (res or {}).get("run_id", ""),
                **{k: num[k] for k in ("values", "ci", "sd", "n", "seeds", "paired")},
                "rel_gain": rel_gain(num["values"][6], ref),
                "note": note,
            }
        )
        if size and g.get("paper") in PAPER[size]:
            nums = PAPER[size][g["paper"]]
            table.append(
                {
                    "row": g["row"],
                    "group": g["group"],
                    "label": f"paper {size} {PAPER_LABEL[g['paper']]}",
                    "source": "paper",
                    "student": next(iter(students)),
                    "run_id": "",
                    "values": list(nums),
                    "seeds": 0,
                    "rel_gain": rel_gain(nums[6], PAPER[size]["full_ft"][6]),
                    "note": "",
                }
            )
    return table, size


def _local_teacher_rows(root: Path | None, results: dict, inference: dict | None, ref: float | None) -> list[dict]:
    """Local teachers that run on the student's own base weights (`model: models/base`, the
    default smollm2_135m and its prompt ablations): answering without the gold answer they are
    the untrained student, so their accuracy is the `inference` row's run, shown as such."""
    if root is None or not (root / "params.yaml").exists():
        return []
    teachers = _params(root).get("teachers") or {}
    shared = [
        n for n, t in teachers.items() if isinstance(t, dict) and str(t.get("model", "")).rstrip("/") == "models/base"
    ]
    if not shared:
        return []
    res = results.get("inference")
    num = inference or {"values": [None] * 7}
    return [
        {
            "row": "teacher_local",
            "group": "teacher",
            "source": "ours",
            "label": f"Local teacher{'s' if len(shared) > 1 else ''} {', '.join(shared)} (models/base)",
            "student": (res or {}).get("student", ""),
            "run_id": (res or {}).get("run_id", ""),
            **{k: num.get(k) for k in ("values", "ci", "sd", "n", "seeds")},
            "rel_gain": rel_gain(num["values"][6], ref),
            "note": "same weights as the untrained student: its answers are the `inference` row's run"
            + ("" if res else " (not run yet)"),
        }
    ]


def comparisons(table: list[dict]) -> list[dict]:
    """Every row with predictions against each reference row that has them: stats.paired_comparison
    per benchmark and average, as {row, reference, benchmark, diff, ci_low, ci_high, p_mcnemar, n, b, c}."""
    ours = {t["row"]: t for t in table if t["source"] == "ours" and t.get("paired") and t["group"] != "reference"}
    out = []
    for ref in REFERENCES:
        if ref not in ours:
            continue
        for name, t in ours.items():
            if name == ref:
                continue
            for b, c in stats.paired_comparison(t["paired"], ours[ref]["paired"]).items():
                out.append({"row": name, "reference": ref, "benchmark": b, **c})
    return out


def shares(table: list[dict], results: dict, split: str, preds: Predictions) -> list[dict]:
    """Share of predictions per option position (seeds pooled) and the gold share, per row and benchmark."""
    out = []
    for t in table:
        res = results.get(t["row"]) if t["source"] == "ours" and t["group"] in ("baseline", "ablation") else None
        if not res:
            continue
        for b in BENCHMARKS:
            pooled = [p for r in res["runs"].values() for p in preds.get(r, split).get(b) or []]
            if pooled:
                rule = res.get("headline") or "score"
                out.append({"row": t["row"], "benchmark": b, **stats.option_shares(pooled, rule)})
    return out


def _why_empty(row: dict, root: Path | None) -> str:
    missing = [n for n in row.get("needs") or [] if root and not (root / "data" / "rationales" / n).is_dir()]
    if missing:
        return f"skipped: local teacher cache data/rationales/{', '.join(missing)} not generated yet"
    return "not run yet (python scripts/grid.py status)"


# ----------------------------------------------------------------------------- writing


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _gain(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f}%"


def _cell(t: dict, i: int) -> str:
    v = t["values"][i]
    if v is None:
        return "–"
    sd = (t.get("sd") or [None] * 7)[i]
    ci = (t.get("ci") or [None] * 7)[i]
    if t["source"] != "ours":
        return _fmt(v)
    s = f"{v:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")
    return s + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and ci[0] is not None else "")


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


GROUP_TITLE = {"teacher": "Teachers", "reference": "Reference rates", "baseline": "Baselines", "ablation": "Ablations"}


def write_markdown(
    path: Path,
    table: list[dict],
    size: str | None,
    split: str,
    results: dict,
    compare_url: str | None,
    source: str,
    selection: str,
    comps: list[dict],
    option_shares: list[dict],
) -> None:
    students = sorted({r["student"] for r in results.values() if r.get("student")}) or ["(no runs)"]
    headlines = sorted({r["headline"] for r in results.values() if r.get("headline")}) or ["?"]
    lines = [
        f"# Table 1: accuracy (%) on `{split}`",
        "",
        f"Student: {', '.join(students)}. Decision rule: {', '.join(headlines)} "
        f"(`evaluate.headline`). Source: {source}. Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "by `scripts/report.py` (tinyllm.experiments.report).",
        "",
        f"**Selection.** {selection}",
        "",
        "Cells: accuracy [95% CI] (Wilson per benchmark; bootstrap over questions within each benchmark for "
        "the unweighted average); rows over several seeds: mean ± sd over seeds, CI of the seed-averaged "
        "per-question correctness.",
        "",
        "| Row | Setting | seeds | " + " | ".join(HEADER) + " | Δ Avg vs full FT |",
        "|---|---|---:|" + "---:|" * (len(HEADER) + 1),
    ]
    group = None
    for t in table:
        if t["group"] != group:
            group = t["group"]
            lines.append(f"| **{GROUP_TITLE[group]}** |" + " |" * (len(HEADER) + 3))
        name = t["row"] if t["source"] == "ours" else f"↳ {t['row']}" if t["group"] != "teacher" else t["row"]
        label = t["label"] + (f" — *{t['note']}*" if t["note"] else "")
        seeds = str(t.get("seeds") or "") if t["source"] == "ours" and t["group"] != "reference" else ""
        lines.append(
            f"| {name} | {label} | {seeds} | "
            + " | ".join(_cell(t, i) for i in range(7))
            + f" | {_gain(t['rel_gain'])} |"
        )
    lines += ["", f"Teachers: {RELEASE_NOTE}"]
    if size:
        lines.append(f"↳ rows: the paper's FLAN-T5 {size} student in the same setting (paper v1, Table 1).")
    lines += _paired_section(comps, split) + _shares_section(option_shares, split)
    if not size:
        lines += [
            "",
            f"## Paper's Table 1 (reference only: students FLAN-T5 small/base/large, not {', '.join(students)})",
            "",
            "| Student | Row | " + " | ".join(HEADER) + " | Δ Avg vs full FT |",
            "|---|---|" + "---:|" * (len(HEADER) + 1),
        ]
        for sz, rows in PAPER.items():
            for k, nums in rows.items():
                lines.append(
                    f"| {sz} | {PAPER_LABEL[k]} | "
                    + " | ".join(map(_fmt, nums))
                    + f" | {_gain(rel_gain(nums[6], rows['full_ft'][6]))} |"
                )
    lines += [
        "",
        "Δ Avg vs full FT = (Avg − Avg of full fine-tuning) / Avg of full fine-tuning, as in the paper.",
        "– = not evaluated (benchmark not in `data.benchmarks`, row not run, or its teacher cache missing).",
    ]
    if compare_url:
        lines += ["", f"MLflow compare page for these runs: <{compare_url}>"]
    path.write_text("\n".join(lines) + "\n")


def _paired_section(comps: list[dict], split: str) -> list[str]:
    if not comps:
        return ["", "Paired tests: none (no per-question predictions for the reference rows full_ft / inference)."]
    out = [
        "",
        f"## Paired tests on `{split}` (row − reference, accuracy points)",
        "",
        "Δ [paired-bootstrap 95% CI] and the exact McNemar p-value on the questions both rows answered. Average: "
        "the unweighted mean over benchmarks, bootstrap within each benchmark; its McNemar pools the discordant "
        "pairs of all benchmarks. Seeds pooled per question (bootstrap: seed-averaged correctness; McNemar: "
        "majority vote over seeds).",
    ]
    by = {(c["row"], c["reference"], c["benchmark"]): c for c in comps}
    for ref in REFERENCES:
        rows = list(dict.fromkeys(c["row"] for c in comps if c["reference"] == ref))
        if not rows:
            continue
        out += ["", f"vs `{ref}`:", "", "| Row | " + " | ".join(HEADER) + " |", "|---|" + "---:|" * len(HEADER)]
        for r in rows:
            cells = []
            for b in NAMES:
                c = by.get((r, ref, b))
                cells.append(
                    "–"
                    if c is None
                    else f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, "
                    f"{100 * c['ci_high']:+.1f}] p={_p(c['p_mcnemar'])}"
                )
            out.append(f"| {r} | " + " | ".join(cells) + " |")
    return out


def _shares_section(option_shares: list[dict], split: str) -> list[str]:
    if not option_shares:
        return []
    out = [
        "",
        f"## Predicted option position vs gold on `{split}` (% of questions for options a/b/c/...)",
        "",
        "| Row | " + " | ".join(HEADER[:-1]) + " |",
        "|---|" + "---:|" * (len(HEADER) - 1),
    ]
    by = {(s["row"], s["benchmark"]): s for s in option_shares}
    first = {}
    for s in option_shares:
        first.setdefault(s["benchmark"], s)

    def fmt(v):
        return "/".join(f"{100 * x:.0f}" for x in v)

    out.append("| *gold* | " + " | ".join(fmt(first[b]["gold"]) if b in first else "–" for b in BENCHMARKS) + " |")
    for r in dict.fromkeys(s["row"] for s in option_shares):
        cells = []
        for b in BENCHMARKS:
            s = by.get((r, b))
            cells.append(
                "–"
                if s is None
                else fmt(s["pred"]) + (f" (+{100 * s['unmatched']:.0f} unmatched)" if s["unmatched"] else "")
            )
        out.append(f"| {r} | " + " | ".join(cells) + " |")
    return out


def write_csv(path: Path, table: list[dict], split: str) -> None:
    cols = [f"{b}_acc_pct" for b in NAMES]
    extra = [f"{b}_{k}" for b in NAMES for k in ("ci_low_pct", "ci_high_pct", "sd_pct", "n")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "row",
                "group",
                "label",
                "source",
                "student",
                "run_id",
                "split",
                *cols,
                "rel_gain_vs_full_ft_pct",
                "note",
                "seeds",
                *extra,
            ]
        )
        for t in table:
            ci, sd, n = t.get("ci") or [None] * 7, t.get("sd") or [None] * 7, t.get("n") or [None] * 7
            more = []
            for i in range(7):
                more += [
                    "" if not ci[i] else repr(ci[i][0]),
                    "" if not ci[i] else repr(ci[i][1]),
                    "" if sd[i] is None else repr(sd[i]),
                    "" if n[i] is None else str(n[i]),
                ]
            w.writerow(
                [
                    t["row"],
                    t["group"],
                    t["label"],
                    t["source"],
                    t["student"],
                    t["run_id"],
                    split,
                    *["" if v is None else repr(v) for v in t["values"]],
                    "" if t["rel_gain"] is None else repr(t["rel_gain"]),
                    t["note"],
                    t.get("seeds") or "",
                    *more,
                ]
            )


def write_stats_csv(path: Path, comps: list[dict], option_shares: list[dict], split: str) -> None:
    """Long format: paired tests (kind=paired) and option shares (kind=share), one line each."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "kind",
                "split",
                "row",
                "reference",
                "benchmark",
                "position",
                "value",
                "ci_low",
                "ci_high",
                "p_mcnemar",
                "n",
                "b",
                "c",
                "gold_share",
            ]
        )
        for c in comps:
            w.writerow(
                [
                    "paired",
                    split,
                    c["row"],
                    c["reference"],
                    c["benchmark"],
                    "",
                    c["diff"],
                    c["ci_low"],
                    c["ci_high"],
                    c["p_mcnemar"],
                    c["n"],
                    c["b"],
                    c["c"],
                    "",
                ]
            )
        for s in option_shares:
            for j, (p, g) in enumerate(zip(s["pred"], s["gold"], strict=True)):
                w.writerow(["share", split, s["row"], "", s["benchmark"], j, p, "", "", "", "", "", "", g])


def report_metrics(table: list[dict], comps: list[dict]) -> dict[str, float]:
    """Numbers for the MLflow report run: per row accuracy/CI/n, per comparison diff/CI/p."""
    out = {}
    for t in table:
        if t["source"] != "ours" or t["group"] == "teacher":
            continue
        for i, b in enumerate(NAMES):
            if t["values"][i] is None:
                continue
            out[f"{t['row']}.{b}.accuracy"] = t["values"][i] / 100
            ci = (t.get("ci") or [None] * 7)[i]
            if ci and ci[0] is not None:
                out[f"{t['row']}.{b}.ci_low"], out[f"{t['row']}.{b}.ci_high"] = ci[0] / 100, ci[1] / 100
            if (t.get("n") or [None] * 7)[i]:
                out[f"{t['row']}.{b}.n"] = t["n"][i]
    for c in comps:
        k = f"{c['row']}.vs_{c['reference']}.{c['benchmark']}"
        out.update(
            {
                f"{k}.diff": c["diff"],
                f"{k}.ci_low": c["ci_low"],
                f"{k}.ci_high": c["ci_high"],
                f"{k}.p_mcnemar": c["p_mcnemar"],
            }
        )
    return out


# ----------------------------------------------------------------------------- plots


def plot_data(grid: list[dict], table: list[dict]) -> tuple[list[dict], list[dict]]:
    """Long-format points: per-benchmark accuracy with CI (baseline rows) and the alpha curve."""
    by = {t["row"]: t for t in table if t["source"] == "ours"}
    bars, alpha = [], []
    for g in grid:
        t = by.get(g["row"])
        if not t:
            continue
        for i, b in enumerate(NAMES):
            x = t["values"][i]
            if x is None:
                continue
            ci = (t.get("ci") or [None] * 7)[i] or (None, None)
            pt = {
                "accuracy": round(x, 4),
                "ci_low": None if ci[0] is None else round(ci[0], 4),
                "ci_high": None if ci[1] is None else round(ci[1], 4),
            }
            if g["group"] == "baseline":
                bars.append({"row": g["row"], "benchmark": b, **pt})
            if g.get("alpha") is not None:
                alpha.append({"alpha": float(g["alpha"]), "benchmark": b, **pt})
    return bars, sorted(alpha, key=lambda p: (p["benchmark"], p["alpha"]))


def write_points(path: Path, points: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(points[0]))
        w.writeheader()
        w.writerows(points)


def _yerr(pts: list[dict]) -> np.ndarray:
    lo = [p["accuracy"] - p["ci_low"] if p.get("ci_low") is not None else 0 for p in pts]
    hi = [p["ci_high"] - p["accuracy"] if p.get("ci_high") is not None else 0 for p in pts]
    return np.array([lo, hi])


def write_pngs(out: Path, bars: list[dict], alpha: list[dict], table: list[dict], split: str) -> list[Path]:
    """accuracy.png (baseline bars with CI), accuracy_ci.png (every row, CI bars, one panel per
    benchmark, majority/chance lines), alpha.png (alpha curve with CI on the average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if bars:
        rows = list(dict.fromkeys(p["row"] for p in bars))
        benches = list(dict.fromkeys(p["benchmark"] for p in bars))
        val = {(p["row"], p["benchmark"]): p for p in bars}
        fig, ax = plt.subplots(figsize=(11, 4.5))
        w = 0.8 / len(rows)
        for i, r in enumerate(rows):
            pts = [val.get((r, b), {"accuracy": 0}) for b in benches]
            ax.bar(
                [j + i * w for j in range(len(benches))],
                [p["accuracy"] for p in pts],
                w,
                label=r,
                yerr=_yerr(pts),
                capsize=2,
                error_kw={"lw": 0.8},
            )
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(benches))], benches)
        ax.set_ylabel(f"accuracy on {split} (%), 95% CI")
        ax.set_title("Baselines per benchmark")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        plt.close(fig)
        made.append(out / "accuracy.png")
    made += _ci_panels(plt, out, table, split)
    if alpha:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b in dict.fromkeys(p["benchmark"] for p in alpha):
            pts = [p for p in alpha if p["benchmark"] == b]
            if b == "average":
                ax.errorbar(
                    [p["alpha"] for p in pts],
                    [p["accuracy"] for p in pts],
                    yerr=_yerr(pts),
                    marker="o",
                    lw=2.5,
                    capsize=3,
                    label="average (95% CI)",
                )
            else:
                ax.plot([p["alpha"] for p in pts], [p["accuracy"] for p in pts], marker="o", lw=1.2, label=b)
        ax.set_xscale("log")
        ax.set_xlabel("alpha (every teacher)")
        ax.set_ylabel(f"accuracy on {split} (%)")
        ax.set_title("Alpha grid {0.01, 0.1, 0.5, 1, 2, 3}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "alpha.png", dpi=110)
        plt.close(fig)
        made.append(out / "alpha.png")
    return made


def _ci_panels(plt, out: Path, table: list[dict], split: str) -> list[Path]:
    rows = [
        t
        for t in table
        if t["source"] == "ours" and t["group"] in ("baseline", "ablation") and any(v is not None for v in t["values"])
    ]
    if not rows:
        return []
    ref = {t["row"]: t["values"] for t in table if t["group"] == "reference"}
    cols = [i for i in range(len(NAMES)) if any(t["values"][i] is not None for t in rows)]
    fig, axes = plt.subplots(1, len(cols), figsize=(3 * len(cols), 0.32 * len(rows) + 1.6), sharey=True, squeeze=False)
    for ax, i in zip(axes[0], cols, strict=True):
        b = HEADER[i]
        ys = list(range(len(rows)))[::-1]
        pts = []
        for t in rows:
            ci = (t.get("ci") or [None] * 7)[i] or (None, None)
            v = t["values"][i]
            pts.append({"accuracy": np.nan if v is None else v, "ci_low": ci[0], "ci_high": ci[1]})
        ax.errorbar([p["accuracy"] for p in pts], ys, xerr=_yerr(pts), fmt="o", ms=3, capsize=2, lw=0.8)
        for name, style in (("majority", "--"), ("chance", ":")):
            if ref.get(name) and ref[name][i] is not None:
                ax.axvline(ref[name][i], ls=style, color="grey", lw=0.8, label=name)
        ax.set_title(b)
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"% on {split}")
        if i == cols[0]:
            ax.set_yticks(ys, [t["row"] for t in rows], fontsize=8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Accuracy with 95% CI per row and benchmark (dashed: majority class, dotted: chance)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "accuracy_ci.png", dpi=110)
    plt.close(fig)
    return [out / "accuracy_ci.png"]


PLOT_TEMPLATES = ROOT / "experiments" / "plots"


def dvc_plots_html(root: Path, out: Path, csvs: dict[str, Path], html_template: Path) -> list[Path]:
    """`dvc plots show` of the report's plot files with the offline template (vega inlined)."""
    made = []
    specs = {"accuracy": ("grouped_bars.json", "row", "accuracy"), "alpha": ("alpha_curve.json", "alpha", "accuracy")}
    for name, path in csvs.items():
        template, x, y = specs[name]
        dest = out / f"{name}_html"
        if not path.is_relative_to(root):
            print(f"{path}: outside the DVC repo {root}, no `dvc plots show` page")
            continue
        cmd = [
            str(Path(sys.executable).parent / "dvc"),
            "plots",
            "show",
            str(path.relative_to(root)),
            "-t",
            str(PLOT_TEMPLATES / template),
            "-x",
            x,
            "-y",
            y,
            "--html-template",
            str(html_template),
            "-o",
            str(dest),
        ]
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"dvc plots show ({name}) failed: {res.stderr.strip()[-500:]}")
            continue
        made.append(dest / "index.html")
    return made


def build_offline_template(vendor: Path) -> Path:
    """vendor/dvc-plots-offline.html: DVC's page with vega, vega-lite and vega-embed inlined from
    the npm packs in vendor/npm (`make vendor-vega`). It has no `{scripts}` placeholder, so the CDN
    <script> tags dvc-render would insert there never reach the page."""
    libs = []
    packages = (("vega", "vega.min.js"), ("vega-lite", "vega-lite.min.js"), ("vega-embed", "vega-embed.min.js"))
    for pkg, member in packages:
        packs = sorted((vendor / "npm").glob(f"{pkg}-[0-9]*.tgz"))
        if not packs:
            raise SystemExit(f"{vendor / 'npm'}/{pkg}-*.tgz missing: run `make vendor-vega`")
        with tarfile.open(packs[-1]) as tar:
            js = tar.extractfile(f"package/build/{member}").read().decode("utf-8")
        js = js.replace("</script", "<\\/script")  # a literal end tag inside the JS would close the element
        libs.append(f"<!-- {packs[-1].name} (BSD-3-Clause) -->\n<script>{js}</script>")
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC Plot (offline)</title>\n'
        + "\n".join(libs)
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n"
        "{plot_divs}\n</body>\n</html>\n"
    )
    dest = vendor / "dvc-plots-offline.html"
    dest.write_text(page, encoding="utf-8")
    return dest


# ----------------------------------------------------------------------------- the whole report


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
