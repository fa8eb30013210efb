"""The study (experiments/study.yaml): does TinyLLM beat label-only fine-tuning? Arms x seeds,
trained and evaluated in one resumable job; partial results in reports/study/<name>/ as it goes.

    nohup python scripts/study.py run [--profile experiments/study.yaml] > study.log 2>&1 &   # resumable
    nohup python scripts/study.py run --first ft-s2,tinyllm-s1 ... &   # these runs before the rest
    python scripts/study.py report [--profile ...]      # report.md / report.json from finished runs
    python scripts/study.py status [--profile ...]      # progress, finished runs, where a restart resumes
    python scripts/study.py compact [--profile ...]     # predictions as compact .jsonl.gz; the report must not change
    python scripts/study.py summary                     # every study in one table (summary.md; MLflow parents)

A thin command line over tinyllm.experiments.study (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tinyllm.experiments.study import StudyConfig, run_study, study_status, write_report

ROOT = Path(__file__).resolve().parents[1]
# the RiddleSense cloze studies, in the order the summary lists them
SUMMARY_PROFILES = ("study.yaml", "study-riddle-cloze-v2a.yaml", "study-riddle-cloze-v2b.yaml")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "report", "status", "compact", "summary"])
    ap.add_argument("--profile", type=Path, default=ROOT / "experiments" / "study.yaml")
    ap.add_argument("--out", type=Path, help="default: reports/study/<name>")
    ap.add_argument("--progress", action="store_true", help="tqdm bars (off by default: the log is a file)")
    ap.add_argument(
        "--data", type=Path, help="read prepared/ and rationales/ from this folder (a frozen copy of data/)"
    )
    ap.add_argument(
        "--first",
        default="",
        help="comma-separated runs (arm-s<seed>, e.g. ft-s2,tinyllm-s1) to do before the rest; "
        "order never changes a run's result",
    )
    ap.add_argument(
        "--keep-full", action="store_true",
        help="compact: write the .jsonl.gz copies but keep the full .jsonl files (git ignores them)",
    )  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = StudyConfig.load(args.profile)
    if args.data:
        cfg.prepared, cfg.rationales = str(args.data / "prepared"), str(args.data / "rationales")
    out = args.out or ROOT / "reports" / "study" / cfg.name
    if args.command == "run":
        first = [n.strip() for n in args.first.split(",") if n.strip()]
        run_study(ROOT, cfg, out, progress=args.progress, first=first)
    elif args.command == "report":
        print(write_report(ROOT, cfg, out))
    elif args.command == "summary":
        from tinyllm.experiments.study.summary import tag_parents, write_summary

        profiles, studies = [ROOT / "experiments" / p for p in SUMMARY_PROFILES], ROOT / "reports" / "study"
        print(write_summary(profiles, studies))
        for name, pid in tag_parents(ROOT, profiles, studies).items():
            print(f"MLflow parent run of {name} ({pid}): tag 'summary' and summary/summary.md")
    elif args.command == "compact":
        if args.keep_full:  # a study still running on code that reads the full files
            from tinyllm.experiments.study.layout import compact_runs

            print(f"{len(compact_runs(cfg, out, None))} compact copies written beside the full files")
            return 0
        return compact(cfg, out)
    else:
        print(json.dumps(study_status(ROOT, cfg, out), indent=1))
    return 0


def compact(cfg: StudyConfig, out: Path) -> int:
    """Rewrite the study's predictions compact, rebuild the report, and keep the change only if
    every report file is byte-identical (else put the full files back and say which differ)."""
    import shutil
    import tempfile

    from tinyllm.experiments.study.layout import compact_runs

    files = ("report.md", "report.json", "checkpoints.json", "primary.json", "majority.json")
    write_report(ROOT, cfg, out)
    before = {f: (out / f).read_bytes() for f in files if (out / f).exists()}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        written = compact_runs(cfg, out, Path(tmp))
        write_report(ROOT, cfg, out)
        changed = [f for f, b in before.items() if (out / f).read_bytes() != b]
        if changed:
            for w in written:
                w.unlink()
            for f in Path(tmp).rglob("*.jsonl"):
                shutil.move(str(f), out / f.relative_to(tmp))
            write_report(ROOT, cfg, out)
            print(f"not compacted: the rebuilt {', '.join(changed)} would differ; full files kept")
            return 1
    print(f"{len(written)} prediction files compacted; {', '.join(before)} rebuilt byte-identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
