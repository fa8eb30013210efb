"""Stage `fetch`: copy the six benchmarks (questions + released rationales) from the source
named in params.yaml [data] into data/raw, in the release layout, for DVC to version."""

import argparse
import logging

import _stage

from tinyllm.benchmarks import DataError
from tinyllm.io import write_json
from tinyllm.redact import redact_uri
from tinyllm.sources import check_source, fetch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="data/raw")
    ap.add_argument("--summary", default="data/raw/SOURCE.json")
    args = ap.parse_args()
    cfg = _stage.sections().data
    try:  # check_params checked the teachers too (every key); here: the folder or host, in seconds
        check_source(cfg.source, cfg.benchmarks, {}, base=_stage.ROOT)
        found = fetch(cfg.source, cfg.benchmarks, _stage.ROOT / args.out, base=_stage.ROOT)
    except DataError as e:
        raise SystemExit(f"fetch: {e}") from None
    # the source may be a URL with a token in it: never store it in a DVC output
    write_json(_stage.ROOT / args.summary, {"source": redact_uri(cfg.source), "splits": found})
    for b, splits in found.items():
        logging.info("%s: splits %s", b, ", ".join(splits))


if __name__ == "__main__":
    main()
