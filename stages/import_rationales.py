"""Stage `import_rationales`: split the authors' released rationale strings into the two
teachers' caches, data/rationales/{flan_t5_xl,llama2_7b}/<benchmark>/<split>.jsonl, aligned to
the prepared question ids, for the splits something reads (train, valid; never test); counts of
missing / empty / truncated parts go to metrics."""

import argparse
import logging

import _stage

from tinyllm.benchmarks import load_prepared, rationale_files
from tinyllm.io import write_json, write_jsonl
from tinyllm.rationales import IMPORTED_SPLITS, RELEASED_TEACHERS, cache_path, import_released, summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--out", default="data/rationales")
    ap.add_argument("--metrics", default="metrics/rationales_released.json")
    args = ap.parse_args()
    cfg = _stage.sections().data
    root = _stage.ROOT
    summary = {t: {} for t in RELEASED_TEACHERS}
    for b in cfg.benchmarks:
        for split in IMPORTED_SPLITS:  # only what is used: never the test rationales
            records = load_prepared(root / args.prepared, b, split)
            if records is None or not rationale_files(root / args.raw, b, split):
                continue
            caches = import_released(root / args.raw, b, split, records)
            for teacher, rows in caches.items():
                write_jsonl(cache_path(root / args.out, teacher, b, split), rows)
                s = summarize(rows)
                summary[teacher].setdefault(b, {})[split] = s
                logging.info(
                    "%s %s/%s: %d ok, %d missing, %d empty, %d truncated",
                    teacher,
                    b,
                    split,
                    s["ok"],
                    s["missing"],
                    s["empty"],
                    s.get("flag_truncated", 0),
                )
    write_json(root / args.metrics, summary)


if __name__ == "__main__":
    main()
