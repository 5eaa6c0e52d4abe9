"""Build the default model ``scdl-abdominal-ct`` from the real CT in ``shared/data``: ONE documented command.

    python bench/train_default_model.py --out runs/default               # 50 min training budget (recipe), then installs
    python bench/train_default_model.py --out runs/default --minutes 90  # a longer run
    python bench/train_default_model.py --out runs/smoke --smoke --resources /tmp/res   # pipeline check (minutes)

Recipe (``Resources/Models/recipes/scdl-abdominal-ct/``): ``config.json`` is the ``scdl train --config`` file
(CPS + SCDL, VNet width 8, 3 mm, 64 x 64 x 32 patches); ``cohort.json`` names the data and the split:

1. cohort: patient A (TotalSegmentator silver labels, mapped to Synapse by name) is the labeled data, as two
   overlapping sub-volumes; anatomy cases (label maps, a new synthetic CT per sample) are labeled
   data too; synthetic phantoms (``scdl phantom``) are the unlabeled data; validation = CTs synthesised once
   from an anatomy map kept out of training (s0328) + patient B (real CT, never trained on; from model 4 on it is the
   validation case that picks the checkpoint and the ship decision, so its Dice is not a blind estimate).
2. budget: unless ``--iterations`` is given, a short calibration run of ``scdl train`` measures iterations per
   second on this machine and the iteration count is set to fill ``--minutes``; a run that still overshoots
   the hard limit (``minutes x hard_limit_factor``) is stopped (SIGTERM, checkpoint) and packaged at the
   iteration it reached (``scdl train --resume RUN --iterations N``).
3. ``scdl train``: validation every ``validation.every`` iterations on the CTs synthesised from the held-out map
   (``validation_synth``: portal, native, arterial, a short slab, a scan ending in the liver) and patient B; the
   best checkpoint is shipped.
4. held-out metrics: ``scdl segment`` patient B's DICOM series, ``scdl evaluate`` against its label map
   (``--resample``, TotalSegmentator ids matched to Synapse by name): Dice, HD95, ASD per organ.
5. package: the run's networks with a model card (training data and licences, framework, iterations, time,
   held-out metrics, intended use, warnings) and a README.md model card, verified.
6. ``scdl demo --model <package>`` runs and its per-organ Dice must equal step 4's (the bundled sample is
   patient B); the new build and the installed model are scored on the same validation cases (never on B)
   and a build that scores lower is not installed (``--force-install`` overrides); then the package is installed in ``<Resources>/Models/scdl-abdominal-ct`` (the catalog's
   bundled default; the catalog entry is checked, not edited) and verified there.

Every step writes into ``--out`` (``cohort/``, ``calibration/``, ``train/``, ``eval/``, ``package/``,
``demo/``, ``summary.json``); nothing is installed unless every step succeeded.

The recipe is library code, :mod:`scdl.release` (one step per module; the card's prose is the recipe folder's
``card_text.json``); this file is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from scdl.release.build import ReleaseOptions, build_release, score_packages
from scdl.release.cohort import SMOKE_VALIDATION_VOXELS
from scdl.release.recipe import DEFAULT_DATA, RECIPE
from scdl.release.training import SMOKE_ITERATIONS


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="work folder (cohort, runs, package, reports)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training wall-time budget in minutes (default: the recipe's, 50)")
    parser.add_argument("--iterations", type=int, default=None, help="fixed iteration count (skips calibration)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="recipe folder (config.json, cohort.json)")
    parser.add_argument("--resources", type=Path, default=None,
                        help="Resources folder to install into (default: the package's Resources, SCDL_RESOURCES)")
    parser.add_argument("--no-install", action="store_true", help="build and verify the package only")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--init", default=None, metavar="MODEL",
                        help="fine-tune from this model package (path or id) instead of a fresh start; 3.0.0 was "
                             "trained with --init <the 2.0.0 package> (git show 79aeb6e:Resources/Models/...)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"pipeline check: {SMOKE_ITERATIONS} iterations, 3 unlabeled phantoms, the validation CTs "
                             f"cut to {'x'.join(map(str, SMOKE_VALIDATION_VOXELS))} voxels; installs only into an "
                             "explicit --resources folder")
    parser.add_argument("--force-install", action="store_true",
                        help="install even when the new build scores below the installed model on the validation "
                             "cases (by default it is then kept in --out only)")
    parser.add_argument("--package-only", action="store_true",
                        help="skip calibration and training: evaluate, card, package and (unless --no-install) "
                             "install the run already in --out/train (e.g. after the card code changed)")
    parser.add_argument("--score-validation", nargs="+", type=Path, metavar="MODEL",
                        help="only score these model packages on the validation cases of an earlier run's "
                             "--out/cohort/manifest.csv (segment + evaluate) and print the JSON")
    args = parser.parse_args(argv)
    if args.score_validation:
        print(json.dumps(score_packages(args.out, args.score_validation, args.device), indent=2))
        return 0
    options = ReleaseOptions(out=args.out, minutes=args.minutes, iterations=args.iterations, data=args.data,
                             recipe=args.recipe, resources=args.resources, no_install=args.no_install,
                             device=args.device, init=args.init, smoke=args.smoke, force_install=args.force_install,
                             package_only=args.package_only)
    print(json.dumps(build_release(options), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
