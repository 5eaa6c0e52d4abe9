"""``scdl phantom``: generate a deterministic cohort of synthetic abdominal CT with Synapse organ labels."""

from __future__ import annotations

import argparse
from typing import Optional

from scdl.progress import MODES as PROGRESS_MODES

DESCRIPTION = """\
Generate a cohort of synthetic abdominal CT-like volumes with label maps of the 13 Synapse organs
(spleen, kidneys, gallbladder, oesophagus, liver, stomach, aorta, IVC, portal/splenic veins, pancreas,
adrenal glands), for training and benchmark runs without patient data. Organ intensities are the HU
statistics measured on the real CT in shared/data (non-contrast and contrast phase, mixed per subject).
Each subject differs in body size, fat layers, organ position, size, rotation and a smooth deformation;
images get partial-volume blur, a smooth bias field and correlated noise.

Writes DIR/images/case_XXX.nii.gz (int16 HU), DIR/labels/case_XXX.nii.gz (uint8, written for every case),
DIR/manifest.csv (image,label,split,labels,reference; label empty = unlabeled; reference = the label map of
every case, for evaluation) and DIR/phantom.json (settings and per-case parameters). The same --seed gives
byte-identical arrays; case i depends only on the seed, i and the settings. The folder appears only when
everything was written. The manifest path is the last line printed (in --progress json: the "done" line).
"""

EPILOG = """\
examples:
  scdl phantom --out phantoms --cases 30 --seed 0
  scdl phantom --out small --cases 8 --labeled 2 --val 1 --test 1 --spacing 3
  scdl phantom --out ras --cases 10 --direction mixed --config phantom_settings.json
  scdl train --cohort phantoms/manifest.csv --out run --preset cpu

Split: the first --labeled cases are labeled training cases, then unlabeled training cases, then --val
validation and --test test cases. Defaults: --val = cases // 10 (at least 1 from 3 cases), --test 0,
--labeled = 20 % of the training cases (at least 1). --config takes a JSON object with any field of
scdl.phantom.config.PhantomConfig (e.g. {"bias_sd": 0, "hu_table": {"liver": {...}}}); flags win.
"""


def _positive_triple(text: str, convert, usage: str, kind: str) -> tuple:
    """``"V"`` (for all three axes) or ``"X,Y,Z"`` / ``"XxYxZ"`` -> three positive values made by ``convert``;
    a bad text is an ``ArgumentTypeError`` naming ``usage`` (the syntax) or ``kind`` (the values wanted)."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = [convert(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {usage}, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected one or three positive {kind}, got {text!r}")
    return tuple(values)


def _floats(text: str) -> tuple[float, float, float]:
    return _positive_triple(text, float, "MM or X,Y,Z in mm", "numbers")  # type: ignore[return-value]


def _ints(text: str) -> tuple[int, int, int]:
    return _positive_triple(text, int, "N or X,Y,Z voxels", "integers")  # type: ignore[return-value]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="generate a synthetic abdominal CT cohort with Synapse organ labels",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="cohort folder to create")
    parser.add_argument("--cases", type=int, default=30, metavar="N", help="number of subjects (default 30)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--labeled", type=int, default=None, metavar="K",
                        help="labeled training cases in the manifest (default 20%% of the training cases)")
    parser.add_argument("--val", type=int, default=None, metavar="V", help="validation cases (default cases // 10)")
    parser.add_argument("--test", type=int, default=None, metavar="T", help="test cases (default 0)")
    parser.add_argument("--spacing", type=_floats, default=None, metavar="MM",
                        help="voxel size in mm, one value or X,Y,Z (default 2.5)")
    parser.add_argument("--size", type=_ints, default=None, metavar="X,Y,Z",
                        help="grid size in voxels (default: a 320 x 320 x 200 mm field of view)")
    parser.add_argument("--direction", choices=("LPS", "RAS", "mixed"), default=None,
                        help="array orientation: LPS = identity direction, RAS = x/y flipped, mixed = odd cases RAS "
                             "(default LPS)")
    parser.add_argument("--config", default=None, metavar="JSON", help="generator settings (PhantomConfig fields)")
    parser.add_argument("--workers", type=int, default=1, metavar="W", help="parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier phantom cohort")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="tqdm",
                        help="progress display: bar on stderr, JSON lines on stdout, or none")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`PhantomConfig` of the parsed arguments (config file first, then the flags)."""
    from scdl.phantom.config import PhantomConfig

    overrides: dict[str, Optional[object]] = {
        "spacing": args.spacing,
        "size": args.size,
        "direction": args.direction,
    }
    if args.config:
        return PhantomConfig.load(args.config, **overrides)
    return PhantomConfig.from_dict({k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    import time

    from scdl.phantom.cohort import default_split, write_cohort
    from scdl.progress import Progress

    config = build_config(args)
    split = default_split(args.cases, args.labeled, args.val, args.test)
    from pathlib import Path

    from scdl.io.atomic import probe_writable

    out = Path(args.out).expanduser().absolute()
    probe_writable(out.parent, out, create=False)      # before the volumes are generated
    progress = Progress(args.progress)
    progress.install_signal_handlers()
    start = time.monotonic()
    manifest = write_cohort(args.out, config, split, args.seed, workers=args.workers, overwrite=args.overwrite,
                            progress=progress)
    seconds = round(time.monotonic() - start, 1)
    nx, ny, nz = config.grid_size()
    progress.message(f"{split.cases} cases ({split.labeled} labeled, {split.unlabeled} unlabeled, {split.val} val, "
                     f"{split.test} test), {nx}x{ny}x{nz} voxels of {config.spacing[0]:g}x{config.spacing[1]:g}x"
                     f"{config.spacing[2]:g} mm, in {seconds} s")
    progress.done(output=str(manifest), cases=split.cases, seconds=seconds)
    if progress.mode != "json":       # JSON mode: the "done" line carries the path
        print(manifest, flush=True)
    return 0
