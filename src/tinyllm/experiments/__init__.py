"""Experiments over the pipeline: the grid of baselines and ablations, Table 1, statistics, the study.

- ``rows.py``   grid rows as parameter overrides (experiments/grid.yaml, profiles, seeds)
- ``grid.py``   running rows as DVC experiments (queue, temp runs, waiting on the queue
                worker) inside one MLflow parent run; the best row gets the ``@best-valid`` alias
- ``report/``   Table 1, paired tests, plots (results from MLflow or `dvc exp show`); one module
                per concept, see its ``__init__``
- ``stats.py``  confidence intervals, paired bootstrap, McNemar, majority/chance, option shares
                (numpy + scipy only: the evaluate stage imports it)
- ``study/``    TinyLLM vs label-only fine-tuning of the same student: arms x seeds trained and
                evaluated in one resumable job (profile: experiments/study.yaml); one module per
                concept (config, runner, tables, report, plots), see its ``__init__``

Import order (no cycle): report -> rows, stats, tinyllm.config, tinyllm.tracking; rows -> tinyllm.teachers.config;
grid -> rows (tracking lazily);
study -> stats and the training library (distill, evaluate, student, trainset). Every MLflow call
goes through ``tinyllm.tracking``; ``scripts/grid.py``, ``scripts/report.py`` and ``scripts/study.py``
are the command lines.
"""
