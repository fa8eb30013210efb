"""Stage `prepare`: validate every record of data/raw and write one normalised JSON Lines file
per benchmark and split to data/prepared/<benchmark>/<split>.jsonl (+ counts as metrics).

All benchmarks are written into a temporary folder beside data/prepared, which replaces it only
when every benchmark validated: a bad record never leaves a mix of old and new benchmarks."""

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import _stage

from tinyllm.benchmarks import load_benchmark
from tinyllm.io import replace_dir, write_json, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--out", default="data/prepared")
    ap.add_argument("--metrics", default="metrics/data.json")
    args = ap.parse_args()
    cfg = _stage.sections().data
    out = _stage.ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the folder it becomes is not
    counts = {}
    try:
        for b in cfg.benchmarks:
            splits = load_benchmark(_stage.ROOT / args.raw, b)
            counts[b] = {}
            for split, records in splits.items():
                write_jsonl(tmp / b / f"{split}.jsonl", records)
                counts[b][split] = len(records)
            logging.info("%s: %s", b, ", ".join(f"{s}={n}" for s, n in counts[b].items()))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(_stage.ROOT / args.metrics, counts)


if __name__ == "__main__":
    main()
