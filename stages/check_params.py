"""Stage `check_params`: validate the whole params.yaml before DVC touches any other output.

DVC removes a stage's outputs just before it runs the stage's command, so a typo found by the
stage itself (``distill.batch_size: 0``) used to cost the last good ``models/student`` and its
metrics. This stage tracks every key of params.yaml, runs first (the root stages ``fetch`` and
``student_base`` depend on its output, so every stage does), and fails on a bad value naming the
key; DVC then stops before any other stage. It also checks that ``data.source`` can serve the
configuration (the folder is there, the host answers, the Hub copies have the benchmarks), in
seconds and before ``fetch`` would delete ``data/raw``. Its output holds a constant line, so a valid change
of params.yaml re-runs only the stages whose own params changed.
"""

import argparse

import _stage

from tinyllm.benchmarks import DataError
from tinyllm.io import atomic_write
from tinyllm.params import stage_config
from tinyllm.sources import check_source

OK = "params.yaml validated (types, ranges, unknown keys, cross-references)\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/params.ok")
    args = ap.parse_args()
    cfg = stage_config(_stage.ROOT / "params.yaml")  # exits naming file and key on the first bad value
    try:  # data.source can serve this configuration (before DVC deletes data/raw for fetch)
        check_source(cfg.data.source, cfg.data.benchmarks, cfg.distill.alphas, base=_stage.ROOT)
    except DataError as e:
        raise SystemExit(str(e)) from None
    with atomic_write(_stage.ROOT / args.out) as f:
        f.write(OK)


if __name__ == "__main__":
    main()
