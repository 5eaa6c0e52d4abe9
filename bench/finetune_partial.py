"""Fine-tune the default model on a liver-only case: partial-label losses vs the old background treatment.

The measurement of docs/training.md "Partially labeled cohorts" (issue 13). Patient A's real CT with ONLY its
liver drawn (the other organs erased from its label map, as in a liver study) is the labeled case; synthetic
phantoms (``scdl phantom``) are the unlabeled ones. Two runs from ``--init scdl-abdominal-ct --preset cpu``
with the same seed, data and iterations:

- ``partial``: the manifest says ``annotated=liver``: the other organs are unknown in A (marginal + exclusion
  losses, scdl.losses.partial);
- ``background``: no ``annotated`` column: every class the table names counts as drawn, so the erased organs
  are taught as background (what every version before issue 13 did).

Every organ's Dice on held-out patient B (``scdl segment`` + ``scdl evaluate --resample``) is measured for
the default model itself and after each run. Patient B is only measured, never used to choose anything.

    python bench/finetune_partial.py --out runs/partial --iterations 200
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scdl.models.card import LABELS_FILE
from scdl.training.cohort import MANIFEST_NAME, write_manifest
from scdl.training.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def _scdl(*args: str) -> list[str]:
    return [sys.executable, "-m", "scdl", *args]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def liver_only(label: Path, out: Path) -> Path:
    """Patient A's label map with every structure but the liver erased (TotalSegmentator v2 values)."""
    import SimpleITK as sitk

    from scdl.labels.table import LabelTable

    liver = LabelTable.load("totalsegmentator_v2").by_name("liver").value
    image = sitk.ReadImage(str(label))
    only = sitk.Cast(sitk.BinaryThreshold(image, liver, liver, liver, 0), image.GetPixelID())
    only.CopyInformation(image)
    sitk.WriteImage(only, str(out), True)
    return out


#: (image, label map) of the evaluation patients, under the shared data folder.
PATIENTS = {"B": ("totalsegmentator_fixtures/example_ct_dicom", "totalsegmentator_fixtures/example_seg_dicom.nii.gz"),
            "A": ("totalsegmentator_fixtures/example_ct.nii.gz",
                  "totalsegmentator_fixtures/example_seg_fast_force_split.nii.gz")}


def evaluate(model: str, data: Path, out: Path, tag: str, patient: str = "B") -> dict[str, Any]:
    """Per-organ Dice of ``model`` on a patient against its full label map (B: held out; A: the fine-tuning CT,
    whose organs other than the liver were NOT shown to the partial run: the validation of forgetting)."""
    image, truth = PATIENTS[patient]
    pred, report = out / f"{patient}_{tag}.nii.gz", out / f"{patient}_{tag}.json"
    subprocess.run(_scdl("segment", str(data / image), "-o", str(pred),
                         "--model", model, "--device", "cpu", "--progress", "none"), check=True)
    labels = Path(model) / LABELS_FILE if Path(model).is_dir() else None
    cmd = ["evaluate", str(pred), str(data / truth),
           "--gt-labels", "totalsegmentator_v2", "--resample", "--json", str(report)]
    if labels is not None:
        cmd[3:3] = ["--labels", str(labels)]
    subprocess.run(_scdl(*cmd), check=True, capture_output=True, text=True)
    scores = json.loads(report.read_text(encoding="utf-8"))
    organs = {c["name"]: round(float(c["dice"]), 4) for c in scores["classes"] if c["gt_voxels"] > 0}
    return {"organs": organs, "mean": round(sum(organs.values()) / len(organs), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--phantoms", type=int, default=4, help="unlabeled phantom CTs (default 4)")
    ap.add_argument("--model", default="scdl-abdominal-ct")
    ap.add_argument("--only", choices=["partial", "background"], help="run one variant only")
    ap.add_argument("--no-b", action="store_true", help="validation only (patient A): no held-out B measurement "
                    "(for choosing settings; B is measured once, at the end)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting for both runs (scdl train --set), repeatable")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    a_ct = args.data / "totalsegmentator_fixtures/example_ct.nii.gz"
    a_seg = args.data / "totalsegmentator_fixtures/example_seg_fast_force_split.nii.gz"
    label = liver_only(a_seg, out / "A_liver_only.nii.gz")
    phantoms = out / "phantoms"
    if not (phantoms / MANIFEST_NAME).is_file():
        subprocess.run(_scdl("phantom", "--out", str(phantoms), "--cases", str(args.phantoms), "--seed", "0",
                             "--labeled", "0", "--val", "0", "--spacing", "3", "--progress", "none"), check=True)
    with (phantoms / MANIFEST_NAME).open(newline="", encoding="utf-8") as handle:
        unlabeled = [str(phantoms / r["image"]) for r in csv.DictReader(handle)]
    results: dict[str, Any] = {"iterations": args.iterations, "model": args.model, "phantoms": len(unlabeled),
                               "settings": list(args.set)}
    summary_path = out / "summary.json"
    if summary_path.is_file():
        results.update(json.loads(summary_path.read_text(encoding="utf-8")))
    bundled = ROOT / "Resources" / "Models" / args.model
    model_path = str(bundled if bundled.is_dir() else args.model)
    if "before_A" not in results:
        log("validation patient A (all organs) with the default model")
        results["before_A"] = evaluate(model_path, args.data, out, "before", "A")
    if "before" not in results and not args.no_b:
        log("held-out B with the default model")
        results["before"] = evaluate(model_path, args.data, out, "before", "B")
    summary_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    variants = {"partial": "liver", "background": ""}
    for name, annotated in variants.items():
        if args.only and name != args.only:
            continue
        manifest = out / f"cohort_{name}.csv"
        write_manifest(manifest, [{"image": str(a_ct), "label": str(label), "split": "train",
                                   "labels": "totalsegmentator_v2", "annotated": annotated}]
                       + [{"image": path, "label": "", "split": "train", "labels": "", "annotated": ""}
                          for path in unlabeled])
        run = out / f"run_{name}"
        log(f"fine-tuning ({name}): {args.iterations} iterations")
        t0 = time.monotonic()
        subprocess.run(_scdl("train", "--cohort", str(manifest), "--out", str(run), "--init", args.model,
                             "--preset", "cpu", "--iterations", str(args.iterations), "--device", "cpu",
                             "--cache-dir", str(out / "cache"), "--progress", "none",
                             *[a for kv in args.set for a in ("--set", kv)]), check=True)
        minutes = (time.monotonic() - t0) / 60
        results[name + "_A"] = evaluate(str(RunFolder(run).model_dir), args.data, out, name, "A")
        log(f"{name}: validation A {results[name + '_A']}")
        if not args.no_b:
            results[name] = {**evaluate(str(RunFolder(run).model_dir), args.data, out, name, "B"),
                             "train_minutes": round(minutes, 1)}
            log(f"{name}: held-out B {results[name]}")
        summary_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
