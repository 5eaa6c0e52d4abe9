"""SCDLTrain's Logic and parameter node: scene cohort <-> files and the ``scdl train`` child processes (no Qt).

``SCDLTrainLogic`` is usable from scripts and tests without the panel; the module file imports it. What SCDLTrain
shares with SCDLSegment (child processes, jobs, scene I/O, models, dependencies) is in ``SCDLSlicerLib``.
"""

import os
import time
from typing import Annotated

import slicer
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from SCDLSlicerLib import commands, devices, jobs, models, scenejob
from SCDLSlicerLib import dependencies as deps
from SCDLTrainLib import curves, estimate, export, handoff, options, scenecohort, segmentmap, tables, trainjob

#: Cohort sources, in the order of the source selector.
COHORT_SOURCES = ("scene", "folders", "manifest")


#
# SCDLTrainParameterNode
#


@parameterNodeWrapper
class SCDLTrainParameterNode:
    """State of the module panel (saved with the scene).

    cohortSource - ``scene``, ``folders`` or ``manifest``.
    labeledFolder, unlabeledFolder, valFolder, sourceLabels - folder cohort (``--labeled`` ... ``--source-labels``).
    manifestPath - manifest cohort (``--cohort``).
    valFraction - scene cohort: share of the labeled volumes used for validation.
    segmentMapping - the user's corrections of segment -> class (JSON ``{segment key: class value}``).
    initModel - model id to fine-tune ("" trains from scratch).
    framework, scdlWeight, iterations, patchSize, labeledBatch, unlabeledBatch, device, cpuPreset, advanced -
        training options (see ``SCDLTrainLib.options``).
    runsFolder, runName - where the next run goes (``runsFolder/runName``).
    runFolder - the current or last run (resume, curves, result).
    trainedModelId - the model the last finished run registered.

    The core owns the defaults of framework, scdlWeight, iterations, patchSize, labeledBatch, unlabeledBatch and cpuPreset
    (``SCDLTrainLogic.coreDefaults``); the class body cannot import the core (module load stays light), so it
    holds placeholders there, and ``SCDLTrainLogic.getParameterNode`` gives a node without a saved value the
    core's.
    """

    cohortSource: str = "scene"
    labeledFolder: str = ""
    unlabeledFolder: str = ""
    valFolder: str = ""
    sourceLabels: str = ""
    manifestPath: str = ""
    valFraction: Annotated[float, WithinRange(0.0, 0.9)] = 0.2
    segmentMapping: str = ""
    initModel: str = ""
    framework: str = ""                                          # placeholder: the core's (see above)
    scdlWeight: Annotated[float, WithinRange(0.0, 10.0)] = 0.0      # placeholder
    iterations: Annotated[int, WithinRange(1, 1000000)] = 1      # placeholder
    patchSize: Annotated[int, WithinRange(0, 256)] = 0           # placeholder
    labeledBatch: Annotated[int, WithinRange(1, 64)] = 1         # placeholder
    unlabeledBatch: Annotated[int, WithinRange(0, 64)] = 0       # placeholder
    device: str = "auto"
    cpuPreset: bool = False                                      # placeholder
    advanced: str = ""
    runsFolder: str = ""
    runName: str = ""
    runFolder: str = ""
    trainedModelId: str = ""


#
# SCDLTrainLogic
#


class SCDLTrainLogic(ScriptedLoadableModuleLogic):
    """Scene cohort <-> files, and the ``scdl train`` child processes; usable from scripts without the GUI.

    Example (Python console)::

        logic = SCDLTrain.SCDLTrainLogic()
        export, problems = logic.exportSceneCohort("/data/runs/liver-ft")          # scene -> files
        opts = logic.makeOptions("/data/runs/liver-ft", {"manifest": str(export.manifest)}, preset="cpu")
        print(logic.checkCohort(opts).problems)                                     # scdl train --check-only
        job = logic.train(opts)                                                     # blocks; see startTraining
        modelId = logic.registerModel(job.model_dir)
    """

    def __init__(self, backend: str = "auto") -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.backend = backend
        commands.ensure_core_importable()

    def getParameterNode(self):
        """The module's parameter node; a parameter of :meth:`coreDefaults` that the node holds no value for
        (a new scene) gets the core's default, a saved value (a loaded scene) is kept."""
        node = super().getParameterNode()
        unsaved = {name: value for name, value in self.coreDefaults().items() if not node.HasParameter(name)}
        wrapper = SCDLTrainParameterNode(node)
        if unsaved:
            options.set_parameters(wrapper, unsaved)
        return wrapper

    @staticmethod
    def coreDefaults() -> dict:
        """The core's defaults of the panel's parameters (names of SCDLTrainParameterNode), read from
        ``scdl.training.config`` through ``options.core_defaults`` (the CPU preset check box: the default
        preset is ``cpu``)."""
        from scdl.training.config import Preset

        core = options.core_defaults()
        return {"framework": core["framework"], "scdlWeight": core["scdl_weight"],
                "iterations": core["iterations"], "patchSize": core["patch_size"],
                "labeledBatch": core["labeled_batch"], "unlabeledBatch": core["unlabeled_batch"],
                "cpuPreset": core["preset"] == Preset.CPU}

    # -- models and classes -------------------------------------------------------------------------
    def listModels(self) -> list:
        return models.list_models()

    def targetTable(self, initModel: str = "", advanced=()):
        """The classes the run learns (``scdl.labels.table.LabelTable``): the initial model's, else the
        ``labels`` of the Advanced settings, else Synapse (the trainer's default)."""
        from scdl.labels.table import LabelTable
        from scdl.models.catalog import catalog_entry, resolve_model
        from scdl.models.package import ModelPackage
        from scdl.training.config import DEFAULTS, parse_value

        if initModel:
            entry = catalog_entry(initModel)
            try:
                return ModelPackage.load(resolve_model(initModel), verify=False).labels
            except Exception:
                if entry and entry.get("labels"):
                    return LabelTable.load(entry["labels"])
                raise
        labels = DEFAULTS["labels"]
        for line in advanced:
            key, _sep, value = line.partition("=")
            if key.strip() == "labels":
                labels = str(parse_value(value.strip()))
        return LabelTable.load(labels)

    def panelDefaults(self, advanced=(), cuda=None) -> dict:
        """Parameter values for a new panel state that fit this machine (names of SCDLTrainParameterNode).

        Without CUDA: the CPU preset (its iterations; the paper's 17,000 would take days on a CPU). The initial
        model: the installed default model when its classes are the ones the run would learn (fine-tuning is
        the common case), with the automatic patch (its own). ``cuda``: None = ask torch (if installed).
        """
        from scdl.models.catalog import default_model_id

        if cuda is None:
            cuda = False
            if devices.torch_installed():
                import torch

                cuda = bool(torch.cuda.is_available())
        preset = self.presetName(not cuda)
        iterations, patch = self.presetDefaults(preset)
        out = {"cpuPreset": not cuda, "iterations": iterations, "patchSize": patch}
        model_id = default_model_id()
        installed = {m["id"] for m in self.listModels() if m.get("installed")}
        if model_id in installed:
            try:
                same = self.targetTable(model_id).names == self.targetTable("", advanced).names
            except Exception:  # noqa: BLE001 - an unreadable package is not proposed
                same = False
            if same:
                out.update(initModel=model_id, patchSize=0)
        return out

    @staticmethod
    def frameworkChoices() -> list:
        """(label, value) of every training framework of the core (``scdl.training.config.Framework``)."""
        from scdl.training.config import Framework

        labels = {"cps-scdl": _("CPS + SCDL (semi-supervised, class-balanced)"), "cps": _("CPS (semi-supervised)"),
                  "supervised": _("Supervised (labeled volumes only)"),
                  "mean-teacher-scdl": _("Mean Teacher + SCDL (semi-supervised)"),
                  "mean-teacher": _("Mean Teacher (semi-supervised)")}
        return [(labels.get(f.value, f.value), f.value) for f in Framework]

    @staticmethod
    def sourceLabelChoices() -> list:
        """(label, value) of the label tables a folder cohort's label maps may be numbered in: "" (the model's
        numbering) and every table the core ships (``LabelTable.bundled_names()``)."""
        from scdl.labels.table import LabelTable

        return [(_("model's numbering"), "")] + [(name, name) for name in LabelTable.bundled_names()]

    @staticmethod
    def presetName(cpu: bool) -> str:
        """The core's preset for the panel's CPU-preset check box (``scdl.training.config.Preset``)."""
        from scdl.training.config import Preset

        return str(Preset.CPU if cpu else Preset.PAPER)

    @staticmethod
    def presetDefaults(preset: str) -> tuple:
        """(iterations, patch edge) of a preset (``scdl.training.config``)."""
        from scdl.training.config import DEFAULTS, PRESET_VALUES

        values = {**DEFAULTS, **PRESET_VALUES[preset]}
        return int(values["iterations"]), int(values["patch_size"][0])

    # -- scene cohort -------------------------------------------------------------------------------
    def sceneCases(self, valFraction: float = 0.2) -> list:
        return scenecohort.scene_cases(valFraction)

    def setCaseRole(self, volume, role: str) -> None:
        scenecohort.set_role(volume, role)

    def segmentMatches(self, cases, table, overrides=None) -> list:
        segments = [(name, terminology, case.name) for case in cases if case.split != "exclude"
                    for name, terminology, _sid, _seg in case.segments()]
        return segmentmap.match_segments(segments, table, overrides)

    def exportSceneCohort(self, runDir, initModel: str = "", advanced=(), valFraction: float = 0.2, overrides=None):
        """Write the scene cohort into ``runDir/cohort`` (volumes, label maps in the model's numbering,
        ``manifest.csv``). Returns ``(ExportResult, problems)`` with the per-case problems found in the scene
        (mapping, roles, geometry); None instead of the result when the scene holds no case."""
        from scdl.training.runfolder import RunFolder

        table = self.targetTable(initModel, advanced)
        cases = self.sceneCases(valFraction)
        matches = self.segmentMatches(cases, table, overrides)
        problems = scenecohort.mapping_problems(cases, matches)
        if not [c for c in cases if c.split != "exclude"]:
            problems.append(scenecohort.CaseProblem(
                "error", "no_cases", "the scene holds no CT volume to train on.", "",
                "load CT volumes (and segment some of them), or choose folders or a manifest."))
            return None, problems
        result = export.export_scene_cohort(cases, segmentmap.value_map(matches),
                                            RunFolder(runDir).scene_cohort_dir,
                                            class_names={int(e.value): e.name for e in table.entries if int(e.value)})
        return result, problems + result.problems

    def caseProblem(self, problem: dict, exported=None):
        """A problem of the core's check as a per-case row (the manifest row named by the volume's name)."""
        case = problem.get("case") or ""
        path = problem.get("path") or ""
        name = exported.case_for_row(case) if exported is not None else None
        if name:
            case = name
        elif case and (os.sep in case or "/" in case):  # a folder cohort names the folder: show the file
            case = os.path.basename(path or case)
        elif case and path:                             # a manifest row: "manifest.csv:3 (file name)"
            case = f"{case} ({os.path.basename(path)})"
        return scenecohort.CaseProblem(str(problem.get("severity", "error")), str(problem.get("code", "")),
                                       str(problem.get("message", "")), case, str(problem.get("fix", "")),
                                       str(problem.get("path", "")))

    # -- options ------------------------------------------------------------------------------------
    def defaultRunsFolder(self):
        from scdl.resources import user_home

        return user_home() / "runs"

    @staticmethod
    def newRunName() -> str:
        return time.strftime("%Y%m%d-%H%M%S")

    def makeOptions(self, runDir, cohort: dict, **kwargs) -> options.TrainOptions:
        """``options.TrainOptions`` with an absolute run folder (the child reports absolute paths then)."""
        return options.TrainOptions(run_dir=os.path.abspath(os.path.expanduser(str(runDir))), cohort=cohort, **kwargs)

    def optionsFromParameters(self, node) -> options.TrainOptions:
        """The panel's state as training options (raises ``options.OptionsError`` for a bad setting)."""
        from scdl.training.runfolder import RunFolder

        if not node.runsFolder or not node.runName.strip():
            raise options.OptionsError(_("Choose a runs folder and a run name."))
        runDir = os.path.join(node.runsFolder, node.runName.strip())
        if node.cohortSource == "scene":
            cohort = {"manifest": str(RunFolder(os.path.abspath(runDir)).scene_cohort_manifest)}
        elif node.cohortSource == "folders":
            cohort = {"labeled": node.labeledFolder or None, "unlabeled": node.unlabeledFolder or None,
                      "val": node.valFolder or None, "labels": node.sourceLabels or None}
            if not (node.labeledFolder or node.unlabeledFolder):
                raise options.OptionsError(_("Choose the folder of labeled cases (images/ + labels/)."))
        else:
            if not node.manifestPath:
                raise options.OptionsError(_("Choose the cohort manifest (CSV or JSON)."))
            cohort = {"manifest": node.manifestPath}
        opts = self.makeOptions(
            runDir, cohort, framework=node.framework, iterations=node.iterations, init=node.initModel or None,
            device=node.device or "auto", preset=self.presetName(node.cpuPreset), scdl_weight=node.scdlWeight,
            patch_size=node.patchSize, labeled_batch=node.labeledBatch, unlabeled_batch=node.unlabeledBatch,
            advanced=options.parse_advanced(node.advanced))
        opts.resolve()
        return opts

    def estimate(self, opts: options.TrainOptions, partial: bool = False):
        """Time and memory estimate of a run (``scdl.training.estimate``, the numbers ``scdl train --check-only``
        prints too). ``partial``: some labeled case annotates only some classes (with an initial model its
        networks then run forward each step: keep what you know)."""
        config = opts.resolve()
        teachers = 0
        if opts.init:
            from scdl.training.finetune import load_init_card

            try:
                card = load_init_card(opts.init)
                config["network"]["n_filters"] = int(card["architecture"]["n_filters"])
                if partial and float(config["finetune"].get("keep_weight", 0.0)) > 0:
                    teachers = int(card.get("ensemble", 1))
            except Exception:  # noqa: BLE001 - the check reports an unusable init model
                pass
        device = opts.device if opts.device != "auto" else ("auto" if devices.torch_installed() else "cpu")
        return estimate.estimate_run(config, device, teachers)

    # -- check --------------------------------------------------------------------------------------
    def startCohortCheck(self, opts: options.TrainOptions) -> trainjob.CheckJob:
        """``scdl train ... --check-only --progress json`` in a child (started)."""
        return trainjob.CheckJob(opts.check_args(), backend=self.backend).start()

    def checkCohort(self, opts: options.TrainOptions, timeout=None) -> trainjob.CohortCheck:
        """Blocking convenience for scripts: the check's result."""
        job = self.startCohortCheck(opts)
        job.wait(timeout)
        return job.result()

    # -- training -----------------------------------------------------------------------------------
    def startTraining(self, opts: options.TrainOptions) -> trainjob.TrainJob:
        """Start ``scdl train`` in a child; drive it with ``poll()``, stop it with ``stop()``."""
        os.makedirs(str(opts.run_dir), exist_ok=True)
        return trainjob.TrainJob(opts.train_args(), opts.run_dir, backend=self.backend).start()

    def resumeTraining(self, runDir, device: str = "auto", iterations=None) -> trainjob.TrainJob:
        """``scdl train --resume RUN_DIR``: continues at the last checkpoint's iteration."""
        runDir = os.path.abspath(str(runDir))
        return trainjob.TrainJob(options.resume_args(runDir, iterations, device), runDir, resume=True,
                                 backend=self.backend).start()

    def train(self, opts: options.TrainOptions, timeout=None) -> trainjob.TrainJob:
        """Blocking convenience for scripts: start, wait, return the finished job."""
        job = self.startTraining(opts)
        job.wait(timeout)
        return job

    def curvesForRun(self, runDir, initModel: str = "", advanced=()) -> curves.TrainingCurves:
        """The plot nodes of a run (created, or found again for a resumed run)."""
        try:
            colors = curves.class_colors_from_table(self.targetTable(initModel, advanced))
        except Exception:  # noqa: BLE001 - grey curves rather than none
            colors = {}
        return curves.TrainingCurves(os.path.abspath(str(runDir)), os.path.basename(os.path.normpath(str(runDir))), colors)

    def updateCurves(self, trainingCurves, monitor) -> None:
        """Rewrite the curve tables from the monitor's rows."""
        if trainingCurves is not None:
            trainingCurves.update(monitor.loss_rows, monitor.loss_columns(), monitor.val_rows, monitor.class_names)

    def showChart(self, chartNode) -> None:
        """Show a chart in the view layout (the Plots module of the Slicer application)."""
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)

    @staticmethod
    def describeEvent(data: dict) -> str:
        """A log line for a training event (the line's object; :meth:`describedEvents` are the kinds with a
        sentence of their own, any other is shown as it came)."""
        describe = _eventDescribers().get(_eventKind(data))
        return describe(data) if describe is not None else str(data)

    @staticmethod
    def describedEvents() -> frozenset:
        """The ``scdl.events.EventKind`` members :meth:`describeEvent` writes a sentence for (the panel logs those)."""
        return frozenset(_eventDescribers())

    # -- hand-off ------------------------------------------------------------------------------------
    def startRegistration(self, modelDir, replace: bool = False):
        """``scdl models import MODEL_DIR`` in a child (verifies, then copies into the model cache)."""
        return handoff.register_job(modelDir, replace, backend=self.backend).start()

    def finishRegistration(self, job, modelDir) -> str:
        """The registered model's id; raises ``RuntimeError`` with the child's message on failure."""
        message = job.error_message()
        if message or not job.succeeded:
            raise RuntimeError(message or _("Registering the model was cancelled."))
        return handoff.model_id_of(modelDir)

    def registerModel(self, modelDir, replace: bool = False, timeout=None) -> str:
        """Blocking convenience: register ``modelDir`` in the model cache; returns its id."""
        job = self.startRegistration(modelDir, replace)
        job.wait(timeout)
        return self.finishRegistration(job, modelDir)

    def selectInSegment(self, modelId: str) -> None:
        """Make ``modelId`` SCDLSegment's model (its parameter node, saved with the scene)."""
        models.select_for_segmentation(modelId)

    def modelCard(self, modelId: str):
        """(catalog item, card) of an installed model, or (None, {})."""
        item = handoff.catalog_item(modelId)
        return (item, models.load_card(item)) if item else (None, {})

    @staticmethod
    def beforeAfter(card) -> tuple:
        """A fine-tuned model's validation Dice per organ before (the initial model) and after:
        ``(rows, mean before, mean after)`` with rows ``(organ, before, after, change)``; ``([], None, None)``
        for a model without them (trained from scratch, or without validation)."""
        rows = tables.before_after_rows(card)
        if not rows:
            return [], None, None
        metrics = card["provenance"]["validation_metrics"]
        return rows, metrics["before"].get("mean_dice"), metrics.get("mean_dice")

    # -- review -------------------------------------------------------------------------------------
    def validationVolumes(self, runDir) -> list:
        """The validation cases of a run as volume nodes: the scene volumes a scene cohort was exported from
        (manifest column ``volume_id``), else the images of the run's manifest or folders, loaded into the
        scene. Cases that cannot be loaded here (DICOM folders) are left out."""
        from scdl.training.cohort import load_folders, load_manifest
        from scdl.training.runfolder import RunFolder

        config = RunFolder(runDir).load_config()
        spec = config.get("cohort") or {}
        if spec.get("manifest"):
            cohort = load_manifest(spec["manifest"])
        else:
            cohort = load_folders(spec.get("labeled"), spec.get("unlabeled"), spec.get("val"), spec.get("labels"))
        volumes = []
        for case in cohort.val:
            node = slicer.mrmlScene.GetNodeByID(case.extra.get("volume_id") or "") if case.extra.get("volume_id") else None
            if node is None and os.path.isfile(str(case.image)):
                node = slicer.modules.volumes.logic().AddArchetypeVolume(str(case.image), case.extra.get("name") or case.name, 0)
            if node is not None:
                volumes.append(node)
        return volumes

    def startReview(self, modelId: str, device: str = "auto", runDir=None, volumes=None) -> jobs.BatchJob:
        """Segment the validation cases (or ``volumes``) with ``modelId``, one after the other, as SCDLSegment
        does (``scenejob.SceneSegmentation``: same names, colours, terminology, geometry). Each result is marked
        with ``scenecohort.PREDICTION_ATTRIBUTE`` so that a later cohort never takes it for a label; the items'
        ``result`` is the segmentation node's ID."""
        if volumes is None:
            runDir = runDir or self.getParameterNode().runFolder
            volumes = self.validationVolumes(runDir)
        volumes = list(volumes)
        if not volumes:
            raise ValueError(_("There is no validation case to segment."))
        labels = models.label_infos(modelId)

        def makeJob(item):
            volume = slicer.mrmlScene.GetNodeByID(item.source)
            if volume is None:
                raise ValueError(_("the volume was removed from the scene"))
            return scenejob.SceneSegmentation(volume, modelId, device or "auto", labels=labels, backend=self.backend)

        def finish(item, run):
            result = run.finish()  # raises SegmentationFailed: the item failed with the child's message
            if result is None:
                item.status = "cancelled"
                return
            node = result.segmentation_node
            node.SetAttribute(scenecohort.PREDICTION_ATTRIBUTE, modelId)
            node.SetName(f"{item.label} - {modelId}")  # apart from the case's own segmentation
            item.status, item.result = "done", node.GetID()

        items = [jobs.BatchItem(v.GetName(), v.GetID()) for v in volumes]
        return jobs.BatchJob(items, makeJob, finish=finish).start()

    # -- checks -----------------------------------------------------------------------------------
    def dependencyPlan(self) -> deps.InstallPlan:
        return deps.plan()

    def installDependencies(self, plan: deps.InstallPlan) -> None:
        deps.install(plan)


#
# Training events as log lines (describeEvent)
#


def _eventKind(data: dict):
    """The ``scdl.events.EventKind`` of a line's object (None: no event, or one this core does not know)."""
    from scdl.events import EventKind

    event = data.get("event")
    return EventKind(event) if isinstance(event, str) and event in EventKind.values() else None


def _describeValidation(data: dict) -> str:
    if data.get("baseline"):
        return _("before fine-tuning (the initial model): validation mean Dice {dice:.4f}").format(
            dice=float(data.get("mean_dice") or float("nan")))
    return _("validation at iteration {iteration}: mean Dice {dice:.4f} (best {best:.4f} at {best_it})").format(
        iteration=data.get("iteration"), dice=float(data.get("mean_dice") or float("nan")),
        best=float(data.get("best_mean_dice") or float("nan")), best_it=data.get("best_iteration"))


def _describeStart(data: dict) -> str:
    return _("training {framework} on {device}: iterations {start}..{end}, {labeled} labeled, {unlabeled} "
             "unlabeled, {val} validation case(s)").format(
        framework=data.get("framework"), device=data.get("device"), start=data.get("iteration"),
        end=data.get("iterations"), labeled=data.get("labeled"), unlabeled=data.get("unlabeled"),
        val=data.get("validation"))


def _eventDescribers() -> dict:
    """``scdl.events.EventKind`` -> the function that turns that kind's line object into a log line."""
    from scdl.events import EventKind

    return {
        EventKind.PLAN: lambda data: str(data.get("text") or ""),
        EventKind.ANNOTATION: lambda data: "\n".join(f"{c.get('case')}: " + tables.case_annotation_text(c)
                                                     for c in data.get("cases") or []),
        EventKind.VALIDATION: _describeValidation,
        EventKind.CHECKPOINT: lambda data: _("checkpoint at iteration {iteration}").format(
            iteration=data.get("iteration")),
        EventKind.MODEL: lambda data: _("model package written: {path}").format(path=data.get("path")),
        EventKind.START: _describeStart,
        EventKind.INIT: lambda data: _("initialised from {model}: {n} classes kept, new: {new}").format(
            model=data.get("init"), n=len(data.get("matched") or []), new=", ".join(data.get("new") or []) or "-"),
    }
