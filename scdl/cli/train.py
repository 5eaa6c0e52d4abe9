"""``scdl train``: train (or fine-tune) a segmentation model on a cohort; print the model package's path last."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scdl.events import AnnotationEvent, PlanEvent, ProblemEvent
from scdl.progress import ProgressReporter

if TYPE_CHECKING:
    from scdl.training.settings import TrainConfig

EPILOG = """\
examples:
  # check a cohort without training (every problem of every file at once)
  scdl train --cohort cohort.csv --out runs/a --check-only

  # a short CPU run (small network, 4 mm grid, 48^3 patches), CPS + SCDL
  scdl train --cohort cohort.csv --out runs/a --preset cpu

  # a few hundred CPU iterations learn far more with AdamW than with the paper's SGD (docs/training.md)
  scdl train --cohort cohort.csv --out runs/a2 --preset cpu --iterations 400 --set optimizer.name=adamw

  # the paper's setting on a GPU, a setting changed from the command line
  scdl train --cohort cohort.csv --out runs/paper --device cuda --set optimizer.lr=0.005

  # folders instead of a manifest; label maps in TotalSegmentator ids, mapped to Synapse by name
  scdl train --labeled data/labeled --unlabeled data/ct --source-labels totalsegmentator_v2 --out runs/b

  # fine-tune a model package on new data (its training recipe is inherited; on cases that draw only some
  # organs the initial model keeps teaching the others; the package mixes the fine-tuned weights half and half
  # with the initial ones, --set finetune.interpolate=1 keeps them alone); resume a stopped run
  scdl train --cohort new.csv --init runs/a/model --out runs/ft --iterations 2000
  scdl train --resume runs/a

  # average the weights of the checkpoints of the second half of the run (SWA); kept when it validates better
  scdl train --cohort cohort.csv --out runs/swa --preset cpu --set averaging.enabled=true --set averaging.start=0.5

  # 4 GPUs (one node): DistributedDataParallel, per-GPU batch as configured
  torchrun --standalone --nproc_per_node 4 -m scdl train --cohort cohort.csv --out runs/ddp --device cuda

manifest (CSV or JSON, paths relative to it): image,label,split,labels
  label empty = unlabeled CT; split = train | val | test; labels = the label map's own table.
The last line on stdout is the path of the trained model package (RUN_DIR/model).
"""


def register(subparsers: Any) -> None:
    from scdl.progress import MODES
    from scdl.training.config import DEFAULT_FRAMEWORK, DEFAULTS, Framework, Preset

    p = subparsers.add_parser(
        "train", help="train or fine-tune a model on a cohort (supervised, CPS, CPS+SCDL)",
        description="Train a segmentation model (CPS + SCDL by default) on a cohort of CT images, some with "
                    "label maps, and write a model package that 'scdl segment' uses.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("cohort")
    src.add_argument("--cohort", metavar="MANIFEST", help="CSV or JSON manifest (image,label,split,labels)")
    src.add_argument("--labeled", metavar="DIR", help="folder with images/ and labels/ (same file names)")
    src.add_argument("--unlabeled", metavar="DIR", help="folder of unlabeled CT images")
    src.add_argument("--val", metavar="DIR", help="folder with images/ and labels/ for validation")
    src.add_argument("--source-labels", metavar="TABLE",
                     help="label table of the label maps in --labeled/--val (default: the model's numbering)")
    src.add_argument("--anatomy", metavar="DIR",
                     help="folder of label maps WITHOUT images (files or TotalSegmentator mask folders): labeled "
                          "cases whose CT is synthesised anew each time they are sampled")
    src.add_argument("--anatomy-labels", metavar="TABLE",
                     help="label table of the --anatomy maps (default: --source-labels, else totalsegmentator_v2)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (checkpoints, logs, curves, model/)")
    # no argparse defaults for settings: an unset flag leaves the preset's / config file's value (layers)
    p.add_argument("--framework", choices=Framework.values(), help=f"training framework (default {DEFAULT_FRAMEWORK})")
    p.add_argument("--iterations", type=int, metavar="N", help=f"training iterations (paper: {DEFAULTS['iterations']})")
    p.add_argument("--init", metavar="MODEL", help="fine-tune from a model package (path or id)")
    p.add_argument("--labels", metavar="TABLE",
                   help="classes the model learns: bundled table name or CSV (default synapse; with --init: the "
                        "init model's classes)")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue a stopped run exactly where its last checkpoint left it (verified first; only "
                        "--iterations, --workers, --cache-dir and --set of iterations, data.*, threads, log_every, "
                        "checkpoint_every, validation.* may change)")
    p.add_argument("--previous-checkpoint", action="store_true",
                   help="with --resume: continue from the checkpoint before the latest (checkpoint.prev.pt), e.g. "
                        "when the latest is damaged")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--config", metavar="FILE", help="JSON file with settings (a partial tree is fine)")
    p.add_argument("--preset", choices=Preset.values(), default=None,
                   help=f"{Preset.PAPER} (the paper's settings) or {Preset.CPU} (small, fast); default: {Preset.CPU} "
                        "where training runs on the CPU (no CUDA or --device cpu), else the paper's")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting, e.g. --set optimizer.lr=0.005 --set scdl.lam=0.2 (repeatable)")
    p.add_argument("--seed", type=int, help=f"random seed (default {DEFAULTS['seed']})")
    p.add_argument("--workers", type=int, metavar="N",
                   help=f"data loader processes (default {DEFAULTS['data']['num_workers']}; 0 = in-process)")
    p.add_argument("--cache-dir", metavar="DIR", help="preprocessing cache (default ~/.scdl/cache/preprocessed)")
    p.add_argument("--check-only", action="store_true", help="check the cohort, print every problem, train nothing")
    p.add_argument("--progress", choices=MODES, default="tqdm",
                   help="progress display: tqdm bar (default) or JSON lines on stdout")
    p.set_defaults(func=run)


def _cohort_spec(args: argparse.Namespace) -> dict[str, Any]:
    from scdl.errors import ScdlError

    if args.cohort and (args.labeled or args.unlabeled or args.val or args.anatomy):
        raise ScdlError("give either --cohort MANIFEST or folders (--labeled/--unlabeled/--val), not both.")
    if args.cohort:
        from scdl.io.paths import check_input_path

        check_input_path(Path(args.cohort).expanduser(), "manifest")      # a FIFO would block the reading
        return {"manifest": str(Path(args.cohort).expanduser().resolve())}
    if args.labeled or args.unlabeled or args.val or args.anatomy:
        absolute = lambda p: None if p is None else str(Path(p).expanduser().resolve())  # noqa: E731
        return {"labeled": absolute(args.labeled), "unlabeled": absolute(args.unlabeled), "val": absolute(args.val),
                "labels": args.source_labels, "anatomy": absolute(args.anatomy),
                "anatomy_labels": args.anatomy_labels}
    raise ScdlError("no cohort given.", fix="give --cohort MANIFEST, or --labeled DIR [--unlabeled DIR].")


def load_cohort(spec: dict[str, Any]):
    from scdl.training.cohort import load_folders, load_manifest

    if spec.get("manifest"):
        return load_manifest(spec["manifest"])
    return load_folders(spec.get("labeled"), spec.get("unlabeled"), spec.get("val"), spec.get("labels"),
                        spec.get("anatomy"), spec.get("anatomy_labels"))


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no usable torch: the CPU
        return False


def _resolve(args: argparse.Namespace) -> tuple["TrainConfig", Path, bool]:
    """(config, run_dir, resume) from the arguments: the settings resolved (``scdl.training.config``) and
    converted once into the typed, frozen ``TrainConfig``. Without ``--preset`` (and no preset in ``--config``) the
    preset follows the device (``choose_preset``: cpu without CUDA); ``args.preset_note`` says why."""
    from scdl.errors import ScdlError
    from scdl.training.runfolder import RunFolder, load_run_config
    from scdl.training.config import DEFAULT_PRESET, apply_overrides, deep_update, load_config_file, resolve_config
    from scdl.training.settings import TrainConfig

    resume = args.resume is not None
    if args.previous_checkpoint and not resume:
        raise ScdlError("--previous-checkpoint continues a stopped run: it needs --resume RUN_DIR.",
                        fix="write scdl train --resume RUN_DIR --previous-checkpoint.")
    if resume:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir) or run_dir == Path(""):
            raise ScdlError("--resume needs the run folder.", fix="write --resume RUN_DIR (or --out RUN_DIR --resume).")
        ignored = [flag for flag, value in (("--preset", args.preset), ("--config", args.config), ("--init", args.init),
                                            ("--labels", args.labels), ("--cohort", args.cohort),
                                            ("--labeled", args.labeled), ("--unlabeled", args.unlabeled),
                                            ("--val", args.val), ("--anatomy", args.anatomy)) if value]
        if ignored:
            raise ScdlError(f"{', '.join(ignored)} cannot change a resumed run: it continues with the settings and "
                            "cohort its checkpoint was trained with.", run_dir,
                            f"leave out {', '.join(ignored)} to resume, or start a new run with them (--out NEW_DIR).")
        config = load_run_config(run_dir)
        if not args.check_only:
            RunFolder(run_dir).check_unlocked()        # another run writing it: said now, not after the cohort check
        if not args.previous_checkpoint and not args.check_only:   # a damaged checkpoint: said before the cohort check
            from scdl.training.checkpoint import verify_checkpoint

            verify_checkpoint(RunFolder(run_dir).checkpoint)
        # --framework and --seed are settings like any other: a change is refused by the trainer, with the rest
        flags = {"iterations": args.iterations, "framework": args.framework, "seed": args.seed}
        if args.workers is not None:
            flags["data"] = {"num_workers": args.workers}
        if args.cache_dir:
            flags.setdefault("data", {})["cache_dir"] = str(Path(args.cache_dir).expanduser().resolve())
        config = deep_update(config, {k: v for k, v in flags.items() if v is not None})
        config = apply_overrides(config, args.overrides)
        return TrainConfig.from_dict(config), run_dir, True      # validated, typed, frozen
    if not args.out and not args.check_only:
        raise ScdlError("no run folder given.", fix="add --out RUN_DIR (checkpoints, logs and the model go there).")
    run_dir = Path(args.out or ".").expanduser()         # --check-only writes nothing there
    if not args.check_only:         # a run, or a folder of the user's files: refused before the cohort is read
        RunFolder(run_dir).check_unlocked()
        RunFolder(run_dir).check_new_run()
    values: dict[str, Any] = {"framework": args.framework, "iterations": args.iterations, "seed": args.seed}
    if args.labels:
        values["labels"] = args.labels
    elif args.init:
        values["labels"] = "init"
    data: dict[str, Any] = {}
    if args.workers is not None:
        data["num_workers"] = args.workers
    if args.cache_dir:
        data["cache_dir"] = str(Path(args.cache_dir).expanduser().resolve())
    if data:
        values["data"] = data
    values["cohort"] = _cohort_spec(args)
    preset = args.preset
    if args.config:
        from scdl.io.paths import check_input_path

        check_input_path(Path(args.config).expanduser(), "config file")   # a FIFO would block the reading
    file_values = load_config_file(args.config) if args.config else {}
    if preset is None and args.config:      # a config file may name its preset; --preset wins
        preset = file_values.get("preset")
    args.preset_note = ""
    if preset is None:                      # none named: the one that fits the device (the plan line says so)
        from scdl.training.config import Preset, choose_preset

        preset, why = choose_preset(args.device, _cuda_available())
        args.preset_note = f"chosen: {why}" + ("; --preset paper for the paper's settings"
                                               if preset == Preset.CPU.value else "")
    if args.init and "patch_size" not in file_values and not any(
            o.split("=", 1)[0].strip() == "patch_size" for o in args.overrides):
        values["patch_size"] = "init"       # fine-tuning: the init model's patch (Trainer resolves it)
    config = resolve_config(preset or DEFAULT_PRESET.value, args.config, values, args.overrides, init=args.init)
    return TrainConfig.from_dict(config), run_dir, False      # validated, typed, frozen


def _print_plan(trainer: Any, progress: ProgressReporter, note: str, check_only: bool) -> None:
    """The plan line (preset, iterations, patch, batch, device, time and memory estimate): a JSON ``plan``
    event with its fields and ``text``; else printed (--check-only) or a message (a run)."""
    plan = trainer.plan(note)
    if progress.mode == "json":
        progress.emit(PlanEvent(**plan))
    elif check_only:
        print(plan["text"], flush=True)
    else:
        progress.message(plan["text"])


def _print_annotation(trainer: Any, progress: ProgressReporter) -> None:
    """Per labeled case: the classes it annotates and those the initial model keeps (``annotation`` event)."""
    cases = trainer.annotation_summary()
    if not cases:
        return
    if progress.mode == "json":
        progress.emit(AnnotationEvent(partial=any(c["kept"] or c["unknown"] for c in cases), cases=cases))
        return
    for c in cases:
        print(c["text"], flush=True)


def _print_problems(report: Any, progress: ProgressReporter, summary: dict[str, int]) -> None:
    for problem in report.problems:
        if progress.mode == "json":
            progress.emit(ProblemEvent(**problem.to_dict()))
        else:
            print(problem.line(), flush=True)
    errors, warnings = len(report.errors), len(report.warnings)
    counts = f"{summary['labeled']} labeled, {summary['unlabeled']} unlabeled, {summary['val']} validation case(s)"
    if progress.mode == "json":
        progress.done(ok=report.ok, errors=errors, warnings=warnings, validation_source=report.validation_source,
                      **summary)
    elif report.ok:
        print(f"cohort OK: {counts}; {warnings} warning(s).", flush=True)
    else:
        print(f"cohort has {errors} error(s) and {warnings} warning(s): {counts}.", flush=True)


def run(args: argparse.Namespace) -> int:
    from scdl.progress import Progress
    from scdl.training.trainer import Trainer
    from scdl.training.distributed import shutdown

    from scdl.errors import ScdlError

    progress = Progress(args.progress)
    config, run_dir, resume = _resolve(args)
    if not config.cohort:
        from scdl.training.runfolder import CONFIG, RunFolder

        raise ScdlError(f"this run's {CONFIG} does not say where its cases came from (it was not started by "
                        "scdl train).", RunFolder(run_dir).config, "resume it from Python with Trainer(..., resume=True).")
    if args.previous_checkpoint:
        from scdl.training.checkpoint import use_previous
        from scdl.training.runfolder import RunFolder

        with RunFolder(run_dir).lock():
            iteration = use_previous(run_dir)
        progress.message(f"continuing from the previous checkpoint (iteration {iteration})")
    cohort = load_cohort(dict(config.cohort))
    init = None if resume else args.init
    trainer = Trainer(config, cohort, run_dir, device=args.device, init=init, progress=progress, resume=resume)
    note = getattr(args, "preset_note", "")
    try:
        if args.check_only:
            report = trainer.prepare(check_only=True)
            if trainer.dist.is_main:
                _print_plan(trainer, progress, note, True)
                _print_annotation(trainer, progress)
                _print_problems(report, progress, cohort.summary())
            return 0 if report.ok else 2
        progress.install_signal_handlers()
        trainer.prepare()
        if trainer.dist.is_main:
            _print_plan(trainer, progress, note, False)
        result = trainer.run()
    finally:
        if trainer.dist is not None:
            shutdown(trainer.dist)
    if result.stopped:
        if progress.mode == "json":     # the trainer's own line went into the JSON stream: say it on stderr once
            print(f"stopped at iteration {result.iteration}; checkpoint saved in {run_dir}. "
                  f"Continue with: scdl train --resume {run_dir}", file=sys.stderr, flush=True)
        return 130
    if result.model_dir is None:        # not the main process of a distributed run
        return 0
    best = result.best.get("mean_dice")
    if progress.mode == "json":
        progress.done(output=str(result.model_dir), iteration=result.iteration, best_mean_dice=best,
                      elapsed_s=round(result.elapsed_s, 1))
    else:
        extra = f"; best validation mean Dice {best:.4f} (iteration {result.best['iteration']})" if best is not None else ""
        print(f"trained {result.iteration} iterations in {result.elapsed_s:.0f} s{extra}.", file=sys.stderr, flush=True)
    print(str(Path(result.model_dir)), flush=True)
    return 0
