"""What a study reads, checked before its first run: one error naming every missing input and how
to make it, and inputs that are there but cannot serve an arm."""

from __future__ import annotations

from pathlib import Path

from .config import StudyConfig


def check_inputs(root: Path, cfg: StudyConfig) -> None:
    """Fail before any run when something the study reads is absent (a fresh clone has only its
    DVC entries): one error naming every missing path and how to make it."""
    from ...config import active_teachers

    teachers = dict.fromkeys(t for arm in cfg.arms for t in active_teachers(cfg.arm_distill(arm).alphas))
    need = [root / cfg.base / "config.json"]
    need += [
        root / cfg.prepared / b / f"{s}.jsonl" for b in cfg.benchmarks for s in dict.fromkeys(("train", cfg.eval_split))
    ]
    need += [root / cfg.rationales / t / b for t in teachers for b in cfg.benchmarks]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"study {cfg.name!r}: {len(missing)} input(s) missing: {', '.join(missing)}. Make them with "
            "`dvc repro prepare import_rationales student_base` (a local teacher's rationales: "
            "`dvc repro generate_rationales`), or `dvc pull` them from the team's remote"
        )
    problems = _unusable_inputs(root, cfg)
    if problems:
        raise ValueError(
            f"study {cfg.name!r}: {len(problems)} input(s) cannot serve its runs: {'; '.join(problems)}. Rebuild "
            "them with `dvc repro prepare import_rationales student_base` (or `dvc pull`)"
        )


def _unusable_inputs(root: Path, cfg: StudyConfig) -> list[str]:
    """What is there but cannot serve a run: an unreadable or weightless base checkpoint, an empty
    prepared split or one with fewer questions than an arm trains on, an arm whose teacher has no
    usable rationale for any of its training questions (which fails only when that arm starts)."""
    import json

    from ...benchmarks import DataError, load_prepared
    from ...config import active_teachers
    from ...trainset import build_examples

    problems = []
    base = root / cfg.base
    try:
        json.loads((base / "config.json").read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{base / 'config.json'} is not a model config ({type(e).__name__})")
    if not any(p.stat().st_size for p in base.glob("*.safetensors")) and not any(
        p.stat().st_size for p in base.glob("*.bin")
    ):
        problems.append(f"{base} holds no model weights (*.safetensors)")
    arms = {arm: cfg.arm_distill(arm) for arm in cfg.arms if arm not in cfg.reuse}
    for b in cfg.benchmarks:
        for split in dict.fromkeys(("train", cfg.eval_split)):
            try:
                n = len(load_prepared(root / cfg.prepared, b, split) or [])
            except DataError as e:
                problems.append(str(e))
                continue
            want = max([d.train_per_benchmark or 1 for d in arms.values()] if split == "train" else [1])
            if n < want:
                problems.append(
                    f"{root / cfg.prepared / b / f'{split}.jsonl'} has {n} question(s), the study needs {want}"
                )
    if problems:
        return problems
    checked = set()
    for arm, d in arms.items():
        teachers = active_teachers(d.alphas)
        key = (tuple(teachers), d.train_per_benchmark, tuple(d.drop_flags))
        if not teachers or key in checked:
            continue
        checked.add(key)
        examples, _ = build_examples(
            root / cfg.prepared, root / cfg.rationales, cfg.benchmarks, teachers, d.train_per_benchmark, 0, d.drop_flags
        )
        for t in teachers:
            if not any(t in ex["rationales"] for ex in examples):
                problems.append(
                    f"arm {arm!r}: teacher {t!r} has no usable rationale for its {len(examples)} training questions "
                    f"in {root / cfg.rationales / t} (empty, stale or all dropped by {d.drop_flags})"
                )
    return problems
