"""``scdl synth``: a CT-like image in HU synthesised from a label map."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """\
Synthesise a CT-like volume (int16 HU) from a label map: every structure gets the intensity of its tissue
in the chosen contrast phase (HU measured on real CT where available, literature ranges otherwise; see
docs/synthesis.md), with tissue texture, bowel gas, renal cortex/medulla, bone cortex, an estimated body
outline with subcutaneous fat and muscle wall, partial-volume and slice-thickness blur, scanner noise and a
bias field. The output has the label map's grid (oblique maps stay oblique) unless --spacing is given.
The same --seed gives the same image; other seeds give other subjects.

MAP is a label map file (NIfTI, NRRD, MHA; NIfTI that ITK refuses for non-orthonormal axes is read with
nibabel) or a TotalSegmentator output folder (one <structure>.nii.gz per class).
"""

EPILOG = """\
examples:
  scdl synth s0006_seg.nii.gz --labels totalsegmentator_v2 -o s0006_ct.nii.gz --seed 1 --preview s0006.png
  scdl synth s0006_masks/ -o s0006_portal.nii.gz --phase portal --spacing 3 --label-out s0006_labels.nii.gz
  scdl synth case.nii.gz --labels my_colours.csv -o synth.nrrd --phase arterial --augment

The drawn parameters (phase, tissue means, noise, slice thickness, ...) are printed as one JSON line.
"""


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("synth", help="synthesise a CT image from a label map", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map", metavar="MAP", help="label map file or TotalSegmentator mask folder")
    p.add_argument("--labels", default="totalsegmentator_v2", metavar="TABLE",
                   help="label table of MAP: bundled name (totalsegmentator_v2, synapse, amos) or colour-table CSV "
                        "(default: totalsegmentator_v2)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="CT to write (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("--seed", type=int, default=0, help="synthesis seed (default 0)")
    p.add_argument("--phase", choices=("native", "arterial", "portal", "random"), default="random",
                   help="contrast phase (default: random, drawn from the seed)")
    p.add_argument("--spacing", type=float, default=None, metavar="MM", help="isotropic output voxel size in mm")
    p.add_argument("--augment", action="store_true", help="elastic deformation of the anatomy before synthesis")
    p.add_argument("--label-out", default=None, metavar="PATH", help="also write the label map on the CT's grid")
    p.add_argument("--preview", default=None, metavar="PNG", help="overlay picture of the result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scdl.errors import ScdlError
    from scdl.io.image import read_label_map
    from scdl.io.writers import write_image, write_label_map
    from scdl.labels.table import LabelTable
    from scdl.synth.volume import synthesize_image

    if args.spacing is not None and not args.spacing > 0:
        raise ScdlError(f"--spacing must be a positive number of mm, not {args.spacing:g}.", fix="e.g. --spacing 3")
    from scdl.io.paths import check_outputs

    # the label map (and a --labels CSV) are read, never written: `-o MAP` would replace the user's map
    check_outputs([("synthetic CT", args.output), ("label map output", args.label_out), ("preview", args.preview)],
                  [("label map MAP", args.map), ("label table", args.labels)])
    for target in (args.output, args.label_out, args.preview):
        if target is not None:
            parent = Path(target).expanduser().resolve().parent
            if not parent.is_dir():
                raise ScdlError("the output folder does not exist.", parent, "create it first.")
            from scdl.io.atomic import probe_writable

            probe_writable(parent, target, create=False)
    table = LabelTable.load(args.labels)
    label = read_label_map(args.map, table=table)
    ct, lab, subject = synthesize_image(label, table, args.seed, phase=args.phase, spacing=args.spacing,
                                        augment=args.augment)
    write_image(ct, args.output)
    if args.label_out:
        write_label_map(lab, args.label_out, table)
    if args.preview:
        from scdl.viz.overlay import render_overlay

        render_overlay(ct, lab, args.preview, legend=table,
                       title=f"synthetic CT, seed {args.seed}, {subject.phase} phase")
    info = {k: v for k, v in subject.to_dict().items() if k not in ("means", "stds")}
    print(json.dumps({"output": str(args.output), **info}))
    return 0
