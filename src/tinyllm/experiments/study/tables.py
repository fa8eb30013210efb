"""The study's statistics from the finished runs' predictions: accuracy per arm with CIs, paired
comparisons, the checkpoint table (dev-selected vs best-on-report) and the one-sentence conclusion."""

from __future__ import annotations

import json
from pathlib import Path

from .config import StudyConfig
from .layout import _read_preds, _runs_done

PRIMARY_RESAMPLES = 10_000  # the pooled primary analysis's bootstrap draws and permutations


def conclusion_tables(cfg: StudyConfig, out: Path) -> dict:
    """The tables the study's conclusion is read from: every evaluated question pooled with
    ``PRIMARY_RESAMPLES`` (``primary_pooled``), else the profile's report half."""
    if cfg.primary_pooled:
        return study_tables(cfg, out, half=None, n_resamples=PRIMARY_RESAMPLES)
    return study_tables(cfg, out)


def study_tables(
    cfg: StudyConfig, out: Path, rule: str | None = None, half: str | None = "profile", n_resamples: int | None = None
) -> dict:
    """Accuracy summaries per arm and paired comparisons, from the finished runs' predictions
    under ``rule`` (default: the profile's) on ``half`` (default: the profile's report half).

    Two trained arms are compared on the seeds both have finished (``comparison_seeds``), so a
    comparison is paired by seed as well as by question while a study is part-way: an arm with
    seeds 0, 1 against one with seed 0 alone would otherwise pit a 2-seed majority vote (whose
    ties count as wrong) against a single run. A deterministic arm (the untrained student, one
    run) is compared against every seed of the other arm.

    ``agreement``: per comparison and seed, the questions on which both arms chose the same option
    (of ``n``); ``seed_agreement``: the same between two seeds of one arm, the yardstick for it."""
    from ...stats import accuracy_summary

    rule = rule or cfg.rule
    half = cfg.report_half if half == "profile" else half
    runs = _Runs(cfg, out, rule, half)
    mats = {arm: runs.matrices(arm, sorted(seeds)) for arm, seeds in runs.done.items()}
    summary = {arm: accuracy_summary({b: m for b, (_, m) in per.items()}) for arm, per in mats.items()}
    comps, used, per_seed, agreement = _comparisons(cfg, runs, mats, n_resamples)
    seeds = {a: sorted(s) for a, s in runs.done.items()}
    # how much two seeds of one arm agree: the yardstick for how few answers a treatment moves
    seed_agreement = {
        arm: {f"{s}-{t}": _same_option(runs.picks(arm, s), runs.picks(arm, t)) for s in ss for t in ss if s < t}
        for arm, ss in seeds.items()
        if len(ss) > 1
    }
    return {
        "summary": summary,
        "comparisons": comps,
        "comparison_seeds": used,
        "per_seed": per_seed,
        "agreement": agreement,
        "seed_agreement": seed_agreement,
        "seeds": seeds,
        "rule": rule,
        "half": half,
    }


class _Runs:
    """The finished runs' predictions, read once, under one rule and half."""

    def __init__(self, cfg: StudyConfig, out: Path, rule: str, half: str | None):
        self.cfg, self.rule = cfg, rule
        self.done = _runs_done(cfg, out)
        self.preds = {
            arm: {
                b: {s: _read_preds(d / "predictions" / cfg.eval_split / f"{b}.jsonl", half) for s, d in seeds.items()}
                for b in cfg.benchmarks
            }
            for arm, seeds in self.done.items()
        }

    def picks(self, arm: str, seed: int) -> dict:
        """{(benchmark, id): the option the run chose}."""
        from ...stats import prediction

        return {(b, p["id"]): prediction(p, self.rule) for b in self.cfg.benchmarks for p in self.preds[arm][b][seed]}

    def matrices(self, arm: str, seeds: list[int]) -> dict:
        """{benchmark: the seeds x questions correctness matrix} of one arm."""
        from ...stats import seed_matrix

        return {b: seed_matrix([self.preds[arm][b][s] for s in seeds], self.rule) for b in self.cfg.benchmarks}


def _same_option(x: dict, y: dict) -> dict:
    common = x.keys() & y.keys()
    return {"same": sum(x[k] == y[k] for k in common), "n": len(common)}


def _comparisons(cfg: StudyConfig, runs: _Runs, mats: dict, n_resamples: int | None) -> tuple[dict, ...]:
    """(comparisons, their seeds, per-seed comparisons, same-option counts) of every trained arm
    against the reference arm and each deterministic arm."""
    from ...stats import N_RESAMPLES
    from ...stats import paired_comparison as _paired

    def paired_comparison(a, r):
        return _paired(a, r, n_resamples=n_resamples or N_RESAMPLES)

    done, deterministic = runs.done, cfg.deterministic_arms
    comps, used, per_seed, agreement = {}, {}, {}, {}
    for arm in mats:
        if arm in deterministic:
            continue  # the untrained student is a reference, not a treatment
        for ref in (cfg.reference, *deterministic):
            if arm == ref or ref not in mats:
                continue
            key = f"{arm} - {ref}"
            if ref in deterministic:
                used[key] = sorted(done[arm])
                comps[key] = paired_comparison(mats[arm], mats[ref])
            elif common := sorted(set(done[arm]) & set(done[ref])):
                used[key] = common
                comps[key] = paired_comparison(runs.matrices(arm, common), runs.matrices(ref, common))
            else:
                continue
            ref_seed = {s: min(done[ref]) if ref in deterministic else s for s in used[key]}
            agreement[key] = {s: _same_option(runs.picks(arm, s), runs.picks(ref, ref_seed[s])) for s in used[key]}
            if len(used[key]) > 1:  # each seed's pair alone: does one seed carry the pooled difference?
                per_seed[key] = {
                    s: paired_comparison(
                        runs.matrices(arm, [s]), mats[ref] if ref in deterministic else runs.matrices(ref, [s])
                    )["average"]
                    for s in used[key]
                }
    return comps, used, per_seed, agreement


def checkpoint_table(cfg: StudyConfig, out: Path) -> list[dict]:
    """Per finished run with checkpoints: the step selected on ``dev`` (highest dev accuracy
    under the profile's rule, ties to the ``selection_ties`` step) and its accuracy on the report half, beside
    the best accuracy over the checkpoints on the report half (the authors' protocol) and the
    gap, with the paired-bootstrap CI of the gap's two predictions sets (questions resampled)."""
    from ...stats import accuracy_summary, paired_comparison, seed_matrix

    rows = []
    for arm, seeds in _runs_done(cfg, out).items():
        for seed, d in sorted(seeds.items()):
            steps = sorted(int(p.name[4:]) for p in (d / "checkpoints").glob("step*") if (p / "metrics.json").exists())
            if not steps:
                continue
            final = json.loads((d / "metrics.json").read_text())["train"].get("steps", 0)
            folders = {s: d / "checkpoints" / f"step{s}" for s in steps} | {final: d}

            def mats(folder, half):
                return {
                    b: seed_matrix(
                        [_read_preds(folder / "predictions" / cfg.eval_split / f"{b}.jsonl", half)], cfg.rule
                    )
                    for b in cfg.benchmarks
                }

            def average(folder, half):
                return accuracy_summary({b: m for b, (_, m) in mats(folder, half).items()}, n_resamples=200)["average"][
                    "accuracy"
                ]

            acc = {h: {s: average(f, h) for s, f in folders.items()} for h in ("dev", cfg.report_half or "report")}
            rep_half = cfg.report_half or "report"
            tie = 1 if cfg.selection_ties == "later" else -1
            chosen = max(folders, key=lambda s: (acc["dev"][s], tie * s))
            best = max(folders, key=lambda s: (acc[rep_half][s], s))
            gap = paired_comparison(mats(folders[best], rep_half), mats(folders[chosen], rep_half))["average"]
            rows.append(
                {
                    "run": f"{arm}-s{seed}",
                    "steps": sorted(folders),
                    "dev_selected_step": chosen,
                    "dev_selected_report": acc[rep_half][chosen],
                    "final_report": acc[rep_half][final],
                    "best_step_on_report": best,
                    "best_on_report": acc[rep_half][best],
                    "gap": gap["diff"],
                    "gap_ci_low": gap["ci_low"],
                    "gap_ci_high": gap["ci_high"],
                    "dev_curve": {str(s): acc["dev"][s] for s in sorted(folders)},
                    "dev_selected_folder": str(folders[chosen].relative_to(d)),
                }
            )
    return rows


def selected_comparisons(cfg: StudyConfig, out: Path, rows: list[dict]) -> dict:
    """Secondary analysis: each arm at its dev-selected step (per run, ``checkpoint_table``'s
    ``rows``) against the reference at its own, on the report half, paired by seed and question."""
    from ...stats import paired_comparison, seed_matrix

    done = _runs_done(cfg, out)
    picked = {r["run"]: r["dev_selected_folder"] for r in rows}
    half = cfg.report_half or "report"

    def mats(arm: str, seeds: list[int]) -> dict:
        preds = {
            b: [
                _read_preds(done[arm][s] / picked[f"{arm}-s{s}"] / "predictions" / cfg.eval_split / f"{b}.jsonl", half)
                for s in seeds
            ]
            for b in cfg.benchmarks
        }
        return {b: seed_matrix(p, cfg.rule) for b, p in preds.items()}

    out_: dict = {}
    ref = cfg.reference
    for arm in done:
        if arm in (ref, *cfg.deterministic_arms) or ref not in done:
            continue
        seeds = sorted(
            s for s in set(done[arm]) & set(done[ref]) if f"{arm}-s{s}" in picked and f"{ref}-s{s}" in picked
        )
        if seeds:
            out_[f"{arm} - {ref}"] = {
                "seeds": seeds,
                **paired_comparison(mats(arm, seeds), mats(ref, seeds))["average"],
            }
    return out_


def conclusion(cfg: StudyConfig, tables: dict) -> str:
    """The study's result in one sentence with its numbers: the positive control (the reference
    arm against the untrained student), the headline arm against the reference, then every other
    finished arm against the reference, each with the seeds it was paired on."""
    summary, comps = tables["summary"], tables["comparisons"]
    half = f"{tables['half']} half of " if tables["half"] else ""
    n = summary.get(cfg.reference, {}).get("average", {}).get("n")
    where = f"{', '.join(cfg.benchmarks)} ({half}{cfg.eval_split}, n={n}, rule {cfg.rule})"

    def diff(key, unit=" points"):
        c = comps.get(key, {}).get("average")
        if not c:
            return None
        perm = f"sign-flip p = {c['p_perm']:.2g}, " if cfg.primary_pooled and "p_perm" in c else ""
        return (
            f"{100 * c['diff']:+.1f}{unit} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}], "
            f"{perm}McNemar p = {c['p_mcnemar']:.2g}"
        )

    control = next((diff(f"{cfg.reference} - {a}") for a in cfg.deterministic_arms), None)
    head = diff(f"{cfg.headline_arm} - {cfg.reference}")
    seeds = tables.get("comparison_seeds", {}).get(f"{cfg.headline_arm} - {cfg.reference}", [])
    if control is None:
        return f"On {where}: the positive control ({cfg.reference} against the untrained student) is not finished."
    text = f"On {where}: {cfg.reference} − untrained = {control}"
    if head is None:
        return text + f"; {cfg.headline_arm} is not finished."
    text += f"; {cfg.headline_arm} − {cfg.reference} = {head} ({_seeds(seeds)}, paired)"
    others = []
    for arm in cfg.arms:
        key = f"{arm} - {cfg.reference}"
        if arm not in (cfg.reference, cfg.headline_arm, *cfg.deterministic_arms) and (d := diff(key, unit="")):
            others.append(f"{arm} {d} ({_seeds(tables['comparison_seeds'][key])})")
    if others:
        text += f"; the other arms − {cfg.reference}: " + "; ".join(others)
    return text + "."


def _seeds(seeds: list[int]) -> str:
    return f"seed{'s' * (len(seeds) != 1)} {', '.join(map(str, seeds))}"
