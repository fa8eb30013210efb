"""Resumable rationale generation: one teacher x benchmark x split into its cache file.

The cache ``<root>/<teacher>/<benchmark>/<split>.jsonl`` (format: ``tinyllm.rationales``) is
written append-only through ``JsonlAppender``, flushed and fsynced after every batch, so a crash or
``kill -9`` loses at most the batch in flight. A record is keyed by (teacher, benchmark, split,
id, prompt hash); the hash covers the exact prompt (question, options, gold answer or not,
in-context examples, system prompt) and the decoding settings (backend, model, max_new_tokens,
temperature). A rerun:

- skips questions whose newest record has the current hash and is not ``failed``;
- regenerates the rest (new questions, changed settings, earlier failures), appending;
- at the end compacts the file atomically to one record per id (the newest), in question order.

Next to it, ``<split>.summary.json`` holds counts, empty/failed, flags, mean length and answer
agreement (teacher forcing off): a function of the records only, so the same inputs give the same
DVC hash. Timings (tokens/s, seconds) go to the stage's metrics file (``cache: false``). Every
record stores ``prompt.settings`` (``TeacherConfig.settings_hash``), which ``tinyllm.trainset``
compares to drop records written under other settings.

Failed requests are retried by the next ``dvc repro``: with the default ``max_failed_fraction: 0``
any failed (or, after an early stop, not generated) record raises ``TooManyFailures`` *after* the
cache and summary are saved, the stage exits non-zero, DVC does not commit it, and the next run
regenerates exactly those records. A fraction above 0 accepts that many failures: the stage then
succeeds, DVC commits, and they stay failed until ``dvc repro -f`` (a warning says so).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..benchmarks import DataError
from ..io import JsonlAppender, iter_jsonl, write_json, write_jsonl
from ..rationales import cache_path, is_truncated, looks_non_english, summarize
from ..redact import redact
from .backends import Backend, Generation, make_backend
from .config import TeacherConfig
from .icl import ExampleSelector
from .prompts import TeacherPrompt, build_prompt, clean_output, contradicts_gold, letter, parse_answer

log = logging.getLogger(__name__)

# Stop early when this many batches in a row failed completely: the teacher is down or
# misconfigured, and hammering it for every remaining question only delays the error.
MAX_DEAD_BATCHES = 2


class TooManyFailures(RuntimeError):
    """More failed records than the configured fraction; the cache and summary are saved.

    ``summaries``: {split: summary} of everything that ran, for the stage's metrics.
    """

    def __init__(self, message: str, summaries: dict | None = None):
        super().__init__(message)
        self.summaries = summaries or {}


def summary_path(root: Path, teacher: str, benchmark: str, split: str) -> Path:
    return cache_path(root, teacher, benchmark, split).with_suffix(".summary.json")


def build_prompts(
    cfg: TeacherConfig, questions: list[dict], fmt: str, selector: ExampleSelector | None
) -> list[TeacherPrompt]:
    """One prompt per question (in-context examples chosen per question id)."""
    out = []
    for q in questions:
        examples = selector.select(q) if selector is not None else []
        out.append(
            build_prompt(
                q,
                examples,
                teacher_forcing=cfg.teacher_forcing,
                fmt=fmt,
                system_prompt=cfg.system_prompt,
                max_words=cfg.max_question_words,
                decoding=cfg.decoding(),
            )
        )
    return out


def make_record(cfg: TeacherConfig, benchmark: str, split: str, q: dict, p: TeacherPrompt, g: Generation) -> dict:
    """The cache record of one reply, with its quality flags (see module docstring of rationales)."""
    prompt = {
        "teacher_forcing": p.teacher_forcing,
        "icl_ids": p.icl_ids,
        "hash": p.hash,
        "settings": cfg.settings_hash(),
        "format": p.format,
        "text": g.prompt_text or p.text,
    }
    if p.messages is not None:
        prompt["messages"] = p.messages
    rec = {
        "id": q["id"],
        "benchmark": benchmark,
        "split": split,
        "teacher": cfg.name,
        "rationale": "",
        "status": "failed",
        "flags": [],
        "prompt": prompt,
        "source": cfg.source,
        "teacher_answer": None,
        "answer_match": None,
        # no timing here: the cache is a DVC output, and its bytes must depend on its inputs only
        "gen": {"new_tokens": g.new_tokens, "finish_reason": g.finish_reason},
    }
    if g.error is not None:
        rec["error"] = redact(g.error)  # servers echo requests (keys included) in their error bodies
        return rec
    text, flags = clean_output(g.text)
    rec["rationale"] = text
    rec["status"] = "ok" if text else "empty"
    if text and (g.finish_reason == "length" or is_truncated(text)):
        flags.append("truncated")
    if text and looks_non_english(text):
        flags.append("non_english")
    if p.teacher_forcing:
        if contradicts_gold(text, q):
            flags.append("answer_mismatch")
    else:
        idx = parse_answer(text, q["choices"])
        rec["teacher_answer"] = None if idx is None else f"({letter(idx)}) {q['choices'][idx]}"
        rec["answer_match"] = idx == q["label"]
        if idx is None:
            flags.append("answer_unparsed")
        elif idx != q["label"]:
            flags.append("answer_mismatch")
    reasons = {
        "empty": not text,
        "truncated": "truncated" in flags,
        "answer_mismatch": "answer_mismatch" in flags,
        "non_english": "non_english" in flags,
    }
    flags += [f"filtered:{r}" for r in cfg.filters if reasons[r]]
    rec["flags"] = flags
    return rec


def _read_newest(path: Path, teacher: str, benchmark: str, split: str) -> tuple[dict[str, dict], list[str]]:
    """{id: newest record} and the ids in first-appearance order; checks every record's key fields."""
    newest: dict[str, dict] = {}
    order: list[str] = []
    if not path.exists():
        return newest, order
    for i, r in enumerate(iter_jsonl(path, tolerate_torn_tail=True), 1):
        for key, want in (("teacher", teacher), ("benchmark", benchmark), ("split", split)):
            if r.get(key) != want:
                raise DataError(
                    f"{path}: record {i} (id {r.get('id')!r}): field {key!r} is "
                    f"{r.get(key)!r}, expected {want!r} (two teachers share one folder?)"
                )
        if "id" not in r or "prompt" not in r or "status" not in r:
            raise DataError(f"{path}: record {i}: fields 'id', 'prompt' and 'status' are required")
        if r["id"] not in newest:
            order.append(r["id"])
        newest[r["id"]] = r
    return newest, order


def compact(
    path: Path,
    teacher: str,
    benchmark: str,
    split: str,
    all_questions: list[dict],
    current: dict[str, str] | None = None,
    settings: str | None = None,
) -> list[dict]:
    """Rewrite ``path`` atomically with one record per id (the newest), in question-file order.

    Records of ids outside ``all_questions`` are kept after them: generated work is never dropped.
    ``current``: {id: prompt hash under the current settings}; a record with that hash gets
    ``prompt.settings = settings`` (records written before settings were stored, whose prompt
    proves they match). Timings that older versions stored per record are dropped.
    """
    newest, order = _read_newest(path, teacher, benchmark, split)
    for rid, r in newest.items():
        if current and settings and current.get(rid) == r["prompt"].get("hash"):
            r["prompt"]["settings"] = settings
        if isinstance(r.get("gen"), dict):
            r["gen"].pop("seconds", None)
    pos = {q["id"]: i for i, q in enumerate(all_questions)}
    first = {i: n for n, i in enumerate(order)}
    ids = sorted(newest, key=lambda i: (pos.get(i, len(pos)), first[i]))
    records = [newest[i] for i in ids]
    if path.exists():
        write_jsonl(path, records)
    return records


def _summary(cfg: TeacherConfig, records: list[dict], selected_ids: list[str]) -> dict:
    """Counts of the cache file (written beside it, so a pure function of its records: no timings)."""
    by_id = {r["id"]: r for r in records}
    sel = [by_id[i] for i in selected_ids if i in by_id]
    out = {
        "teacher": cfg.name,
        "source": cfg.source,
        "teacher_forcing": cfg.teacher_forcing,
        "icl_k": cfg.icl.k,
        "icl_strategy": cfg.icl.strategy,
        "selected": len(selected_ids),
        **summarize(sel),
    }
    out["not_generated"] = len(selected_ids) - len(sel)
    out["failed_fraction"] = round((out["failed"] + out["not_generated"]) / max(1, len(selected_ids)), 4)
    reasons: dict[str, int] = {}
    for r in sel:
        for f in r.get("flags", []):
            if f.startswith("filtered:"):
                reasons[f] = reasons.get(f, 0) + 1
    out["filtered"] = sum(any(f.startswith("filtered:") for f in r.get("flags", [])) for r in sel)
    out.update({k.replace(":", "_"): v for k, v in sorted(reasons.items())})
    ok = [r for r in sel if r["status"] == "ok"]
    out["mean_new_tokens"] = round(sum(r["gen"]["new_tokens"] for r in ok if "gen" in r) / max(1, len(ok)), 2)
    out["records_in_file"] = len(records)
    return out


def generate_split(
    cfg: TeacherConfig,
    benchmark: str,
    split: str,
    questions: list[dict],
    root: Path,
    *,
    selector: ExampleSelector | None = None,
    backend: Backend | None = None,
    progress: bool = True,
) -> dict:
    """Generate the missing or stale rationales of ``questions[:limit]``; returns the summary.

    ``questions``: normalised records of the split (``tinyllm.benchmarks``), in file order.
    The returned summary adds ``last_run`` (this run's counts and timings, tokens/s) to what
    ``<split>.summary.json`` holds; timings go to the stage's metrics file, never into the cache.
    Raises ``TooManyFailures`` after saving when the failed fraction exceeds the threshold.
    """
    root = Path(root)
    path = cache_path(root, cfg.name, benchmark, split)
    selected = questions[: cfg.limit_per_benchmark] if cfg.limit_per_benchmark else list(questions)
    own_backend = backend is None
    backend = backend or make_backend(cfg)
    t_start = time.perf_counter()
    run = _new_run()
    current: dict[str, str] = {}
    try:
        fmt = backend.resolve_format()
        prompts = build_prompts(cfg, selected, fmt, selector)
        current = {q["id"]: p.hash for q, p in zip(selected, prompts, strict=True)}
        done = _cached_ids(path, cfg, benchmark, split, selected, prompts)
        run["skipped"] = len(done)
        _log_plan(cfg, benchmark, split, len(selected), len(done), fmt)
        if len(done) < len(selected):
            todo = list(zip(selected, prompts, strict=True))
            _generate(cfg, benchmark, split, todo, done, backend, path, run, progress)
    finally:
        if own_backend:
            backend.close()
        # Runs on success, on TooManyFailures and on Ctrl-C alike: the append-only file is always
        # valid, compaction only tidies it (atomic rename), so no finished record can be lost here.
        records, summary = _save_split(cfg, benchmark, split, root, questions, selected, current, run, t_start)
    _check_failures(cfg, benchmark, split, path, records, summary)
    return summary


def _new_run() -> dict:
    """This run's counts and timings (``last_run`` of the summary), filled in as it goes."""
    return {
        "generated": 0,
        "failed": 0,
        "skipped": 0,
        "seconds": 0.0,
        "new_tokens": 0,
        "stopped_early": False,
        "tokens_per_s": None,
    }


def _cached_ids(
    path: Path, cfg: TeacherConfig, benchmark: str, split: str, selected: list[dict], prompts: list[TeacherPrompt]
) -> set[str]:
    """Ids whose newest cached record has the current prompt hash and did not fail: not regenerated."""
    newest, _ = _read_newest(path, cfg.name, benchmark, split)
    return {
        q["id"]
        for q, p in zip(selected, prompts, strict=True)
        if q["id"] in newest
        and newest[q["id"]]["prompt"].get("hash") == p.hash
        and newest[q["id"]]["status"] != "failed"
    }


def _log_plan(cfg: TeacherConfig, benchmark: str, split: str, n_selected: int, n_done: int, fmt: str) -> None:
    log.info(
        "%s/%s/%s: %d questions, %d cached, %d to generate (%s, %s prompts)",
        cfg.name,
        benchmark,
        split,
        n_selected,
        n_done,
        n_selected - n_done,
        cfg.source,
        fmt,
    )


def _save_split(
    cfg: TeacherConfig,
    benchmark: str,
    split: str,
    root: Path,
    questions: list[dict],
    selected: list[dict],
    current: dict[str, str],
    run: dict,
    t_start: float,
) -> tuple[list[dict], dict]:
    """Compact the cache file, write ``<split>.summary.json``; returns the records and the summary
    with this run's ``last_run`` (and its tokens/s) added."""
    path = cache_path(root, cfg.name, benchmark, split)
    records = compact(path, cfg.name, benchmark, split, questions, current, cfg.settings_hash())
    run["seconds"] = round(time.perf_counter() - t_start, 2)
    summary = _summary(cfg, records, [q["id"] for q in selected])
    write_json(summary_path(root, cfg.name, benchmark, split), summary)
    return records, {**summary, "tokens_per_s": run["tokens_per_s"], "last_run": run}


def _check_failures(
    cfg: TeacherConfig, benchmark: str, split: str, path: Path, records: list[dict], summary: dict
) -> None:
    """Raise ``TooManyFailures`` above ``max_failed_fraction``; below it, warn that DVC will commit
    the failed or not generated records and not retry them."""
    missing = summary["failed"] + summary["not_generated"]
    rerun = f"dvc repro generate_rationales@{cfg.name}-{benchmark}"
    if missing and summary["failed_fraction"] > cfg.max_failed_fraction:
        last = next((r.get("error") for r in reversed(records) if r["status"] == "failed"), None)
        raise TooManyFailures(
            f"{path}: {summary['failed']} failed and {summary['not_generated']} not generated of "
            f"{summary['selected']} questions ({summary['failed_fraction']:.0%} > teachers.{cfg.name}."
            f"max_failed_fraction {cfg.max_failed_fraction:.0%}); the {summary['selected'] - missing} finished "
            f"records are saved. Run `{rerun}` (or `dvc repro`) to retry the {missing} missing ones. "
            f"Last error: {redact(last)}",
            {split: summary},
        )
    if missing:
        log.warning(
            "%s: %d failed/not generated records accepted (max_failed_fraction %.0f%%): DVC will commit "
            "this output and NOT retry them; `%s -f` retries them",
            path,
            missing,
            100 * cfg.max_failed_fraction,
            rerun,
        )


def batch_layout(backend: Backend, pairs: list[tuple[dict, TeacherPrompt]], batch_size: int) -> list[list[int]]:
    """Indices of ``pairs`` in batches: sorted by prompt length (less padding), ties in question order.

    Computed over *all* selected questions, done or not, so a resumed run meets every question in
    the same batch as an uninterrupted run: a batched model (padding, bf16) then writes the same text.
    """
    lengths = [backend.prompt_length(p) for _, p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _generate(cfg, benchmark, split, pairs, done, backend, path, run, progress) -> None:
    """Generate every batch holding a question not in ``done``; append the records of those questions.

    A backend whose replies depend on the batch (``batch_invariant = False``: transformers) is given
    the whole batch again, so each reply is exactly what an uninterrupted run wrote; others get only
    the missing prompts.
    """
    from tqdm import tqdm

    batches = [
        [i for i in b if backend.batch_invariant is False or pairs[i][0]["id"] not in done]
        for b in batch_layout(backend, pairs, cfg.batch_size)
        if any(pairs[i][0]["id"] not in done for i in b)
    ]
    dead = 0
    bar = tqdm(
        total=len(pairs) - len(done),
        desc=f"{cfg.name}/{benchmark}/{split}",
        unit="q",
        disable=not progress,
        dynamic_ncols=True,
    )
    gen_s = 0.0
    with JsonlAppender(path) as out, bar:
        for n, idx in enumerate(batches):
            batch = [pairs[i] for i in idx]
            t0 = time.perf_counter()
            try:
                gens = backend.generate_batch([p for _, p in batch])
                if len(gens) != len(batch):
                    raise RuntimeError(f"backend returned {len(gens)} replies for {len(batch)} prompts")
            except Exception as e:  # a crash inside generate (e.g. out of memory): fail this batch only
                log.error("%s: batch of %d failed: %s", path, len(batch), redact(f"{type(e).__name__}: {e}"))
                gens = [Generation(finish_reason="error", error=f"{type(e).__name__}: {e}") for _ in batch]
            gen_s += time.perf_counter() - t0
            records = [
                make_record(cfg, benchmark, split, q, p, g)
                for (q, p), g in zip(batch, gens, strict=True)
                if q["id"] not in done
            ]
            out.append_many(records)  # flushed + fsynced: this batch survives kill -9 from here on
            n_failed = sum(r["status"] == "failed" for r in records)
            run["generated"] += len(records) - n_failed
            run["failed"] += n_failed
            run["new_tokens"] += sum(g.new_tokens for g in gens)
            bar.update(len(records))
            bar.set_postfix(tok_s=f"{run['new_tokens'] / max(gen_s, 1e-9):.1f}", failed=run["failed"])
            for r in records:
                if r["status"] == "failed":
                    log.warning("%s: id %s failed: %s", path, r["id"], r["error"])
            dead = dead + 1 if n_failed == len(records) else 0
            if dead >= MAX_DEAD_BATCHES and n + 1 < len(batches):
                log.error("%s: %d batches in a row failed completely; stopping early", path, dead)
                run["stopped_early"] = True
                break
    run["tokens_per_s"] = round(run["new_tokens"] / gen_s, 2) if gen_s > 0 else None


def prepared_path(prepared_root: Path, benchmark: str, split: str) -> Path:
    return Path(prepared_root) / benchmark / f"{split}.jsonl"


def read_questions(path: Path) -> list[dict]:
    """Normalised question records of one prepared split; errors name file, record and field."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: prepared split not found (run the prepare stage first)")
    out = []
    for i, r in enumerate(iter_jsonl(path), 1):
        for key in ("id", "question", "choices", "answer", "label"):
            if key not in r:
                raise DataError(f"{path}: record {i}: field {key!r} is missing")
        if not (isinstance(r["label"], int) and 0 <= r["label"] < len(r["choices"])):
            raise DataError(
                f"{path}: record {i} (id {r['id']!r}): field 'label' {r['label']!r} "
                f"is not an index into its {len(r['choices'])} choices"
            )
        out.append(r)
    return out


def generate_teacher(
    cfg: TeacherConfig, benchmark: str, prepared_root: Path, rationales_root: Path, progress: bool = True
) -> dict[str, dict]:
    """Every configured split of one benchmark for one teacher; returns {split: summary}.

    All splits run even when one has too many failures; then the first ``TooManyFailures`` is raised.
    """
    selector = None
    if cfg.icl.k > 0:
        from .icl import ExampleSelector, build_pool

        train = read_questions(prepared_path(prepared_root, benchmark, cfg.icl.split))
        pool = build_pool(train, rationales_root, cfg.icl.source, benchmark, cfg.icl.split)
        selector = ExampleSelector(pool, cfg.icl.k, cfg.icl.strategy, cfg.icl.seed, benchmark)
    backend = make_backend(cfg)
    summaries, errors = {}, []
    try:
        for split in cfg.splits:
            questions = read_questions(prepared_path(prepared_root, benchmark, split))
            try:
                summaries[split] = generate_split(
                    cfg,
                    benchmark,
                    split,
                    questions,
                    rationales_root,
                    selector=selector,
                    backend=backend,
                    progress=progress,
                )
            except TooManyFailures as e:
                errors.append(e)
                summaries.update(e.summaries)
    finally:
        backend.close()
    if errors:
        raise TooManyFailures("; ".join(map(str, errors)), summaries)
    return summaries
