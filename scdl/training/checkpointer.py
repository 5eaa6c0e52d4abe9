"""The training loop's checkpoints: the periodic save (and the last one) and the restore of ``--resume``.

A checkpoint holds everything an exact resume needs: the training step (networks, SCDL state), optimiser,
schedule, gradient scaler, the random states of every process, the best and the baseline validation, the
seconds trained and the settings it was trained with (what ``--resume`` compares, ``scdl.training.resume``).
The file format, its checksums and the previous checkpoint are ``scdl.training.checkpoint``'s; the log files
are flushed before each save (rows beyond a checkpoint are dropped at a resume, missing rows would stay
missing). A save that fails (a full disk) says which checkpoint is kept and how to go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch

from scdl.errors import ScdlError
from scdl.events import CheckpointEvent
from scdl.progress import ProgressReporter
from scdl.training import checkpoint as ckpt
from scdl.training.distributed import DistEnv
from scdl.training.runfolder import RunFolder
from scdl.training.runlog import RunLog
from scdl.training.averaging import WeightAverage
from scdl.training.validator import Validator


@dataclass(frozen=True)
class Learners:
    """What learns, as a checkpoint saves it: the training step and its optimiser, schedule and scaler."""

    step: Any                                   # scdl.training.step.TrainingStep
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


class Checkpointer:
    """Checkpoints of one run in ``folder`` (see module docstring).

    Args:
        learners: what is saved and restored.
        every: ``checkpoint_every`` (iterations between periodic saves).
        settings: the run's settings as ``config.json`` holds them (``() -> dict``; stored in each checkpoint).
        save_settings: writes ``config.json`` (a resumed run: the settings it continues with).
        average: the running mean of the weights (``averaging.enabled``; saved and restored with the rest).
    """

    def __init__(self, *, folder: RunFolder, learners: Learners, validator: Validator, log: RunLog, dist: DistEnv,
                 progress: ProgressReporter, every: int, iterations: int, framework: str,
                 settings: Callable[[], Mapping[str, Any]], save_settings: Callable[[], None],
                 average: Optional[WeightAverage] = None):
        self.folder = folder
        self.average = average
        self.learners = learners
        self.validator = validator
        self.log = log
        self.dist = dist
        self.progress = progress
        self.every = int(every)
        self.iterations = int(iterations)
        self.framework = str(framework)
        self.settings = settings
        self.save_settings = save_settings
        self.last: Optional[int] = None         # iteration of the newest complete checkpoint.pt

    def due(self, iteration: int, end: int) -> bool:
        """A periodic save after ``iteration`` (the last one is :meth:`save`'d by the end of the run)."""
        return iteration % self.every == 0 and iteration < end

    def state(self, iteration: int, elapsed: float) -> dict[str, Any]:
        """The checkpoint's content (every rank takes part: the random states are gathered)."""
        from scdl.training.distributed import gather_objects
        from scdl.training.rng import capture_rng

        parts = self.learners
        rngs = gather_objects(self.dist, capture_rng())
        return {"iteration": int(iteration), "iterations": self.iterations,
                "step": parts.step.state_dict(), "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(),
                "rng": rngs, "sampler": {"next_step": int(iteration)}, "best": dict(self.validator.best),
                "baseline": dict(self.validator.baseline),
                "elapsed_s": float(elapsed), "framework": self.framework, "world_size": self.dist.world_size,
                "config": json.loads(json.dumps(self.settings(), default=str)),    # what --resume compares
                "average": None if self.average is None else self.average.state_dict()}

    def save(self, iteration: int, elapsed: float, curves: bool = False) -> None:
        """Flush the logs (``curves``: and redraw curves.png), then write ``checkpoint.pt`` atomically (rank 0)."""
        state = self.state(iteration, elapsed)      # every rank takes part (RNG gather)
        if self.dist.is_main:
            try:
                # the log first: rows beyond the checkpoint are dropped at a resume, missing rows would stay missing
                self.log.flush(curves=curves)       # the PNG is redrawn at validations and at the end
                ckpt.save_checkpoint(self.folder.checkpoint, state)
            except ScdlError as err:                # e.g. a full disk: say what is kept and how to go on
                raise self._not_saved(err, iteration) from None
            self.last = int(iteration)
            self.progress.emit(CheckpointEvent(iteration=int(iteration), path=str(self.folder.checkpoint)))

    def _not_saved(self, err: ScdlError, iteration: int) -> ScdlError:
        if self.last is None:
            kept, fix = "no checkpoint was saved yet", "free disk space (or choose another --out) and start again."
        else:
            kept = f"the checkpoint of iteration {self.last} ({self.folder.checkpoint.name}) is kept"
            fix = f"free disk space, then continue with `scdl train --resume {self.folder.path}`."
        return ScdlError(f"{err.message} Training stopped at iteration {iteration}; {kept}.", err.path, fix)

    def restore(self) -> tuple[int, float]:
        """Load ``checkpoint.pt`` (verified) into the learners, the random states and the validator, after
        checking the settings (``scdl.training.resume``) -> (iteration reached, seconds trained)."""
        from scdl.training.resume import check_resume_settings
        from scdl.training.rng import restore_rng

        parts = self.learners
        state = ckpt.load_checkpoint(self.folder.checkpoint, map_location="cpu")       # verified first
        if state.get("framework") != self.framework:
            raise ScdlError(f"the checkpoint was trained with framework {state.get('framework')}, the config says "
                            f"{self.framework}.", self.folder.checkpoint,
                            "resume without changing the framework.")
        for line in check_resume_settings(_as_written(state.get("config")), dict(self.settings()), self.folder.config,
                                          self.folder.path):
            self.progress.message(line)
        try:
            parts.step.load_state_dict(state["step"])
        except RuntimeError as err:         # a checkpoint without its settings, and config.json edited since
            raise ScdlError(f"the checkpoint's networks do not fit the settings of {self.folder.config.name} "
                            f"({str(err).strip().splitlines()[0][:200]}).", self.folder.config,
                            "undo the edit of config.json (the network must stay as it was trained).") from None
        if self.dist.is_main:
            self.save_settings()            # what this run continues with (changes applied)
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        if int(state.get("iterations", self.iterations)) != self.iterations:
            # a longer (or shorter) run: the poly schedule now ends at the new iteration count
            from scdl.training.schedule import set_total

            set_total(parts.scheduler, self.iterations)
            self.progress.warning(f"the run now ends at {self.iterations} iterations instead of "
                                  f"{state.get('iterations')}: the learning-rate schedule is stretched from here on "
                                  "(not identical to an uninterrupted run of that length).")
        if state.get("scaler"):
            parts.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            self.progress.warning(f"the checkpoint was written by {len(rngs)} process(es), this run has "
                                  f"{self.dist.world_size}: random states restart from process 0's.")
        restore_rng(rngs[self.dist.rank if self.dist.rank < len(rngs) else 0])
        self.validator.restore(state.get("best") or {}, state.get("baseline") or {})
        if self.average is not None and state.get("average"):
            self.average.load_state_dict(state["average"])
        self.last = int(state["iteration"])
        return int(state["iteration"]), float(state.get("elapsed_s", 0.0))


def _as_written(trained: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """The settings a checkpoint stored, as ``config.json`` writes them today (keys an older SCDL did not
    write take the values ``scdl.training.settings`` gives them, so that they do not read as changes)."""
    if not trained:
        return None if trained is None else dict(trained)
    from scdl.training.settings import TrainConfig

    try:
        return TrainConfig.from_dict(trained).to_dict()
    except ScdlError:                   # refused today (an older SCDL's values): compared as stored
        return dict(trained)
