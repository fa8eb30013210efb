"""Export the rationale caches as a Hugging Face Hub dataset: Parquet files + a dataset card.

    python scripts/export_rationales.py [--teachers flan_t5_xl,smollm2_135m] [--benchmarks obqa,arc,piqa,pubmedqa]
        [--out exports/rationales]
    hf upload <user>/<name> exports/rationales --repo-type dataset   # to publish (huggingface_hub 2)

Teachers: every cache folder under --rationales unless --teachers names some. Their prompt and
decoding settings come from params.yaml (the released teachers: the paper's release). A thin
command line over tinyllm.rationale_export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyllm.benchmarks import DataError
from tinyllm.params import load_config
from tinyllm.rationale_export import claim_folder, export_rationales

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rationales", type=Path, default=ROOT / "data" / "rationales")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "exports" / "rationales")
    ap.add_argument("--teachers", default="", help="comma-separated cache names (default: every cache)")
    ap.add_argument(
        "--benchmarks", default="",
        help="comma-separated benchmarks (default: every cached one); a public upload leaves out riddle and bioasq",
    )  # fmt: skip
    ap.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared", help="questions, options, answers")
    args = ap.parse_args(argv)
    if not args.rationales.is_dir():
        raise SystemExit(
            f"export_rationales: no rationale caches at {args.rationales}; make them with "
            "`dvc repro import_rationales generate_rationales` or `dvc pull`"
        )
    names = [t.strip() for t in args.teachers.split(",") if t.strip()] or sorted(
        d.name for d in args.rationales.iterdir() if d.is_dir()
    )
    configured = load_config(args.params).teachers
    settings = {t: configured[t].settings() if t in configured else None for t in names}
    try:
        claim_folder(args.out)  # refuses a folder it did not write; empties an earlier export
        benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] or None
        counts = export_rationales(args.rationales, args.out, settings, args.prepared, benchmarks)
    except DataError as e:
        raise SystemExit(f"export_rationales: {e}") from None
    for t, by_b in counts.items():
        n = sum(c["records"] for by_s in by_b.values() for c in by_s.values())
        print(f"{t}: {n} records in {sum(len(s) for s in by_b.values())} files")
    print(f"wrote {args.out} (dataset card: {args.out / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
