"""The grid's Table 1: reports/table1.{md,csv}, plots (PNG + offline DVC plots), compare URL.

    python scripts/report.py [--source mlflow|dvc] [--split auto|valid|test] [--no-mlflow-run]
    python scripts/report.py html-template [--vendor vendor]   # offline `dvc plots show` template

Results come from MLflow (the latest run per `row` tag in the experiment; the evaluate stage
logs one per row) or, with `--source dvc`, from the metrics files of the DVC experiments
(`dvc exp show --json`: metrics/eval.json of each experiment, row = its `tracking.row`).
Rows follow experiments/grid.yaml; columns are the paper's six benchmarks + average, accuracy
in %, and the relative gain of the average over full fine-tuning. The paper's numbers sit under
ours when the student is one of the paper's (google/flan-t5-small/base/large); for any other
student the paper's table is printed below ours as a reference, labelled as such.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import quote

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
BENCHMARKS = ["obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"]
HEADER = ["OBQA", "ARC", "PIQA", "Riddle", "PQA", "BioASQ", "Avg"]

# Paper v1, Table 1 (accuracy %, six benchmarks + average); docs: ../shared/docs/tinyllm-paper.md
PAPER_TEACHERS = {
    "flan_t5_xl": ("Teacher FLAN-T5 xlarge (3B)", [69.20, 68.24, 58.43, 53.73, 71.50, 65.85, 64.49]),
    "llama2_7b": ("Teacher LLaMA 2 (7B)", [58.60, 45.90, 78.80, 47.65, 54.50, 73.75, 59.87]),
}
PAPER_STUDENTS = {"google/flan-t5-small": "80M", "google/flan-t5-base": "250M", "google/flan-t5-large": "780M"}
PAPER = {
    "80M": {"inference": [16.60, 19.31, 20.78, 13.33, 38.00, 47.97, 26.00],
            "lora": [37.80, 27.12, 39.93, 39.80, 53.75, 78.05, 46.08],
            "full_ft": [41.60, 27.47, 42.33, 42.75, 56.25, 78.86, 48.21],
            "tinyllm": [47.60, 31.93, 52.77, 49.22, 62.00, 82.11, 54.27]},
    "250M": {"inference": [31.00, 23.00, 30.47, 30.78, 48.00, 57.72, 36.83],
             "lora": [51.40, 37.25, 47.66, 53.14, 62.00, 82.93, 55.73],
             "full_ft": [56.60, 38.88, 47.55, 52.55, 64.75, 89.43, 58.29],
             "tinyllm": [64.20, 47.98, 60.17, 60.78, 66.25, 90.24, 64.94]},
    "780M": {"inference": [50.40, 51.07, 51.90, 39.80, 64.25, 63.41, 53.47],
             "lora": [64.00, 57.77, 57.02, 68.63, 70.25, 86.18, 67.31],
             "full_ft": [71.20, 62.92, 58.43, 68.82, 70.25, 90.24, 70.31],
             "tinyllm": [74.40, 64.29, 67.90, 70.98, 73.00, 92.68, 73.88]},
}
PAPER_LABEL = {"inference": "inference (no training)", "lora": "LoRA", "full_ft": "full fine-tuning",
               "tinyllm": "TinyLLM"}
RELEASE_NOTE = ("The released teachers' own accuracy cannot be computed from the release: it holds "
                "their rationales, written *given the gold answer*, not their answers. The paper's "
                "teacher numbers are shown for reference.")


# ----------------------------------------------------------------------------- collecting results


def _params(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text()) or {}


def _experiment(root: Path, experiment: str | None) -> str:
    return experiment or (_params(root).get("tracking") or {}).get("experiment", "tinyllm")


def _mlflow(root: Path):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    sys.path.insert(0, str(ROOT / "src"))
    import mlflow

    from tinyllm.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow


def _split_metrics(flat: dict) -> dict:
    """{split: {benchmark|average: accuracy}} from flat `valid.obqa.accuracy`-style keys."""
    out: dict = {}
    for k, v in flat.items():
        parts = k.split(".")
        if len(parts) == 3 and parts[2] == "accuracy" and parts[0] in ("train", "valid", "test"):
            out.setdefault(parts[0], {})[parts[1]] = float(v)
    return out


def collect_mlflow(root: Path, experiment: str | None = None) -> dict[str, dict]:
    """Latest MLflow run (by start time) per `row` tag: {row: {run_id, experiment_id, student,
    headline, acc: {split: {benchmark: accuracy}}}}. Runs without a `row` tag (the report's own
    run) are ignored."""
    mlflow = _mlflow(root)
    exp = mlflow.get_experiment_by_name(_experiment(root, experiment))
    if exp is None:
        return {}
    runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list",
                              order_by=["attributes.start_time DESC"])
    found: dict[str, dict] = {}
    for r in runs:
        row = r.data.tags.get("row")
        if not row or row in found or r.info.status != "FINISHED":
            continue
        found[row] = {"run_id": r.info.run_id, "experiment_id": exp.experiment_id, "source": "mlflow",
                      "student": r.data.tags.get("student", ""), "headline": r.data.tags.get("headline", ""),
                      "teachers": r.data.tags.get("teachers", ""), "acc": _split_metrics(r.data.metrics),
                      "start_time": r.info.start_time}
    return found


def _walk_exp_show(nodes, out: list) -> None:
    for n in nodes or []:
        if isinstance(n, dict):
            if isinstance(n.get("data"), dict) and "rev" in n:
                out.append(n)
            for e in n.get("experiments") or []:
                _walk_exp_show(e.get("revs"), out)


def collect_dvc(root: Path) -> dict[str, dict]:
    """Per row, the metrics file of its newest DVC experiment (`dvc exp show --json`)."""
    res = subprocess.run([str(Path(sys.executable).parent / "dvc"), "exp", "show", "--json", "--no-fetch"],
                         cwd=root, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"dvc exp show failed:\n{res.stderr[-2000:]}")
    nodes: list = []
    _walk_exp_show(json.loads(res.stdout), nodes)
    found: dict[str, dict] = {}
    for n in sorted(nodes, key=lambda n: n["data"].get("timestamp") or "", reverse=True):
        if n.get("rev") == "workspace":
            continue
        d = n["data"]
        params = ((d.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((d.get("metrics") or {}).get("metrics/eval.json") or {}).get("data")
        row = (params.get("tracking") or {}).get("row")
        if not row or not metrics or row in found or not n.get("name"):
            continue
        acc = {s: {b: float(m["accuracy"]) for b, m in per.items() if isinstance(m, dict) and "accuracy" in m}
               for s, per in metrics.items() if isinstance(per, dict)}
        found[row] = {"run_id": "", "exp_name": n["name"], "rev": n["rev"], "source": "dvc",
                      "student": (params.get("student") or {}).get("source", ""),
                      "headline": (params.get("evaluate") or {}).get("headline", ""), "acc": acc}
    return found


# ----------------------------------------------------------------------------- the table


def pick_split(results: dict, split: str) -> str:
    if split != "auto":
        return split
    have = [r["acc"] for r in results.values()]
    return "test" if have and all("test" in a for a in have) else "valid"


def values(result: dict | None, split: str) -> list[float | None]:
    """Accuracy in % for the six benchmarks + average (None where not evaluated)."""
    if not result or split not in result["acc"]:
        return [None] * 7
    acc = result["acc"][split]
    return [None if acc.get(b) is None else 100.0 * acc[b] for b in BENCHMARKS + ["average"]]


def rel_gain(avg: float | None, ref: float | None) -> float | None:
    return None if avg is None or not ref else 100.0 * (avg - ref) / ref


def build_table(grid: list[dict], results: dict, split: str,
                root: Path | None = None) -> tuple[list[dict], str | None]:
    """Table rows (dicts) in report order, and the paper's student size when it matches.
    With `root`, rows whose `needs` caches are missing there say so instead of "not run yet"."""
    students = {r["student"] for r in results.values() if r.get("student")}
    size = PAPER_STUDENTS.get(next(iter(students))) if len(students) == 1 else None
    ref = values(results.get("full_ft"), split)[6]
    table = []
    for t, (label, nums) in PAPER_TEACHERS.items():
        table.append({"row": f"teacher_{t}", "group": "teacher", "label": label, "source": "paper",
                      "student": "", "run_id": "", "values": list(nums), "rel_gain": None,
                      "note": "the paper's reported accuracy; not computable from the release (rationales only)"})
    table += _local_teacher_rows(root, results, split, ref)
    for g in grid:
        res = results.get(g["row"])
        v = values(res, split)
        table.append({"row": g["row"], "group": g["group"], "label": g["label"], "source": "ours", "alpha": g.get("alpha"),
                      "student": (res or {}).get("student", ""), "run_id": (res or {}).get("run_id", ""),
                      "values": v, "rel_gain": rel_gain(v[6], ref),
                      "note": "" if res else _why_empty(g, root)})
        if size and g.get("paper") in PAPER[size]:
            nums = PAPER[size][g["paper"]]
            table.append({"row": g["row"], "group": g["group"], "label": f"paper {size} {PAPER_LABEL[g['paper']]}",
                          "source": "paper", "student": next(iter(students)), "run_id": "", "values": list(nums),
                          "rel_gain": rel_gain(nums[6], PAPER[size]["full_ft"][6]), "note": ""})
    return table, size


def _local_teacher_rows(root: Path | None, results: dict, split: str, ref: float | None) -> list[dict]:
    """Local teachers that run on the student's own base weights (`model: models/base`, the
    default smollm2_135m and its prompt ablations): answering without the gold answer they are
    the untrained student, so their accuracy is the `inference` row's run, shown as such."""
    if root is None or not (root / "params.yaml").exists():
        return []
    teachers = _params(root).get("teachers") or {}
    shared = [n for n, t in teachers.items() if isinstance(t, dict) and str(t.get("model", "")).rstrip("/") == "models/base"]
    if not shared:
        return []
    res = results.get("inference")
    v = values(res, split)
    return [{"row": "teacher_local", "group": "teacher", "source": "ours",
             "label": f"Local teacher{'s' if len(shared) > 1 else ''} {', '.join(shared)} (models/base)",
             "student": (res or {}).get("student", ""), "run_id": (res or {}).get("run_id", ""),
             "values": v, "rel_gain": rel_gain(v[6], ref),
             "note": "same weights as the untrained student: its answers are the `inference` row's run"
                     + ("" if res else " (not run yet)")}]


def best_alpha(table: list[dict]) -> tuple[float, float] | None:
    """(alpha, average) of the alpha-grid row with the best average, first on ties."""
    pts = [(t["alpha"], t["values"][6]) for t in table
           if t["source"] == "ours" and t.get("alpha") is not None and t["values"][6] is not None]
    return max(pts, key=lambda p: p[1]) if pts else None


def _why_empty(row: dict, root: Path | None) -> str:
    missing = [n for n in row.get("needs") or [] if root and not (root / "data" / "rationales" / n).is_dir()]
    if missing:
        return f"skipped: local teacher cache data/rationales/{', '.join(missing)} not generated yet"
    return "not run yet (python scripts/grid.py status)"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _gain(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f}%"


def write_markdown(path: Path, table: list[dict], size: str | None, split: str, results: dict,
                   compare_url: str | None, source: str) -> None:
    students = sorted({r["student"] for r in results.values() if r.get("student")}) or ["(no runs)"]
    headlines = sorted({r["headline"] for r in results.values() if r.get("headline")}) or ["?"]
    lines = [f"# Table 1: accuracy (%) on `{split}`", "",
             f"Student: {', '.join(students)}. Decision rule: {', '.join(headlines)} "
             f"(`evaluate.headline`). Source: {source}. Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             "by `python scripts/grid.py report`.", "",
             "| Row | Setting | " + " | ".join(HEADER) + " | Δ Avg vs full FT |",
             "|---|---|" + "---:|" * (len(HEADER) + 1)]
    group = None
    for t in table:
        if t["group"] != group:
            group = t["group"]
            lines.append(f"| **{ {'teacher': 'Teachers', 'baseline': 'Baselines', 'ablation': 'Ablations'}[group] }** |"
                         + " |" * (len(HEADER) + 2))
        name = t["row"] if t["source"] == "ours" else f"↳ {t['row']}" if t["group"] != "teacher" else t["row"]
        label = t["label"] + (f" — *{t['note']}*" if t["note"] else "")
        lines.append(f"| {name} | {label} | " + " | ".join(map(_fmt, t["values"])) + f" | {_gain(t['rel_gain'])} |")
    lines += ["", f"Teachers: {RELEASE_NOTE}"]
    best = best_alpha(table)
    if best:
        lines += ["", f"Alpha grid: best average on `{split}` at alpha = {best[0]:g} ({best[1]:.2f}); "
                  "selected and reported on the same split, so this number is optimistic."]
    if size:
        lines.append(f"↳ rows: the paper's FLAN-T5 {size} student in the same setting (paper v1, Table 1).")
    else:
        lines += ["", f"## Paper's Table 1 (reference only: students FLAN-T5 small/base/large, not {', '.join(students)})",
                  "", "| Student | Row | " + " | ".join(HEADER) + " | Δ Avg vs full FT |",
                  "|---|---|" + "---:|" * (len(HEADER) + 1)]
        for sz, rows in PAPER.items():
            for k, nums in rows.items():
                lines.append(f"| {sz} | {PAPER_LABEL[k]} | " + " | ".join(map(_fmt, nums))
                             + f" | {_gain(rel_gain(nums[6], rows['full_ft'][6]))} |")
    lines += ["", "Δ Avg vs full FT = (Avg − Avg of full fine-tuning) / Avg of full fine-tuning, as in the paper.",
              "– = not evaluated (benchmark not in `data.benchmarks`, row not run, or its teacher cache missing)."]
    if compare_url:
        lines += ["", f"MLflow compare page for these runs: <{compare_url}>"]
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, table: list[dict], split: str) -> None:
    cols = [f"{b}_acc_pct" for b in BENCHMARKS] + ["average_acc_pct"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "group", "label", "source", "student", "run_id", "split", *cols,
                    "rel_gain_vs_full_ft_pct", "note"])
        for t in table:
            w.writerow([t["row"], t["group"], t["label"], t["source"], t["student"], t["run_id"], split,
                        *["" if v is None else repr(v) for v in t["values"]],
                        "" if t["rel_gain"] is None else repr(t["rel_gain"]), t["note"]])


# ----------------------------------------------------------------------------- plots


def plot_data(grid: list[dict], results: dict, split: str) -> tuple[list[dict], list[dict]]:
    """Long-format points: per-benchmark bars (baseline rows) and the alpha curve."""
    names = BENCHMARKS + ["average"]
    bars, alpha = [], []
    for g in grid:
        v = values(results.get(g["row"]), split)
        for b, x in zip(names, v):
            if x is None:
                continue
            if g["group"] == "baseline":
                bars.append({"row": g["row"], "benchmark": b, "accuracy": round(x, 4)})
            if g.get("alpha") is not None:
                alpha.append({"alpha": float(g["alpha"]), "benchmark": b, "accuracy": round(x, 4)})
    return bars, sorted(alpha, key=lambda p: (p["benchmark"], p["alpha"]))


def _write_points(path: Path, points: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(points[0]))
        w.writeheader()
        w.writerows(points)


def write_pngs(out: Path, bars: list[dict], alpha: list[dict], split: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if bars:
        rows = list(dict.fromkeys(p["row"] for p in bars))
        benches = list(dict.fromkeys(p["benchmark"] for p in bars))
        val = {(p["row"], p["benchmark"]): p["accuracy"] for p in bars}
        fig, ax = plt.subplots(figsize=(11, 4.5))
        w = 0.8 / len(rows)
        for i, r in enumerate(rows):
            ax.bar([j + i * w for j in range(len(benches))], [val.get((r, b), 0) for b in benches], w, label=r)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(benches))], benches)
        ax.set_ylabel(f"accuracy on {split} (%)")
        ax.set_title("Baselines per benchmark")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        plt.close(fig)
        made.append(out / "accuracy.png")
    if alpha:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b in dict.fromkeys(p["benchmark"] for p in alpha):
            pts = [p for p in alpha if p["benchmark"] == b]
            ax.plot([p["alpha"] for p in pts], [p["accuracy"] for p in pts], marker="o",
                    lw=2.5 if b == "average" else 1.2, label=b)
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


PLOT_TEMPLATES = ROOT / "experiments" / "plots"
OFFLINE_TEMPLATE = "vendor/dvc-plots-offline.html"


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
        cmd = [str(Path(sys.executable).parent / "dvc"), "plots", "show", str(path.relative_to(root)),
               "-t", str(PLOT_TEMPLATES / template), "-x", x, "-y", y,
               "--html-template", str(html_template), "-o", str(dest)]
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
    for pkg, member in (("vega", "vega.min.js"), ("vega-lite", "vega-lite.min.js"), ("vega-embed", "vega-embed.min.js")):
        packs = sorted((vendor / "npm").glob(f"{pkg}-[0-9]*.tgz"))
        if not packs:
            raise SystemExit(f"{vendor / 'npm'}/{pkg}-*.tgz missing: run `make vendor-vega`")
        with tarfile.open(packs[-1]) as tar:
            js = tar.extractfile(f"package/build/{member}").read().decode("utf-8")
        js = js.replace("</script", "<\\/script")  # a literal end tag inside the JS would close the element
        libs.append(f"<!-- {packs[-1].name} (BSD-3-Clause) -->\n<script>{js}</script>")
    page = ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC Plot (offline)</title>\n"
            + "\n".join(libs) + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n"
            "{plot_divs}\n</body>\n</html>\n")
    dest = vendor / "dvc-plots-offline.html"
    dest.write_text(page, encoding="utf-8")
    return dest


# ----------------------------------------------------------------------------- MLflow: URL, report run


def compare_url(results: dict, ui: str) -> str | None:
    ids = [r["run_id"] for r in results.values() if r.get("run_id")]
    exps = sorted({r["experiment_id"] for r in results.values() if r.get("experiment_id")})
    if not ids:
        return None
    enc = lambda x: quote(json.dumps(x, separators=(",", ":")), safe="")  # noqa: E731
    return f"{ui.rstrip('/')}/#/compare-runs?runs={enc(ids)}&experiments={enc(exps)}"


def log_report_run(root: Path, experiment: str, files: list[Path], results: dict, split: str) -> str:
    """A small run (no `row` tag) holding the table and the plots as artifacts."""
    mlflow = _mlflow(root)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="report") as run:
        mlflow.set_tags({"kind": "report", "split": split, "grid_runs": ",".join(r["run_id"] for r in results.values())})
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="report")
        return run.info.run_id


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="table", choices=["table", "html-template"])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--grid", type=Path, default=ROOT / "experiments" / "grid.yaml")
    ap.add_argument("--out", type=Path, default=None, help="default: <root>/reports")
    ap.add_argument("--source", choices=["mlflow", "dvc"], default="mlflow")
    ap.add_argument("--split", choices=["auto", "valid", "test"], default="auto",
                    help="auto: test when every row has it, else valid")
    ap.add_argument("--experiment", default=None, help="MLflow experiment (default: tracking.experiment)")
    ap.add_argument("--ui-url", default=os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"))
    ap.add_argument("--vendor", type=Path, default=ROOT / "vendor")
    ap.add_argument("--no-mlflow-run", action="store_true", help="do not log the report run")
    args = ap.parse_args(argv)
    if args.what == "html-template":
        print(build_offline_template(args.vendor))
        return 0

    from grid import load_grid

    root = args.root.resolve()
    out = (args.out or root / "reports").resolve()
    (out / "plots").mkdir(parents=True, exist_ok=True)
    grid = load_grid(args.grid)
    experiment = _experiment(root, args.experiment)
    results = collect_mlflow(root, experiment) if args.source == "mlflow" else collect_dvc(root)
    if not results:
        print(f"no results in {args.source} (experiment {experiment!r}); table written with empty rows")
    results = {k: v for k, v in results.items() if k in {g["row"] for g in grid}}
    split = pick_split(results, args.split)
    url = compare_url(results, args.ui_url)
    table, size = build_table(grid, results, split, root)
    write_markdown(out / "table1.md", table, size, split, results, url, args.source)
    write_csv(out / "table1.csv", table, split)
    files = [out / "table1.md", out / "table1.csv"]
    bars, alpha = plot_data(grid, results, split)
    csvs = {}
    for name, pts in (("accuracy", bars), ("alpha", alpha)):
        if pts:
            csvs[name] = out / "plots" / f"{name}.csv"
            _write_points(csvs[name], pts)
    files += write_pngs(out / "plots", bars, alpha, split)
    template = args.vendor / "dvc-plots-offline.html"
    if template.exists() and csvs:
        html = dvc_plots_html(root, out / "plots", csvs, template)
        files += html
    elif csvs:
        print(f"{template} missing: `make vendor-vega` for the offline DVC plots (PNGs written)")
    print(f"wrote {out / 'table1.md'} and {out / 'table1.csv'} ({len(results)} of {len(grid)} rows with results)")
    missing = [g["row"] for g in grid if g["row"] not in results]
    if missing:
        print(f"rows without results: {', '.join(missing)}")
    if args.source == "mlflow" and results and not args.no_mlflow_run:
        rid = log_report_run(root, experiment, files, results, split)
        print(f"report run {rid} (artifacts: table, plots)")
    if url:
        print(f"MLflow compare page: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
