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

import _stage

from tinyllm.io import write_json
from tinyllm.params import stage_config
from tinyllm.trainset import make_trainset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--rationales", default="data/rationales")
    ap.add_argument("--out", default="data/trainset")
    ap.add_argument("--metrics", default="metrics/trainset.json")
    args = ap.parse_args()
    root = _stage.ROOT
    try:
        counts = make_trainset(
            root / args.prepared, root / args.rationales, root / args.out, stage_config(_stage.ROOT / "params.yaml")
        )
    except FileNotFoundError as e:  # an alpha > 0 teacher without a cache: say which, and what is there
        raise SystemExit(str(e)) from None
    write_json(root / args.metrics, counts)


if __name__ == "__main__":
    main()
