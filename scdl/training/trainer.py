"""The training loop: one loop for every framework (the framework is a flag of the training step).

:class:`Trainer` runs a whole ``scdl train`` in three stages.

Set-up: resolve the classes and the preprocessing (from ``--init``'s card when given), check the cohort and
preprocess it into the cache, build the step (supervised / CPS / CPS+SCDL), SGD with the poly schedule.
The loop (:meth:`Trainer.run`, the shape of nnU-Net's ``run_training``): start, then per iteration the step
(next batch from the loader workers, forward + backward, AMP on CUDA, optimiser and schedule step), the
meter (``scdl.training.meter``: a ``log.csv`` row and an ``iteration`` event every ``log_every``), the
validator when due (``scdl.training.validator``: Dice per class every ``validation.every``, the best networks
in ``best.pt``), the checkpoints when due (``scdl.training.checkpointer``: every ``checkpoint_every`` and at
the end, for an exact resume) and a stop request (SIGINT/SIGTERM); then finish: the last checkpoint and the
model package in ``RUN_DIR/model`` (``scdl.training.packaging``, from the frozen ``scdl.training.record``).

Run folder: ``config.json`` (resolved settings), ``labels.csv`` (the classes), ``cohort_report.json``,
``checkpoint.pt``, ``best.pt``, ``log.csv``, ``validation.csv``, ``curves.png``, ``model/``; the names and
the "can it be resumed" test are ``scdl.training.runfolder``'s.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import torch

from scdl.errors import Cancelled, ScdlError
from scdl.events import AnnotationEvent, InitEvent, ReplicasEvent, StartEvent
from scdl.progress import ProgressReporter, SilentProgress
from scdl.training import runfolder
from scdl.training.averaging import WeightAverage
from scdl.training.checkpointer import Checkpointer, Learners
from scdl.training.cohort import Cohort
from scdl.training.config import save_config
from scdl.training.distributed import DistEnv
from scdl.training.meter import Meter
from scdl.training.optim import make_optimizer
from scdl.training.problems import CohortReport
from scdl.training.record import RunRecord
from scdl.training.runfolder import RunFolder, load_run_config  # noqa: F401 - load_run_config: its old place
from scdl.training.runlog import RunLog
from scdl.training.settings import TrainConfig, as_train_config
from scdl.training.validator import Validator

if TYPE_CHECKING:
    from scdl.labels.table import LabelTable
    from scdl.training.finetune import InitModel

# the old names of the run folder's files (scdl.training.runfolder owns them)
CONFIG_NAME = runfolder.CONFIG
LABELS_NAME = runfolder.LABELS
REPORT_NAME = runfolder.COHORT_REPORT
MODEL_DIR = runfolder.MODEL


@dataclass
class TrainResult:
    """What a call of :func:`train` ended with."""

    run_dir: Path
    iteration: int
    stopped: bool                       # True: stopped early (signal or ``stop_at``), checkpoint saved
    model_dir: Optional[Path] = None    # the package (None when stopped early)
    best: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    report: Optional[CohortReport] = None


def _preprocessing_block(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The card's preprocessing section for this run (training patch = sliding window)."""
    from scdl.processing.config import PreprocessConfig

    config = as_train_config(config)
    block = config.to_dict()["preprocessing"]
    block["patch_size"] = list(config.patch)
    try:
        return PreprocessConfig.from_card(block).to_card()
    except ValueError as err:
        raise ScdlError(f"setting {err}", fix="correct the preprocessing settings (docs/training.md).") from None


class Trainer:
    """One training run in ``run_dir`` (see module docstring).

    Three stages, each in its own section below: **set-up** (:meth:`setup`: device, process group, classes and
    the init model; :meth:`prepare`: cohort checked and preprocessed into the cache, run folder started;
    :meth:`_build`: networks, optimiser, schedule), **the loop** (:meth:`run`: start, then per iteration the
    step, the meter, the validator and the checkpoints when due, a stop request) and **the end**
    (:meth:`_finish`: the last checkpoint, the model package from :meth:`record`). Every attribute exists from
    construction on; the stage that fills it is named beside it.
    """

    def __init__(self, config: TrainConfig | dict[str, Any], cohort: Cohort, run_dir: os.PathLike | str, *,
                 device: str = "auto", init: Optional[str] = None, progress: Optional[ProgressReporter] = None,
                 resume: bool = False):
        # the inputs (a settings tree is converted once: scdl.training.settings)
        self.config: TrainConfig = as_train_config(config)
        self.cohort = cohort
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)                # the names of its files
        self.device_request = device
        self.init_ref = init
        self.progress = progress if progress is not None else SilentProgress()
        self.resume = resume
        # set-up: setup()
        self.device: Optional[torch.device] = None
        self.dist: Optional[DistEnv] = None
        self.init: Optional[InitModel] = None                # the --init model (None without)
        self.target: Optional[LabelTable] = None             # the classes the model learns
        # set-up: prepare()
        self.preprocessing: dict[str, Any] = {}              # the card's preprocessing section
        self.cache: Any = None                               # scdl.training.cache.PreprocessCache
        self.report: Optional[CohortReport] = None
        self.prepared: dict[int, Any] = {}                   # manifest row -> scdl.training.cache.CachedCase
        self.is_prepared = False
        # set-up: _cases()
        self.labeled_masks: list = []                        # annotated classes per labeled case (bool (C,))
        self.val_masks: Optional[list] = None                # the same per validation case
        self.case_names: list[str] = []
        self.partial = False                                 # some labeled case annotates only some classes
        # set-up: _build()
        self.arch: dict[str, Any] = {}
        self.init_report: Optional[dict[str, Any]] = None    # what initialise_from loaded (with --init)
        self.step: Any = None                                # scdl.training.step.TrainingStep
        self.model: Optional[torch.nn.Module] = None         # the step, DDP-wrapped in distributed runs
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Any = None
        self.use_amp = False
        self.cpu_bfloat16 = False
        self.scaler: Optional[torch.amp.GradScaler] = None
        # the loop: run() -> _start()
        self.log: Optional[RunLog] = None                    # log.csv and validation.csv
        self.meter: Optional[Meter] = None                   # the logging window, the clock, the display
        self.validator: Optional[Validator] = None           # validation when due, the best networks
        self.checkpoints: Optional[Checkpointer] = None      # checkpoint.pt: periodic save, restore
        self.average: Optional[WeightAverage] = None         # averaging.enabled: the running mean of the weights
        self.init_networks: list = []                        # --init: its weights in this run's layout (CPU)
        self.init_head_rows: list[int] = []                  # --init: output channels the init model has
        self.interpolated: Optional[list] = None             # finetune.interpolate < 1 without validation
        self._lock: Any = None                               # runfolder.RunLock while this run writes the folder

    @property
    def best(self) -> dict[str, Any]:
        """The best validation so far (``iteration``, ``mean_dice``, ``dice``); empty before the first."""
        return dict(self.validator.best) if self.validator is not None else {}

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Device and process group, then the classes and the init model (once; :meth:`prepare` calls it)."""
        if self.dist is None:
            self._setup_device()
            self._setup_labels_and_init()

    def _setup_device(self) -> None:
        from scdl.inference.device import resolve_device
        from scdl.training.distributed import env_from_torchrun, init_distributed

        device = resolve_device(self.device_request, warn=self.progress.warning)
        _rank, world, local = env_from_torchrun()
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        self.device = device
        self.dist = init_distributed(device.type)
        if not self.dist.is_main:
            self.progress = SilentProgress(self.progress)     # rank 0 reports for everyone

    def _setup_labels_and_init(self) -> None:
        from scdl.labels.table import LabelTable

        labels_file = self.folder.labels
        if self.resume:
            self.target = LabelTable.load(labels_file)
            return
        if self.init_ref:
            from scdl.training.finetune import load_init_model

            from scdl.training.finetune import adjust_to_init

            self.init = load_init_model(self.init_ref)
            resolved = dict(self.config.init or {})
            self.config = adjust_to_init(self.config, self.init)
            if "inherit" in resolved:            # resolve_config(..., init=...) applied the recipe: say what
                from scdl.training.finetune import inherited_line

                self.progress.message(inherited_line(self.config.init))
            else:
                self.progress.message("fine-tuning without the init model's training recipe (the settings were "
                                      "resolved without it: resolve_config(..., init=MODEL) inherits it).")
        if self.config.patch_size == "init":
            raise ScdlError("patch_size 'init' needs --init MODEL.", fix="give --set patch_size=[x,y,z] or --init MODEL.")
        labels = self.config.labels
        if labels in (None, "", "init"):
            if self.init is None:
                raise ScdlError("labels 'init' needs --init MODEL.", fix="give --labels TABLE or --init MODEL.")
            self.target = self.init.labels
        else:
            self.target = LabelTable.load(labels)

    def prepare(self, check_only: bool = False) -> CohortReport:
        """Check the cohort (and, unless ``check_only``, preprocess it into the cache). Raises on errors."""
        from scdl.training.cache import CachedCase, PreprocessCache
        from scdl.training.checks import check_cohort
        from scdl.training.distributed import barrier, broadcast_object
        from scdl.training.hashing import HashIndex

        self.setup()
        if not check_only and self.dist.is_main:
            from scdl.io.atomic import probe_writable

            probe_writable(self.run_dir, create=False)     # before the cohort is read and preprocessed
            if not self.resume:
                self.folder.check_new_run()                # a user's folder or a run: refused before the work
        self.preprocessing = _preprocessing_block(self.config)
        data = self.config.data
        cache = PreprocessCache(data.cache_dir, self.preprocessing, self.target,
                                self.config.sampling.max_locations_per_class)
        self.cache = cache
        assert self.dist is not None and self.target is not None
        payload = None
        if self.dist.is_main:
            report, prepared = check_cohort(
                self.cohort, self.target, framework=self.config.framework.value,
                labeled_batch=self.config.labeled_batch, unlabeled_batch=self.config.unlabeled_batch,
                cache=cache, prepare=not check_only, resample_labels=data.resample_labels,
                hash_index=HashIndex(cache.root / "hashes.json"), progress=self.progress,
                init_classes=self._init_classes())
            payload = (report, {row: str(c.folder) for row, c in prepared.items()})
        barrier(self.dist)
        report, folders = broadcast_object(self.dist, payload)
        self.report = report
        self.prepared = {row: CachedCase(folder) for row, folder in folders.items()}
        if check_only:
            return report
        for problem in report.warnings:
            self.progress.warning(problem.line()[len("warning: "):])
        report.raise_if_errors(self.cohort.source)        # nothing is written into RUN_DIR before this
        if self.dist.is_main:
            from scdl.io.atomic import atomic_write_text

            self._take_lock()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                atomic_write_text(self.folder.labels, self.target.to_csv_text())
            atomic_write_text(self.folder.cohort_report, json.dumps(
                {"problems": [p.to_dict() for p in report.problems], "validation_source": report.validation_source,
                 "cases": report.cases, "summary": self.cohort.summary()}, indent=1, default=str))
        self.is_prepared = True
        return report

    def _take_lock(self) -> None:
        """One run at a time writes the folder (``runfolder.RunLock``, released by :meth:`release`); under the
        lock a new run checks again that the folder holds neither a run nor a user's files."""
        if self._lock is not None and self._lock.held:
            return
        marked = self.folder.lock_file.exists()          # a run of SCDL started here before (this one's lock aside)
        self._lock = self.folder.lock()
        try:
            if not self.resume:
                self.folder.check_new_run(marked=marked)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Release the run folder's lock (the end of :meth:`run` does; also when the process ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _init_classes(self) -> Optional[set[int]]:
        """Model classes the initial model segments (matched by name), None without --init.

        A resumed fine-tune does not load the initial model again: its checkpoint's networks carry every class of
        the run (the first start's cohort check refused a class that neither a case nor the initial model
        brought), so all of them count as kept."""
        if self.init is None:
            if self.resume and self.config.init and self.target is not None:
                return {int(e.value) for e in self.target.entries if int(e.value) != 0}
            return None
        from scdl.labels.mapping import match_tables

        return {int(v) for v in match_tables(self.init.labels, self.target).value_map.values() if int(v) != 0}

    def _annotation_masks(self, cases: list) -> list:
        """bool (C,) per labeled case (scdl.training.annotation), from the cohort report."""
        from scdl.training.annotation import annotation_mask

        facts = {c["row"]: c for c in (self.report.cases if self.report else [])}
        n = int(self.target.num_classes)
        every = [int(e.value) for e in self.target.entries]
        return [annotation_mask(facts.get(c.row, {}).get("annotated", every), n) for c in cases]

    def _cases(self) -> tuple[list, list, list]:
        pick = lambda cases: [self.prepared[c.row] for c in cases if c.row in self.prepared]  # noqa: E731
        labeled, unlabeled, val = pick(self.cohort.labeled_train), pick(self.cohort.unlabeled_train), pick(self.cohort.val)
        rows = [c for c in self.cohort.labeled_train if c.row in self.prepared]
        self.labeled_masks = self._annotation_masks(rows)
        val_rows = [c for c in self.cohort.val if c.row in self.prepared]
        self.val_masks = self._annotation_masks(val_rows)
        if not val:
            val = list(labeled)
            self.val_masks = list(self.labeled_masks)
        self.case_names = [c.name for c in rows]
        return labeled, unlabeled, val

    def _build(self) -> None:
        from scdl.training.distributed import use_sync_batchnorm
        from scdl.training.rng import seed_everything
        from scdl.training.step import TrainingStep

        cfg = self.config
        seed_everything(cfg.seed)
        net = cfg.network
        self.arch = {"name": "vnet", "in_channels": net.in_channels, "n_classes": int(self.target.num_classes),
                     "n_filters": net.n_filters, "norm": net.norm}
        step = TrainingStep.build(self.arch, framework=cfg.framework.value, step=dict(cfg.step), scdl=dict(cfg.scdl))
        self.init_report = None
        if self.init is not None:
            from scdl.training.finetune import initialise_from

            self.init_report = initialise_from(self.init, list(step.networks), self.target)
            if self.init_report["networks_fresh"]:
                self.progress.warning(f"the init model has {self.init_report['networks_loaded']} network(s); "
                                      f"{self.init_report['networks_fresh']} more start from a fresh initialisation.")
            self.progress.emit(InitEvent(**self.init_report))
            # what finetune.interpolate mixes the fine-tuned weights with: the init weights in this run's layout
            from scdl.training.finetune import class_correspondence

            loaded = int(self.init_report["networks_loaded"])
            self.init_networks = step.network_state_dicts()[:loaded]
            self.init_head_rows = sorted(int(v) for v in class_correspondence(self.init.labels, self.target))
            alpha = float(cfg.finetune.interpolate)
            if alpha < 1.0:
                self.progress.message(f"at the end the package holds {1 - alpha:g} x the initial model + {alpha:g} x "
                                      "the fine-tuned weights (finetune.interpolate, WiSE-FT: keeps more of what the "
                                      "cases do not draw; --set finetune.interpolate=1 for the fine-tuned weights alone)")
        self._add_keep_term(step)
        # the resolved step settings (every key, paper defaults included) go into config.json
        from dataclasses import asdict

        self.config = cfg = cfg.replace(step=step.config.to_dict(), scdl=asdict(step.scdl_config))
        step.to(self.device)
        if use_sync_batchnorm(cfg.distributed.sync_batchnorm, self.dist, self.device):
            step = torch.nn.SyncBatchNorm.convert_sync_batchnorm(step)
        self.step = step
        self.model: torch.nn.Module = step
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            unused = cfg.distributed.find_unused_parameters
            if unused == "auto":      # SCDL ablations leave parts of the head without gradient
                c = step.scdl_config
                unused = step.scdl is not None and not (c.use_cdba and c.use_sac and c.use_kl)
            self.model = DDP(step, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=bool(unused))
        self.optimizer = make_optimizer(list(step.trainable_parameters()), cfg.optimizer.to_dict())
        from scdl.training.schedule import poly_scheduler

        self.scheduler = poly_scheduler(self.optimizer, cfg.iterations, cfg.optimizer.poly_power)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        # CPU: bfloat16 autocast needs no gradient scaler (same exponent range as float32)
        self.cpu_bfloat16 = cfg.cpu_bfloat16 and self.device.type == "cpu"
        if self.cpu_bfloat16:
            from scdl.training.precision import cpu_bfloat16_supported

            if not cpu_bfloat16_supported():         # measured 17x slower without bfloat16 kernels
                self.cpu_bfloat16 = False
                self.progress.warning("cpu_bfloat16: this CPU has no bfloat16 kernels (oneDNN: AVX-512 or newer), "
                                      "where bfloat16 is many times slower than float32; training in float32.")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def annotation_summary(self) -> list[dict[str, Any]]:
        """Per labeled training case (after :meth:`prepare`): the classes it annotates, those the initial model
        keeps (not annotated, known to the init model: taught by it when keep-what-you-know is on) and those
        that are unknown and not kept; ``text`` is one line for the terminal."""
        if self.report is None or self.target is None:
            return []
        names = {int(e.value): e.name for e in self.target.entries if int(e.value) != 0}
        init = self._init_classes() or set()
        keep_on = self.init is not None and self.config.finetune.keep_weight > 0
        rows = list(self.cohort.labeled_train)
        out = []
        for case, mask in zip(rows, self._annotation_masks(rows)):
            annotated = [names[v] for v in sorted(names) if mask[v]]
            if len(annotated) == len(names):
                continue                                     # every class drawn: nothing to say
            kept = [names[v] for v in sorted(names) if not mask[v] and v in init]
            unknown = [names[v] for v in sorted(names) if not mask[v] and v not in init]
            how = "taught by the initial model (keep what you know)" if keep_on else "kept from the initial model"
            text = f"{case.name}: annotated {', '.join(annotated) or 'nothing'}"
            if kept:
                text += f"; {how}: {', '.join(kept)}"
            if unknown:
                text += f"; unknown (not learned from this case): {', '.join(unknown)}"
            out.append({"case": case.name, "annotated": annotated, "kept": kept, "unknown": unknown,
                        "keep": bool(keep_on and kept), "text": text})
        return out

    def plan(self, preset_note: str = "") -> dict[str, Any]:
        """What the run will do, after :meth:`prepare`: preset, framework, iterations, patch, batch, device,
        the time and memory estimate (``scdl.training.estimate``, the panel's too) and ``text``, one line."""
        from scdl.training.annotation import is_partial_cohort
        from scdl.training.estimate import estimate_run, plan_line

        cfg = self.config
        teachers = 0
        if (self.init is not None and cfg.finetune.keep_weight > 0
                and is_partial_cohort(self._annotation_masks(list(self.cohort.labeled_train)))):
            teachers = len(self.init.state_dicts)
        device = str(self.device) if self.device is not None else str(self.device_request)
        tree = cfg.to_dict()            # scdl.training.estimate reads the settings tree (the panel's too)
        run = estimate_run(tree, device, teachers)
        return {"preset": cfg.preset, "preset_note": preset_note, "framework": cfg.framework.value,
                "iterations": cfg.iterations, "patch_size": list(cfg.patch),
                "labeled_batch": cfg.labeled_batch, "unlabeled_batch": cfg.unlabeled_batch,
                "accumulate": cfg.accumulate, "device": device, "keep_teachers": teachers,
                "seconds_per_iteration": run.seconds_per_iteration, "total_seconds": run.total_seconds,
                "peak_memory_mib": run.peak_memory_mib, "extrapolated": run.extrapolated,
                "text": plan_line(tree, device, preset_note, teachers)}

    def keeps_init_knowledge(self) -> bool:
        """The "keep what you know" distillation is on: --init (also when resumed), a partially annotated
        cohort and ``finetune.keep_weight`` > 0 (a run configured before the setting existed: off)."""
        return bool(self.config.init) and self.partial and self.config.finetune.keep_weight > 0

    def _add_keep_term(self, step: Any) -> None:
        """Plug ``scdl.training.keep.KeepKnowledge`` into the step (see :meth:`keeps_init_knowledge`): the init
        model's networks, frozen; on resume their weights come from the checkpoint."""
        if not self.keeps_init_knowledge():
            return
        import numpy as np

        from scdl.networks.vnet import build_network
        from scdl.training.keep import KeepKnowledge

        count = len(self.init.state_dicts) if self.init is not None else int(self.config.init.get("networks", 2))
        teachers = [build_network(self.arch) for _ in range(count)]
        if self.init is not None:
            from scdl.training.finetune import adapt_state_dict, class_correspondence

            pairs = class_correspondence(self.init.labels, self.target)
            for net, state in zip(teachers, self.init.state_dicts):
                net.load_state_dict(adapt_state_dict(state, net.state_dict(), pairs), strict=True)
        taught = np.logical_or.reduce(np.stack(self.labeled_masks), axis=0)
        ft = self.config.finetune
        step.add_term(KeepKnowledge(teachers, taught, ft.keep_weight, ft.keep_temperature))
        names = {int(e.value): e.name for e in self.target.entries}
        kept = [names[v] for v in sorted(names) if v and not taught[v]]
        self.progress.message(f"keep what you know: the initial model ({count} network(s), frozen) teaches the "
                              f"classes a case does not annotate (finetune.keep_weight {ft.keep_weight}, "
                              f"temperature {ft.keep_temperature}; on unlabeled cases: "
                              f"{', '.join(kept) or 'none'}).")

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop_at: Optional[int] = None) -> TrainResult:
        """Train until the configured iteration count (or ``stop_at``, or a stop request): start, then per
        iteration the step, the meter, the validator and the checkpoints when due, then finish."""
        if not self.is_prepared:
            self.prepare()
        with self._running():
            start, end, batches = self._start(stop_at)
            iteration, stopped = start, False
            try:
                while iteration < end:
                    terms, lr, wait = self._train_step(batches, iteration)
                    iteration += 1
                    self.meter.update(iteration, terms, lr, wait)
                    if self.validator.due(iteration):
                        self.validator.validate(iteration)
                    if self.average is not None and self.average.due(iteration):
                        self.average.add(iteration, self.step.network_state_dicts())
                    if self.checkpoints.due(iteration, end):
                        self.checkpoints.save(iteration, self.meter.elapsed())
                    self.meter.tick(iteration)
                    if self._stop_requested():
                        stopped = True
                        break
            except Cancelled:
                stopped = True
            finally:
                self.meter.close()
                del batches
            return self._finish(iteration, stopped, self.meter.elapsed())

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Around the loop: the configured CPU threads, no partial files of a killed write, the folder's lock
        released at the end."""
        from scdl.io.atomic import remove_stale_partials

        threads = torch.get_num_threads()
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        if self.dist.is_main:
            for path in remove_stale_partials(self.run_dir):      # left by a killed checkpoint write
                self.progress.message(f"removed the unfinished temporary file {path.name} of an earlier run")
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            if self.dist.is_main:
                remove_stale_partials(self.run_dir)
            self.release()

    def _start(self, stop_at: Optional[int]) -> tuple[int, int, Iterator[dict[str, Any]]]:
        """Networks built; the meter, the validator and the checkpoints made; the checkpoint restored (resume)
        or the config saved; the batches of the loader workers; the ``start`` event; with ``--init`` the
        baseline validation -> (first iteration, last iteration, batches)."""
        from scdl.training.data import StepBatches, make_loader

        cfg = self.config
        labeled, unlabeled, val_cases = self._cases()
        self._announce_partial_labels()              # before the step is built: it decides the keep term
        self._build()
        total = cfg.iterations
        end = total if stop_at is None else min(int(stop_at), total)
        patch = tuple(reversed(cfg.patch))      # (x, y, z) -> (D, H, W)
        class_names = [e.name for e in sorted(self.target.entries, key=lambda e: e.value) if int(e.value) != 0]
        self.log = RunLog(self.run_dir, class_names)
        self.meter = Meter(log=self.log, progress=self.progress, dist=self.dist, device=self.device, total=total,
                           log_every=cfg.log_every)
        v = cfg.validation
        source = self.report.validation_source if self.report else "val"
        self.validator = Validator(step=self.step, cases=val_cases, masks=self.val_masks, patch=patch,
                                   target=self.target, every=v.every, total=total, overlap=v.overlap,
                                   sw_batch_size=v.sw_batch_size, mode=v.mode, amp=self.use_amp,
                                   bn_adapt=v.bn_adapt,
                                   window=tuple(reversed(v.window_size)) if v.window_size else None,
                                   device=self.device, dist=self.dist, progress=self.progress, log=self.log,
                                   folder=self.folder, source=source, echo=self.meter.echo)
        self.average = (WeightAverage(start=cfg.averaging.start, every=cfg.checkpoint_every, total=total)
                        if cfg.averaging.enabled else None)
        self.checkpoints = Checkpointer(
            folder=self.folder, learners=Learners(self.step, self.optimizer, self.scheduler, self.scaler),
            average=self.average,
            validator=self.validator, log=self.log, dist=self.dist, progress=self.progress,
            every=cfg.checkpoint_every, iterations=total, framework=cfg.framework.value,
            settings=self.config.to_dict, save_settings=lambda: save_config(self.config.to_dict(), self.folder.config))
        start = 0
        if self.resume:
            start, self.meter.elapsed0 = self.checkpoints.restore()
            self.log.resume(start)
            self.progress.message(f"resuming {self.run_dir} at iteration {start} of {cfg.iterations}")
        elif self.dist.is_main:
            save_config(cfg.to_dict(), self.folder.config)
        pad_value = float(self.preprocessing.get("padding", {}).get("value", 0.0))
        tree = cfg.to_dict()            # the data workers take the augment and synth groups as plain dicts
        dataset = StepBatches(labeled, unlabeled, patch, cfg.labeled_batch, cfg.unlabeled_per_step,
                              cfg.sampling.class_prob, tree["augment"], cfg.seed,
                              rank=self.dist.rank, world_size=self.dist.world_size, pad_value=pad_value,
                              accumulate=cfg.accumulate, synth=tree["synth"],
                              annotated=self.labeled_masks if self.partial else None,
                              small_classes=self._class_values(cfg.sampling.small_classes),
                              small_prob=cfg.sampling.small_prob, zoom_prob=cfg.sampling.zoom_prob,
                              zoom_range=cfg.sampling.zoom_range)
        loader = make_loader(dataset, start, cfg.data.num_workers, cfg.data.prefetch_factor,
                             pin_memory=self.device.type == "cuda", seed=cfg.seed)
        self.progress.emit(StartEvent(iteration=start, iterations=total, framework=cfg.framework.value,
                                      device=str(self.device), world_size=self.dist.world_size,
                                      run_dir=str(self.run_dir), labeled=len(labeled), unlabeled=len(unlabeled),
                                      validation=len(val_cases), validation_source=source))
        if self.validator.baseline_due(start, self.init is not None):
            self.validator.validate(0, baseline=True)       # the init model: "before" per organ
        self.meter.open(start, end)
        return start, end, iter(loader)

    def _stop_requested(self) -> bool:
        """A stop signal (SIGINT/SIGTERM, a cancel) reached any process."""
        from scdl.training.distributed import any_across

        return any_across(self.dist, bool(self.progress.cancelled), self.device)

    def _announce_partial_labels(self) -> None:
        """Partially annotated cohort: an ``annotation`` event and one line per partially annotated case."""
        from scdl.training.annotation import is_partial_cohort

        self.partial = is_partial_cohort(self.labeled_masks)
        if not self.partial:
            return
        names = {int(e.value): e.name for e in self.target.entries}
        cases = [{"case": name, "annotated": [names[int(v)] for v in m.nonzero()[0] if int(v) != 0]}
                 for name, m in zip(self.case_names, self.labeled_masks)]
        self.progress.emit(AnnotationEvent(partial=True, cases=cases))
        for c in cases:
            if len(c["annotated"]) < len(names) - 1:
                self.progress.message(f"{c['case']}: annotated {', '.join(c['annotated'])}; the other classes "
                                      "are unknown there (partial-label losses), not background")

    def _train_step(self, batches: Iterator[dict[str, Any]], iteration: int) -> tuple[dict[str, float], float, float]:
        """One optimiser step over ``accumulate`` micro-batches -> (mean loss terms, lr used, data wait in s).
        Raises :class:`Cancelled` when a stop request broke it (Ctrl-C also reaches the loader workers)."""
        try:
            return self._optimiser_step(batches, iteration)
        except Cancelled:
            raise
        except Exception:
            if self.progress.cancelled:      # Ctrl-C also reaches the loader workers: stop cleanly
                raise Cancelled() from None
            raise

    def _optimiser_step(self, batches: Iterator[dict[str, Any]], iteration: int) -> tuple[dict[str, float], float, float]:
        total = self.config.iterations
        dev = self.device
        acc = self.config.accumulate
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.model.train()
        self._freeze_norm_stats()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        wait = 0.0
        for micro in range(acc):
            t0 = time.monotonic()
            batch = next(batches)
            wait += time.monotonic() - t0
            if (int(batch["step"]), int(batch.get("micro", 0))) != (iteration, micro):
                raise RuntimeError(f"data stream out of step: got {batch['step']}/{batch.get('micro')}, "
                                   f"expected {iteration}/{micro}")
            lx = batch["labeled_image"].to(dev, non_blocking=True)
            ly = batch["labeled_label"].to(dev, non_blocking=True)
            ux = batch["unlabeled_image"].to(dev, non_blocking=True)
            ann = batch.get("labeled_annotated")
            ann = None if ann is None else ann.to(dev, non_blocking=True)
            # DDP: all-reduce the gradients only after the last micro-batch
            sync = self.dist.enabled and micro < acc - 1
            with (self.model.no_sync() if sync else contextlib.nullcontext()):
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16 if self.cpu_bfloat16 else torch.float16,
                                    enabled=self.use_amp or self.cpu_bfloat16):
                    terms = self.model(lx, ly, ux if ux.shape[0] else None, progress=iteration / total,
                                       annotated=ann)
                self.scaler.scale(terms["total"] / acc).backward()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach().float().item()) / acc
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if not math.isfinite(sums["total"]):
            raise ScdlError(f"the loss became {sums['total']} (diverged).", self.run_dir,
                            "lower the learning rate (--set optimizer.lr=0.005) or check the labels; "
                            "resume from the last checkpoint with --resume.")
        return sums, lr, wait

    def _freeze_norm_stats(self) -> None:
        """``finetune.norm_stats`` "frozen": batch-norm layers normalise with their running statistics and do not
        update them; their weight and bias still learn. "update" (default): normal training."""
        if self.config.finetune.norm_stats == "frozen":
            for module in self.step.networks.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _class_values(self, names_or_values: Any) -> list[int]:
        """Class values of the model's table for a list of names (any spelling) or values; unknown -> ScdlError."""
        from scdl.labels.names import normalize_name

        by_name = {normalize_name(e.name): int(e.value) for e in self.target.entries if int(e.value) != 0}
        values = []
        for item in names_or_values or []:
            if isinstance(item, int) and not isinstance(item, bool):
                values.append(int(item))
            elif normalize_name(str(item)) in by_name:
                values.append(by_name[normalize_name(str(item))])
            else:
                raise ScdlError(f"sampling.small_classes: {item!r} is not a class of the label table.",
                                fix=f"use names of the model's classes: {', '.join(sorted(by_name))}.")
        return values

    # -- the end -----------------------------------------------------------------------------------
    def _finish(self, iteration: int, stopped: bool, elapsed: float) -> TrainResult:
        """The last checkpoint, then (a finished run, rank 0) the model package."""
        from scdl.training.distributed import barrier
        from scdl.training.packaging import package_run

        total = self.config.iterations
        self._check_replicas(iteration)
        if iteration >= total:
            self._validate_average()
            self._interpolate_with_init()
        self.checkpoints.save(iteration, elapsed, curves=True)
        result = TrainResult(self.run_dir, iteration, stopped or iteration < total, best=dict(self.best),
                             elapsed_s=elapsed, report=self.report)
        if result.stopped:
            self.progress.message(f"stopped at iteration {iteration}; checkpoint saved. Resume with: "
                                  f"scdl train --resume {self.run_dir}")
            return result
        if self.dist.is_main:
            result.model_dir = package_run(self.record(iteration, elapsed), self.progress)
        barrier(self.dist)
        return result

    def _validate_average(self) -> None:
        """A finished run with ``averaging.enabled``: the mean of two or more checkpoints' weights validated like
        a checkpoint (the best when it beats the best checkpoint; scdl.training.averaging)."""
        average = self.average
        if average is None or average.count < 2 or self.validator.every < 0:
            return
        networks = average.networks(self.step.network_state_dicts())
        summary = average.summary()
        what = (f"the mean of the weights of {summary['count']} checkpoints (iterations {summary['first']}.."
                f"{summary['last']})")
        self.validator.validate_final(networks, what, {"iteration": int(summary["last"]), "averaged": summary},
                                      always=False)

    def _interpolate_with_init(self) -> None:
        """A finished ``--init`` run with ``finetune.interpolate`` a < 1: the networks it would package (the
        best, else the last or their mean) become (1 - a) x the init weights + a x themselves (WiSE-FT,
        scdl.training.averaging); validated when validation is on (always kept: the classes the cases do not
        draw are what it protects, and the validation cases may not draw them either)."""
        from scdl.training.averaging import interpolate_state_dicts
        from scdl.training.finetune import HEAD_KEYS

        alpha = float(self.config.finetune.interpolate)
        if self.init is None or alpha >= 1.0 or not self.init_networks:
            return
        if self.folder.best.is_file() and self.validator.best:
            from scdl.training import checkpoint as ckpt

            chosen = [dict(s) for s in ckpt.load_checkpoint(self.folder.best)["networks"]]
        else:
            chosen = self._last_networks()
        mixed = [interpolate_state_dicts(start, tuned, alpha, head_keys=HEAD_KEYS, head_rows=self.init_head_rows)
                 for start, tuned in zip(self.init_networks, chosen)]
        mixed += chosen[len(mixed):]                         # networks the init model did not have: as trained
        note = {"interpolated": {"alpha": alpha, "init": (self.config.init or {}).get("id")
                                 or (self.config.init or {}).get("model")}}
        if self.validator.every >= 0 and self.validator.cases:
            self.validator.validate_final(mixed, f"{1 - alpha:g} x the initial model + {alpha:g} x the fine-tuned "
                                          "weights (finetune.interpolate)", note, always=True)
        else:
            self.interpolated = mixed
            self.progress.message(f"packaging {1 - alpha:g} x the initial model + {alpha:g} x the fine-tuned weights "
                                  "(finetune.interpolate; 1 keeps the fine-tuned weights alone)")

    def _check_replicas(self, iteration: int) -> None:
        """Distributed runs: the parameters must be the same on every process (an event reports the largest
        gap). Batch-norm running statistics are not compared: without SyncBatchNorm each process keeps its own."""
        if not self.dist.enabled:
            return
        from scdl.training.distributed import gather_objects

        flat = torch.cat([p.detach().double().reshape(-1).cpu() for p in self.step.parameters()])
        everyone = gather_objects(self.dist, flat)
        spread = max(float((other - everyone[0]).abs().max()) for other in everyone)
        self.progress.emit(ReplicasEvent(iteration=int(iteration), world_size=self.dist.world_size,
                                         max_weight_difference=spread))
        if spread > 0:
            self.progress.warning(f"the {self.dist.world_size} processes ended with different weights "
                                  f"(largest difference {spread:.3g}); the model of process 0 is saved.")

    def _last_networks(self) -> list[dict[str, Any]]:
        """The networks a run without a best validation packages: the mean of the weights with
        ``averaging.enabled`` (two or more joined), else the last."""
        if self.interpolated is not None:
            return [dict(s) for s in self.interpolated]
        last = self.step.network_state_dicts()
        if self.average is not None and self.average.count >= 2:
            return self.average.networks(last)
        return last

    def record(self, iteration: int, elapsed: float) -> RunRecord:
        """The frozen record of the run at ``iteration`` (what packaging reads)."""
        report = self.report
        return RunRecord(run_dir=self.run_dir, model_dir=self.folder.model_dir, best_file=self.folder.best,
                         config=self.config.to_dict(), arch=dict(self.arch),
                         preprocessing=dict(self.preprocessing), labels=self.target, iteration=int(iteration),
                         elapsed_s=float(elapsed), last_networks=tuple(self._last_networks()),
                         cohort_source=self.cohort.source, summary=dict(self.cohort.summary()),
                         validation_source=report.validation_source if report is not None else None,
                         world_size=self.dist.world_size, best=dict(self.best),
                         baseline=dict(self.validator.baseline) if self.validator is not None else {},
                         averaged=(self.average.summary() if self.average is not None and self.average.count >= 2
                                   else None),
                         interpolated=(float(self.config.finetune.interpolate) if self.interpolated is not None
                                       else None))
