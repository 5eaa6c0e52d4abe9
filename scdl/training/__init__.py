"""Training: the composable training step (``step.py``), configuration, cohort, data pipeline, trainer.

Import the submodules directly (``from scdl.training.step import TrainingStep``); this package file
imports nothing so that ``scdl train --help`` stays fast.
"""
