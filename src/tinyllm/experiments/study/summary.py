"""One table across studies (``python scripts/study.py summary``): for each study (regime), the
positive control and every arm against the reference, at the final step on every evaluated
question (both halves pooled: nothing is selected at the final step), with the sign-flip p that
uses every seed, and Holm's adjustment over the pre-registered primary family (every arm against
the reference in the ``primary_pooled`` studies: riddle-cloze-v2a's two and v2b's one). Every
study's MLflow parent run gets the same lines (tag ``summary``, ``summary/summary.md``), so the
cross-regime answer sits beside each regime's own conclusion (its description)."""

from __future__ import annotations

from pathlib import Path

from .config import StudyConfig
from .layout import _write_json
from .tables import PRIMARY_RESAMPLES, study_tables


def summary_rows(profiles: list[Path], studies: Path) -> list[dict]:
    """A row per comparison of every study: its regime (the study), seeds, n, difference with CI,
    sign-flip and McNemar p, and ``holm`` for the primary family (None for the others)."""
    from ...stats import holm

    rows = []
    for path in profiles:
        cfg = StudyConfig.load(path)
        t = study_tables(cfg, studies / cfg.name, half=None, n_resamples=PRIMARY_RESAMPLES)
        for key, c in t["comparisons"].items():
            arm, ref = key.split(" - ")
            if arm in cfg.deterministic_arms or (ref != cfg.reference and arm != cfg.reference):
                continue
            if arm in cfg.reuse and ref in cfg.reuse:
                continue  # read from an earlier study, which has its own row
            a = c["average"]
            rows.append(
                {
                    "study": cfg.name,
                    "comparison": key,
                    "seeds": t["comparison_seeds"][key],
                    "n": a["n"],
                    "diff": a["diff"],
                    "ci_low": a["ci_low"],
                    "ci_high": a["ci_high"],
                    "p_perm": a["p_perm"],
                    "p_mcnemar": a["p_mcnemar"],
                    "family": cfg.primary_pooled and ref == cfg.reference,
                }
            )
    adjusted = holm({i: r["p_perm"] for i, r in enumerate(rows) if r["family"]})
    for i, r in enumerate(rows):
        r["holm"] = adjusted.get(i)
    return rows


def write_summary(profiles: list[Path], studies: Path) -> str:
    """``summary.md`` and ``summary.json`` in ``studies``; returns the markdown."""
    from ...io import atomic_write

    rows = summary_rows(profiles, studies)
    lines = [
        "# Does distillation help the 135M student? Every regime, one table",
        "",
        "RiddleSense, cloze format, rule norm; final step of every run, all evaluated questions (dev and report "
        "halves pooled: nothing is selected at the final step), seeds paired by seed and question. Difference in "
        "points with its 95% paired-bootstrap CI (10,000 draws), two-sided sign-flip permutation p (uses every "
        "seed), Holm-adjusted over the pre-registered primary family (marked *), and McNemar on the majority vote. "
        "riddle-cloze-v1's own pre-registered analysis read the report half (its report); this table restates it "
        "pooled.",
        "",
        "| regime (study) | comparison | seeds | n | difference [95% CI] | sign-flip p | Holm p | McNemar p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        holm_p = f"{r['holm']:.3g}" if r["holm"] is not None else "–"
        lines.append(
            f"| {r['study']} | {r['comparison']}{' *' if r['family'] else ''} | {', '.join(map(str, r['seeds']))} | "
            f"{r['n']} | {100 * r['diff']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | "
            f"{r['p_perm']:.3g} | {holm_p} | {r['p_mcnemar']:.3g} |"
        )
    text = "\n".join(lines) + "\n"
    with atomic_write(studies / "summary.md") as f:
        f.write(text)
    _write_json(studies / "summary.json", rows)
    return text


def regime_lines(rows: list[dict]) -> list[str]:
    """One line per study: each comparison with its difference [95% CI] in points, n, seeds and
    sign-flip p (Holm-adjusted too where it is in the primary family)."""
    out: dict[str, list[str]] = {}
    for r in rows:
        holm_p = f", Holm {r['holm']:.2g}" if r["holm"] is not None else ""
        out.setdefault(r["study"], []).append(
            f"{r['comparison']} {100 * r['diff']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] "
            f"(n={r['n']}, seeds {','.join(map(str, r['seeds']))}, p={r['p_perm']:.2g}{holm_p})"
        )
    return [f"{study}: " + "; ".join(parts) for study, parts in out.items()]


def tag_parents(root: Path, profiles: list[Path], studies: Path) -> dict[str, str]:
    """Put the summary (written by :func:`write_summary`) on every study's MLflow parent run: tag
    ``summary`` (:func:`regime_lines`) and the artifact ``summary/summary.md``. A study without
    MLflow or without a parent run yet is skipped. Returns {study: parent run id} tagged."""
    import json

    from ... import tracking
    from ...tracking.groups import annotate_run, find_parent

    text = "\n".join(regime_lines(json.loads((studies / "summary.json").read_text())))
    tagged = {}
    for path in profiles:
        cfg = StudyConfig.load(path)
        if not cfg.mlflow:
            continue
        try:
            pid = find_parent(root, f"study:{cfg.name}", cfg.experiment)
            if pid:
                annotate_run(root, pid, {"summary": text}, (studies / "summary.md",), "summary")
                tagged[cfg.name] = pid
        except tracking.TrackingUnavailable as e:
            print(f"summary: MLflow not reachable, parent runs left as they were ({e})")
            break
    return tagged
