"""SCDLSegment's Logic and parameter node: scene <-> files and the ``scdl segment`` child processes (no Qt).

``SCDLSegmentLogic`` is usable from scripts and tests without the panel; the module file imports it (Slicer's
``getModuleLogic("SCDLSegment")`` finds it there). Everything it shares with SCDLTrain is in ``SCDLSlicerLib``.
"""

import logging
import os
import re
import shutil
import tempfile

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from SCDLSlicerLib import commands, devices, jobs, models, sceneio, scenejob
from SCDLSlicerLib import dependencies as deps

#: CT file types a batch folder run picks up (DICOM series are found by content).
BATCH_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Words in a file name that mark a label map next to the CTs (not segmented; case-insensitive, the name is
#: split at every non-alphanumeric character: "example_seg_fast.nii.gz" -> example, seg, fast).
BATCH_SKIP_WORDS = ("seg", "segmentation", "label", "labels", "labelmap", "mask")
#: Output file of a batch item: a 3D Slicer segmentation, or (``dicomSeg``, DICOM inputs only) a DICOM SEG that
#: references the input series (``scdl segment -o NAME.dcm``; other inputs keep ``.seg.nrrd``).
BATCH_OUTPUT_EXTENSION = ".seg.nrrd"
BATCH_DICOM_SEG_EXTENSION = ".dcm"
#: Files never opened when looking for DICOM series.
NOT_DICOM_EXTENSIONS = (".txt", ".json", ".csv", ".md", ".xml", ".py", ".png", ".jpg", ".jpeg", ".pdf", ".zip", ".gz", ".raw")


#
# SCDLSegmentParameterNode
#


@parameterNodeWrapper
class SCDLSegmentParameterNode:
    """State of the module panel (saved with the scene).

    inputVolume - the CT to segment.
    outputSegmentation - segmentation to overwrite; None creates a new one.
    modelId - model id (from the catalog) or package path given to ``--model``.
    device - ``auto``, ``cpu`` or ``cuda:N``.
    computeUncertainty - also compute the uncertainty map and per-organ confidence.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelId: str = ""
    device: str = "auto"
    computeUncertainty: bool = False


#
# SCDLSegmentLogic
#


class SCDLSegmentLogic(ScriptedLoadableModuleLogic):
    """Scene <-> files and the ``scdl`` child processes; usable from scripts and tests without the GUI.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("SCDLSegment")   # or SCDLSegment.SCDLSegmentLogic()
        result = logic.segment(slicer.util.getNode("CTChest"), device="cpu")
        print(result.segmentation_node.GetName(), result.warnings)
    """

    def __init__(self, backend: str = "auto") -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.backend = backend
        commands.ensure_core_importable()

    def getParameterNode(self):
        return SCDLSegmentParameterNode(super().getParameterNode())

    # -- models ---------------------------------------------------------------------------------
    def listModels(self) -> list:
        return models.list_models()

    def modelCacheFolder(self):
        return models.cache_folder()

    def clearModelCache(self):
        return models.clear_cache()

    def startModelImport(self, path) -> jobs.ModelsJob:
        """``scdl models import PATH`` in a child (verifies every checksum, then copies into the cache)."""
        path = str(path)
        if os.path.basename(path) in ("manifest.json", "card.json"):
            path = os.path.dirname(path)
        return jobs.ModelsJob("import", path, backend=self.backend, what=_("The model import")).start()

    def downloadConsent(self, model: dict) -> str:
        """The question asked before downloading a catalog model (title, id, target folder, licence)."""
        card = models.load_card(model)
        licence = card.get("licence") or model.get("licence") or _("not stated")
        return _(
            "Download '{title}' ({id}) from the internet into {folder}?\n\nLicence: {licence}\n\nThe files are checked "
            "against the catalog's checksums before use."
        ).format(title=model.get("title"), id=model["id"], folder=self.modelCacheFolder(), licence=licence)

    def startModelDownload(self, modelId: str) -> jobs.ModelsJob:
        """``scdl models download ID --progress json`` in a child (verified against the catalog)."""
        return jobs.ModelsJob("download", modelId, "--progress", "json", backend=self.backend,
                              what=_("The model download")).start()

    # -- checks -----------------------------------------------------------------------------------
    def dependencyPlan(self) -> deps.InstallPlan:
        return deps.plan()

    def installDependencies(self, plan: deps.InstallPlan) -> None:
        deps.install(plan)

    def checkInput(self, inputVolume) -> list:
        """Warnings about the input (e.g. not a CT in Hounsfield units)."""
        warning = sceneio.ct_plausibility(inputVolume)
        return [warning] if warning else []

    def checkDevice(self, device: str):
        return devices.check_device(device)

    # -- segmentation -------------------------------------------------------------------------------
    def startSegmentation(self, inputVolume, model=None, device: str = "auto", outputSegmentation=None,
                          uncertainty: bool = False, kill_grace_s=None) -> scenejob.SceneSegmentation:
        """Start segmenting ``inputVolume`` in a child process; drive the returned run with ``poll()`` and
        hand it to :meth:`finishSegmentation` when ``run.finished``."""
        if inputVolume is None:
            raise ValueError(_("Select an input volume."))
        labels = models.label_infos(model)
        run = scenejob.SceneSegmentation(inputVolume, model, device or "auto", outputSegmentation, uncertainty,
                                         labels=labels, backend=self.backend, kill_grace_s=kill_grace_s)
        return run.start()

    def finishSegmentation(self, run: scenejob.SceneSegmentation):
        """Load the result of a finished run (None if it was cancelled); raises ``SegmentationFailed``."""
        result = run.finish()
        if result is not None:
            logging.info("SCDLSegment: %s", result.segmentation_node.GetName())
        return result

    def addEmptySegments(self, segmentationNode, model=None) -> list:
        """Add an empty segment (name, colour, terminology) for each organ of ``model`` that ``segmentationNode``
        lacks, to paint a missed organ in the Segment Editor; returns the names added. Only on request: in a
        training case of SCDL Train an empty segment means "annotated, absent", not "not found"."""
        labels = models.label_infos(model)
        if not labels:
            raise ValueError(_("The model has no label table: the organ names are unknown."))
        return sceneio.add_empty_segments(segmentationNode, labels)

    def segment(self, inputVolume, model=None, device: str = "auto", outputSegmentation=None,
                uncertainty: bool = False, timeout=None):
        """Blocking convenience for scripts: start, wait, finish."""
        run = self.startSegmentation(inputVolume, model, device, outputSegmentation, uncertainty)
        return run.wait(timeout)

    # -- batch ------------------------------------------------------------------------------------
    def startBatch(self, outputFolder, model=None, device: str = "auto", inputFolder=None,
                   dicomSeg: bool = False) -> jobs.BatchJob:
        """:meth:`startBatchFromFolder` with ``inputFolder`` (``dicomSeg``: DICOM SEG for its DICOM series), else
        :meth:`startBatchFromScene`."""
        if inputFolder is not None:
            return self.startBatchFromFolder(inputFolder, outputFolder, model, device, dicomSeg=dicomSeg)
        return self.startBatchFromScene(outputFolder, model, device)

    def startBatchFromScene(self, outputFolder, model=None, device: str = "auto", volumes=None) -> jobs.BatchJob:
        """Segment every scalar volume of the scene (or ``volumes``) into ``<outputFolder>/<name>.seg.nrrd``."""
        volumes = sceneio.scene_volumes() if volumes is None else list(volumes)
        if not volumes:
            raise ValueError(_("There is no volume in the scene."))
        outputFolder = _checkedOutputFolder(outputFolder)
        workDir = tempfile.mkdtemp(prefix="SCDLSegmentBatch-", dir=scenejob.work_root())
        items = []
        for volume in volumes:
            name = sceneio.safe_file_stem(volume.GetName())
            items.append(jobs.BatchItem(volume.GetName(), volume.GetID(), _uniquePath(outputFolder, name, items)))

        def makeJob(item):
            volume = slicer.mrmlScene.GetNodeByID(item.source)
            if volume is None:
                raise ValueError(_("the volume was removed from the scene"))
            warning = sceneio.ct_plausibility(volume)
            item.input_file = sceneio.write_volume(volume, os.path.join(workDir, f"{items.index(item)}.nrrd"))
            job = jobs.SegmentJob(item.input_file, item.output, model, device, backend=self.backend)
            if warning:
                job.tracker.warnings.append(warning)
            return job

        def cleanup(item):
            if item.input_file is not None and os.path.exists(item.input_file):
                os.remove(item.input_file)
            if all(i.status in ("done", "failed", "cancelled") for i in items):
                shutil.rmtree(workDir, ignore_errors=True)

        return jobs.BatchJob(items, makeJob, cleanup).start()

    def startBatchFromFolder(self, inputFolder, outputFolder, model=None, device: str = "auto",
                             dicomSeg: bool = False) -> jobs.BatchJob:
        """Segment every CT file / DICOM series folder in ``inputFolder`` into ``<outputFolder>/<name>.seg.nrrd``;
        with ``dicomSeg`` a DICOM series into ``<name>.dcm``, a DICOM SEG referencing it (other inputs: .seg.nrrd)."""
        inputs = findCtInputs(inputFolder)
        if not inputs:
            raise ValueError(_("No CT files (NIfTI, NRRD, MHA) or DICOM series found in {folder}.").format(folder=inputFolder))
        outputFolder = _checkedOutputFolder(outputFolder)
        items = []
        for path in inputs:
            output = _uniquePath(outputFolder, _stem(path), items, batchOutputExtension(path, dicomSeg))
            items.append(jobs.BatchItem(os.path.basename(path), path, output))
        return jobs.BatchJob(items, lambda item: jobs.SegmentJob(item.source, item.output, model, device,
                                                                 backend=self.backend)).start()


def _checkedOutputFolder(folder):
    if not folder:
        raise ValueError(_("Choose an output folder."))
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise ValueError(_("Cannot write into {folder}: choose another output folder.").format(folder=folder))
    return folder


def _stem(path) -> str:
    name = os.path.basename(os.path.normpath(path))
    for ext in BATCH_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def batchOutputExtension(inputPath, dicomSeg: bool = False) -> str:
    """The output extension of one batch input: ``.dcm`` (DICOM SEG) for a DICOM series folder when ``dicomSeg``,
    else ``.seg.nrrd`` (a DICOM SEG must reference source DICOM images, so NIfTI/NRRD inputs cannot have one)."""
    if dicomSeg and os.path.isdir(inputPath):
        return BATCH_DICOM_SEG_EXTENSION
    return BATCH_OUTPUT_EXTENSION


def _uniquePath(folder, stem, items, extension=BATCH_OUTPUT_EXTENSION):
    import pathlib

    taken = {item.output for item in items}
    candidate = pathlib.Path(folder) / f"{stem}{extension}"
    index = 2
    while candidate in taken or candidate.exists():
        candidate = pathlib.Path(folder) / f"{stem}_{index}{extension}"
        index += 1
    return candidate


def _isDicomFile(path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def findCtInputs(folder) -> list:
    """CT inputs in ``folder``: image files by extension (label maps skipped, see ``BATCH_SKIP_WORDS``) and
    every folder (the input folder included) that holds DICOM files."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        images = []
        hasDicom = False
        for name in sorted(files):
            lower = name.lower()
            ext = next((e for e in BATCH_EXTENSIONS if lower.endswith(e)), None)
            if ext is not None:
                words = set(re.split(r"[^a-z0-9]+", lower[: -len(ext)]))
                if not words & set(BATCH_SKIP_WORDS):
                    images.append(os.path.join(root, name))
            elif not hasDicom and not lower.endswith(NOT_DICOM_EXTENSIONS) and _isDicomFile(os.path.join(root, name)):
                hasDicom = True  # DICOM files have any name ("CT.1.2.840...", "IM0001", "x.dcm"): read the magic
        if hasDicom:
            found.append(root)
        found.extend(images)
    return found
