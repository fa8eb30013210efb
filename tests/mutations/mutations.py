"""Deliberate one-line (or one-hunk) breakages of the method, each with the tests that must catch it.

``original`` must occur exactly once in ``file`` (the runner says "stale" otherwise: the code moved
and the mutation needs updating); ``broken`` replaces it. ``tests`` are pytest arguments.
Issue 21 asked for its own breakages plus the 12 of the previous round (issue 14's note).
"""

from __future__ import annotations

BACKWARD = "                loss = multitask_loss(part.sums, weights, denom) * acc.num_processes\n"

MUTATIONS: list[dict] = [
    # ---- issue 21: breakages the fast suite did not notice
    {
        "name": "backprop weights teachers by alpha*alpha",
        "file": "src/tinyllm/distill.py",
        "original": BACKWARD,
        "broken": BACKWARD.replace("weights, denom", "weights * weights, denom"),
        "tests": ["tests/test_train.py", "-k", "one_step"],
    },
    {
        "name": "backprop ignores the alphas",
        "file": "src/tinyllm/distill.py",
        "original": BACKWARD,
        "broken": BACKWARD.replace("weights, denom", "torch.ones_like(weights), denom"),
        "tests": ["tests/test_train.py", "-k", "one_step"],
    },
    {
        "name": "seq2seq option scores summed, not averaged",
        "file": "src/tinyllm/student/seq2seq.py",
        "original": "            mean = tok_lp.sum(-1) / keep.sum(-1)\n",
        "broken": "            mean = tok_lp.sum(-1)\n",
        "tests": ["tests/test_formats.py", "-k", "seq2seq_option"],
    },
    {
        "name": "distill trains on the valid questions too",
        "file": "src/tinyllm/distill.py",
        "original": "student, examples, cfg, log_path=log_path, on_log=on_log, valid_examples=valid,",
        "broken": "student, examples + valid, cfg, log_path=log_path, on_log=on_log, valid_examples=valid,",
        "tests": ["tests/test_stage_scripts.py"],
    },
    {
        "name": "evaluate's data/prepared dep deleted from dvc.yaml",
        "file": "dvc.yaml",
        "original": "      - metrics/train_log.tsv\n      - data/prepared\n    params:\n      - data.benchmarks\n"
        "      - distill.alphas",
        "broken": "      - metrics/train_log.tsv\n    params:\n      - data.benchmarks\n      - distill.alphas",
        "tests": ["tests/test_stage_scripts.py"],
    },
    {
        "name": "study gives its arms different batch orders",
        "file": "src/tinyllm/experiments/study/runner.py",
        "original": '    run, p = f"{arm}-s{seed}", cfg.params(arm, seed)\n',
        "broken": '    run, p = f"{arm}-s{seed}", cfg.params(arm, seed)\n'
        "    p.distill.seed += bool(p.distill.alphas)  # teacher arms draw other batches\n",
        "tests": ["tests/test_study_pairing.py", "-k", "study"],
    },
    {
        "name": "branch position ids do not restart at the prefix end",
        "file": "src/tinyllm/student/causal.py",
        "original": "                    pos[r, c : c + n] = torch.arange(p, p + n)\n",
        "broken": "                    pos[r, c : c + n] = torch.arange(c - start, c - start + n)\n",
        "tests": ["tests/test_train.py", "-k", "sharp or one_step"],
    },
    {
        "name": "in-context examples drawn from valid",
        "file": "src/tinyllm/teachers/generate.py",
        "original": "        train = read_questions(prepared_path(prepared_root, benchmark, cfg.icl.split))\n"
        "        pool = build_pool(train, rationales_root, cfg.icl.source, benchmark, cfg.icl.split)\n",
        "broken": "        train = read_questions(prepared_path(prepared_root, benchmark, 'valid'))\n"
        "        pool = build_pool(train, rationales_root, cfg.icl.source, benchmark, 'valid')\n",
        "tests": ["tests/test_teachers.py", "-k", "in_context"],
    },
    # ---- issue 14's round (9 of 12 caught then)
    {
        "name": "alpha > 0 filter becomes alpha >= 0",
        "file": "src/tinyllm/config.py",
        "original": "    return [t for t, a in alphas.items() if a > 0]\n",
        "broken": "    return [t for t, a in alphas.items() if a >= 0]\n",
        "tests": ["tests/test_train.py", "-k", "alpha_zero"],
    },
    {
        "name": "steps = 0 trains anyway",
        "file": "src/tinyllm/distill.py",
        "original": "    if cfg.steps == 0:\n",
        "broken": "    if cfg.steps == 0 and False:\n",
        "tests": ["tests/test_train.py", "-k", "steps_zero"],
    },
    {
        "name": "an extra division by grad_accum",
        "file": "src/tinyllm/distill.py",
        "original": BACKWARD,
        "broken": BACKWARD.replace("* acc.num_processes", "* acc.num_processes / cfg.grad_accum"),
        "tests": ["tests/test_train.py", "-k", "grad_accum"],
    },
    {
        "name": "alphas given to the wrong teachers inside train()",
        "file": "src/tinyllm/distill.py",
        "original": "    weights = torch.tensor([cfg.answer_weight] + [float(cfg.alphas[t]) for t in teachers])\n",
        "broken": "    weights = torch.tensor([cfg.answer_weight] + "
        "[float(cfg.alphas[t]) for t in reversed(teachers)])\n",
        "tests": ["tests/test_train.py", "-k", "alpha or one_step"],
    },
    {
        "name": "bucketing drops one question per pool",
        "file": "src/tinyllm/distill.py",
        "original": "            chunk = sorted(idx[i : i + pool], key=lambda j: (key[j], j))\n",
        "broken": "            chunk = sorted(idx[i : i + pool][1:], key=lambda j: (key[j], j))\n",
        "tests": ["tests/test_train.py", "-k", "batches_visit"],
    },
    {
        "name": "bucketing by rationale length",
        "file": "src/tinyllm/distill.py",
        "original": "    key = [e.question_tokens for e in encoded]\n",
        "broken": "    key = [e.n_tokens() for e in encoded]\n",
        "tests": ["tests/test_train.py", "-k", "batches_visit"],
    },
    {
        "name": "EOS appended after a cut target",
        "file": "src/tinyllm/student/base.py",
        "original": "            return ids[:max_tokens], True\n",
        "broken": "            return ids[: max_tokens - 1] + [self.eos_id], True\n",
        "tests": ["tests/test_train.py", "-k", "cut_target"],
    },
    {
        "name": "per-task log averages zeros for absent tasks",
        "file": "src/tinyllm/distill.py",
        "original": '    per_task = torch.where(d > 0, sums / d.clamp_min(1), torch.full_like(sums, float("nan")))\n',
        "broken": "    per_task = sums / d.clamp_min(1)\n",
        "tests": ["tests/test_train.py", "-k", "absent_task"],
    },
    {
        "name": "fixed 24-token generation budget",
        "file": "src/tinyllm/scoring.py",
        "original": "    limit = max(map(len, options))\n",
        "broken": "    limit = 24\n",
        "tests": ["tests/test_evaluate.py", "-k", "longest_option"],
    },
    {
        "name": "sibling branches visible in the block mask",
        "file": "src/tinyllm/student/causal.py",
        "original": "        visible = (br[:, None, :] == 0) | (br[:, :, None] == br[:, None, :])\n",
        "broken": "        visible = br[:, None, :] >= 0\n",
        "tests": ["tests/test_train.py", "-k", "shared_and_fused or packed_question"],
    },
    {
        "name": "bare-letter answers no longer match",
        "file": "src/tinyllm/evaluate.py",
        "original": "            return i  # a bare letter answer\n",
        "broken": "            return None  # a bare letter answer\n",
        "tests": ["tests/test_evaluate.py", "-k", "match_option"],
    },
    {
        "name": "report picks the best alpha by min",
        "file": "src/tinyllm/experiments/report/selection.py",
        "original": "    return max(pts, key=lambda p: p[2]) if pts else None\n",
        "broken": "    return min(pts, key=lambda p: p[2]) if pts else None\n",
        "tests": ["tests/test_report.py", "-k", "best_alpha or multi_seed"],
    },
    # ---- issue 21's fault fixes: each broken back, its test must notice
    {
        "name": "fault 1: a tracking outage raises out of live logging",
        "file": "src/tinyllm/tracking/run.py",
        "original": "        except Exception as e:  # noqa: BLE001  "
        "(tracking is never the reason a training is lost)\n",
        "broken": "        except ZeroDivisionError as e:  # noqa: BLE001\n",
        "tests": ["tests/test_tracking_outage.py", "-k", "outage"],
    },
    {
        "name": "fault 1: no probe of the tracking server at start",
        "file": "src/tinyllm/tracking/handover.py",
        "original": "    check_server(root)\n    mlflow = _mlflow(root)\n",
        "broken": "    mlflow = _mlflow(root)\n",
        "tests": ["tests/test_tracking_outage.py", "-k", "down_at_start"],
    },
    {
        "name": "fault 2: fetch no longer depends on check_params",
        "file": "dvc.yaml",
        "original": "    deps:\n      - data/params.ok\n      - stages/fetch.py\n",
        "broken": "    deps:\n      - stages/fetch.py\n",
        "tests": ["tests/test_dvc_repro.py", "-k", "params_error"],
    },
    {
        "name": "fault 3: orphaned runs not marked",
        "file": "src/tinyllm/tracking/handover.py",
        "original": "        mark_orphans(root, run.info.experiment_id, keep=run.info.run_id)\n",
        "broken": "        pass\n",
        "tests": ["tests/test_tracking_outage.py", "-k", "killed"],
    },
    {
        "name": "fault 4: error body cut before it is redacted",
        "file": "src/tinyllm/teachers/backends.py",
        "original": "redact_and_cut(e.response.text, 300, self._secrets)",
        "broken": "e.response.text[:300]",
        "tests": ["tests/test_teachers_openai.py", "-k", "key_crossing"],
    },
    {
        "name": "fault 4: prefixes of a secret not masked",
        "file": "src/tinyllm/redact.py",
        "original": "            out = _mask_parts(out, s)\n",
        "broken": "            pass\n",
        "tests": ["tests/test_secrets.py", "-k", "prefix_or_suffix"],
    },
    {
        "name": "fault 5: 'No default remote set' taken as a name again",
        "file": "scripts/share.sh",
        "original": '  if [ "$rc" -ne 0 ] || [ -z "$name" ] || [ -z "$(remote_url "$name")" ]; then\n',
        "broken": '  if [ -z "$name" ]; then\n',
        "tests": ["tests/test_share_script.py", "-k", "actual_cause"],
    },
    {
        "name": "fault 5: no reachability probe before a pull",
        "file": "scripts/share.sh",
        "original": '    check_reachable "$REMOTE"\n    # Re-hash',
        "broken": "    # Re-hash",
        "tests": ["tests/test_share_script.py", "-k", "actual_cause"],
    },
    {
        "name": "fault 6: backoff_s ignored (the client's own schedule)",
        "file": "src/tinyllm/teachers/backends.py",
        "original": "            return retry_delay(backoff_s, max(nb, 0))\n",
        "broken": "            return super()._calculate_retry_timeout(remaining_retries, options, response_headers)\n",
        "tests": ["tests/test_teachers_openai.py", "-k", "backoff"],
    },
    {
        "name": "fault 7: a cached teacher re-run writes tokens_per_s null",
        "file": "stages/generate_rationales.py",
        "original": '        elif isinstance(prev, dict) and prev.get("tokens_per_s") is not None:\n',
        "broken": "        elif False:\n",
        "tests": ["tests/test_teachers.py", "-k", "measured_speed"],
    },
    {
        "name": "fault 8: save_student writes the weights into the live folder",
        "file": "src/tinyllm/student/checkpoint.py",
        "original": "        model.save_pretrained(tmp)\n",
        "broken": "        model.save_pretrained(out_dir)\n",
        "tests": ["tests/test_train.py", "-k", "atomic"],
    },
    # ---- issue 20: answer formats and decision rules
    {
        "name": "cloze text sums include the closing EOS",
        "file": "src/tinyllm/student/base.py",
        "original": "            text[torch.arange(len(text)), last] = 0\n",
        "broken": "            pass\n",
        "tests": ["tests/test_formats.py", "-k", "independent_full_forward"],
    },
    {
        "name": "norm divides by words, not characters",
        "file": "src/tinyllm/evaluate.py",
        "original": '        "norm": [t / max(len(c), 1) for t, c in zip(total, choices, strict=True)],\n',
        "broken": '        "norm": [t / max(len(c.split()), 1) for t, c in zip(total, choices, strict=True)],\n',
        "tests": ["tests/test_formats.py", "-k", "independent_full_forward"],
    },
    {
        "name": "pmi forgets the unconditional baseline",
        "file": "src/tinyllm/evaluate.py",
        "original": '        out["pmi"] = [t - u for t, u in zip(total, uncond, strict=True)]\n',
        "broken": '        out["pmi"] = [t + 0 * u for t, u in zip(total, uncond, strict=True)]\n',
        "tests": ["tests/test_formats.py", "-k", "independent_full_forward"],
    },
    {
        "name": "Accelerate's bf16 autocast forward survives train()",
        "file": "src/tinyllm/distill.py",
        "original": "    student.model = acc.unwrap_model(loop.model, keep_fp32_wrapper=False)\n",
        "broken": "    student.model = acc.unwrap_model(loop.model)\n",
        "tests": ["tests/test_formats.py", "-k", "fp32_forward"],
    },
    {
        "name": "rationale_position after_answer ignored",
        "file": "src/tinyllm/student/base.py",
        "original": '        if self.rationale_position == "after_answer":\n',
        "broken": "        if False:\n",
        "tests": ["tests/test_formats.py", "-k", "after_answer_follows"],
    },
    # ---- issue 20: resumable training (train_state)
    {
        "name": "resume restarts the batch stream at batch 0",
        "file": "src/tinyllm/distill.py",
        "original": "        next(stream)\n",
        "broken": "        pass\n",
        "tests": ["tests/test_train_state.py", "-k", "killed_run"],
    },
    {
        "name": "resume forgets the LR schedule",
        "file": "src/tinyllm/distill.py",
        "original": "    acc.register_for_checkpointing(loop.sched, loop.done)\n",
        "broken": "    acc.register_for_checkpointing(loop.done)\n",
        "tests": ["tests/test_train_state.py", "-k", "killed_run"],
    },
    {
        "name": "resume reseeds the dropout RNG",
        "file": "src/tinyllm/distill.py",
        "original": "        acc.load_state(str(found))",
        "broken": "        acc.load_state(str(found)); torch.manual_seed(cfg.seed)",
        "tests": ["tests/test_train_state.py", "-k", "killed_run and seq2seq"],
    },
    {
        "name": "study runs keep no training state",
        "file": "src/tinyllm/experiments/study/runner.py",
        "original": "            state_dir=train_state_dir(root, cfg, run), state_every",
        "broken": "            state_dir=None, state_every",
        "tests": ["tests/test_study.py", "-k", "killed"],
    },
    # ---- issue 20: the study report's peer check
    {
        "name": "study report counts acc_norm agreement as acc agreement",
        "file": "src/tinyllm/experiments/study/report.py",
        "original": 'same_acc = sum(round(r["agree_acc"] * r["n"])',
        "broken": 'same_acc = sum(round(r["agree_acc_norm"] * r["n"])',
        "tests": ["tests/test_study.py", "-k", "harness_agreement"],
    },
    {
        "name": "study agreement pairs every seed with the reference's first seed",
        "file": "src/tinyllm/experiments/study/tables.py",
        "original": "ref_seed = {s: min(done[ref]) if ref in deterministic else s for s in used[key]}",
        "broken": "ref_seed = {s: min(done[ref]) for s in used[key]}",
        "tests": ["tests/test_study.py", "-k", "same_option"],
    },
    # ---- a study on a fresh clone fails up front, naming what is missing
    {
        "name": "study input check forgets the rationale caches",
        "file": "src/tinyllm/experiments/study/inputs.py",
        "original": "    need += [root / cfg.rationales / t / b for t in teachers for b in cfg.benchmarks]\n",
        "broken": "    pass\n",
        "tests": ["tests/test_study.py", "-k", "missing_inputs"],
    },
    # ---- the distill stage resumes a killed run
    {
        "name": "distill stage does not pass its training state on",
        "file": "src/tinyllm/distill.py",
        "original": "        on_step=on_step, state_dir=state_dir, state_every=state_every,\n",
        "broken": "        on_step=on_step, state_dir=None, state_every=state_every,\n",
        "tests": ["tests/test_train_state.py", "-k", "distill_stage"],
    },
    {
        "name": "distill stage keeps its training state after saving the student",
        "file": "src/tinyllm/distill.py",
        "original": "        remove_state(state_dir)  # the student is saved: a rerun starts over\n",
        "broken": "        pass\n",
        "tests": ["tests/test_train_state.py", "-k", "distill_stage"],
    },
    {
        "name": "distill stage saves a training state after its last step too",
        "file": "src/tinyllm/distill.py",
        "original": "        state_at_end=False,  # the student is saved next\n",
        "broken": "        state_at_end=True,  # the student is saved next\n",
        "tests": ["tests/test_train_state.py", "-k", "distill_stage"],
    },
    # ---- issue 33: rationale quality flags
    {
        "name": "quality flags: any rationale names the gold",
        "file": "src/tinyllm/rationales.py",
        "original": '    if not names_gold(text, record["answer"]):\n',
        "broken": "    if False:\n",
        "tests": ["tests/test_trainset.py", "-k", "quality"],
    },
    {
        "name": "quality flags are counted but never dropped",
        "file": "src/tinyllm/trainset.py",
        "original": '    flags = record.get("flags", []) + quality_flags(record["rationale"], question)\n',
        "broken": '    flags = list(record.get("flags", []))\n    quality_flags(record["rationale"], question)\n',
        "tests": ["tests/test_trainset.py", "-k", "quality"],
    },
    # ---- issue 32: a training state is resumed only by the run it belongs to
    {
        "name": "training state ignores the starting weights",
        "file": "src/tinyllm/distill.py",
        "original": '{"start_weights": weights_digest(model), "kind": student.kind}',
        "broken": '{"kind": student.kind}',
        "tests": ["tests/test_train_state.py", "-k", "base_student"],
    },
    {
        "name": "training state ignores the code",
        "file": "src/tinyllm/distill.py",
        "original": '**start, "code_digest": code_digest()}',
        "broken": "**start}",
        "tests": ["tests/test_train_state.py", "-k", "training_code"],
    },
    {
        "name": "a damaged training state is loaded anyway",
        "file": "src/tinyllm/train_state.py",
        "original": "    why = why or _unreadable(found)\n",
        "broken": "    pass\n",
        "tests": ["tests/test_train_state.py", "-k", "damaged"],
    },
    # ---- issue 32 item 6: the pairing test must see an offset seed
    {
        "name": "study arms get offset seeds",
        "file": "src/tinyllm/experiments/study/runner.py",
        "original": '    run, p = f"{arm}-s{seed}", cfg.params(arm, seed)\n',
        "broken": '    run, p = f"{arm}-s{seed}", cfg.params(arm, seed + len(arm))\n',
        "tests": ["tests/test_study.py"],
    },
    # ---- issue 32 item 9: secrets never reach MLflow params
    {
        "name": "MLflow params logged unredacted",
        "file": "src/tinyllm/tracking/names.py",
        "original": 'redact("null" if v is None else str(v))[:6000]',
        "broken": '("null" if v is None else str(v))[:6000]',
        "tests": ["tests/test_tracking.py", "-k", "token"],
    },
    # ---- issue 32 item 10: errors before work, rows never dropped silently
    {
        "name": "study input check skips the content checks",
        "file": "src/tinyllm/experiments/study/inputs.py",
        "original": "    problems = _unusable_inputs(root, cfg)\n",
        "broken": "    problems = []\n",
        "tests": ["tests/test_study.py", "-k", "cannot_serve"],
    },
    {
        "name": "study report drops the majority row without data/prepared",
        "file": "src/tinyllm/experiments/study/report.py",
        "original": "    maj = _majority(root, cfg, out, majority_classes(root / cfg.prepared, cfg.benchmarks))\n",
        "broken": "    maj = majority_classes(root / cfg.prepared, cfg.benchmarks)\n",
        "tests": ["tests/test_study.py", "-k", "majority"],
    },
    # ---- issue 32 item 5: parent runs are owned, closed and continued
    {
        "name": "parent runs carry no owner (a killed study's parent stays RUNNING)",
        "file": "src/tinyllm/tracking/groups.py",
        "original": 'tags={TAG_KIND: "grid", **own, **extra,',
        "broken": 'tags={TAG_KIND: "grid", **extra,',
        "tests": ["tests/test_tracking_outage.py", "-k", "parent"],
    },
    {
        "name": "a resumed study opens a new parent",
        "file": "src/tinyllm/tracking/groups.py",
        "original": "        if prev and (mine or not owner_alive(prev[0].data.tags)):\n",
        "broken": "        if False:\n",
        "tests": ["tests/test_tracking_outage.py", "-k", "parent"],
    },
    # ---- issue 34 item 3: MLflow opens on results
    {
        "name": "accuracy logged as a fraction beside DVC's percent",
        "file": "src/tinyllm/tracking/names.py",
        "original": 'out[acc_metric(split, benchmark)] = round(100 * float(m["accuracy"]), 2)',
        "broken": 'out[acc_metric(split, benchmark)] = round(float(m["accuracy"]), 2)',
        "tests": ["tests/test_tracking.py", "-k", "accuracy_sorts_first"],
    },
    {
        "name": "a percent accuracy read back as a fraction",
        "file": "src/tinyllm/tracking/names.py",
        "original": "            v = v / 100 if head == ACC else v\n",
        "broken": "            v = v\n",
        "tests": ["tests/test_tracking.py", "-k", "exact_results"],
    },
    {
        "name": "the report's n and CIs lost with the bookkeeping charts",
        "file": "src/tinyllm/tracking/groups.py",
        "original": '        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/eval.json")\n',
        "broken": "        data = None\n",
        "tests": ["tests/test_tracking.py", "-k", "exact_results"],
    },
    {
        "name": "the runs link names a view nobody tagged",
        "file": "src/tinyllm/tracking/store.py",
        "original": "    ensure_results_view(root, exp_id, tags)\n",
        "broken": "",
        "tests": ["tests/test_tracking.py", "-k", "results_view"],
    },
    {
        "name": "a temp/queued DVC experiment resolves ../shared from its own copy",
        "file": "src/tinyllm/sources.py",
        "original": "            root = main_repo_root(base) / root"
        "  # a temp/queued DVC experiment: from the user's repo\n"
        '        if not (root / "datasets").is_dir():\n',
        "broken": '            root = Path(base) / root\n        if not (root / "datasets").is_dir():\n',
        "tests": ["tests/test_sources.py", "-k", "relative_source"],
    },
    # ---- issue 31 items 1-2: a study run is a params overlay; both doors give the same bytes
    {
        "name": "the study overlay loses the run's seed",
        "file": "src/tinyllm/experiments/study/config.py",
        "original": '                "seed": seed,\n',
        "broken": "",
        "tests": ["tests/test_study.py", "-k", "overlay"],
    },
    {
        "name": "the study evaluates in the workspace's precision",
        "file": "src/tinyllm/experiments/study/config.py",
        "original": '            "precision": "fp32",',
        "broken": '            "precision": "auto",',
        "tests": ["tests/test_study.py", "-k", "overlay"],
    },
    {
        "name": "the study trains on other questions than the trainset stage would",
        "file": "src/tinyllm/experiments/study/runner.py",
        "original": "        make_trainset(root / cfg.prepared, root / cfg.rationales, trainset, p)\n",
        "broken": "        p.distill.train_per_benchmark = None\n"
        "        make_trainset(root / cfg.prepared, root / cfg.rationales, trainset, p)\n",
        "tests": ["tests/test_study.py", "-k", "same_student"],
    },
    # ---- issue 31 item 1: checkpoint scoring is an option of training (tinyllm.checkpoints)
    {
        "name": "the last step is scored as a checkpoint too",
        "file": "src/tinyllm/checkpoints.py",
        "original": "            if not self.every or step % self.every or step == steps:\n",
        "broken": "            if not self.every or step % self.every:\n",
        "tests": ["tests/test_checkpoints.py"],
    },
    {
        "name": "checkpoints scored on both halves whatever checkpoint_half says",
        "file": "src/tinyllm/checkpoints.py",
        "original": '    return {b: select_half(records, None if half == "all" else half)'
        " for b, records in questions.items()}\n",
        "broken": "    return {b: select_half(records, None) for b, records in questions.items()}\n",
        "tests": ["tests/test_checkpoints.py"],
    },
    {
        "name": "scoring a checkpoint perturbs the training that follows",
        "file": "src/tinyllm/checkpoints.py",
        "original": "            self.score(student, step)\n",
        "broken": "            self.score(student, step)\n"
        "            [w.data.mul_(1.001) for w in student.model.parameters()]\n",
        "tests": ["tests/test_checkpoints.py"],
    },
    {
        "name": "the distill stage ignores distill.checkpoint_every",
        "file": "stages/distill.py",
        "original": "    checkpoints = Checkpoints(root / args.checkpoints, cfg.checkpoint_every)\n",
        "broken": "    checkpoints = Checkpoints(root / args.checkpoints, 0)\n",
        "tests": ["tests/test_stage_scripts.py", "-k", "checkpoints"],
    },
    # ---- issue 31 item 4: one set of values
    {
        "name": "a key missing from params.yaml silently takes the code default",
        "file": "src/tinyllm/config.py",
        "original": "    _require_every_key(params)\n",
        "broken": "",
        "tests": ["tests/test_params.py", "-k", "missing"],
    },
    {
        "name": "a study takes the library's defaults instead of its pinned base",
        "file": "src/tinyllm/experiments/study/config.py",
        "original": "                **STUDY_DISTILL_BASE,\n",
        "broken": "",
        "tests": ["tests/test_study.py", "-k", "overlay"],
    },
    {
        "name": "config.py imports the teacher schema again (every stage depends on it)",
        "file": "src/tinyllm/config.py",
        "original": "from .benchmarks import BENCHMARKS\n",
        "broken": "from .benchmarks import BENCHMARKS\nfrom .teachers.config import teacher_config  # noqa: F401\n",
        "tests": ["tests/test_dvc_graph.py"],
    },
    # ---- issue 33 item 5: the one conclusion in MLflow too
    {
        "name": "the study summary leaves out the Holm-adjusted p on the parent runs",
        "file": "src/tinyllm/experiments/study/summary.py",
        "original": '        holm_p = f", Holm {r[\'holm\']:.2g}" if r["holm"] is not None else ""\n',
        "broken": '        holm_p = ""\n',
        "tests": ["tests/test_study.py", "-k", "summary"],
    },
]
