"""Stage `trainset`: the examples distill trains on, in one file DVC can hash.

The first `distill.train_per_benchmark` train questions of each benchmark in `data.benchmarks`,
joined with the current rationales of every teacher whose alpha is > 0 (status ok, no dropped
flag, and for local teachers: written under the current settings, within the current limit);
the first `distill.valid_loss_per_benchmark` valid questions likewise, for the validation-loss
curve. Writes data/trainset/{train,valid}.jsonl + meta.json; counts of what was used and what was
left out and why, per teacher and benchmark, go to metrics/trainset.json and the log.
Cheap (a second or two): it re-runs whenever any cache changes, and `distill` re-runs only when
the bytes written here change.
"""

import argparse
import logging
import shutil

import _stage

from tinyllm.io import write_json
from tinyllm.trainset import COUNTS, build_trainset, write_trainset

log = logging.getLogger("trainset")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--rationales", default="data/rationales")
    ap.add_argument("--out", default="data/trainset")
    ap.add_argument("--metrics", default="metrics/trainset.json")
    args = ap.parse_args()
    root = _stage.ROOT
    p = _stage.config()
    used = [t for t, a in p.distill.alphas.items() if a > 0]  # alpha 0: no task, no sequence, no loss
    for t in used:
        if not (root / args.rationales / t).is_dir():
            known = sorted(d.name for d in (root / args.rationales).iterdir() if d.is_dir())
            raise SystemExit(
                f"params.yaml [distill]: teacher {t!r} in alphas has no rationale cache at "
                f"{args.rationales}/{t}; caches present: {known}"
            )
    teachers = {t: p.teachers.get(t) for t in used}  # None: a released cache (fixed source)
    d = p.distill
    splits, counts = {}, {}
    n_valid = getattr(d, "valid_loss_per_benchmark", 0) or 0
    for split, n in (("train", d.train_per_benchmark), ("valid", n_valid)):
        if split == "valid" and not n:
            continue
        splits[split], counts[split] = build_trainset(
            root / args.prepared, root / args.rationales, p.data.benchmarks, teachers, n, d.drop_flags, split
        )
    shutil.rmtree(root / args.out, ignore_errors=True)
    write_trainset(
        root / args.out,
        splits,
        {
            "teachers": used,
            "benchmarks": p.data.benchmarks,
            "train_per_benchmark": d.train_per_benchmark,
            "valid_per_benchmark": n_valid,
            "drop_flags": d.drop_flags,
        },
    )
    totals = {
        split: {t: {k: sum(c[k] for c in per.values()) for k in COUNTS} for t, per in by_t.items()}
        for split, by_t in counts.items()
    }
    write_json(root / args.metrics, {"totals": totals, **counts})
    for split, by_t in totals.items():
        log.info("%s: %d questions", split, len(splits[split]))
        for t, c in by_t.items():
            log.info("  %s: %s", t, ", ".join(f"{c[k]} {k}" for k in COUNTS))
            if c["stale"] or c["out_of_limit"]:
                log.warning(
                    "  %s: %d stale (other settings) and %d out-of-limit records left out of %s",
                    t,
                    c["stale"],
                    c["out_of_limit"],
                    split,
                )


if __name__ == "__main__":
    main()
