"""Build (or check) the real-CT test data in ``Testing/data`` from copies of their published sources.

    python Testing/data/make_test_data.py --source DIR            # write the files into Testing/data
    python Testing/data/make_test_data.py --source DIR --check    # compare the files here with a fresh build

``DIR`` holds the upstream files in this layout (sources, commits and licences: ``Testing/data/README.md``)::

    DIR/totalsegmentator_fixtures/  example_ct.nii.gz, example_seg_fast_force_split.nii.gz, example_seg_dicom.nii.gz,
                                    class_map_total_v2.json, example_ct_dicom/ (20 DICOM files)
    DIR/totalsegmentator_dataset/   s0001_seg.nii.gz, s0004_seg.nii.gz, s0006_seg.nii.gz, s0006_masks/ (117 files),
                                    s0327_seg.nii.gz, s0328_seg.nii.gz, s0001_refused_by_itk/ (aorta.nii.gz, liver.nii.gz)
    DIR/dcmqi_ct3slice/             ct-3slice_0{1,2,3}.dcm, liver.dcm, *_seg.nrrd, LICENSE_dcmqi.txt, PROVENANCE.txt

What it writes, and the only changes against the source:

- copied byte for byte: patient A (CT + label map), patient B's label map, the TotalSegmentator class map, the dcmqi
  folder, the s0001, s0004, s0327 and s0328 label maps, ``s0001_refused_by_itk/``;
- ``totalsegmentator_fixtures/example_ct_dicom/``: the 5 LOWEST of patient B's 20 DICOM files (by Image Position
  (Patient) z), unchanged. The whole of patient B is in the repository already as the demo sample
  (``Resources/Sample/sample_ct.nii.gz``: the same voxels and grid); these 5 files keep the DICOM reader tests on a
  real scanner's files (JPEG 2000 lossless, no file extensions, empty Series Instance UID);
- ``totalsegmentator_dataset/s0006_seg.nii.gz`` and every file of ``s0006_masks/``: cropped with nibabel to ONE box
  (the same for all 118 files, affines moved accordingly; dtype and header codes kept): in-plane to the box of all
  labelled voxels, in z to the slices of the 13 Synapse organs, each with a margin of ``MARGIN`` voxels. The slices
  below the organs (pelvis) are dropped: 5.8 MB of masks become 2.0 MB.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

COPIED = (
    "totalsegmentator_fixtures/example_ct.nii.gz",
    "totalsegmentator_fixtures/example_seg_fast_force_split.nii.gz",
    "totalsegmentator_fixtures/example_seg_dicom.nii.gz",
    "totalsegmentator_fixtures/class_map_total_v2.json",
    "totalsegmentator_dataset/s0001_seg.nii.gz",
    "totalsegmentator_dataset/s0004_seg.nii.gz",
    "totalsegmentator_dataset/s0327_seg.nii.gz",
    "totalsegmentator_dataset/s0328_seg.nii.gz",
    "totalsegmentator_dataset/s0001_refused_by_itk/aorta.nii.gz",
    "totalsegmentator_dataset/s0001_refused_by_itk/liver.nii.gz",
    "dcmqi_ct3slice/ct-3slice_01.dcm",
    "dcmqi_ct3slice/ct-3slice_02.dcm",
    "dcmqi_ct3slice/ct-3slice_03.dcm",
    "dcmqi_ct3slice/liver.dcm",
    "dcmqi_ct3slice/liver_seg.nrrd",
    "dcmqi_ct3slice/spine_seg.nrrd",
    "dcmqi_ct3slice/heart_seg.nrrd",
    "dcmqi_ct3slice/liver_spine_seg.nrrd",
    "dcmqi_ct3slice/LICENSE_dcmqi.txt",
    "dcmqi_ct3slice/PROVENANCE.txt",
)
B_DICOM = "totalsegmentator_fixtures/example_ct_dicom"
B_SLICES = 5
S0006_MAP = "totalsegmentator_dataset/s0006_seg.nii.gz"
S0006_MASKS = "totalsegmentator_dataset/s0006_masks"
#: TotalSegmentator v2 ids of the 13 Synapse organs (the z extent of the s0006 crop).
SYNAPSE_TS_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 52, 63, 64)
MARGIN = 8


def lowest_dicom_files(folder: Path, count: int = B_SLICES) -> list[Path]:
    """The ``count`` files of a one-series DICOM folder with the lowest Image Position (Patient) z."""
    import SimpleITK as sitk

    def z(path: Path) -> float:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return float(reader.GetMetaData("0020|0032").split("\\")[2])

    return sorted((p for p in folder.iterdir() if p.is_file()), key=z)[:count]


def s0006_box(label_map: Path) -> tuple[slice, slice, slice]:
    """The crop box (voxel slices along the NIfTI's i, j, k axes) of s0006."""
    import nibabel as nib
    import numpy as np

    arr = np.asanyarray(nib.load(str(label_map)).dataobj)
    labelled = np.argwhere(arr > 0)
    organs = np.argwhere(np.isin(arr, SYNAPSE_TS_IDS))
    lo = [labelled[:, 0].min(), labelled[:, 1].min(), organs[:, 2].min()]
    hi = [labelled[:, 0].max(), labelled[:, 1].max(), organs[:, 2].max()]
    return tuple(slice(max(0, int(a) - MARGIN), min(n, int(b) + MARGIN + 1))
                 for a, b, n in zip(lo, hi, arr.shape))


def cropped(path: Path, box):
    """The NIfTI at ``path`` cropped to ``box`` (nibabel moves the affine; dtype and header codes are kept)."""
    import nibabel as nib

    img = nib.load(str(path))
    out = img.slicer[box]
    out.set_data_dtype(img.get_data_dtype())
    qform, qcode = img.header.get_qform(coded=True)
    sform, scode = img.header.get_sform(coded=True)
    out.header.set_qform(out.affine if qform is not None else None, code=int(qcode))
    out.header.set_sform(out.affine if sform is not None else None, code=int(scode))
    return out


def build(source: Path, out: Path) -> list[str]:
    """Write every file into ``out``; returns the relative paths written."""
    import nibabel as nib

    written = []
    for rel in COPIED:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, out / rel)
        written.append(rel)
    target = out / B_DICOM
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in lowest_dicom_files(source / B_DICOM):
        shutil.copyfile(path, target / path.name)
        written.append(f"{B_DICOM}/{path.name}")
    box = s0006_box(source / S0006_MAP)
    nib.save(cropped(source / S0006_MAP, box), str(out / S0006_MAP))
    written.append(S0006_MAP)
    masks = out / S0006_MASKS
    if masks.exists():
        shutil.rmtree(masks)
    masks.mkdir(parents=True)
    for path in sorted((source / S0006_MASKS).iterdir()):
        nib.save(cropped(path, box), str(masks / path.name))
        written.append(f"{S0006_MASKS}/{path.name}")
    for rel in written:
        (out / rel).chmod(0o644)
    return written


def _same_nifti(a: Path, b) -> bool:
    import nibabel as nib
    import numpy as np

    x = nib.load(str(a))
    return (x.shape == b.shape and x.get_data_dtype() == b.get_data_dtype()
            and np.array_equal(np.asanyarray(x.dataobj), np.asanyarray(b.dataobj))
            and np.allclose(x.affine, b.affine, atol=1e-5)
            and int(x.header["qform_code"]) == int(b.header["qform_code"])
            and int(x.header["sform_code"]) == int(b.header["sform_code"]))


def check(source: Path, out: Path) -> list[str]:
    """Differences between the files in ``out`` and a fresh build from ``source`` (empty: identical)."""
    problems = [f"{rel}: differs from the source" for rel in COPIED
                if not (out / rel).is_file() or not filecmp.cmp(source / rel, out / rel, shallow=False)]
    expected = {p.name: p for p in lowest_dicom_files(source / B_DICOM)}
    here = {p.name for p in (out / B_DICOM).iterdir()} if (out / B_DICOM).is_dir() else set()
    if here != set(expected):
        problems.append(f"{B_DICOM}: holds {sorted(here)}, expected {sorted(expected)}")
    problems += [f"{B_DICOM}/{name}: differs from the source" for name in sorted(here & set(expected))
                 if not filecmp.cmp(expected[name], out / B_DICOM / name, shallow=False)]
    box = s0006_box(source / S0006_MAP)
    pairs = [(S0006_MAP, source / S0006_MAP)] + [(f"{S0006_MASKS}/{p.name}", p)
                                                 for p in sorted((source / S0006_MASKS).iterdir())]
    problems += [f"{rel}: not the crop of the source" for rel, src in pairs
                 if not (out / rel).is_file() or not _same_nifti(out / rel, cropped(src, box))]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder with the upstream files (layout above)")
    parser.add_argument("--out", type=Path, default=HERE, help=f"target folder (default {HERE})")
    parser.add_argument("--check", action="store_true", help="only compare the files in --out with a fresh build")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.source, args.out)
        for line in problems:
            print(line, file=sys.stderr)
        print("test data OK: identical to a fresh build" if not problems else "test data differ", file=sys.stderr)
        return 1 if problems else 0
    written = build(args.source, args.out)
    size = sum((args.out / rel).stat().st_size for rel in written)
    print(f"{len(written)} files, {size / 1e6:.2f} MB written into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
