"""``report.md`` + ``report.json`` (and ``checkpoints.json``) of a study, with its plots linked."""

from __future__ import annotations

import json
from pathlib import Path

from .config import StudyConfig
from .layout import _read_preds, _runs_done, _write_json
from .plots import write_plots
from .tables import checkpoint_table, conclusion, conclusion_tables, selected_comparisons, study_tables


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _diff_ci(c: dict) -> str:
    """A paired difference in points with its CI: ``+0.4 [-1.3, +2.5]``."""
    return f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]"


def write_report(root: Path, cfg: StudyConfig, out: Path) -> str:
    """``report.md`` + ``report.json`` in ``out``: per arm and benchmark n, accuracy (mean ± sd
    over seeds) and a 95% CI; paired differences with bootstrap CIs and exact McNemar p."""
    from ...evaluate import RULES

    tables = study_tables(cfg, out)
    pooled = conclusion_tables(cfg, out) if cfg.primary_pooled else study_tables(cfg, out, half=None)
    lines = _intro_lines(cfg, pooled if cfg.primary_pooled else tables)
    if cfg.primary_pooled or tables["half"] is not None:  # else the tables below are the pooled ones
        lines += _pooled_lines(cfg, pooled)
    lines += _accuracy_lines(cfg, tables)
    rates, rate_lines = _reference_rates(root, cfg, out, tables["half"])
    lines += rate_lines
    lines += _comparison_lines(cfg, tables)
    lines += _per_seed_lines(tables)
    lines += _agreement_lines(tables)
    lines += _even_seeds_caution(tables)
    lines += _headline_lines(cfg, tables)
    lines += _rules_table(cfg, out, tables, RULES)
    lines += _test_lines(cfg, out)
    lines += _checkpoint_lines(cfg, out)
    lines += _answer_loss_lines(cfg, out)
    lines += _trained_on_lines(root, cfg)
    lines += _peer_check_lines(root, cfg)
    plots = write_plots(cfg, out, tables, rates)  # before report.md, so its links never dangle
    if plots:
        lines += ["", "## Plots"]
        for name, alt, caption in plots:
            lines += ["", f"![{alt}]({name})", "", caption]
    text = "\n".join(lines) + "\n"
    from ...io import atomic_write

    with atomic_write(out / "report.md") as f:
        f.write(text)
    _write_json(out / "report.json", tables)
    if cfg.primary_pooled:
        _write_json(out / "primary.json", pooled)
    return text


def _test_lines(cfg: StudyConfig, out: Path) -> list[str]:
    """The final students on the ``test`` split, where the data source has one (same code, nothing
    selected on it): each arm's accuracy and the paired comparisons."""
    import dataclasses

    from .runner import TEST_SPLIT

    done = _runs_done(cfg, out)
    have = [(d / "predictions" / TEST_SPLIT).is_dir() for seeds in done.values() for d in seeds.values()]
    if not any(have):
        return []
    if not all(have):
        return ["", f"(Some finished runs have no `{TEST_SPLIT}` predictions: the test table waits for all of them.)"]
    t = study_tables(dataclasses.replace(cfg, eval_split=TEST_SPLIT, report_half=None), out, half=None)
    lines = ["", f"## Test split, final step (rule {cfg.rule}; nothing was selected on it)", ""]
    lines += _accuracy_lines(cfg, t)[2:]
    lines += _comparison_lines(cfg, t)
    return lines


def _answer_loss_lines(cfg: StudyConfig, out: Path) -> list[str]:
    """How far each arm's answer loss moves from the reference's, against two reference seeds."""
    from .plots import answer_loss_differences

    diffs = answer_loss_differences(cfg, out)
    if not diffs:
        return []
    lines = [
        "",
        f"Answer-task training loss minus {cfg.reference}'s at the same step and seed (nats/token): mean and "
        "largest absolute difference over the logged steps; the last row is two seeds of "
        f"{cfg.reference} against each other (the yardstick; plot: `answer_loss_diff.png`):",
        "",
        "| arm | seeds paired | steps | mean difference | mean of abs. | largest abs. |",
        "|---|---|---|---|---|---|",
    ]
    for arm, d in diffs.items():
        per_pair_max = max(max(abs(d["min"][i]), abs(d["max"][i])) for i in range(len(d["step"])))
        mean_abs = sum(abs(x) for x in d["mean"]) / len(d["mean"])
        lines.append(
            f"| {arm} | {d['pairs']} | {len(d['step'])} | {sum(d['mean']) / len(d['mean']):+.3f} | "
            f"{mean_abs:.3f} | {per_pair_max:.3f} |"
        )
    return lines


def _trained_on_lines(root: Path, cfg: StudyConfig) -> list[str]:
    """The rationales each arm trained on, counted by quality flag (rationales.quality_flags and the
    cache flags), per teacher: recomputed from ``data/`` with the arm's own settings."""
    from ...config import active_teachers
    from ...rationales import QUALITY_FLAGS
    from ...trainset import build_trainset

    if not (root / cfg.prepared).is_dir() or not (root / cfg.rationales).is_dir():
        need = f"`{cfg.prepared}` and `{cfg.rationales}`"
        return ["", f"(The rationale-quality counts need {need}: `dvc repro prepare import_rationales`.)"]
    rows = []
    for arm in cfg.arms:
        d = cfg.arm_distill(arm)
        teachers = active_teachers(d.alphas)
        if not teachers:
            continue
        _, counts = build_trainset(
            root / cfg.prepared, root / cfg.rationales, cfg.benchmarks, dict.fromkeys(teachers), d.train_per_benchmark,
            d.drop_flags,
        )  # fmt: skip
        for t in teachers:
            c = {k: sum(per[k] for per in counts[t].values()) for k in next(iter(counts[t].values()))}
            rows.append((arm, t, c))
    if not rows:
        return []
    flags = ["truncated", *QUALITY_FLAGS]
    lines = [
        "",
        "What each arm trained on: per teacher, the rationales used (of its training questions) and, among the "
        "usable ones before `drop_flags`, how many carry each flag (`misses_gold`: the gold option's text is not "
        "in it; `glitch_start`; `cites_letter`; `truncated`: stops mid-sentence):",
        "",
        "| arm | teacher | used | dropped by flags | " + " | ".join(flags) + " |",
        "|---|---|---|---|" + "---|" * len(flags),
    ]
    for arm, t, c in rows:
        usable = c["used"] + c["dropped_flags"]
        cells = [
            f"{c.get(f'flag_{f}', 0)} ({100 * c.get(f'flag_{f}', 0) / usable:.0f}%)" if usable else "" for f in flags
        ]
        lines.append(f"| {arm} | {t} | {c['used']} | {c['dropped_flags']} | " + " | ".join(cells) + " |")
    return lines


def _pooled_lines(cfg: StudyConfig, pooled: dict) -> list[str]:
    """Every comparison at the final step on every evaluated question (both halves): the
    pre-registered primary analysis of a ``primary_pooled`` study, a restatement otherwise."""
    comps = pooled["comparisons"]
    if not comps:
        return []
    n = next(iter(comps.values()))["average"]["n"]
    if cfg.primary_pooled:
        head = (
            f"## Primary analysis (pre-registered): final step, all {n} evaluated questions (both halves)\n\n"
            "Mean over seeds of the per-question difference, in points, with its 95% paired-bootstrap CI "
            "(10,000 draws over questions), the two-sided sign-flip permutation p (10,000 permutations; uses "
            "every seed) and the exact McNemar p of the per-question majority vote, on the seeds both arms have:"
        )
    else:
        head = (
            f"## Both halves pooled, final step (n = {n}): a restatement, not this study's pre-registered analysis\n\n"
            "Nothing was selected at the final step, so both halves are fair here; the conclusion above reads the "
            f"{cfg.report_half} half, as pre-registered. 95% paired-bootstrap CI (2,000 draws), sign-flip p, McNemar p:"
        )
    lines = [
        "",
        *head.split("\n"),
        "",
        "| comparison | seeds | difference [95% CI] | sign-flip p | McNemar p | n | right only in this / the other |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in comps.items():
        a = c["average"]
        lines.append(
            f"| {name} | {', '.join(map(str, pooled['comparison_seeds'][name]))} | {_diff_ci(a)} | "
            f"{a['p_perm']:.3g} | {a['p_mcnemar']:.3g} | {a['n']} | {a['b']} / {a['c']} |"
        )
    return [*lines, ""]


def _intro_lines(cfg: StudyConfig, tables: dict) -> list[str]:
    """Title, the profile's notes, the conclusion so far and what was evaluated, how."""
    fmt = cfg.distill.get("answer_format", "listed")
    scope = "every question" if not cfg.eval_per_benchmark else f"the first {cfg.eval_per_benchmark} questions"
    half = {
        None: "all of them",
        "dev": "their **dev** half (a pilot: choices are made here)",
        "report": "their **report** half (fixed by a hash before any pilot; nothing was selected on it)",
    }[tables["half"]]
    if cfg.primary_pooled and cfg.report_half:
        half = (
            f"all of them for the primary analysis (both halves pooled), and their **{cfg.report_half}** half "
            "in the tables after it (the secondary analyses)"
        )
    return [
        f"# Study `{cfg.name}`",
        "",
        *([cfg.notes.strip(), ""] if cfg.notes.strip() else []),
        f"**Conclusion so far:** {conclusion(cfg, tables)}",
        "",
        f"Split: **{cfg.eval_split}**, {scope} per benchmark, {half}. Answer format: **{fmt}**; "
        f"decision rule: **{cfg.rule}** ({RULE_TEXT.get(cfg.rule, cfg.rule)}). Every arm is reported at its "
        "final step; steps, learning rate, caps and alphas were fixed in the profile before its runs. "
        "The mirror has no test split, so these are validation numbers.",
        "",
    ]


def _accuracy_lines(cfg: StudyConfig, tables: dict) -> list[str]:
    """The accuracy table: a row per arm (``pending`` until a seed is finished)."""
    summary = tables["summary"]
    cols = cfg.benchmarks + ["average"]
    lines = [
        "Accuracy % (mean over seeds ± sd) [95% CI; seeds pooled per question], n questions:",
        "",
        "| arm | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for arm in cfg.arms:
        if arm not in summary:
            lines.append(f"| {arm} | pending | " + " | ".join("" for _ in cols) + " |")
            continue
        cells = []
        for b in cols:
            s = summary[arm][b]
            sd = "" if s["sd"] != s["sd"] else f" ± {_pct(s['sd'])}"
            cells.append(f"{_pct(s['accuracy'])}{sd} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}] n={s['n']}")
        lines.append(f"| {arm} | {len(tables['seeds'][arm])} | " + " | ".join(cells) + " |")
    return lines


def _reference_rates(root: Path, cfg: StudyConfig, out: Path, half: str | None) -> tuple[dict, list[str]]:
    """Majority-class and chance rates per benchmark ({} before any run is finished), from the
    first finished run's predictions, and their rows of the accuracy table."""
    from ...stats import majority_classes, reference_rates

    done = _runs_done(cfg, out)
    if not done:
        return {}, []
    first = next(iter(next(iter(done.values())).values()))
    maj = _majority(root, cfg, out, majority_classes(root / cfg.prepared, cfg.benchmarks))
    rates = {
        b: reference_rates(_read_preds(first / "predictions" / cfg.eval_split / f"{b}.jsonl", half), maj.get(b))
        for b in cfg.benchmarks
    }
    lines = []
    for key, label in (("majority", "majority class (train)"), ("chance", "chance")):
        vals = [rates[b].get(key) for b in cfg.benchmarks]
        if all(v is not None for v in vals):
            avg = sum(vals) / len(vals)
            lines.append(f"| {label} | – | " + " | ".join(_pct(v) for v in vals + [avg]) + " |")
    return rates, lines


def _majority(root: Path, cfg: StudyConfig, out: Path, found: dict[str, dict]) -> dict[str, dict]:
    """Each benchmark's train-split majority class: from ``data/prepared`` when it is there
    (and kept in ``majority.json`` beside the report), else from that file, so a clone without
    ``data/prepared`` rebuilds the same report; with neither, an error naming the command."""
    import json

    saved = out / "majority.json"
    if all(b in found for b in cfg.benchmarks):
        if not saved.exists() or json.loads(saved.read_text()) != found:
            _write_json(saved, found)
        return found
    stored = json.loads(saved.read_text()) if saved.exists() else {}
    missing = [b for b in cfg.benchmarks if b not in found and b not in stored]
    if missing:
        raise FileNotFoundError(
            f"study {cfg.name!r}: the report's majority-class row needs the train split of {missing} "
            f"({root / cfg.prepared}/<benchmark>/train.jsonl) or {saved}; make it with `dvc repro prepare` "
            "(or `dvc pull data/prepared`)"
        )
    return {b: found.get(b, stored.get(b)) for b in cfg.benchmarks}


def _comparison_lines(cfg: StudyConfig, tables: dict) -> list[str]:
    """The paired-differences table: a row per comparison."""
    cols = cfg.benchmarks + ["average"]
    lines = [
        "",
        "Paired differences (points) [95% paired-bootstrap CI], exact McNemar p (seeds: per-question "
        "majority vote), on the same questions; two trained arms on the seeds both have finished:",
        "",
        "| comparison | seeds | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    used = tables.get("comparison_seeds", {})
    for name, c in tables["comparisons"].items():
        cells = [f"{_diff_ci(c[b])} p={c[b]['p_mcnemar']:.3g}" if b in c else "" for b in cols]
        lines.append(f"| {name} | {', '.join(map(str, used.get(name, [])))} | " + " | ".join(cells) + " |")
    return lines


def _per_seed_lines(tables: dict) -> list[str]:
    """Each pooled comparison broken down by seed (the average over benchmarks): does one seed
    carry the pooled difference?"""
    per_seed = tables.get("per_seed") or {}
    if not per_seed:
        return []
    seeds = sorted({int(s) for row in per_seed.values() for s in row})
    lines = [
        "",
        "The same comparisons seed by seed (average; points [95% paired-bootstrap CI], questions only this "
        "arm / only the other got right):",
        "",
        "| comparison | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for name, row in per_seed.items():
        row = {int(s): c for s, c in row.items()}
        cells = [f"{_diff_ci(row[s])} {row[s]['b']}/{row[s]['c']}" if s in row else "" for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _agreement_lines(tables: dict) -> list[str]:
    """Same option chosen: each compared pair of runs (same seed), and two seeds of one arm."""
    agreement, between = tables.get("agreement") or {}, tables.get("seed_agreement") or {}
    if not agreement:
        return []

    def cells(row: dict, label) -> str:
        return ", ".join(f"{label(k)} {v['same']}/{v['n']}" for k, v in row.items())

    lines = [
        "",
        f"Questions on which both runs chose the same option (rule {tables['rule']}, benchmarks pooled): "
        "a treatment that changes few answers shows here even when it nets to zero; two seeds of one arm "
        "are the yardstick.",
        "",
        "| runs compared (by the first arm's seed; two trained arms share it) | same option |",
        "|---|---|",
    ]
    lines += [f"| {name} | {cells(row, lambda s: f's{s}')} |" for name, row in agreement.items()]
    for arm, row in between.items():
        lines.append(f"| {arm}, seed against seed | {cells(row, lambda k: 's' + k.replace('-', '/s'))} |")
    return lines


def _even_seeds_caution(tables: dict) -> list[str]:
    """A warning when a comparison pools an even number of seeds (McNemar's majority vote ties)."""
    even = sorted(name for name, seeds in tables.get("comparison_seeds", {}).items() if len(seeds) % 2 == 0)
    if not even:
        return []
    return [
        "",
        f"**Caution:** {', '.join(even)} pool{'s' if len(even) == 1 else ''} an even number of seeds. "
        "McNemar's majority vote then counts a question that half the seeds got right as wrong, which "
        "biases p against the arm that is right on split questions: read the bootstrap CIs, not these "
        "p-values, until the study has an odd number of seeds (it resumes: `scripts/study.py run`).",
    ]


def _headline_lines(cfg: StudyConfig, tables: dict) -> list[str]:
    """The headline comparison on the average, in points and relative to the reference arm."""
    summary, comps = tables["summary"], tables["comparisons"]
    key = f"{cfg.headline_arm} - {cfg.reference}"
    if not (key in comps and "average" in comps[key] and cfg.reference in summary):
        return []
    c, ref = comps[key]["average"], summary[cfg.reference]["average"]["accuracy"]
    rel = c["diff"] / ref if ref else float("nan")
    return [
        "",
        f"**{key}** on the average: {100 * c['diff']:+.2f} points "
        f"(95% CI [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}], "
        f"McNemar p = {c['p_mcnemar']:.3g}), "
        f"{100 * rel:+.1f}% relative to {cfg.reference}; CI half-width "
        f"{50 * (c['ci_high'] - c['ci_low']):.2f} points.",
    ]


RULE_TEXT = {
    "score": "mean token log-likelihood of option + EOS",
    "sum": "summed log-likelihood of the option text",
    "norm": "summed log-likelihood per character, lm-evaluation-harness acc_norm",
    "pmi": "summed log-likelihood minus the option's after the answer tag alone",
    "generate": "greedy generation matched to an option",
}


def _rules_table(cfg: StudyConfig, out: Path, tables: dict, rules) -> list[str]:
    """Average accuracy [95% CI] of each arm under every decision rule the predictions carry,
    and the headline comparison under each (same half as the main table)."""
    done = _runs_done(cfg, out)
    if not done:
        return []
    first = next(iter(next(iter(done.values())).values()))
    sample = _read_preds(first / "predictions" / cfg.eval_split / f"{cfg.benchmarks[0]}.jsonl")
    have = [r for r in rules if r != "generate" and sample and f"pred_{r}" in sample[0]]
    if len(have) < 2:
        return []
    per_rule = {r: study_tables(cfg, out, rule=r) for r in have}
    lines = [
        "",
        "Average accuracy % under each decision rule [95% CI] (same questions and half; the headline "
        f"rule, **{cfg.rule}**, was fixed in the profile):",
        "",
        "| arm | " + " | ".join(have) + " |",
        "|---|" + "---|" * len(have),
    ]
    for arm in cfg.arms:
        if arm not in tables["summary"]:
            continue
        cells = []
        for r in have:
            s = per_rule[r]["summary"][arm]["average"]
            cells.append(f"{_pct(s['accuracy'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for name in tables["comparisons"]:
        cells = []
        for r in have:
            c = per_rule[r]["comparisons"].get(name, {}).get("average")
            cells.append(f"{_diff_ci(c)} p={c['p_mcnemar']:.2g}" if c else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _checkpoint_lines(cfg: StudyConfig, out: Path) -> list[str]:
    rows = checkpoint_table(cfg, out)
    if not rows:
        return []
    _write_json(out / "checkpoints.json", rows)
    lines = [
        "",
        f"Checkpoints (average accuracy %, rule {cfg.rule}): the step selected on **dev** and its **report** "
        "accuracy, against the best step chosen on report itself (the authors' protocol: every checkpoint "
        "evaluated on the reported split); gap = best-on-report − dev-selected [95% paired-bootstrap CI]:",
        "",
        "| run | steps evaluated | dev-selected step | its report acc | final step's | best step on report "
        "| best-on-report acc | gap (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {', '.join(map(str, r['steps']))} | {r['dev_selected_step']} | "
            f"{_pct(r['dev_selected_report'])} | {_pct(r['final_report'])} | {r['best_step_on_report']} | "
            f"{_pct(r['best_on_report'])} | {100 * r['gap']:+.1f} [{100 * r['gap_ci_low']:+.1f}, "
            f"{100 * r['gap_ci_high']:+.1f}] |"
        )
    return lines + _dev_curve_lines(cfg, rows) + _selected_lines(cfg, out, rows)


def _dev_curve_lines(cfg: StudyConfig, rows: list[dict]) -> list[str]:
    """Dev accuracy at every evaluated step, mean over an arm's seeds (the epoch curve)."""
    by_arm: dict[str, list[dict]] = {}
    for r in rows:
        by_arm.setdefault(r["run"].rsplit("-s", 1)[0], []).append(r["dev_curve"])
    steps = sorted({int(s) for curves in by_arm.values() for c in curves for s in c})
    lines = [
        "",
        f"Dev-half accuracy % per evaluated step (rule {cfg.rule}; mean over the arm's seeds, their range in "
        "brackets): the curve a checkpoint is selected on.",
        "",
        "| arm | seeds | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for arm, curves in by_arm.items():
        cells = []
        for s in steps:
            v = [c[str(s)] for c in curves if str(s) in c]
            rng = f" [{_pct(min(v))}, {_pct(max(v))}]" if len(v) > 1 else ""
            cells.append(f"{_pct(sum(v) / len(v))}{rng}" if v else "")
        lines.append(f"| {arm} | {len(curves)} | " + " | ".join(cells) + " |")
    return lines


def _selected_lines(cfg: StudyConfig, out: Path, rows: list[dict]) -> list[str]:
    """Each arm at its dev-selected step against the reference at its own, on the report half."""
    comps = selected_comparisons(cfg, out, rows)
    if not comps:
        return []
    lines = [
        "",
        f"At the dev-selected step (ties to the {cfg.selection_ties} step), on the {cfg.report_half or 'report'} "
        "half: paired difference (points) [95% paired-bootstrap CI], sign-flip p, McNemar p:",
        "",
        "| comparison | seeds | difference [95% CI] | sign-flip p | McNemar p | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in comps.items():
        lines.append(
            f"| {name} | {', '.join(map(str, c['seeds']))} | {_diff_ci(c)} | {c['p_perm']:.3g} | "
            f"{c['p_mcnemar']:.3g} | {c['n']} |"
        )
    return lines


AGREEMENT = Path("benchmarks") / "results" / "lm_eval_agreement.json"  # written by scripts/check_lm_eval.py


def _peer_check_lines(root: Path, cfg: StudyConfig) -> list[str]:
    """How far the cloze scorer behind these numbers agrees with lm-evaluation-harness on the same
    questions (``scripts/check_lm_eval.py``): questions where ``sum`` chose harness ``acc``'s option
    and ``norm`` chose ``acc_norm``'s. Nothing in a listed-format study, or before the check ran."""
    path = root / AGREEMENT
    if cfg.distill.get("answer_format", "listed") != "cloze" or not path.exists():
        return []
    record = json.loads(path.read_text())
    per = record["benchmarks"]
    n = sum(r["n"] for r in per.values())
    same_acc = sum(round(r["agree_acc"] * r["n"]) for r in per.values())
    same_norm = sum(round(r["agree_acc_norm"] * r["n"]) for r in per.values())
    scope = f"the first {record['limit']}" if record.get("limit") else "all"
    return [
        "",
        f"Peer check (`{AGREEMENT.as_posix()}`, `python scripts/check_lm_eval.py`): on {scope} valid questions "
        f"of {', '.join(per)} (n={n}; checkpoint `{record['model']}`), the `sum` rule picks lm-evaluation-harness "
        f"`acc`'s option on {same_acc}/{n} questions and `norm` picks `acc_norm`'s on {same_norm}/{n}; the "
        f"largest log-likelihood difference is {max(r['max_abs_loglik_diff'] for r in per.values()):.1e}.",
    ]
