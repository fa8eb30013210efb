"""A study: does TinyLLM beat label-only fine-tuning of the same student, with the same steps,
questions and batch order? Arms x seeds trained and evaluated in one resumable background job.

A profile (``experiments/study.yaml``) names the student checkpoint, the benchmarks, the train
questions, the ``distill`` settings shared by every arm, the arms (each a change of ``distill``:
``untrained`` = steps 0, ``ft`` = no teachers, ``tinyllm`` = the released teachers' rationales)
and the seeds. Every (arm, seed) is a *run*: the pipeline's trainset, distill and evaluate
code under the arm's params overlay, in this process, evaluating every question of the
selection split; it writes ``runs/<arm>-s<seed>/`` (predictions, metrics, train log) and a
``done.json`` last, atomically. A restarted job skips finished runs and continues the run it
was in from that run's last training state (saved every ``checkpoint_every`` steps under
``<save_models>/<study>/.train-state/``, ``train_state``), so ``nohup`` + rerun resumes after an
interruption, losing at most ``checkpoint_every`` steps; ``progress.json`` says where it is.

Arms that compare are paired: the same seed gives the same questions in the same order
(``distill.batches`` orders by the question alone), and evaluation is batch-invariant.

Selection: the validation split is cut into two fixed halves (``benchmarks.valid_half``):
pilots and every choice use ``dev``; the study's numbers come from ``report_half`` (``report``)
and are labelled so. ``eval_half: dev`` makes a pilot evaluate the dev half only, so a pilot
never sees a report number. ``checkpoint_every: N`` evaluates each arm every N steps: the
report gives the checkpoint selected on dev beside the best-over-checkpoints number on report
(what the authors' protocol of evaluating every checkpoint on the reported split gives).
Every prediction carries every decision rule; ``rule`` is the headline one.

One module per concept (import order, no cycle: runner -> report -> tables, plots -> layout -> config):

- ``config.py``  ``StudyConfig``: the profile, and each (arm, seed) as a ``params.yaml`` overlay
- ``layout.py``  the study folder: finished runs, their predictions, JSON files, saved students
                 (DVC), training states, ``study_status``
- ``inputs.py``  ``check_inputs``: what the study reads, checked before its first run
- ``runner.py``  ``run_study`` / ``run_one``: each (arm, seed) through the stages' entry points
                 (trainset, distill with ``tinyllm.checkpoints``, evaluate), MLflow child runs
- ``tables.py``  ``study_tables``, ``checkpoint_table``, ``conclusion``: the statistics
- ``report.py``  ``write_report``: ``report.md`` + ``report.json``
- ``plots.py``   ``write_plots``: accuracy with CIs, loss curves, memory per step
"""

from .config import StudyConfig
from .layout import study_status
from .plots import loss_curves, mean_curves, write_plots
from .report import RULE_TEXT, write_report
from .runner import run_one, run_study
from .tables import checkpoint_table, conclusion, study_tables

__all__ = [
    "RULE_TEXT",
    "StudyConfig",
    "checkpoint_table",
    "conclusion",
    "loss_curves",
    "mean_curves",
    "run_one",
    "run_study",
    "study_status",
    "study_tables",
    "write_plots",
    "write_report",
]
