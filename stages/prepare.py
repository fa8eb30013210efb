"""Stage `prepare`: validate every record of data/raw and write one normalised JSON Lines file
per benchmark and split to data/prepared/<benchmark>/<split>.jsonl (+ counts as metrics)."""

import argparse
import logging

import _stage

from tinyllm.benchmarks import load_benchmark
from tinyllm.io import write_json, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--out", default="data/prepared")
    ap.add_argument("--metrics", default="metrics/data.json")
    args = ap.parse_args()
    cfg = _stage.config().data
    counts = {}
    for b in cfg.benchmarks:
        splits = load_benchmark(_stage.ROOT / args.raw, b)
        counts[b] = {}
        for split, records in splits.items():
            write_jsonl(_stage.ROOT / args.out / b / f"{split}.jsonl", records)
            counts[b][split] = len(records)
        logging.info("%s: %s", b, ", ".join(f"{s}={n}" for s, n in counts[b].items()))
    write_json(_stage.ROOT / args.metrics, counts)


if __name__ == "__main__":
    main()
