"""Segment the validation cases with the new model, one after the other, for review in the scene.

The segmentations come from SCDLSegment's Logic (the caller passes its ``startSegmentation`` /
``finishSegmentation``), so they get the same names, colours, terminology and geometry as any SCDLSegment
result. Each result is marked with ``scenecohort.PREDICTION_ATTRIBUTE`` so that a later cohort never takes
a prediction for a label. Driven by ``poll()`` like the other jobs. No Qt here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from SCDLTrainLib.scenecohort import PREDICTION_ATTRIBUTE


@dataclass
class ReviewItem:
    volume_id: str
    name: str
    status: str = "pending"        # pending | running | done | failed | cancelled
    message: str = ""
    segmentation_id: Optional[str] = None


class ReviewJob:
    """Segment ``items`` in turn.

    Args:
        items: the volumes to segment.
        start: ``start(volume_node) -> run`` (a running ``SCDLSegmentLib.scenejob.SceneSegmentation``).
        finish: ``finish(run) -> SegmentationResult | None`` (raises on failure).
        get_node: ``get_node(volume_id) -> node`` (the scene lookup).
        model_id: the model's id (recorded on each result).
    """

    def __init__(self, items: list[ReviewItem], start: Callable[[Any], Any], finish: Callable[[Any], Any],
                 get_node: Callable[[str], Any], model_id: str):
        self.items = list(items)
        self._start, self._finish, self._get_node = start, finish, get_node
        self.model_id = model_id
        self.index = -1
        self.run: Any = None
        self.cancel_requested = False
        self.started = False

    def start(self) -> "ReviewJob":
        self.started = True
        self._next()
        return self

    def _next(self) -> None:
        self.run = None
        while not self.cancel_requested:
            self.index += 1
            if self.index >= len(self.items):
                return
            item = self.items[self.index]
            volume = self._get_node(item.volume_id)
            if volume is None:
                item.status, item.message = "failed", "the volume was removed from the scene"
                continue
            try:
                self.run = self._start(volume)
                item.status = "running"
                return
            except Exception as err:  # noqa: BLE001 - one bad case must not stop the review
                item.status, item.message = "failed", str(err)

    def poll(self) -> list:
        """New output of the running segmentation; moves on when it ended."""
        if self.run is None:
            return []
        item = self.items[self.index]
        lines = list(self.run.poll())
        if self.run.finished:
            try:
                result = self._finish(self.run)
            except Exception as err:  # noqa: BLE001
                item.status, item.message = "failed", str(err)
            else:
                if result is None:
                    item.status = "cancelled"
                else:
                    node = result.segmentation_node
                    node.SetAttribute(PREDICTION_ATTRIBUTE, self.model_id)
                    node.SetName(f"{item.name} - {self.model_id}")   # apart from the case's own segmentation
                    item.status, item.segmentation_id = "done", node.GetID()
            self._next()
        return lines

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.run is not None:
            self.run.cancel()
        for item in self.items:
            if item.status == "pending":
                item.status = "cancelled"

    def wait(self, timeout: Optional[float] = None, interval_s: float = 0.05) -> None:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the review is still running after {timeout} s")
            time.sleep(interval_s)

    @property
    def finished(self) -> bool:
        return self.started and self.run is None

    @property
    def percent(self) -> float:
        if not self.items:
            return 100.0
        done = sum(1 for i in self.items if i.status in ("done", "failed", "cancelled"))
        running = self.run.job.tracker.percent / 100.0 if self.run is not None and hasattr(self.run, "job") else 0.0
        return min(100.0 * (done + running) / len(self.items), 100.0)

    def summary(self) -> str:
        counts = {s: sum(1 for i in self.items if i.status == s) for s in ("done", "failed", "cancelled")}
        return (f"{counts['done']} segmented, {counts['failed']} failed, {counts['cancelled']} cancelled "
                f"(of {len(self.items)})")
