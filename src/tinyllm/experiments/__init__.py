"""Experiments over the pipeline: the grid of baselines and ablations, Table 1, statistics.

- ``rows.py``   grid rows as parameter overrides (experiments/grid.yaml, profiles, seeds)
- ``grid.py``   running rows as DVC experiments (queue, temp runs, waiting on the queue worker)
- ``report.py`` Table 1, paired tests, plots (results from MLflow or `dvc exp show`)
- ``stats.py``  confidence intervals, paired bootstrap, McNemar, majority/chance, option shares

Import order (no cycle): report -> rows, stats, tinyllm.tracking; grid -> rows. Every MLflow
call goes through ``tinyllm.tracking``; ``scripts/grid.py`` and ``scripts/report.py`` are the
command lines.
"""
