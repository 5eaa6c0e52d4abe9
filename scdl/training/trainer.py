"""The training loop: one loop for every framework (the framework is a flag of the training step).

:class:`Trainer` runs a whole ``scdl train`` in three stages.

Set-up: resolve the classes and the preprocessing (from ``--init``'s card when given), check the cohort and
preprocess it into the cache, build the step (supervised / CPS / CPS+SCDL), SGD with the poly schedule.
The loop: next batch from the loader workers, forward + backward (AMP on CUDA), optimiser and schedule step;
every ``log_every`` iterations a JSON ``iteration`` event (every loss term, lr, it/s, ETA, fraction of time
spent waiting for data) and a CSV row; every ``validation.every`` iterations sliding-window Dice per class on
the validation cases and the best networks kept in ``best.pt``; every ``checkpoint_every`` iterations (and
on SIGINT/SIGTERM) an atomic checkpoint for an exact resume. Packaging (``scdl.training.packaging``): a model
package in ``RUN_DIR/model`` built from the best validated networks.

Run folder: ``config.json`` (resolved settings), ``labels.csv`` (the classes), ``cohort_report.json``,
``checkpoint.pt``, ``best.pt``, ``log.csv``, ``validation.csv``, ``curves.png``, ``model/``; the names and
the "can it be resumed" test are ``scdl.training.runfolder``'s.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from scdl.errors import Cancelled, ScdlError
from scdl.progress import SilentProgress
from scdl.training import checkpoint as ckpt
from scdl.training import runfolder
from scdl.training.cohort import Cohort
from scdl.training.config import DEFAULTS, Framework, save_config, validate_config
from scdl.training.distributed import DistEnv
from scdl.training.optim import make_optimizer
from scdl.training.problems import CohortReport
from scdl.training.runfolder import RunFolder, load_run_config  # noqa: F401 - load_run_config: its old place
from scdl.training.runlog import RunLog

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


def _preprocessing_block(config: dict[str, Any]) -> dict[str, Any]:
    """The card's preprocessing section for this run (training patch = sliding window)."""
    from scdl.processing.config import PreprocessConfig

    block = dict(config["preprocessing"])
    block["patch_size"] = [int(p) for p in config["patch_size"]]
    try:
        return PreprocessConfig.from_card(block).to_card()
    except ValueError as err:
        raise ScdlError(f"setting {err}", fix="correct the preprocessing settings (docs/training.md).") from None


class Trainer:
    """One training run in ``run_dir`` (see module docstring).

    Three stages, each in its own section below: **set-up** (:meth:`setup`: device, process group, classes and
    the init model; :meth:`prepare`: cohort checked and preprocessed into the cache, run folder started;
    :meth:`_build`: networks, optimiser, schedule), **the loop** (:meth:`run`: restore or start, iterate,
    validate, checkpoint) and **packaging** (:func:`scdl.training.packaging.package_run`: the model package
    from the best validated networks). Every attribute exists from construction on; the stage that fills it
    is named beside it.
    """

    def __init__(self, config: dict[str, Any], cohort: Cohort, run_dir: os.PathLike | str, *, device: str = "auto",
                 init: Optional[str] = None, progress: Any = None, resume: bool = False):
        # the inputs
        self.config = config
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
        # the loop: run()
        self.best: dict[str, Any] = {}                       # the best validation so far
        self.baseline: dict[str, Any] = {}                   # --init: the init model's validation (iteration 0)
        self.last_checkpoint: Optional[int] = None            # iteration of the newest complete checkpoint.pt
        self.class_names: list[str] = []
        self.log: Optional[RunLog] = None
        self._tqdm: Any = None                               # the tqdm bar (tqdm mode, rank 0)
        self._lock: Any = None                               # runfolder.RunLock while this run writes the folder

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

            self.init = load_init_model(self.init_ref)
            arch = self.init.architecture
            self.config["network"].update(n_filters=int(arch["n_filters"]), norm=str(arch["norm"]),
                                          in_channels=int(arch["in_channels"]))
            pre = self.init.preprocessing
            init_patch = pre.pop("patch_size", None)
            if self.config.get("patch_size") == "init":
                # the patch the init model was trained with (and its card's sliding window): same BN regime,
                # same inference window; an explicit --set patch_size wins
                self.config["patch_size"] = [int(v) for v in (init_patch or DEFAULTS["patch_size"])]
            self.config["preprocessing"] = pre
            resolved = dict(self.config.get("init") or {})
            self.config["init"] = {**resolved, "model": self.init.source, "id": self.init.card.get("id"),
                                   "networks": len(self.init.state_dicts)}
            if "inherit" in resolved:            # resolve_config(..., init=...) applied the recipe: say what
                from scdl.training.finetune import inherited_line

                self.progress.message(inherited_line(self.config["init"]))
            else:
                self.progress.message("fine-tuning without the init model's training recipe (the settings were "
                                      "resolved without it: resolve_config(..., init=MODEL) inherits it).")
        if self.config.get("patch_size") == "init":
            raise ScdlError("patch_size 'init' needs --init MODEL.", fix="give --set patch_size=[x,y,z] or --init MODEL.")
        labels = self.config["labels"]
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
        validate_config(self.config)
        if not check_only and self.dist.is_main:
            from scdl.io.atomic import probe_writable

            probe_writable(self.run_dir, create=False)     # before the cohort is read and preprocessed
            if not self.resume:
                self.folder.check_new_run()                # a user's folder or a run: refused before the work
        self.preprocessing = _preprocessing_block(self.config)
        data = self.config["data"]
        cache = PreprocessCache(data.get("cache_dir"), self.preprocessing, self.target,
                                self.config["sampling"]["max_locations_per_class"])
        self.cache = cache
        assert self.dist is not None and self.target is not None
        payload = None
        if self.dist.is_main:
            report, prepared = check_cohort(
                self.cohort, self.target, framework=self.config["framework"],
                labeled_batch=self.config["labeled_batch"], unlabeled_batch=self.config["unlabeled_batch"],
                cache=cache, prepare=not check_only, resample_labels=bool(data.get("resample_labels")),
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
        """Model classes the initial model segments (matched by name), None without --init."""
        if self.init is None:
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
        seed_everything(int(cfg["seed"]))
        net = cfg["network"]
        self.arch = {"name": "vnet", "in_channels": int(net.get("in_channels", 1)), "n_classes": int(self.target.num_classes),
                     "n_filters": int(net["n_filters"]), "norm": str(net["norm"])}
        step = TrainingStep.build(self.arch, framework=cfg["framework"], step=cfg["step"], scdl=cfg["scdl"])
        self.init_report = None
        if self.init is not None:
            from scdl.training.finetune import initialise_from

            self.init_report = initialise_from(self.init, list(step.networks), self.target)
            if self.init_report["networks_fresh"]:
                self.progress.warning(f"the init model has {self.init_report['networks_loaded']} network(s); "
                                      f"{self.init_report['networks_fresh']} more start from a fresh initialisation.")
            self.progress.event("init", **self.init_report)
        self._add_keep_term(step)
        # the resolved step settings (every key, paper defaults included) go into config.json
        cfg["step"] = step.config.to_dict()
        from dataclasses import asdict

        cfg["scdl"] = asdict(step.scdl_config)
        step.to(self.device)
        if use_sync_batchnorm(cfg["distributed"]["sync_batchnorm"], self.dist, self.device):
            step = torch.nn.SyncBatchNorm.convert_sync_batchnorm(step)
        self.step = step
        self.model: torch.nn.Module = step
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            unused = cfg["distributed"].get("find_unused_parameters", "auto")
            if unused == "auto":      # SCDL ablations leave parts of the head without gradient
                c = step.scdl_config
                unused = step.scdl is not None and not (c.use_cdba and c.use_sac and c.use_kl)
            self.model = DDP(step, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=bool(unused))
        opt = cfg["optimizer"]
        self.optimizer = make_optimizer(list(step.trainable_parameters()), opt)
        from scdl.training.schedule import poly_scheduler

        self.scheduler = poly_scheduler(self.optimizer, int(cfg["iterations"]), float(opt["poly_power"]))
        self.use_amp = bool(cfg["amp"]) and self.device.type == "cuda"
        # CPU: bfloat16 autocast needs no gradient scaler (same exponent range as float32)
        self.cpu_bfloat16 = bool(cfg.get("cpu_bfloat16", False)) and self.device.type == "cpu"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def annotation_summary(self) -> list[dict[str, Any]]:
        """Per labeled training case (after :meth:`prepare`): the classes it annotates, those the initial model
        keeps (not annotated, known to the init model: taught by it when keep-what-you-know is on) and those
        that are unknown and not kept; ``text`` is one line for the terminal."""
        if self.report is None or self.target is None:
            return []
        names = {int(e.value): e.name for e in self.target.entries if int(e.value) != 0}
        init = self._init_classes() or set()
        keep_on = self.init is not None and float(self.config["finetune"].get("keep_weight", 0.0)) > 0
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
        if (self.init is not None and float(cfg["finetune"].get("keep_weight", 0.0)) > 0
                and is_partial_cohort(self._annotation_masks(list(self.cohort.labeled_train)))):
            teachers = len(self.init.state_dicts)
        device = str(self.device) if self.device is not None else str(self.device_request)
        run = estimate_run(cfg, device, teachers)
        return {"preset": cfg.get("preset"), "preset_note": preset_note, "framework": cfg["framework"],
                "iterations": int(cfg["iterations"]), "patch_size": [int(v) for v in cfg["patch_size"]],
                "labeled_batch": int(cfg["labeled_batch"]), "unlabeled_batch": int(cfg["unlabeled_batch"]),
                "accumulate": int(cfg.get("accumulate", 1)), "device": device, "keep_teachers": teachers,
                "seconds_per_iteration": run.seconds_per_iteration, "total_seconds": run.total_seconds,
                "peak_memory_mib": run.peak_memory_mib, "extrapolated": run.extrapolated,
                "text": plan_line(cfg, device, preset_note, teachers)}

    def keeps_init_knowledge(self) -> bool:
        """The "keep what you know" distillation is on: --init (also when resumed), a partially annotated
        cohort and ``finetune.keep_weight`` > 0 (a run configured before the setting existed: off)."""
        return bool(self.config.get("init")) and self.partial and float(
            (self.config.get("finetune") or {}).get("keep_weight", 0.0)) > 0

    def _add_keep_term(self, step: Any) -> None:
        """Plug ``scdl.training.keep.KeepKnowledge`` into the step (see :meth:`keeps_init_knowledge`): the init
        model's networks, frozen; on resume their weights come from the checkpoint."""
        if not self.keeps_init_knowledge():
            return
        import numpy as np

        from scdl.networks.vnet import build_network
        from scdl.training.keep import KeepKnowledge

        count = len(self.init.state_dicts) if self.init is not None else int(self.config["init"].get("networks", 2))
        teachers = [build_network(self.arch) for _ in range(count)]
        if self.init is not None:
            from scdl.training.finetune import adapt_state_dict, class_correspondence

            pairs = class_correspondence(self.init.labels, self.target)
            for net, state in zip(teachers, self.init.state_dicts):
                net.load_state_dict(adapt_state_dict(state, net.state_dict(), pairs), strict=True)
        taught = np.logical_or.reduce(np.stack(self.labeled_masks), axis=0)
        ft = self.config["finetune"]
        step.add_term(KeepKnowledge(teachers, taught, float(ft["keep_weight"]), float(ft.get("keep_temperature", 2.0))))
        names = {int(e.value): e.name for e in self.target.entries}
        kept = [names[v] for v in sorted(names) if v and not taught[v]]
        self.progress.message(f"keep what you know: the initial model ({count} network(s), frozen) teaches the "
                              f"classes a case does not annotate (finetune.keep_weight {ft['keep_weight']}, "
                              f"temperature {ft.get('keep_temperature', 2.0)}; on unlabeled cases: "
                              f"{', '.join(kept) or 'none'}).")

    def _checkpoint_state(self, iteration: int, elapsed: float) -> dict[str, Any]:
        from scdl.training.distributed import gather_objects
        from scdl.training.rng import capture_rng

        rngs = gather_objects(self.dist, capture_rng())
        return {"iteration": int(iteration), "iterations": int(self.config["iterations"]),
                "step": self.step.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs, "sampler": {"next_step": int(iteration)}, "best": dict(self.best),
                "baseline": dict(self.baseline),
                "elapsed_s": float(elapsed), "framework": self.config["framework"], "world_size": self.dist.world_size,
                "config": json.loads(json.dumps(self.config, default=str))}    # what --resume compares

    def _save_checkpoint(self, iteration: int, elapsed: float, curves: bool = False) -> None:
        state = self._checkpoint_state(iteration, elapsed)      # every rank takes part (RNG gather)
        if self.dist.is_main:
            try:
                # the log first: rows beyond the checkpoint are dropped at a resume, missing rows would stay missing
                self.log.flush(curves=curves)       # the PNG is redrawn at validations and at the end
                ckpt.save_checkpoint(self.folder.checkpoint, state)
            except ScdlError as err:                # e.g. a full disk: say what is kept and how to go on
                raise self._not_saved(err, iteration) from None
            self.last_checkpoint = int(iteration)
            self.progress.event("checkpoint", iteration=int(iteration), path=str(self.folder.checkpoint))

    def _not_saved(self, err: ScdlError, iteration: int) -> ScdlError:
        if self.last_checkpoint is None:
            kept, fix = "no checkpoint was saved yet", "free disk space (or choose another --out) and start again."
        else:
            kept = f"the checkpoint of iteration {self.last_checkpoint} ({self.folder.checkpoint.name}) is kept"
            fix = f"free disk space, then continue with `scdl train --resume {self.run_dir}`."
        return ScdlError(f"{err.message} Training stopped at iteration {iteration}; {kept}.", err.path, fix)

    def _restore(self) -> tuple[int, float]:
        from scdl.training.rng import restore_rng

        from scdl.training.resume import check_resume_settings

        state = ckpt.load_checkpoint(self.folder.checkpoint, map_location="cpu")       # verified first
        if state.get("framework") != self.config["framework"]:
            raise ScdlError(f"the checkpoint was trained with framework {state.get('framework')}, the config says "
                            f"{self.config['framework']}.", self.folder.checkpoint,
                            "resume without changing the framework.")
        for line in check_resume_settings(state.get("config"), self.config, self.folder.config, self.run_dir):
            self.progress.message(line)
        try:
            self.step.load_state_dict(state["step"])
        except RuntimeError as err:         # a checkpoint without its settings, and config.json edited since
            raise ScdlError(f"the checkpoint's networks do not fit the settings of {self.folder.config.name} "
                            f"({str(err).strip().splitlines()[0][:200]}).", self.folder.config,
                            "undo the edit of config.json (the network must stay as it was trained).") from None
        if self.dist.is_main:
            save_config(self.config, self.folder.config)    # what this run continues with (changes applied)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if int(state.get("iterations", self.config["iterations"])) != int(self.config["iterations"]):
            # a longer (or shorter) run: the poly schedule now ends at the new iteration count
            from scdl.training.schedule import set_total

            set_total(self.scheduler, int(self.config["iterations"]))
            self.progress.warning(f"the run now ends at {self.config['iterations']} iterations instead of "
                                  f"{state.get('iterations')}: the learning-rate schedule is stretched from here on "
                                  "(not identical to an uninterrupted run of that length).")
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            self.progress.warning(f"the checkpoint was written by {len(rngs)} process(es), this run has "
                                  f"{self.dist.world_size}: random states restart from process 0's.")
        restore_rng(rngs[self.dist.rank if self.dist.rank < len(rngs) else 0])
        self.best = dict(state.get("best") or {})
        self.baseline = dict(state.get("baseline") or {})
        self.last_checkpoint = int(state["iteration"])
        return int(state["iteration"]), float(state.get("elapsed_s", 0.0))

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop_at: Optional[int] = None) -> TrainResult:
        """Train until the configured iteration count (or ``stop_at``, or a stop signal)."""
        if not self.is_prepared:
            self.prepare()
        threads = torch.get_num_threads()
        if int(self.config.get("threads") or 0) > 0:
            torch.set_num_threads(int(self.config["threads"]))
        from scdl.io.atomic import remove_stale_partials

        if self.dist.is_main:
            for path in remove_stale_partials(self.run_dir):      # left by a killed checkpoint write
                self.progress.message(f"removed the unfinished temporary file {path.name} of an earlier run")
        try:
            return self._run(stop_at)
        finally:
            torch.set_num_threads(threads)
            if self.dist.is_main:
                remove_stale_partials(self.run_dir)
            self.release()

    def _run(self, stop_at: Optional[int]) -> TrainResult:
        start, elapsed0, loader, val_cases, patch = self._begin()
        total = int(self.config["iterations"])
        end = total if stop_at is None else min(int(stop_at), total)
        if start == 0 and self.init is not None and int(self.config["validation"]["every"]) >= 0:
            self._validate(0, val_cases, patch, baseline=True)       # the init model: "before" per organ
        iteration, stopped, elapsed = self._loop(loader, start, end, val_cases, patch, elapsed0)
        return self._finish(iteration, stopped, elapsed)

    def _begin(self) -> tuple[int, float, Any, list, tuple[int, int, int]]:
        """Networks built, the checkpoint restored (resume) or the config saved, the cases and the loader
        -> (first iteration, seconds already trained, loader, validation cases, patch (D, H, W))."""
        from scdl.training.data import StepBatches, make_loader

        cfg = self.config
        labeled, unlabeled, val_cases = self._cases()
        self._announce_partial_labels()              # before the step is built: it decides the keep term
        self._build()
        self.best, self.baseline = {}, {}
        self.class_names = [e.name for e in sorted(self.target.entries, key=lambda e: e.value) if int(e.value) != 0]
        self.log = RunLog(self.run_dir, self.class_names)
        start, elapsed0 = 0, 0.0
        if self.resume:
            start, elapsed0 = self._restore()
            self.log.resume(start)
            self.progress.message(f"resuming {self.run_dir} at iteration {start} of {cfg['iterations']}")
        elif self.dist.is_main:
            save_config(cfg, self.folder.config)
        total = int(cfg["iterations"])
        patch = tuple(reversed([int(p) for p in cfg["patch_size"]]))      # (x, y, z) -> (D, H, W)
        pad_value = float(self.preprocessing.get("padding", {}).get("value", 0.0))
        unlabeled_batch = int(cfg["unlabeled_batch"]) if Framework(cfg["framework"]).uses_unlabeled else 0
        dataset = StepBatches(labeled, unlabeled, patch, cfg["labeled_batch"], unlabeled_batch,
                              cfg["sampling"]["class_prob"], cfg["augment"], int(cfg["seed"]),
                              rank=self.dist.rank, world_size=self.dist.world_size, pad_value=pad_value,
                              accumulate=int(cfg["accumulate"]), synth=cfg.get("synth"),
                              annotated=self.labeled_masks if self.partial else None,
                              small_classes=self._class_values(cfg["sampling"].get("small_classes", [])),
                              small_prob=float(cfg["sampling"].get("small_prob", 0.0)))
        workers = int(cfg["data"]["num_workers"])
        loader = make_loader(dataset, start, workers, cfg["data"].get("prefetch_factor", 2),
                             pin_memory=self.device.type == "cuda", seed=int(cfg["seed"]))
        self.progress.event("start", iteration=start, iterations=total, framework=cfg["framework"],
                            device=str(self.device), world_size=self.dist.world_size, run_dir=str(self.run_dir),
                            labeled=len(labeled), unlabeled=len(unlabeled), validation=len(val_cases),
                            validation_source=self.report.validation_source if self.report else "val")
        return start, elapsed0, loader, val_cases, patch

    def _announce_partial_labels(self) -> None:
        """Partially annotated cohort: an ``annotation`` event and one line per partially annotated case."""
        from scdl.training.annotation import is_partial_cohort

        self.partial = is_partial_cohort(self.labeled_masks)
        if not self.partial:
            return
        names = {int(e.value): e.name for e in self.target.entries}
        cases = [{"case": name, "annotated": [names[int(v)] for v in m.nonzero()[0] if int(v) != 0]}
                 for name, m in zip(self.case_names, self.labeled_masks)]
        self.progress.event("annotation", partial=True, cases=cases)
        for c in cases:
            if len(c["annotated"]) < len(names) - 1:
                self.progress.message(f"{c['case']}: annotated {', '.join(c['annotated'])}; the other classes "
                                      "are unknown there (partial-label losses), not background")

    def _loop(self, loader: Any, start: int, end: int, val_cases: list, patch: tuple[int, int, int],
              elapsed0: float) -> tuple[int, bool, float]:
        """Iterations ``start`` .. ``end`` (logging, validation, checkpoints, stop requests)
        -> (iteration reached, stopped early by a signal, seconds trained in all)."""
        from scdl.training.distributed import any_across, mean_across

        cfg = self.config
        total = int(cfg["iterations"])
        batches = iter(loader)
        bar = self._bar(start, total)
        self._tqdm = bar
        iteration = start
        t_start = time.monotonic()
        window_t, window_wait, window_n = time.monotonic(), 0.0, 0
        sums: dict[str, float] = {}
        stopped = False
        try:
            while iteration < end:
                try:
                    terms, lr, wait = self._train_step(batches, iteration, total)
                except Exception:
                    if self.progress.cancelled:      # Ctrl-C also reaches the loader workers: stop cleanly
                        stopped = True
                        break
                    raise
                iteration += 1
                window_wait += wait
                window_n += 1
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                if iteration % cfg["log_every"] == 0 or iteration == end:
                    now = time.monotonic()
                    means = mean_across(self.dist, {k: v / window_n for k, v in sums.items()}, self.device)
                    it_s = window_n / max(now - window_t, 1e-9)
                    eta = (total - iteration) / it_s
                    elapsed = elapsed0 + now - t_start
                    row = {"iteration": iteration, "elapsed_s": round(elapsed, 3), "lr": lr, "it_per_s": it_s,
                           "data_wait": window_wait / max(now - window_t, 1e-9), **means}
                    self.log.add(row)
                    self.progress.event("iteration", iteration=iteration, iterations=total, loss=means, lr=lr,
                                        it_per_s=round(it_s, 4), eta_s=round(eta, 1),
                                        data_wait=round(row["data_wait"], 4))
                    if bar is not None:
                        bar.set_postfix(loss=f"{means['total']:.4g}", lr=f"{lr:.3g}", refresh=False)
                    sums, window_t, window_wait, window_n = {}, now, 0.0, 0
                every = int(cfg["validation"]["every"])
                if every >= 0 and ((every and iteration % every == 0) or iteration == total):
                    self._validate(iteration, val_cases, patch)
                if iteration % cfg["checkpoint_every"] == 0 and iteration < end:
                    self._save_checkpoint(iteration, elapsed0 + time.monotonic() - t_start)
                self._bar_update(bar, iteration, total, t_start, start)
                if any_across(self.dist, bool(self.progress.cancelled), self.device):
                    stopped = True
                    break
        except Cancelled:
            stopped = True
        finally:
            if bar is not None:
                bar.close()
            del batches
        return iteration, stopped, elapsed0 + time.monotonic() - t_start

    def _finish(self, iteration: int, stopped: bool, elapsed: float) -> TrainResult:
        """The last checkpoint, then (a finished run, rank 0) the model package."""
        from scdl.training.distributed import barrier

        total = int(self.config["iterations"])
        self._check_replicas(iteration)
        self._save_checkpoint(iteration, elapsed, curves=True)
        result = TrainResult(self.run_dir, iteration, stopped or iteration < total, best=dict(self.best),
                             elapsed_s=elapsed, report=self.report)
        if result.stopped:
            self.progress.message(f"stopped at iteration {iteration}; checkpoint saved. Resume with: "
                                  f"scdl train --resume {self.run_dir}")
            return result
        if self.dist.is_main:
            result.model_dir = self._package(iteration, elapsed)
        barrier(self.dist)
        return result

    def _check_replicas(self, iteration: int) -> None:
        """Distributed runs: the parameters must be the same on every process (an event reports the largest
        gap). Batch-norm running statistics are not compared: without SyncBatchNorm each process keeps its own."""
        if not self.dist.enabled:
            return
        from scdl.training.distributed import gather_objects

        flat = torch.cat([p.detach().double().reshape(-1).cpu() for p in self.step.parameters()])
        everyone = gather_objects(self.dist, flat)
        spread = max(float((other - everyone[0]).abs().max()) for other in everyone)
        self.progress.event("replicas", iteration=int(iteration), world_size=self.dist.world_size,
                            max_weight_difference=spread)
        if spread > 0:
            self.progress.warning(f"the {self.dist.world_size} processes ended with different weights "
                                  f"(largest difference {spread:.3g}); the model of process 0 is saved.")

    def _train_step(self, batches: Any, iteration: int, total: int) -> tuple[dict[str, float], float, float]:
        """One optimiser step over ``accumulate`` micro-batches -> (mean loss terms, lr used, data wait in s)."""
        import contextlib

        dev = self.device
        acc = int(self.config.get("accumulate", 1))
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
        if self.config.get("finetune", {}).get("norm_stats", "update") == "frozen":
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

    def _validate(self, iteration: int, cases: list, patch: tuple[int, int, int], baseline: bool = False) -> None:
        """Dice per class on the validation cases; the best networks into ``best.pt``. ``baseline``: the init
        model before fine-tuning (iteration 0: logged and reported as ``self.baseline``, never the best)."""
        from scdl.training.distributed import barrier
        from scdl.training.validation import validate

        if self.dist.is_main and cases:
            v = self.config["validation"]
            result = validate(list(self.step.networks), cases, patch, int(self.target.num_classes), self.device,
                              overlap=float(v["overlap"]), sw_batch_size=int(v["sw_batch_size"]), mode=str(v["mode"]),
                              amp=self.use_amp, progress=None if self.dist.enabled else self.progress,
                              annotated=self.val_masks)
            # one Dice per class of the table, in its order (a table may skip values: channel 5 of a table
            # without value 5 is no class)
            values = [int(e.value) for e in sorted(self.target.entries, key=lambda e: e.value) if int(e.value) != 0]
            result = {**result, "dice": [result["dice"][v - 1] for v in values],
                      "found": [result["found"][v - 1] for v in values]}
            found = {e.name: result["found"][i] for i, e in
                     enumerate(e for e in sorted(self.target.entries, key=lambda e: e.value) if int(e.value) != 0)}
            row = self.log.add_validation(iteration, result)
            if baseline:
                self.baseline = {"iteration": int(iteration), "mean_dice": float(result["mean_dice"]),
                                 "dice": {k[5:]: v for k, v in row.items() if k.startswith("dice_")}}
                self.progress.message(f"before fine-tuning: validation mean Dice {result['mean_dice']:.4f} (the "
                                      "initial model)")
            improved = (not baseline and math.isfinite(result["mean_dice"])
                        and result["mean_dice"] > self.best.get("mean_dice", -1.0))
            if improved:
                self.best = {"iteration": int(iteration), "mean_dice": float(result["mean_dice"]),
                             "dice": {k[5:]: v for k, v in row.items() if k.startswith("dice_")}}
                ckpt.save_checkpoint(self.folder.best,
                                     {"iteration": int(iteration), "best": dict(self.best),
                                      "networks": self.step.network_state_dicts()})
            if self._tqdm is not None:
                best = self.best.get("mean_dice", float("nan"))
                self._tqdm.write(f"iteration {iteration}: validation mean Dice {result['mean_dice']:.4f} "
                                 f"(best {best:.4f} at iteration {self.best.get('iteration')})", file=sys.stderr)
            self.progress.event("validation", iteration=int(iteration), mean_dice=result["mean_dice"],
                                dice={k[5:]: v for k, v in row.items() if k.startswith("dice_")},
                                found={k: (None if not math.isfinite(v) else round(v, 3)) for k, v in found.items()},
                                best_iteration=self.best.get("iteration"), best_mean_dice=self.best.get("mean_dice"),
                                source=self.report.validation_source if self.report else "val",
                                **({"baseline": True} if baseline else {}))
            self.log.flush()
        barrier(self.dist)

    def _bar(self, start: int, total: int):
        if self.progress.mode == "tqdm" and self.dist.is_main:
            from tqdm.auto import tqdm

            return tqdm(total=total, initial=start, desc="train", file=getattr(self.progress, "err", sys.stderr),
                        dynamic_ncols=True, leave=False)
        return None

    def _bar_update(self, bar: Any, iteration: int, total: int, t_start: float, start: int) -> None:
        if bar is not None:
            bar.update(1)
        elif self.progress.mode == "json" and self.dist.is_main:
            done_here = iteration - start
            rate = done_here / max(time.monotonic() - t_start, 1e-9)
            self.progress.emit({"phase": "train", "done": iteration, "total": total,
                                "eta_s": round((total - iteration) / rate, 1) if rate > 0 else None})

    # -- packaging ---------------------------------------------------------------------------------
    def _package(self, iteration: int, elapsed: float) -> Path:
        from scdl.training.packaging import package_run

        return package_run(self, iteration, elapsed)
