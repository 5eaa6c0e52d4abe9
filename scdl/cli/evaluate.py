"""``scdl evaluate``: per-class Dice, HD95 and ASD (mm) of a predicted label map against a ground truth."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Score a predicted label map against a ground truth on the native grid: per-class Dice, 95th-percentile
Hausdorff distance (HD95) and average symmetric surface distance (ASD), both in millimetres, as MONAI's
compute_dice / compute_hausdorff_distance / compute_average_surface_distance define them (same values).
Labels are matched by value, or by name when both label tables are given (e.g. a Synapse prediction
against a TotalSegmentator ground truth).

Empty classes: absent from both maps -> not scored (NaN, left out of the means); present in only one ->
Dice 0 (counted in the mean Dice) and distances inf (left out of the distance means; null in JSON).
"""

EPILOG = """\
examples:
  scdl evaluate organs.nii.gz truth.nii.gz
  scdl evaluate organs.seg.nrrd ts_truth.nii.gz --labels synapse --gt-labels totalsegmentator_v2 --csv scores.csv
  scdl evaluate organs.nii.gz truth_other_grid.nii.gz --resample --json scores.json

--labels / --gt-labels take a bundled table name (synapse, amos, totalsegmentator_v2) or a Slicer
colour-table CSV. A ground truth on another grid is an error unless --resample is given (nearest neighbour
onto the prediction's grid).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice / HD95 / ASD of a label map against a ground truth",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred", metavar="PRED", help="predicted label map")
    parser.add_argument("gt", metavar="GT", help="ground-truth label map")
    parser.add_argument("--labels", metavar="CSV", default=None,
                        help="label table of PRED (names; also GT's when --gt-labels is not given)")
    parser.add_argument("--gt-labels", metavar="CSV", default=None,
                        help="label table of GT when it is numbered differently (matched to --labels by name)")
    parser.add_argument("--csv", metavar="OUT", default=None, help="also write the scores as CSV")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the scores as JSON")
    parser.add_argument("--resample", action="store_true",
                        help="resample GT onto PRED's grid (nearest neighbour) when the grids differ")
    parser.add_argument("--percentile", type=float, default=95.0, metavar="P",
                        help="Hausdorff percentile (default 95)")
    parser.add_argument("--show-absent", action="store_true", help="also list classes absent from both maps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from scdl.errors import ScdlError
    from scdl.metrics.evaluate import evaluate_files, format_table, write_csv, write_json

    if not 0.0 <= args.percentile <= 100.0:
        raise ScdlError(f"--percentile must be between 0 and 100, got {args.percentile}.", fix="use e.g. 95.")
    from scdl.io.atomic import probe_writable

    for target in (args.csv, args.json):         # before the (slow) surface distances
        if target:
            probe_writable(Path(target).expanduser().absolute().parent, target, create=False)

    def warn(text: str) -> None:
        print(f"warning: {text}", file=sys.stderr, flush=True)

    evaluation = evaluate_files(args.pred, args.gt, labels=args.labels,
                                gt_labels=args.gt_labels, resample=args.resample, percentile=args.percentile,
                                warn=warn)
    print(format_table(evaluation, show_absent=args.show_absent))
    if args.csv:
        write_csv(evaluation, args.csv)
    if args.json:
        write_json(evaluation, args.json)
    return 0
