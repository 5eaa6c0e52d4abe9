"""The scene side of one segmentation: volume node -> temporary files -> child -> segmentation node.

:class:`SceneSegmentation` writes the input volume into a private work folder, runs ``scdl segment`` there
(a :class:`~SCDLSlicerLib.jobs.SegmentJob`), and when the child succeeded loads the ``.seg.nrrd`` (and the
optional uncertainty map) back into the scene with names, colours, terminology, reference geometry,
subject-hierarchy placement and display set up. The work folder is always deleted at the end, so a
cancelled or failed run leaves neither files nor nodes behind. No Qt here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import slicer

from SCDLSlicerLib import sceneio
from SCDLSlicerLib.jobs import SegmentJob

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover
    def _(text: str) -> str:
        return text


class SegmentationFailed(Exception):
    """The child failed (its ``error:`` line is the message) or its result could not be loaded."""


@dataclass
class SegmentationResult:
    """What a finished segmentation put into the scene."""

    segmentation_node: object
    uncertainty_node: Optional[object] = None
    confidence: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    report: Optional[sceneio.LoadReport] = None
    seconds: float = 0.0


def work_root() -> Optional[str]:
    """Slicer's temporary folder inside the application, else the system's."""
    app = getattr(slicer, "app", None)
    return getattr(app, "temporaryPath", None) if app is not None else None


class SceneSegmentation:
    """One run for one input volume node.

    Args:
        input_volume: the CT volume node.
        model: model id or path for ``--model`` (None: the catalog's default).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        output_node: an existing segmentation node to overwrite, or None to create one.
        uncertainty: also compute and load the uncertainty map.
        labels: the model's label table (``sceneio.LabelInfo`` list) used to check/repair the result;
            None trusts the file.
        backend: child-process backend (see ``process.ChildProcess``).
        node_name: name of a new segmentation node (default ``<volume> segmentation``).
    """

    def __init__(self, input_volume, model: Optional[str] = None, device: str = "auto", output_node=None,
                 uncertainty: bool = False, labels: Optional[list] = None, backend: str = "auto",
                 node_name: Optional[str] = None, kill_grace_s: Optional[float] = None):
        self.input_volume = input_volume
        self.model = model
        self.device = device
        self.output_node = output_node
        self.uncertainty = uncertainty
        self.labels = labels
        self.node_name = node_name or _("{volume} segmentation").format(volume=input_volume.GetName())
        self.input_warning = sceneio.ct_plausibility(input_volume)
        self.work_dir = Path(tempfile.mkdtemp(prefix="SCDLSegment-", dir=work_root()))
        self.output_path = self.work_dir / "segmentation.seg.nrrd"
        self.uncertainty_path = self.work_dir / "uncertainty.nrrd" if uncertainty else None
        self.result: Optional[SegmentationResult] = None
        try:
            self.input_path = sceneio.write_volume(input_volume, self.work_dir / "input.nrrd")
            self.job = SegmentJob(self.input_path, self.output_path, model, device, self.uncertainty_path,
                                  backend=backend, kill_grace_s=kill_grace_s)
        except Exception:
            self.discard()
            raise

    # -- driving --------------------------------------------------------------------------------
    def start(self) -> "SceneSegmentation":
        try:
            self.job.start()
        except Exception:
            self.discard()
            raise
        return self

    def poll(self):
        return self.job.poll()

    def cancel(self) -> None:
        self.job.cancel()

    @property
    def finished(self) -> bool:
        return self.job.finished

    @property
    def cancelled(self) -> bool:
        return self.job.cancelled

    @property
    def tracker(self):
        """The child's :class:`~SCDLSlicerLib.childoutput.ProgressTracker` (progress bar, status line)."""
        return self.job.tracker

    def wait(self, timeout: Optional[float] = None, on_line: Optional[Callable] = None) -> Optional[SegmentationResult]:
        """Block until the child ended, then :meth:`finish` (scripts, batch, tests)."""
        try:
            self.job.wait(timeout, on_line)
        except TimeoutError:
            self.cancel()
            self.job.wait(30)
            self.discard()
            raise
        return self.finish()

    # -- finishing ------------------------------------------------------------------------------
    def finish(self) -> Optional[SegmentationResult]:
        """Load the result into the scene (None when cancelled); raises :class:`SegmentationFailed`."""
        if not self.job.finished:
            raise RuntimeError("the segmentation is still running")
        try:
            if self.job.cancelled:
                return None
            message = self.job.error_message()
            if message:
                raise SegmentationFailed(message)
            self.result = self._load()
            return self.result
        finally:
            self.discard()

    def _load(self) -> SegmentationResult:
        seconds = time.monotonic() - self.job.tracker.started
        try:
            node = sceneio.load_segmentation(self.output_path, self.node_name, self.input_volume, self.output_node)
        except sceneio.SceneError as err:
            raise SegmentationFailed(str(err)) from err
        report = sceneio.apply_label_table(node, self.labels) if self.labels else None
        sceneio.place_in_subject_hierarchy(node, self.input_volume)
        sceneio.show_segmentation(node, self.input_volume)
        uncertainty_node = None
        if self.uncertainty_path is not None:
            try:
                uncertainty_node = sceneio.load_uncertainty(
                    self.uncertainty_path, _("{volume} uncertainty").format(volume=self.input_volume.GetName()),
                    self.input_volume)
            except sceneio.SceneError as err:
                raise SegmentationFailed(str(err)) from err
            sceneio.place_in_subject_hierarchy(uncertainty_node, self.input_volume)
        warnings = ([self.input_warning] if self.input_warning else []) + [
            w for w in self.job.warnings() if w != self.input_warning]
        return SegmentationResult(node, uncertainty_node, self.job.confidence(), warnings, report, seconds)

    def discard(self) -> None:
        """Delete the work folder (input copy, partial outputs)."""
        shutil.rmtree(self.work_dir, ignore_errors=True)
