"""``scdl bench``: benchmarks that train and score models end to end. ``scdl bench ssl``: the SSL benchmark."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from scdl.progress import MODES as PROGRESS_MODES

SSL_DESCRIPTION = """\
Imbalanced semi-supervised benchmark and ablation: supervised vs CPS vs CPS+SCDL (and the SCDL ablation
ladder) trained on the same synthetic cohort (Synapse 20 % shape: 4 labeled + 16 unlabeled training cases,
10 test cases; --shape amos5: 2 + 38), once per seed, each run a 'python -m scdl train' child process. Every
model segments the test CTs; Dice per class is averaged over the test cases, then mean ± std over the seeds.
Cohorts: phantom (default; scdl phantom, the published tables) or anatomy (CTs synthesised from the real
label maps of patient A and TotalSegmentator subjects s0001, s0004, s0006, split by anatomy: training
s0004, s0006; test A (its real CT among them) and s0001; patient B is never used).
--estimate trains nothing and prints the plan's wall time on this machine and the interval its seeds give.

Writes OUT/results.json (settings, every run's per-case Dice and timing, the summary), OUT/table.md (the
table, Dice %), OUT/dice.png (grouped bar chart), and keeps OUT/cohort-<key>/, OUT/cache/ and
OUT/runs/<config>-seed<k>-<key>/ (run folder and model package of each run). Running the same command
again reuses finished runs, so a stopped benchmark continues where it stopped.
"""

SSL_EPILOG = """\
examples:
  # the calibrated CPU benchmark: 6 configurations x 3 seeds (39.1 min measured on an idle 2-core machine)
  scdl bench ssl --out bench_ssl

  # a smoke test in under a minute (tiny cohort, 2 iterations, 1 seed)
  scdl bench ssl --out /tmp/ssl_quick --quick

  # the realistic cohort (synthetic CTs from real anatomies, split by anatomy), both shapes
  scdl bench ssl --out bench_anat --cohort anatomy --configs cps,cps-scdl --seeds 0,1,2,3,4
  scdl bench ssl --out bench_anat --cohort anatomy --shape amos5 --configs cps,cps-scdl --seeds 0,1,2,3,4

  # what a plan would take here (nothing is run)
  scdl bench ssl --out bench_anat --cohort anatomy --configs cps,cps-scdl --seeds 0,1,2,3,4 --estimate

  # a bigger budget on a GPU: paper width, 2 mm grid, 64³ patches, 5 seeds
  scdl bench ssl --out bench_ssl_gpu --device cuda --width 16 --spacing 2 --patch 64 --iterations 6000 \\
      --seeds 0,1,2,3,4 --threads 8

configurations (--configs, comma-separated):
  supervised, cps, cps+cdba (proxy loss only), cps+cdba+sac (no KL), cps-scdl (full method),
  cps-scdl-classes (P_p2e over classes as in the released code: KL = 0); optional: cps+cdba+kl.
  Knob variants: BASE@KEY=VALUE[@KEY=VALUE] sets fields of the SCDL config (scdl.method.config.SCDLConfig),
  e.g. cps-scdl@lam=0.3 or cps-scdl@kl_reduction=tokens; each is paired with its base in the table.
  sensitivity = cps, cps-scdl and SCDL's knobs one at a time around the paper's values (lam 0.05 / 0.3,
  kl_reduction tokens, tau 0.1 / 0.5, num_samples 10).

  # sensitivity of SCDL's knobs on the anatomy cohort (8 configurations per seed)
  scdl bench ssl --out bench_sens --cohort anatomy --configs sensitivity --seeds 0,1,2
"""


def _seeds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one seed")
    return values


def _names(text: str) -> tuple[str, ...]:
    values = tuple(p for p in text.replace(" ", "").split(",") if p)
    if not values:
        raise argparse.ArgumentTypeError("give at least one name")
    return values


def register(subparsers: Any) -> None:
    from scdl.training.config import OPTIMIZERS     # torch-free: --help stays fast

    parser = subparsers.add_parser(
        "bench", help="end-to-end benchmarks (ssl: supervised vs CPS vs CPS+SCDL on phantoms)",
        description="End-to-end benchmarks that train and score models. Run 'scdl bench ssl --help'.",
        epilog="examples:\n  scdl bench ssl --out runs/ssl --quick        # a smoke run in about a minute\n"
               "  scdl bench ssl --out runs/ssl --seeds 0,1,2  # the published comparison (hours on a CPU)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])
    p = sub.add_parser("ssl", help="imbalanced semi-supervised benchmark and SCDL ablation",
                       description=SSL_DESCRIPTION, epilog=SSL_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (results, cohort, runs)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: 2+2 training / 2 test cases at 10 mm, width 2, 16³ patches, 2 iterations, "
                        "seed 0, configurations supervised,cps,cps-scdl (other flags still apply)")
    p.add_argument("--configs", metavar="LIST", help="configurations to compare (default: the six listed below)")
    p.add_argument("--seeds", type=_seeds, metavar="LIST", help="training seeds, e.g. 0,1,2 (default 0,1,2)")
    p.add_argument("--iterations", type=int, metavar="N", help="training iterations of every run (default 350)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS),
                   help="optimiser of every run (default adamw; sgd is the paper's, too slow for a CPU budget)")
    p.add_argument("--lr", type=float, metavar="LR", help="base learning rate, poly decay (default 0.01, as the paper's SGD)")
    p.add_argument("--width", type=int, metavar="F", help="VNet n_filters (default 8; paper 16)")
    p.add_argument("--spacing", type=float, metavar="MM", help="phantom and model voxel size in mm (default 4)")
    p.add_argument("--patch", type=int, metavar="P", help="cubic patch edge in voxels, multiple of 16 (default 32)")
    p.add_argument("--labeled", type=int, metavar="K", help="labeled training phantoms (default 4)")
    p.add_argument("--unlabeled", type=int, metavar="U", help="unlabeled training phantoms (default 16)")
    p.add_argument("--test", type=int, metavar="T", help="test phantoms (default 10)")
    p.add_argument("--cohort-seed", type=int, metavar="S", help="phantom cohort seed (default 0)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads per training run and scoring (default 2)")
    p.add_argument("--workers", type=int, metavar="N", help="data-loader processes per training run (default 0)")
    p.add_argument("--device", metavar="DEV", help="cpu (default), auto, cuda or cuda:N")
    p.add_argument("--sw-batch-size", type=int, metavar="N",
                   help="sliding windows per forward when scoring (default 4; does not change the predictions)")
    p.add_argument("--cohort", choices=("phantom", "anatomy"),
                   help="phantom (default: parametric phantoms, the published tables) or anatomy (CTs synthesised "
                        "from the real label maps of patient A and TotalSegmentator subjects s0001, s0004, s0006, "
                        "split by anatomy; patient B is never used)")
    p.add_argument("--shape", choices=("synapse20", "amos5"),
                   help="cohort shape: synapse20 = 4 labeled / 16 unlabeled (default), amos5 = 2 labeled / 38 "
                        "unlabeled (--labeled / --unlabeled still win)")
    p.add_argument("--train-anatomies", type=_names, metavar="LIST",
                   help="anatomy cohort: training anatomies (default s0004,s0006)")
    p.add_argument("--test-anatomies", type=_names, metavar="LIST",
                   help="anatomy cohort: test anatomies (default A,s0001; A's real CT is then a test case)")
    p.add_argument("--data", metavar="DIR", help="anatomy cohort: the shared data folder (default ../shared/data)")
    p.add_argument("--estimate", action="store_true",
                   help="train nothing: print the wall time this plan would take on this machine and the interval "
                        "and minimum detectable effect its seeds would give (from a finished run's spread)")
    p.add_argument("--estimate-from", metavar="RESULTS",
                   help="with --estimate: a results.json whose runs give the cost per iteration and the spread of "
                        "the paired differences (default: the published phantom runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting for every run, as in scdl train --set (repeatable)")
    p.add_argument("--progress", choices=PROGRESS_MODES, default="tqdm",
                   help="progress bars on stderr (default), JSON lines on stdout, or none")
    p.set_defaults(func=run_ssl)


_FLAGS = {"labeled": "labeled", "unlabeled": "unlabeled", "test": "test", "cohort_seed": "cohort_seed",
          "spacing": "spacing_mm", "width": "width", "patch": "patch", "iterations": "iterations", "seeds": "seeds",
          "optimizer": "optimizer", "lr": "lr",
          "threads": "threads", "workers": "workers", "device": "device", "sw_batch_size": "sw_batch_size",
          "cohort": "cohort", "train_anatomies": "train_anatomies", "test_anatomies": "test_anatomies",
          "data": "data_dir"}


def settings_from_args(args: argparse.Namespace):
    """(settings, configurations) of the parsed arguments (``--quick`` = the quick defaults, flags win)."""
    from scdl.bench.ssl_configs import QUICK_CONFIGS, parse_configs
    from scdl.bench.ssl_settings import SSLBenchSettings

    changes: dict[str, Any] = {field: getattr(args, flag) for flag, field in _FLAGS.items()
                               if getattr(args, flag) is not None}
    if args.overrides:
        changes["overrides"] = tuple(args.overrides)
    if getattr(args, "shape", None):
        from scdl.bench.ssl_settings import SHAPES

        labeled, unlabeled = SHAPES[args.shape]
        changes.setdefault("labeled", labeled)
        changes.setdefault("unlabeled", unlabeled)
    settings = SSLBenchSettings.quick(**changes) if args.quick else SSLBenchSettings(**changes)
    configs = parse_configs(args.configs if args.configs is not None else (QUICK_CONFIGS if args.quick else None))
    return settings, configs


def reproduce_command(out: str, settings: Any, configs: Any) -> str:
    """The full ``scdl bench ssl`` command line of these settings (every value explicit)."""
    s = settings
    parts = ["scdl", "bench", "ssl", "--out", str(out), "--configs", ",".join(c.name for c in configs),
             "--seeds", ",".join(str(x) for x in s.seeds), "--iterations", str(s.iterations),
             "--optimizer", s.optimizer, "--lr", f"{s.lr:g}", "--width", str(s.width),
             "--spacing", f"{s.spacing_mm:g}", "--patch", str(s.patch), "--labeled", str(s.labeled),
             "--unlabeled", str(s.unlabeled), "--test", str(s.test), "--cohort-seed", str(s.cohort_seed),
             "--threads", str(s.threads), "--workers", str(s.workers), "--device", s.device,
             "--sw-batch-size", str(s.sw_batch_size)]
    if s.cohort != "phantom":                    # phantom commands stay as published
        parts += ["--cohort", s.cohort, "--train-anatomies", ",".join(s.train_anatomies),
                  "--test-anatomies", ",".join(s.test_anatomies)]
    for item in s.overrides:
        parts += ["--set", item]
    return shlex.join(parts)


def run_ssl(args: argparse.Namespace) -> int:
    import os

    from scdl.bench.ssl_train import WAIT_POLICY

    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)    # before torch loads OpenMP (scoring runs here)
    from scdl.bench.ssl_benchmark import run_benchmark
    from scdl.progress import Progress

    settings, configs = settings_from_args(args)
    if args.estimate:
        return _estimate(args, settings, configs)
    progress = Progress(args.progress)
    progress.install_signal_handlers()
    results = run_benchmark(args.out, settings, configs, progress=progress,
                            command=reproduce_command(args.out, settings, configs))
    outputs = results["outputs"]
    if progress.mode == "json":
        progress.done(output=outputs["results"], table=outputs["table"], chart=outputs["chart"],
                      summary=results["summary"])
    else:
        print(results["table_markdown"], flush=True)
        progress.message(f"wrote {outputs['results']}, {outputs['table']} and {outputs['chart']}")
    return 0


def _estimate(args: argparse.Namespace, settings: Any, configs: Any) -> int:
    """``--estimate``: print the plan's wall time and interval; train nothing, write nothing."""
    import json
    from pathlib import Path

    from scdl.bench.ssl_cohort import cohort_folder
    from scdl.bench.ssl_estimate import calibrate, estimate_text
    from scdl.errors import ScdlError

    calibration = sd_results = None
    if args.estimate_from:
        path = Path(args.estimate_from)
        try:
            sd_results = json.loads(path.read_text(encoding="utf-8"))
            missing = [k for k in ("settings", "configurations", "runs", "classes", "small_classes") if k not in sd_results]
            if missing:
                raise KeyError(", ".join(missing))
            calibration = calibrate(sd_results)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ScdlError(f"cannot be read as an scdl bench ssl results.json ({err}).", path,
                            "give the results.json of a finished scdl bench ssl run.") from None
    exists = (cohort_folder(Path(args.out), settings) / "manifest.csv").is_file()
    print(estimate_text(settings, configs, calibration=calibration, sd_results=sd_results, cohort_exists=exists),
          end="", flush=True)
    return 0
