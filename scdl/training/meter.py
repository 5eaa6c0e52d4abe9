"""The training loop's meter: the logging window, the training clock and the progress display.

Every iteration adds its loss terms to the window; every ``log_every`` iterations (and at the last one) the
window's means (averaged across processes), the learning rate, it/s and the share of time spent waiting for
data become a ``log.csv`` row (``scdl.training.runlog``) and an ``iteration`` progress event, and the window
starts again. The meter also keeps the clock of the run (seconds trained in all, a resumed run's included)
and the display of the loop: a tqdm bar (``--progress tqdm``, rank 0) or ``phase: train`` JSON lines.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import torch

from scdl.events import IterationEvent, PhaseEvent
from scdl.progress import ProgressReporter
from scdl.training.distributed import DistEnv, mean_across
from scdl.training.runlog import RunLog


class Meter:
    """The logging window of iterations ``start`` .. ``end`` of ``total`` (see module docstring).

    Args:
        log: the run's rows (``log.csv``).
        progress: the progress reporter (``scdl.progress``).
        dist: the process group (means across processes; only rank 0 displays).
        device: where the all-reduce of the means runs.
        total: the run's iteration count (ETA, the bar's length).
        log_every: iterations per logged row.
        elapsed0: seconds trained before ``start`` (a resumed run).
    """

    def __init__(self, *, log: RunLog, progress: ProgressReporter, dist: DistEnv, device: torch.device, total: int,
                 log_every: int, elapsed0: float = 0.0):
        self.log = log
        self.progress = progress
        self.dist = dist
        self.device = device
        self.total = int(total)
        self.log_every = int(log_every)
        self.elapsed0 = float(elapsed0)
        self.start = 0
        self.end = self.total
        self.bar: Any = None                    # the tqdm bar (tqdm mode, rank 0) while the loop runs
        self.t_start = time.monotonic()
        self._window_t = self.t_start
        self._window_wait = 0.0
        self._window_n = 0
        self._sums: dict[str, float] = {}

    def open(self, start: int, end: int) -> None:
        """The loop starts at ``start`` (iterations done) and stops at ``end``: the clock and the bar start."""
        self.start, self.end = int(start), int(end)
        self.bar = self._make_bar()
        self.t_start = self._window_t = time.monotonic()
        self._window_wait, self._window_n, self._sums = 0.0, 0, {}

    def elapsed(self) -> float:
        """Seconds trained in all (before this process, and since :meth:`open`)."""
        return self.elapsed0 + time.monotonic() - self.t_start

    def update(self, iteration: int, terms: dict[str, float], lr: float, wait: float) -> None:
        """Iteration ``iteration`` (1-based) is done with loss ``terms`` at learning rate ``lr`` after ``wait``
        seconds waiting for data; every ``log_every`` (and at ``end``) a row and an ``iteration`` event."""
        self._window_wait += wait
        self._window_n += 1
        for key, value in terms.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        if iteration % self.log_every == 0 or iteration == self.end:
            self._write(iteration, lr)

    def _write(self, iteration: int, lr: float) -> None:
        now = time.monotonic()
        n = self._window_n
        means = mean_across(self.dist, {k: v / n for k, v in self._sums.items()}, self.device)
        it_s = n / max(now - self._window_t, 1e-9)
        eta = (self.total - iteration) / it_s
        elapsed = self.elapsed0 + now - self.t_start
        row = {"iteration": iteration, "elapsed_s": round(elapsed, 3), "lr": lr, "it_per_s": it_s,
               "data_wait": self._window_wait / max(now - self._window_t, 1e-9), **means}
        self.log.add(row)
        self.progress.emit(IterationEvent(iteration=iteration, iterations=self.total, loss=means, lr=lr,
                                          it_per_s=round(it_s, 4), eta_s=round(eta, 1),
                                          data_wait=round(row["data_wait"], 4)))
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{means['total']:.4g}", lr=f"{lr:.3g}", refresh=False)
        self._sums, self._window_t, self._window_wait, self._window_n = {}, now, 0.0, 0

    def tick(self, iteration: int) -> None:
        """The display after iteration ``iteration``: the bar moves, or a ``phase: train`` JSON line."""
        if self.bar is not None:
            self.bar.update(1)
        elif self.progress.mode == "json" and self.dist.is_main:
            done_here = iteration - self.start
            rate = done_here / max(time.monotonic() - self.t_start, 1e-9)
            self.progress.emit(PhaseEvent(phase="train", done=iteration, total=self.total,
                                          eta_s=round((self.total - iteration) / rate, 1) if rate > 0 else None))

    def echo(self, line: str) -> None:
        """A line for the terminal above the bar (only while the bar is shown)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _make_bar(self) -> Optional[Any]:
        if self.progress.mode == "tqdm" and self.dist.is_main:
            from tqdm.auto import tqdm

            return tqdm(total=self.total, initial=self.start, desc="train",
                        file=getattr(self.progress, "err", sys.stderr), dynamic_ncols=True, leave=False)
        return None
