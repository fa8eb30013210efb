"""The table's columns: the six benchmarks in the paper's order, then their average."""

BENCHMARKS = ["obqa", "arc", "piqa", "riddle", "pubmedqa", "bioasq"]
HEADER = ["OBQA", "ARC", "PIQA", "Riddle", "PQA", "BioASQ", "Avg"]
NAMES = BENCHMARKS + ["average"]
