"""The study profile (``experiments/study.yaml``): benchmarks, arms, seeds and settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The distill settings a profile starts from before its own ``distill`` and each arm's changes:
# the values every committed study ran under (the DistillConfig defaults of its time), written
# out so that a study depends on its profile and this table only, never on params.yaml or on
# the library's defaults.
STUDY_DISTILL_BASE = {
    "alphas": {},
    "answer_weight": 1.0,
    "train_per_benchmark": 64,
    "steps": 30,
    "batch_size": 8,
    "grad_accum": 1,
    "lr": 5e-05,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "max_input_tokens": 256,
    "max_answer_tokens": 32,
    "max_rationale_tokens": 64,
    "answer_format": "listed",
    "rationale_position": "branch",
    "precision": "auto",
    "forward": "shared",
    "pack_tokens": 512,
    "pad_multiple": 0,
    "ce_chunk_tokens": 1024,
    "gradient_checkpointing": False,
    "malloc_trim": False,
    "lr_schedule": "linear",
    "valid_loss_per_benchmark": 8,
    "drop_flags": ["non_english"],
    "lora": None,
    "log_every": 5,
    "state_every": 8,
}


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
    # {arm: earlier study}: that study's finished runs of the arm are read in place (same folder
    # parent, ``<study>/runs/<arm>-s<seed>/``), not trained again; its profile must give the arm the
    # same settings (``reuse_key``). E.g. a new arm paired with an earlier study's control arm.
    reuse: dict[str, str] = field(default_factory=dict)
    # The conclusion's analysis: False = the report half (riddle-cloze-v1's pre-registration);
    # True = every evaluated question, both halves pooled (nothing is selected at the final step),
    # a 10,000-draw paired bootstrap and a sign-flip permutation test that uses every seed.
    primary_pooled: bool = False
    selection_ties: str = "later"  # a dev-selected checkpoint tied on dev: the "later" or "earlier" step

    # The profile keys a reused arm's runs depend on: besides its ``distill`` settings, what is
    # evaluated and how (the rule is not one: every rule is recorded).
    EVAL_KEYS = ("benchmarks", "base", "eval_split", "eval_per_benchmark", "eval_half", "eval_max_input_tokens", "pmi")

    def __post_init__(self):
        if not self.pmi:
            raise ValueError(f"study {self.name!r}: pmi: false is not supported; the pmi rule is always scored")
        if self.selection_ties not in ("later", "earlier"):
            raise ValueError(f"study {self.name!r}: selection_ties is {self.selection_ties!r}; 'later' or 'earlier'")
        unknown = sorted(set(self.reuse) - set(self.arms))
        if unknown:
            raise ValueError(f"study {self.name!r}: reuse names arm(s) {unknown} that are not in arms")

    @classmethod
    def load(cls, path: Path) -> StudyConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def overlay(self, arm: str, seed: int) -> dict:
        """One (arm, seed) as a ``params.yaml`` overlay: the sections the pipeline's stages read
        (``data.benchmarks``, ``distill``, ``evaluate``) with this study's values."""
        return {
            "data": {"benchmarks": list(self.benchmarks)},
            "distill": {
                **STUDY_DISTILL_BASE,
                **self.distill,
                **self.arms[arm],
                "seed": seed,
                "checkpoint_every": self.checkpoint_every,
                "checkpoint_half": self.eval_half or "all",
                "checkpoint_rule": self.rule,
            },
            "evaluate": self._evaluate_section(),
        }

    def _evaluate_section(self) -> dict:
        return {
            "splits": list(dict.fromkeys([self.eval_split, "test"])),  # test wherever the source has it
            "valid_half": self.eval_half,
            "max_per_benchmark": self.eval_per_benchmark,
            "headline": self.rule,
            "generate_per_benchmark": None if self.generate else 0,
            "batch_size": self.eval_batch_size,
            "max_input_tokens": self.eval_max_input_tokens,
            "max_new_tokens": None,
            "precision": "fp32",  # batch-invariant scores; checkpoints too (checkpoints.fp32_forward)
        }

    def evaluation(self):
        """How every run and checkpoint of this study is evaluated, as the evaluate stage's typed
        section (``tinyllm.config.EvaluateConfig``); the same for every arm and seed."""
        from ...config import EvaluateConfig, from_dict

        return from_dict(EvaluateConfig, self._evaluate_section(), "evaluate")

    def params(self, arm: str, seed: int):
        """One (arm, seed) as the pipeline's typed params (``tinyllm.config.Params``), each section
        validated by the config the stages read. A distill key the profile leaves out takes
        ``STUDY_DISTILL_BASE``'s value, never ``params.yaml``'s or a library default: a study's runs
        depend on its profile alone (``grad_accum``, ``ce_chunk_tokens`` and
        ``evaluate.precision`` differ in the workspace's params.yaml). Not the cross-check that a stage writes every
        teacher's cache: a study reads the caches that are there (``inputs.check_inputs``), and
        ``teachers`` is empty, so every cache is read as a released one is."""
        from ...config import SECTIONS, Params, from_dict

        over = self.overlay(arm, seed)
        sections = {name: from_dict(cls, over.get(name), name) for name, cls in SECTIONS.items()}
        return Params(teachers={}, **sections)

    def eval_questions(self, root: Path) -> dict[str, list[dict]]:
        """What every run and checkpoint is scored on: per benchmark, ``eval_split`` (first
        ``eval_per_benchmark``), then ``eval_half`` of it (the overlay's ``evaluate`` section)."""
        from ...checkpoints import checkpoint_questions

        return checkpoint_questions(
            Path(root) / self.prepared,
            self.benchmarks,
            self.eval_half or "all",
            self.eval_split,
            self.eval_per_benchmark or None,
        )

    def arm_distill(self, arm: str):
        """The arm's typed ``distill`` section (at the first seed): what its runs train under."""
        return self.params(arm, self.seeds[0]).distill

    def run_dir(self, out: Path, arm: str, seed: int) -> Path:
        """The folder of one run: ``<out>/runs/<arm>-s<seed>``, or the reused study's."""
        study = Path(out) if arm not in self.reuse else Path(out).parent / self.reuse[arm]
        return study / "runs" / f"{arm}-s{seed}"

    def reuse_key(self, arm: str) -> dict:
        """What a run of ``arm`` depends on: its merged ``distill`` settings and the eval keys."""
        return {"distill": {**self.distill, **self.arms[arm]}, **{k: getattr(self, k) for k in self.EVAL_KEYS}}

    def check_reuse(self, out: Path) -> None:
        """Fail unless every reused arm has the same settings in the study it is read from."""
        for arm, study in self.reuse.items():
            src = Path(out).parent / study / "profile.yaml"
            if not src.exists():
                raise FileNotFoundError(f"study {self.name!r}: reuse.{arm} reads study {study!r}, but {src} is missing")
            other = StudyConfig(**yaml.safe_load(src.read_text()))
            if arm not in other.arms:
                raise ValueError(f"study {self.name!r}: reuse.{arm}: study {study!r} has no arm {arm!r}")
            mine, theirs = self.reuse_key(arm), other.reuse_key(arm)
            if mine != theirs:
                diff = sorted(k for k in {**mine, **theirs} if mine.get(k) != theirs.get(k))
                raise ValueError(
                    f"study {self.name!r}: reuse.{arm}: settings differ from study {study!r} in {diff}: "
                    f"{[mine.get(k) for k in diff]} vs {[theirs.get(k) for k in diff]}"
                )

    def trained_runs(self, first: Sequence[str] = ()) -> list[tuple[str, int]]:
        """``runs(first)`` less the reused arms': what this study trains."""
        return [(arm, seed) for arm, seed in self.runs(first) if arm not in self.reuse]

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
