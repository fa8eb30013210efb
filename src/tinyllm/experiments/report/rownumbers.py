"""One row's numbers on one split: accuracy, CI, sd over seeds and n per benchmark and average
(from predictions where there are some, else from the logged accuracy and n), and the
majority / chance reference rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import stats
from .columns import BENCHMARKS, NAMES, blank
from .predictions import Predictions


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
        "values": blank(),
        "ci": blank(),
        "sd": blank(),
        "n": blank(),
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
                "sd": blank(),
                "n": [rates.get(b, {}).get("n") for b in BENCHMARKS] + [None],
                "seeds": 0,
                "rel_gain": None,
                "note": note if have else "no rates logged",
                "paired": {},
            }
        )
    return rows
