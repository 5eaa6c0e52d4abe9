"""The training loop's validator: Dice per class when due, the best networks kept, the fine-tune's baseline.

When due (every ``validation.every`` iterations and at the run's last; never with ``-1``), rank 0 runs
:func:`scdl.training.validation.validate` on the validation cases, adds a ``validation.csv`` row
(``scdl.training.runlog``), reports a ``validation`` progress event and, when the mean Dice improved,
writes the networks into ``best.pt`` (``scdl.training.checkpoint``). With ``--init`` the initial model is
validated once at iteration 0 (the baseline, ``validation_metrics.before`` of the card), never the best.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional, Sequence

import torch

from scdl.events import ValidationEvent
from scdl.progress import ProgressReporter
from scdl.training import checkpoint as ckpt
from scdl.training.distributed import DistEnv, barrier
from scdl.training.runfolder import RunFolder
from scdl.training.runlog import RunLog


class Validator:
    """Validation and best tracking of one run (see module docstring).

    Args:
        step: the training step (``scdl.training.step.TrainingStep``: its ``networks`` are validated and saved).
        cases: the validation cases (``scdl.training.cache.CachedCase``).
        masks: per case a bool (C,) of its annotated classes (None: every class).
        patch: the sliding window (D, H, W).
        target: the label table of the model (``scdl.labels.table.LabelTable``).
        every, total: ``validation.every`` and the run's iteration count.
        overlap, sw_batch_size, mode: the sliding window's settings (``validation.*``).
        bn_adapt: test-time batch-norm statistics of each case (``validation.bn_adapt``).
        window: the prediction's window (D, H, W) (``validation.window_size`` reversed), or None for ``patch``.
        amp: autocast on CUDA.
        source: ``val`` or ``train`` (the cases the Dice is measured on).
        echo: a line for the terminal (the tqdm bar's), or None.
    """

    def __init__(self, *, step: Any, cases: Sequence[Any], masks: Optional[Sequence[Any]],
                 patch: tuple[int, int, int], target: Any, every: int, total: int, overlap: float,
                 sw_batch_size: int, mode: str, amp: bool, device: torch.device, dist: DistEnv, progress: ProgressReporter,
                 log: RunLog, folder: RunFolder, source: str = "val",
                 echo: Optional[Callable[[str], None]] = None, bn_adapt: float = 0.0,
                 window: Optional[tuple[int, int, int]] = None):
        self.step = step
        self.cases = list(cases)
        self.masks = masks
        self.patch = patch
        self.target = target
        self.every = int(every)
        self.total = int(total)
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.mode = str(mode)
        self.amp = bool(amp)
        self.device = device
        self.dist = dist
        self.progress = progress
        self.log = log
        self.folder = folder
        self.source = source
        self.echo = echo
        self.bn_adapt = float(bn_adapt)
        self.window = window
        self.best: dict[str, Any] = {}          # the best validation so far (iteration, mean_dice, dice)
        self.baseline: dict[str, Any] = {}      # --init: the init model's validation (iteration 0)

    def due(self, iteration: int) -> bool:
        """Validate after ``iteration``: every ``every`` iterations and at the last; never with ``every`` -1."""
        every = self.every
        return every >= 0 and ((every and iteration % every == 0) or iteration == self.total)

    def baseline_due(self, start: int, fine_tune: bool) -> bool:
        """Validate the init model before fine-tuning: a fine-tune from its start, validation not off."""
        return start == 0 and fine_tune and self.every >= 0

    def restore(self, best: dict[str, Any], baseline: dict[str, Any]) -> None:
        """The best and the baseline of a resumed run (from its checkpoint)."""
        self.best, self.baseline = dict(best or {}), dict(baseline or {})

    def _scores(self, networks: Sequence[Any]) -> tuple[dict[str, Any], list[Any]]:
        """``scdl.training.validation.validate`` of ``networks`` on the validation cases, with ``dice`` and
        ``found`` in the order of the table's classes -> (result, those classes' entries). A table may skip values:
        channel 5 of a table without value 5 is no class."""
        from scdl.training.validation import validate

        result = validate(list(networks), self.cases, self.patch, int(self.target.num_classes), self.device,
                          overlap=self.overlap, sw_batch_size=self.sw_batch_size, mode=self.mode, amp=self.amp,
                          progress=None if self.dist.enabled else self.progress, annotated=self.masks,
                          bn_adapt=self.bn_adapt, window_size=self.window)
        entries = [e for e in sorted(self.target.entries, key=lambda e: e.value) if int(e.value) != 0]
        values = [int(e.value) for e in entries]
        return ({**result, "dice": [result["dice"][v - 1] for v in values],
                 "found": [result["found"][v - 1] for v in values]}, entries)

    def validate_final(self, networks: Sequence[Any], what: str, note: dict[str, Any], *, always: bool) -> None:
        """Networks made at the end of the run from the trained ones (``scdl.training.averaging``: the mean of
        checkpoints' weights, or the fine-tune interpolated with its initial model), validated on the same
        cases. Written into ``best.pt`` with ``note`` merged into the best when ``always`` or when their mean
        Dice beats the best so far. No ``validation.csv`` row (the last iteration's row is the last weights');
        a line says what was kept."""
        if self.dist.is_main and self.cases:
            nets = [copy.deepcopy(net) for net in self.step.networks]
            for net, state in zip(nets, networks):
                net.load_state_dict(state)
            result, entries = self._scores(nets)
            dice = {e.name: float(result["dice"][i]) for i, e in enumerate(entries)}
            mean = float(result["mean_dice"])
            previous = self.best.get("mean_dice", -1.0)
            if always or (math.isfinite(mean) and mean > previous):
                base = {k: v for k, v in self.best.items() if k not in ("mean_dice", "dice")}
                self.best = {"iteration": int(self.best.get("iteration") or self.total), **base,
                             "mean_dice": mean, "dice": dice, **note}
                ckpt.save_checkpoint(self.folder.best, {"iteration": self.best["iteration"], "best": dict(self.best),
                                                        "networks": [dict(n) for n in networks]})
                verdict = ("packaged" if always else f"the best (checkpoint best {previous:.4f}): packaged")
            else:
                verdict = (f"not better than the best checkpoint ({previous:.4f} at iteration "
                           f"{self.best.get('iteration')})")
            self.progress.message(f"{what}: validation mean Dice {mean:.4f}, {verdict}")
        barrier(self.dist)

    def validate(self, iteration: int, baseline: bool = False) -> None:
        """Dice per class on the validation cases; the best networks into ``best.pt``. ``baseline``: the init
        model before fine-tuning (iteration 0: logged and kept as :attr:`baseline`, never the best)."""
        if self.dist.is_main and self.cases:
            result, entries = self._scores(list(self.step.networks))
            found = {e.name: result["found"][i] for i, e in enumerate(entries)}
            row = self.log.add_validation(iteration, result)
            dice = {k[5:]: v for k, v in row.items() if k.startswith("dice_")}
            if baseline:
                self.baseline = {"iteration": int(iteration), "mean_dice": float(result["mean_dice"]), "dice": dice}
                self.progress.message(f"before fine-tuning: validation mean Dice {result['mean_dice']:.4f} (the "
                                      "initial model)")
            improved = (not baseline and math.isfinite(result["mean_dice"])
                        and result["mean_dice"] > self.best.get("mean_dice", -1.0))
            if improved:
                self.best = {"iteration": int(iteration), "mean_dice": float(result["mean_dice"]), "dice": dict(dice)}
                ckpt.save_checkpoint(self.folder.best,
                                     {"iteration": int(iteration), "best": dict(self.best),
                                      "networks": self.step.network_state_dicts()})
            if self.echo is not None:
                best = self.best.get("mean_dice", float("nan"))
                self.echo(f"iteration {iteration}: validation mean Dice {result['mean_dice']:.4f} "
                          f"(best {best:.4f} at iteration {self.best.get('iteration')})")
            self.progress.emit(ValidationEvent(
                iteration=int(iteration), mean_dice=result["mean_dice"], dice=dict(dice),
                found={k: (None if not math.isfinite(v) else round(v, 3)) for k, v in found.items()},
                best_iteration=self.best.get("iteration"), best_mean_dice=self.best.get("mean_dice"),
                source=self.source, baseline=True if baseline else None))
            self.log.flush()
        barrier(self.dist)
