"""``scdl segment``: segment the organs of one CT with a model package."""

from __future__ import annotations

import argparse
import math

from scdl.events import ConfidenceEvent
from scdl.models.card import LABEL_RESAMPLINGS, is_unit_weight, is_window_size
from scdl.progress import MODES as PROGRESS_MODES

DESCRIPTION = """\
Segment the abdominal organs of a CT (NIfTI, NRRD, MHA or a DICOM folder) with an SCDL model package.
The label map is written on exactly the input's grid; its extension picks the format
(.nii.gz, .nii, .nrrd, .mha, or .seg.nrrd for a 3D Slicer segmentation with names, colours and codes;
.dcm for a DICOM Segmentation that references the input DICOM series: only from a DICOM input).
"""

EPILOG = """\
examples:
  scdl segment ct.nii.gz -o organs.seg.nrrd
  scdl segment dicom_folder/ -o organs.nii.gz --model scdl-authors-synapse-cps --device cuda --preview organs.png
  scdl segment dicom_folder/ -o organs.dcm
  scdl segment ct.nrrd -o organs.nrrd --uncertainty uncertainty.nii.gz --progress json

--progress json prints one JSON object per line on stdout, e.g.
  {"phase": "infer", "done": 3, "total": 8, "eta_s": 4.2}
and ends with {"phase": "done", "output": "..."}. Exit status: 0 ok, 2 user error, 130 cancelled.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment the organs of a CT",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="CT file or DICOM folder")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="label map to write (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd; .dcm: DICOM SEG "
                             "referencing the input series, from a DICOM input only)")
    parser.add_argument("--model", metavar="ID|PATH", default=None,
                        help="model id from 'scdl models list' or a package folder (default: the catalog's default)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where the networks run (default auto: CUDA if available; falls back to the CPU)")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="tqdm",
                        help="progress bars on stderr (tqdm), JSON lines on stdout (json), or nothing")
    parser.add_argument("--preview", metavar="PNG", default=None,
                        help="also write an axial + coronal overlay picture with a legend")
    parser.add_argument("--uncertainty", metavar="PATH", default=None,
                        help="also write a voxel uncertainty map (ensemble disagreement, or entropy for one "
                             "network; 0..1) and print a per-organ confidence")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="DICOM series to read when the folder holds several")
    parser.add_argument("--overlap", type=float, default=None, metavar="F",
                        help="sliding-window overlap in [0, 1) (default: the model card's, 0.5)")
    parser.add_argument("--sw-batch-size", type=int, default=None, metavar="N",
                        help="windows per forward pass (default: 4 on CUDA; on the CPU 4 for windows up to 64³ voxels, else 2)")
    parser.add_argument("--keep-largest", action="store_true", default=None,
                        help="keep only the largest connected component of each organ")
    parser.add_argument("--largest-component-organs", default=None, metavar="NAMES",
                        help="keep the largest connected component of these organs only: names of the model's "
                             "label table, comma-separated ('liver,spleen,right kidney'); 'none' for no organ "
                             "(default: the model card's inference.largest_component_organs)")
    parser.add_argument("--label-resampling", choices=LABEL_RESAMPLINGS, default=None,
                        help="how labels reach the CT's grid: 'nearest' (argmax on the model grid, then nearest "
                             "neighbour) or 'logits' (logits resampled linearly onto the CT grid, argmax there; "
                             "smoother borders on fine CT grids). Default: the model card's (docs/inference.md)")
    parser.add_argument("--bn-adapt", type=float, default=None, metavar="W",
                        help="test-time batch-norm statistics: the networks' normalisation re-estimated on this "
                             "CT's windows before the prediction, mixed as (1 - W) x the trained statistics + W x "
                             "the CT's; 0 = off, 1 = the CT's alone (default: the model card's "
                             "inference.bn_adapt; docs/inference.md)")
    parser.add_argument("--window-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="sliding window in voxels of the model grid (x y z, multiples of 16; default: the "
                             "model card's inference.window_size, else its training patch; docs/inference.md)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the model card's warnings in full (by default only at a model's first use "
                             "on this machine)")
    parser.set_defaults(func=run)


def organ_list(text: "str | None") -> "tuple[str, ...] | None":
    """``--largest-component-organs``: None (not given) -> None; ``none`` or empty -> (); else the names."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    return () if names in ((), ("none",)) else names


def _print_confidence(confidence: dict, stream) -> None:
    if not confidence:
        return
    width = max(len(name) for name in confidence)
    print("per-organ confidence (mean max-probability inside the predicted organ):", file=stream)
    for name, value in confidence.items():
        text = "not found" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
        print(f"  {name:<{width}}  {text}", file=stream)


def run(args: argparse.Namespace) -> int:
    from scdl.errors import ScdlError
    from scdl.inference.runner import segment_file
    from scdl.progress import Progress

    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ScdlError(f"--overlap must be at least 0 and below 1, got {args.overlap:g}.",
                        fix="use e.g. --overlap 0.5 (half a window) or 0.25 (faster).")
    if args.sw_batch_size is not None and args.sw_batch_size < 1:
        raise ScdlError(f"--sw-batch-size must be a positive number of windows, got {args.sw_batch_size}.",
                        fix="use e.g. --sw-batch-size 1 on the CPU, 4 on a GPU.")
    if args.bn_adapt is not None and not is_unit_weight(args.bn_adapt):
        raise ScdlError(f"--bn-adapt must be between 0 and 1, got {args.bn_adapt:g}.",
                        fix="use 0 (the trained statistics), 1 (this CT's own) or a mix such as 0.5.")
    if args.window_size is not None and not is_window_size(list(args.window_size)):
        raise ScdlError(f"--window-size must be three positive multiples of 16, got "
                        f"{' '.join(str(v) for v in args.window_size)}.",
                        fix="use e.g. --window-size 96 96 32 (x y z voxels of the model grid).")
    progress = Progress(args.progress)
    progress.install_signal_handlers()
    result = segment_file(
        args.input,
        args.output,
        model=args.model,
        device=args.device,
        progress=progress,
        preview=args.preview,
        uncertainty=args.uncertainty,
        series_uid=args.series_uid,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        keep_largest=args.keep_largest,
        label_resampling=args.label_resampling,
        bn_adapt=args.bn_adapt,
        window_size=args.window_size,
        largest_component_organs=organ_list(args.largest_component_organs),
        verbose=args.verbose or progress.mode == "json",      # a program (the Slicer module) decides itself
    )
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    if result.uncertainty is not None:
        progress.emit(ConfidenceEvent(organs=result.confidence))
        if progress.mode != "json":
            _print_confidence(result.confidence, progress.err)
    if progress.mode != "json":
        extra = "".join(f", {label} {path}" for label, path in
                        (("uncertainty", result.uncertainty), ("preview", result.preview)) if path)
        total = sum(result.timings.values())
        progress.message(f"wrote {result.output}{extra} ({total:.1f} s on {result.device})")
    done = {"output": str(result.output), "device": result.device, "timings_s": timings}
    if result.uncertainty is not None:
        done["uncertainty"] = str(result.uncertainty)
    if result.preview is not None:
        done["preview"] = str(result.preview)
    progress.done(**done)
    return 0
