"""The table's columns: the six benchmarks in the paper's order, then their average."""

from ...benchmarks import BENCHMARKS

HEADER = ["OBQA", "ARC", "PIQA", "Riddle", "PQA", "BioASQ", "Avg"]
NAMES = list(BENCHMARKS) + ["average"]
AVERAGE = NAMES.index("average")  # the column of the unweighted mean over the benchmarks


def blank() -> list[None]:
    """One empty cell per column (a row's values, CIs, sds or ns before any are known)."""
    return [None] * len(NAMES)
