"""``scdl evaluate``: per-class Dice, HD95 and ASD (mm) of a predicted label map against a ground truth."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Score a predicted label map against a ground truth on the native grid: per-class Dice, 95th-percentile
Hausdorff distance (HD95) and average symmetric surface distance (ASD), both in millimetres, as MONAI's
compute_dice / compute_hausdorff_distance / compute_average_surface_distance define them (same values).
Labels are matched by value, or by name when both label tables are given (e.g. a Synapse prediction
against a TotalSegmentator ground truth).

The mean Dice (table, CSV "mean" row, JSON mean.dice) is over the classes the GROUND TRUTH contains; a class
only the prediction marked (a false positive) is left out of it and counted, as 0, only in the mean labelled
"all classes" (JSON mean.dice_all_classes). The same mean as `scdl demo` reports.

Empty classes: absent from both maps -> not scored (NaN, left out of the means); present in only one ->
Dice 0 and distances inf (left out of the distance means; null in JSON).

--preview draws a picture of the comparison: PRED in colour, GT as contour lines in the same colours
(axial, coronal and sagittal slices through the most organ, at physical size), on --ct or on black.
"""

EPILOG = """\
examples:
  scdl evaluate organs.nii.gz truth.nii.gz
  scdl evaluate organs.seg.nrrd ts_truth.nii.gz --labels synapse --gt-labels totalsegmentator_v2 --csv scores.csv
  scdl evaluate organs.nii.gz truth_other_grid.nii.gz --resample --json scores.json
  scdl evaluate organs.nii.gz truth.nii.gz --preview compare.png --ct ct.nii.gz

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
    parser.add_argument("--preview", metavar="PNG", default=None,
                        help="also draw PRED (colours) and GT (contour lines) into a PNG")
    parser.add_argument("--ct", metavar="CT", default=None,
                        help="CT to draw the --preview on (on PRED's grid, or with --resample; default black)")
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

    if args.ct and not args.preview:
        raise ScdlError("--ct is the background of --preview, which is not given.",
                        fix="add --preview PNG, or leave out --ct.")
    if args.preview:
        from scdl.inference.runner import check_output_path

        check_output_path(args.preview, (".png",), "preview")
        if args.ct and not Path(args.ct).expanduser().exists():
            raise ScdlError("the CT for the preview does not exist.", args.ct, "check the path (a file or a DICOM folder).")
    from scdl.io.paths import check_outputs

    # an output that is an input (`--csv labels.csv` = the --labels table) would replace it: refused first
    check_outputs([("--csv table", args.csv), ("--json file", args.json), ("--preview", args.preview)],
                  [("prediction PRED", args.pred), ("ground truth GT", args.gt), ("--labels table", args.labels),
                   ("--gt-labels table", args.gt_labels), ("--ct image", args.ct)])
    for target in (args.csv, args.json, args.preview):         # before the (slow) surface distances
        if target:
            probe_writable(Path(target).expanduser().absolute().parent, target, create=False)

    def warn(text: str) -> None:
        from scdl.errors import one_line

        print(f"warning: {one_line(text)}", file=sys.stderr, flush=True)

    evaluation = evaluate_files(args.pred, args.gt, labels=args.labels,
                                gt_labels=args.gt_labels, resample=args.resample, percentile=args.percentile,
                                warn=warn)
    print(format_table(evaluation, show_absent=args.show_absent))
    if args.csv:
        write_csv(evaluation, args.csv)
    if args.json:
        write_json(evaluation, args.json)
    if args.preview:
        write_preview(args.pred, args.gt, args.preview, labels=args.labels, gt_labels=args.gt_labels,
                      resample=args.resample, ct=args.ct, warn=warn)
    return 0


def write_preview(pred_path, gt_path, target, labels=None, gt_labels=None, resample: bool = False, ct=None,
                  warn=None):
    """The overlay PNG of ``scdl evaluate --preview``: the prediction in colour, the ground truth (renumbered
    into the prediction's classes by name when both tables are given) as contours, on ``ct`` (brought onto the
    prediction's grid with ``resample``) or on black. Written atomically and read back (``render_overlay``)."""
    from pathlib import Path

    import numpy as np
    import SimpleITK as sitk

    from scdl.errors import ScdlError
    from scdl.io.geometry import describe_grid, same_grid
    from scdl.io.image import read_ct, read_label_map
    from scdl.labels.table import LabelTable
    from scdl.viz.overlay import render_overlay

    pred = read_label_map(pred_path)
    truth = read_label_map(gt_path, reference=pred, resample=resample)
    pred_table = LabelTable.load(labels) if labels else None
    gt_table = LabelTable.load(gt_labels) if gt_labels else None
    if pred_table is not None and gt_table is not None:
        from scdl.labels.mapping import map_label_array

        mapped, _unknown = map_label_array(sitk.GetArrayFromImage(truth), gt_table, pred_table)
        renumbered = sitk.GetImageFromArray(np.asarray(mapped).astype(np.uint16))
        renumbered.CopyInformation(truth)
        truth = renumbered
    if ct is not None:
        background = sitk.Cast(read_ct(ct, warn=warn), sitk.sitkFloat32)
        if not same_grid(background, pred):
            if not resample:
                raise ScdlError(f"the CT is not on the prediction's grid (prediction: {describe_grid(pred)}; CT: "
                                f"{describe_grid(background)}).", ct,
                                "add --resample to resample the CT onto the prediction's grid (linear).")
            background = sitk.Resample(background, pred, sitk.Transform(), sitk.sitkLinear, -1000.0,
                                       sitk.sitkFloat32)
    else:
        background = sitk.Image(pred.GetSize(), sitk.sitkFloat32) - 1000.0      # black in the abdomen window
        background.CopyInformation(pred)
    title = f"{Path(pred_path).name} (colours) against {Path(gt_path).name} (lines)"
    return render_overlay(background, pred, target, pred_table or gt_table, title=title, reference=truth)
