"""Regenerate (or check) the bundled sample CT of ``scdl demo`` from the shared real-CT fixtures.

The sample is patient B of the TotalSegmentator test fixtures (upper abdomen, contrast, SIEMENS Biograph40
mCT, 20 DICOM slices of 512 x 512, 0.977 x 0.977 x 2 mm): never trained on; the validation case of default model 4.

    python Resources/Sample/make_sample.py                      # data from ../shared/data beside the checkout
    python Resources/Sample/make_sample.py --data /path/to/shared/data --out Resources/Sample
    python Resources/Sample/make_sample.py --check              # compare the bundled files with the source

What it writes (and what it changes against the source; nothing else is changed):

- ``sample_ct.nii.gz``: the DICOM series read with SimpleITK (HU as int16, rescale applied), written
  losslessly as one gzip NIfTI on the series' own grid (same voxels, spacing, origin, direction).
- ``sample_labels.nii.gz``: ``example_seg_dicom.nii.gz`` (TotalSegmentator v2 ids, direction diag(1,-1,1))
  resampled onto the CT grid with nearest neighbour (a pure voxel permutation: every label keeps its voxel
  count, checked below), then renumbered BY NAME into the Synapse table (``Resources/Labels/synapse.csv``);
  TotalSegmentator structures outside the 13 Synapse organs become background.
- ``sample.json``: what the files are (patient id, label table, licence, SHA-256 of both files and of
  their voxel arrays) for ``scdl demo``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"

CT_FILE = "sample_ct.nii.gz"
LABELS_FILE = "sample_labels.nii.gz"
META_FILE = "sample.json"
#: Stable id of the sample's patient; model cards list the patients they were (not) trained on by this id.
PATIENT_ID = "totalsegmentator-fixtures/patient-B"
SOURCE_CT = "totalsegmentator_fixtures/example_ct_dicom"
SOURCE_LABELS = "totalsegmentator_fixtures/example_seg_dicom.nii.gz"
SOURCE_COMMIT = "0e65a448d557382b1e925276212b3bec7f5aff83"


def voxel_sha256(image) -> str:
    """SHA-256 of an image's voxel array (C order, little-endian) and its size, spacing, origin, direction."""
    import numpy as np
    import SimpleITK as sitk

    arr = np.ascontiguousarray(sitk.GetArrayViewFromImage(image))
    digest = hashlib.sha256()
    digest.update(str(arr.dtype.newbyteorder("<")).encode() + b"\0")
    geometry = (image.GetSize(), tuple(round(v, 6) for v in image.GetSpacing()),
                tuple(round(v, 4) for v in image.GetOrigin()), tuple(round(v, 6) for v in image.GetDirection()))
    digest.update(repr(geometry).encode() + b"\0")
    digest.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_images(data: Path):
    """(ct, labels) SimpleITK images of patient B; labels in Synapse numbering on the CT grid."""
    import numpy as np
    import SimpleITK as sitk

    from scdl.io.image import read_ct, read_label_map
    from scdl.labels.mapping import map_label_array
    from scdl.labels.table import LabelTable

    ct = read_ct(data / SOURCE_CT)
    if ct.GetPixelID() != sitk.sitkInt16:
        ct = sitk.Cast(ct, sitk.sitkInt16)
    original = read_label_map(data / SOURCE_LABELS)
    on_ct = read_label_map(data / SOURCE_LABELS, reference=ct, resample=True)
    before = np.bincount(sitk.GetArrayViewFromImage(original).ravel())
    after = np.bincount(sitk.GetArrayViewFromImage(on_ct).ravel(), minlength=before.size)
    if not np.array_equal(before, after[: before.size]) or after[before.size:].any():
        raise SystemExit("the label map did not land voxel for voxel on the DICOM grid (counts changed); "
                         "the source data are not the expected ones.")
    mapped, unknown = map_label_array(sitk.GetArrayViewFromImage(on_ct), LabelTable.load("totalsegmentator_v2"),
                                      LabelTable.load("synapse"))
    if unknown:
        raise SystemExit(f"label values {unknown} are not TotalSegmentator v2 ids.")
    labels = sitk.GetImageFromArray(mapped.astype(np.uint8))
    labels.CopyInformation(ct)
    return ct, labels


def metadata(ct, labels, out: Path) -> dict:
    import numpy as np
    import SimpleITK as sitk

    from scdl.labels.table import LabelTable

    table = LabelTable.load("synapse")
    names = {int(e.value): e.name for e in table.entries}
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=max(names) + 1)
    return {
        "schema": "scdl-sample",
        "schema_version": 1,
        "title": "Upper-abdomen contrast CT (patient B of the TotalSegmentator test fixtures)",
        "patient": PATIENT_ID,
        "ct": CT_FILE,
        "labels": LABELS_FILE,
        "label_table": "synapse",
        "label_kind": "silver: TotalSegmentator model predictions renumbered to Synapse by name, not manual annotation",
        "organs_labelled": {names[v]: int(counts[v]) for v in sorted(names) if v and counts[v]},
        "grid": {"size": list(ct.GetSize()), "spacing_mm": [round(v, 6) for v in ct.GetSpacing()],
                 "origin_mm": [round(v, 4) for v in ct.GetOrigin()], "direction": list(ct.GetDirection())},
        "source": {"repository": "https://github.com/wasserth/TotalSegmentator", "commit": SOURCE_COMMIT,
                   "ct": f"tests/reference_files/example_ct_dicom (here: shared/data/{SOURCE_CT})",
                   "labels": f"tests/reference_files/example_seg_dicom.nii.gz (here: shared/data/{SOURCE_LABELS})"},
        "licence": "Images: CC BY 4.0 (TotalSegmentator data, University Hospital Basel); repository Apache-2.0. "
                   "See PROVENANCE.txt.",
        "regenerate": "python Resources/Sample/make_sample.py",
        "files": {name: {"sha256": file_sha256(out / name), "voxel_sha256": voxel_sha256(img)}
                  for name, img in ((CT_FILE, ct), (LABELS_FILE, labels))},
    }


def write(data: Path, out: Path) -> dict:
    """Write the sample files into ``out`` (each atomically) and return the metadata."""
    from scdl.io.atomic import atomic_path, atomic_write_text
    from scdl.io.writers import write_image, write_label_map

    ct, labels = build_images(data)
    with atomic_path(out / CT_FILE) as tmp:
        write_image(ct, tmp)
    with atomic_path(out / LABELS_FILE) as tmp:
        write_label_map(labels, tmp)
    meta = metadata(ct, labels, out)
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    for name in (CT_FILE, LABELS_FILE, META_FILE):
        (out / name).chmod(0o644)  # temporary files are created 0600; data files are world-readable
    return meta


def check(data: Path, out: Path) -> list[str]:
    """Differences between the bundled sample and a fresh build from ``data`` (empty list: identical voxels)."""
    import SimpleITK as sitk

    ct, labels = build_images(data)
    meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    problems = []
    for name, fresh in ((CT_FILE, ct), (LABELS_FILE, labels)):
        bundled = sitk.ReadImage(str(out / name))
        if voxel_sha256(bundled) != voxel_sha256(fresh):
            problems.append(f"{name}: voxels or geometry differ from a fresh build")
        if file_sha256(out / name) != meta["files"][name]["sha256"]:
            problems.append(f"{name}: SHA-256 differs from {META_FILE}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=HERE, help=f"sample folder (default {HERE})")
    parser.add_argument("--check", action="store_true", help="only compare the bundled files with a fresh build")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.data, args.out)
        for line in problems:
            print(line, file=sys.stderr)
        print("sample OK: identical to a fresh build" if not problems else "sample differs", file=sys.stderr)
        return 1 if problems else 0
    meta = write(args.data, args.out)
    sizes = {name: (args.out / name).stat().st_size for name in (CT_FILE, LABELS_FILE)}
    print(json.dumps({"written": str(args.out), "bytes": sizes, "organs": meta["organs_labelled"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
