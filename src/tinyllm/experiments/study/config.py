"""The study profile (``experiments/study.yaml``): benchmarks, arms, seeds and settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class StudyConfig:
    name: str
    benchmarks: list[str]
    seeds: list[int]
    arms: dict[str, dict]  # arm -> distill overrides (alphas, steps, ...)
    distill: dict = field(default_factory=dict)  # shared DistillConfig values
    base: str = "models/base"  # student checkpoint (the student_base stage's output)
    prepared: str = "data/prepared"
    rationales: str = "data/rationales"
    eval_split: str = "valid"
    eval_per_benchmark: int | None = None  # None: every question of the split
    eval_batch_size: int = 16
    eval_max_input_tokens: int = 128
    generate: bool = True  # also generate-and-match (slower); option likelihood is always computed
    deterministic_arms: list[str] = field(default_factory=lambda: ["untrained"])  # run with the first seed only
    reference: str = "ft"  # the arm every other arm is compared with
    headline_arm: str = "tinyllm"
    mlflow: bool = True  # one parent run per study, a child run per (arm, seed)
    experiment: str = "tinyllm"
    rule: str = "score"  # the headline decision rule (tinyllm.evaluate.RULES); every rule is recorded
    eval_half: str | None = None  # evaluate only this half of valid ("dev" for pilots); None: all
    report_half: str | None = None  # the half the report's numbers come from ("report"); None: all evaluated
    checkpoint_every: int = 0  # also evaluate every N steps (dev selection vs best-on-report)
    pmi: bool = True  # score options after the answer tag alone too (the pmi rule)
    save_models: str | None = None  # folder for each run's trained student (e.g. models/study); None: not kept
    notes: str = ""  # what this profile is for, shown in the report

    @classmethod
    def load(cls, path: Path) -> StudyConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def runs(self, first: Sequence[str] = ()) -> list[tuple[str, int]]:
        """Every (arm, seed): seed by seed, arms in profile order; ``first`` (names such as
        ``"ft-s2"``) moves those runs to the front, in the order given. Order never changes a
        run's result (each run's seed fixes its questions and batches); it decides which runs
        finish first when a job has limited time."""
        runs = [
            (arm, seed)
            for seed in self.seeds
            for arm in self.arms
            if not (arm in self.deterministic_arms and seed != self.seeds[0])
        ]
        names = {f"{arm}-s{seed}": (arm, seed) for arm, seed in runs}
        unknown = [n for n in first if n not in names]
        if unknown:
            raise ValueError(f"unknown run(s) {unknown} for study {self.name!r}; its runs: {list(names)}")
        head = [names[n] for n in dict.fromkeys(first)]
        return head + [r for r in runs if r not in head]
