"""Build the default model ``scdl-abdominal-ct`` from the real CT in ``shared/data``: ONE documented command.

    python bench/train_default_model.py --out runs/default               # 50 min training budget (recipe), then installs
    python bench/train_default_model.py --out runs/default --minutes 90  # a longer run
    python bench/train_default_model.py --out runs/smoke --smoke --resources /tmp/res   # pipeline check (minutes)

Recipe (``Resources/Models/recipes/scdl-abdominal-ct/``): ``config.json`` is the ``scdl train --config`` file
(CPS + SCDL, VNet width 8, 3 mm, 64 x 64 x 32 patches); ``cohort.json`` names the data and the split:

1. cohort: patient A (TotalSegmentator silver labels, mapped to Synapse by name) is the labeled data, as two
   overlapping sub-volumes; anatomy cases (label maps, a new synthetic CT per sample) are labeled
   data too; synthetic phantoms (``scdl phantom``) are the unlabeled data; validation = CTs synthesised once
   from the anatomy maps with unused seeds + one phantom. Patient B is held out: never trained on, never used to pick a checkpoint.
2. budget: unless ``--iterations`` is given, a short calibration run of ``scdl train`` measures iterations per
   second on this machine and the iteration count is set to fill ``--minutes``; a run that still overshoots
   the hard limit (``minutes x hard_limit_factor``) is stopped (SIGTERM, checkpoint) and packaged at the
   iteration it reached (``scdl train --resume RUN --iterations N``).
3. ``scdl train``: validation every ``validation.every`` iterations on CTs synthesised from the anatomy maps
   (``validation_synth``: new seeds, phases and deformations) and a phantom; the best checkpoint is shipped.
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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from scdl.models.card import LABELS_FILE
from scdl.progress import parse_event
from scdl.training.cohort import MANIFEST_NAME, write_manifest
from scdl.training.runfolder import RunFolder, recipe_files

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "Resources" / "Models" / "recipes" / "scdl-abdominal-ct"
DEFAULT_DATA = REPO.parent / "shared" / "data"
SMOKE_ITERATIONS = 4
#: Extra ``scdl train`` arguments of the main run (``--init``).
TRAIN_EXTRA: list[str] = []


def log(text: str) -> None:
    print(f"[default-model] {text}", file=sys.stderr, flush=True)


def fail(text: str) -> "SystemExit":
    return SystemExit(f"error: {text}")


# -- recipe ------------------------------------------------------------------------------------------
def load_recipe(folder: Path) -> tuple[dict[str, Any], Path]:
    """(cohort.json as a dict, path of config.json) of a recipe folder, with the split checked."""
    config, cohort_file = recipe_files(folder)
    cohort = json.loads(cohort_file.read_text(encoding="utf-8"))
    if not config.is_file():
        raise fail(f"{config}: missing training config.")
    check_split(cohort)
    return cohort, config


def check_split(cohort: dict[str, Any]) -> None:
    """Refuse a recipe that trains on a held-out patient or file (raises SystemExit naming it)."""
    held_patients = {c["patient"] for c in cohort.get("held_out", [])}
    held_files = {c[k] for c in cohort.get("held_out", []) for k in ("image", "label")}
    for case in cohort.get("labeled", []):
        if case["patient"] in held_patients:
            raise fail(f"recipe: patient {case['patient']} is both a training and a held-out patient.")
        for key in ("image", "label"):
            if case[key] in held_files:
                raise fail(f"recipe: {case[key]} is both training data and held-out data.")
    if not held_patients:
        raise fail("recipe: no held-out patient: the card needs held-out metrics.")
    trained_maps = {c["label"] for c in cohort.get("anatomy", [])}
    for case in cohort.get("validation_anatomy", []):
        if case["label"] in trained_maps or case["patient"] in {c["patient"] for c in cohort.get("anatomy", [])}:
            raise fail(f"recipe: {case['label']} is both a training anatomy and the held-out validation anatomy.")


# -- step 1: the cohort ------------------------------------------------------------------------------
def _scdl(*args: str) -> list[str]:
    return [sys.executable, "-m", "scdl", *args]


def z_crops(image_path: Path, label_path: Path, out: Path, fraction: float) -> list[tuple[Path, Path]]:
    """Two overlapping sub-volumes (inferior, superior ``fraction`` of the slices) of a CT and its label map.

    Geometry is kept (each crop has its own origin); the label map must share the CT's grid.
    """
    import SimpleITK as sitk

    from scdl.io.atomic import atomic_path
    from scdl.io.geometry import same_grid

    image = sitk.ReadImage(str(image_path))
    label = sitk.ReadImage(str(label_path))
    if not same_grid(image, label):
        raise fail(f"{label_path}: not on the grid of {image_path}.")
    nx, ny, nz = image.GetSize()
    depth = max(16, int(round(nz * fraction)))
    pairs = []
    for name, z0 in (("inferior", 0), ("superior", nz - depth)):
        paths = []
        for src, kind in ((image, "image"), (label, "label")):
            target = out / f"{kind}s" / f"{name}.nii.gz"
            with atomic_path(target) as tmp:
                sitk.WriteImage(sitk.RegionOfInterest(src, [nx, ny, depth], [0, 0, z0]), str(tmp), True)
            paths.append(target)
        pairs.append((paths[0], paths[1]))
    return pairs


def build_cohort(cohort: dict[str, Any], data: Path, out: Path, smoke: bool) -> tuple[Path, dict[str, Any]]:
    """Write ``out/manifest.csv`` (absolute paths) and return it with a description of every row."""
    import csv

    rows: list[dict[str, str]] = []
    described: dict[str, Any] = {"labeled": [], "phantoms": None}
    for index, case in enumerate(cohort["labeled"]):
        image, label = data / case["image"], data / case["label"]
        for path in (image, label):
            if not path.exists():
                raise fail(f"{path}: training data missing (give the shared data folder with --data).")
        crop = case.get("z_crops") or {}
        if crop.get("fraction"):
            pairs = z_crops(image, label, out / f"labeled_{index}", float(crop["fraction"]))
        else:
            pairs = [(image, label)]
        for img, lab in pairs:
            rows.append({"image": str(img), "label": str(lab), "split": "train", "labels": case["labels"]})
        described["labeled"].append({**case, "cases_in_manifest": [str(p[0]) for p in pairs]})
    described["anatomy"] = []
    for case in cohort.get("anatomy", []):          # label maps without image: synthesised per sample
        label = data / case["label"]
        if not label.exists():
            raise fail(f"{label}: training data missing (give the shared data folder with --data).")
        rows.append({"image": "", "label": str(label), "split": "train", "labels": case["labels"]})
        described["anatomy"].append(case)
    described["validation_synth"] = synth_validation(cohort, data, out / "val_synth", rows)
    described["validation_real"] = []
    for case in cohort.get("validation_real", []):      # real CT that validates (never trains): patient B
        image, label = recipe_path(case["image"], data), recipe_path(case["label"], data)
        for path in (image, label):
            if not path.exists():
                raise fail(f"{path}: validation data missing.")
        rows.append({"image": str(image), "label": str(label), "split": "val", "labels": case["labels"]})
        described["validation_real"].append({**case, "image": str(image), "label": str(label)})
    ph = dict(cohort["phantoms"])
    if smoke:
        ph.update(cases=ph.get("labeled", 0) + ph.get("val", 0) + 3)     # 3 unlabeled, the recipe's validation
    phantom_dir = out / "phantoms"
    if phantom_dir.exists():
        shutil.rmtree(phantom_dir)
    cmd = _scdl("phantom", "--out", str(phantom_dir), "--cases", str(ph["cases"]), "--seed", str(ph["seed"]),
                "--labeled", str(ph.get("labeled", 0)), "--val", str(ph.get("val", 1)), "--test", "0",
                "--spacing", str(ph["spacing_mm"]), "--progress", "none")
    log("generating phantoms: " + " ".join(cmd[2:]))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with (phantom_dir / MANIFEST_NAME).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append({"image": str(phantom_dir / row["image"]),
                         "label": str(phantom_dir / row["label"]) if row["label"] else "",
                         "split": row["split"], "labels": row["labels"] if row["label"] else ""})
    described["phantoms"] = ph
    held = {str((data / c[k]).resolve()) for c in cohort["held_out"] for k in ("image", "label")}
    held |= {str(recipe_path(c[k], data).resolve()) for c in cohort.get("validation_real", [])
             for k in ("image", "label")}
    for row in (r for r in rows if r["split"] == "train"):
        for key in ("image", "label"):
            if row[key] and str(Path(row[key]).resolve()) in held:
                raise fail(f"{row[key]}: held-out data in the training manifest.")
    manifest = write_manifest(out / MANIFEST_NAME, rows)
    counts = {"labeled": sum(1 for r in rows if r["label"] and r["split"] == "train"),
              "unlabeled": sum(1 for r in rows if not r["label"]),
              "val": sum(1 for r in rows if r["split"] == "val")}
    described["manifest_counts"] = counts
    log(f"cohort: {counts['labeled']} labeled (patient A crops + anatomy), {counts['unlabeled']} unlabeled "
        f"phantoms, {counts['val']} validation case(s) -> {manifest}")
    return manifest, described


def recipe_path(name: str, data: Path) -> Path:
    """A recipe file name: ``repo:<path>`` is inside this repository (the bundled sample), else under ``data``."""
    return REPO / name[len("repo:"):] if name.startswith("repo:") else data / name


def keep_slices(image: Path, label: Path, z_keep: list[float]) -> None:
    """Crop a synthesised validation CT and its label map (same grid) to the slices in the fraction range
    ``z_keep`` = [low, high) of the z axis, in place: a short scan, or one that ends inside organs."""
    import SimpleITK as sitk

    from scdl.io.atomic import atomic_path

    for path in (image, label):
        img = sitk.ReadImage(str(path))
        nx, ny, nz = img.GetSize()
        z0 = int(round(float(z_keep[0]) * nz))
        z1 = max(z0 + 1, int(round(float(z_keep[1]) * nz)))
        with atomic_path(path) as tmp:
            sitk.WriteImage(sitk.RegionOfInterest(img, [nx, ny, z1 - z0], [0, 0, z0]), str(tmp), True)


def synth_validation(cohort: dict[str, Any], data: Path, out: Path, rows: list[dict[str, str]]) -> list[dict]:
    """Synthesise the recipe's validation CTs (``validation_synth``) once and add them to ``rows`` as ``val``.

    Each case is ``scdl synth`` of an anatomy's label map with its own seed and phase (``--augment``: elastic
    deformation), written with its label map on the CT's grid. The trainer seeds each training synthesis with
    the sequence (run seed, step, stream, sample), never with a single integer as here, so no validation
    image is a training image.
    """
    spec = cohort.get("validation_synth") or {}
    anatomies = {c["patient"]: c for c in [*cohort.get("anatomy", []), *cohort.get("validation_anatomy", [])]}
    made = []
    for index, case in enumerate(spec.get("cases", [])):
        source = anatomies.get(case["anatomy"])
        if source is None:
            raise fail(f"recipe: validation_synth case {index} names {case['anatomy']!r}, not an anatomy case.")
        name = f"val_{index}_{case['anatomy'].rsplit('/', 1)[-1]}_{case['phase']}"
        image, label = out / f"{name}.nii.gz", out / f"{name}_labels.nii.gz"
        cmd = _scdl("synth", str(data / source["label"]), "--labels", source["labels"], "-o", str(image),
                    "--label-out", str(label), "--seed", str(case["seed"]), "--phase", case["phase"],
                    "--spacing", str(spec.get("spacing_mm", 3.0)), *(["--augment"] if spec.get("augment") else []))
        out.mkdir(parents=True, exist_ok=True)
        _run(cmd, stdout=subprocess.DEVNULL)
        if case.get("z_keep"):
            keep_slices(image, label, case["z_keep"])
        rows.append({"image": str(image), "label": str(label), "split": "val", "labels": source["labels"]})
        made.append({**case, "image": str(image), "label": str(label)})
    if made:
        log(f"validation: {len(made)} CT(s) synthesised from the anatomy maps -> {out}")
    return made


# -- steps 2 and 3: calibration and training ---------------------------------------------------------
def run_train(manifest: Path, config: Path, run_dir: Path, iterations: int, device: str, cache: Path,
              deadline_s: Optional[float] = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``scdl train`` (JSON progress), echo a line per logged iteration, stop it at ``deadline_s``.

    Returns the parsed ``done`` line (``output``, ``iteration``, ``elapsed_s``) plus ``stopped`` and
    ``last_iteration``; raises SystemExit if training failed.
    """
    cmd = _scdl("train", "--cohort", str(manifest), "--out", str(run_dir), "--config", str(config),
                "--iterations", str(iterations), "--device", device, "--cache-dir", str(cache),
                "--progress", "json", *extra)
    return _stream_train(cmd, deadline_s)


def _stream_train(cmd: list[str], deadline_s: Optional[float]) -> dict[str, Any]:
    import threading

    log("running: scdl " + " ".join(cmd[3:]))
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    state: dict[str, Any] = {"stopped": False, "last_iteration": 0, "done": None, "device": None}

    def watchdog() -> None:
        while proc.poll() is None:
            if deadline_s is not None and time.monotonic() - start > deadline_s and not state["stopped"]:
                log(f"hard time limit ({deadline_s / 60:.1f} min) reached: stopping training (SIGTERM)")
                state["stopped"] = True
                proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        event = parse_event(line)
        if event is None:
            continue
        if event.get("event") == "start":
            state["device"] = event.get("device")
        elif event.get("event") == "iteration":
            state["last_iteration"] = int(event["iteration"])
            loss = (event.get("loss") or {}).get("total")
            log(f"iteration {event['iteration']}/{event['iterations']}  loss {loss:.4f}  "
                f"{event.get('it_per_s', 0):.3f} it/s  ETA {event.get('eta_s', 0) / 60:.1f} min")
        elif event.get("event") == "checkpoint":
            state["last_iteration"] = int(event["iteration"])
        elif event.get("event") == "validation":
            log(f"validation mean Dice {event.get('mean_dice')}")
        elif event.get("phase") == "done":
            state["done"] = event
    code = proc.wait()
    guard.join(timeout=2)
    if code == 130 and state["stopped"]:
        return {"stopped": True, "last_iteration": state["last_iteration"], "device": state["device"]}
    if code != 0 or state["done"] is None:
        raise fail(f"scdl train failed (exit {code}); command: {' '.join(cmd)}")
    return {**state["done"], "stopped": False, "last_iteration": state["last_iteration"], "device": state["device"]}


def measure_speed(manifest: Path, config: Path, out: Path, iterations: int, device: str, cache: Path) -> float:
    """Iterations per second of this recipe on this machine: the mean rate after the first logged window
    (which holds the warm-up), from the run's own ``log.csv`` (iteration, elapsed_s)."""
    import csv

    run_dir = out / "calibration"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    every = max(1, iterations // 4)
    run_train(manifest, config, run_dir, iterations, device, cache,
              extra=("--set", f"log_every={every}", "--set", f"checkpoint_every={iterations}",
                     "--set", "validation.every=-1"))        # a speed measurement: no validation pass
    with RunFolder(run_dir).log.open(newline="", encoding="utf-8") as handle:
        rows = [(int(r["iteration"]), float(r["elapsed_s"])) for r in csv.DictReader(handle)]
    (it0, t0), (it1, t1) = rows[0], rows[-1]
    if it1 <= it0 or t1 <= t0:
        return it1 / max(t1, 1e-9)
    return (it1 - it0) / (t1 - t0)


def plan_iterations(it_per_s: float, minutes: float, budget: dict[str, Any]) -> int:
    """Iterations that fill ``minutes`` at ``it_per_s`` (95 %), clamped to the recipe's bounds."""
    planned = int(it_per_s * minutes * 60.0 * 0.95)
    return int(min(max(planned, int(budget["min_iterations"])), int(budget["max_iterations"])))


def packaged_run(run_dir: Path) -> dict[str, Any]:
    """What :func:`train` returns, for a run that already finished (``--package-only``)."""
    from scdl.models.package import ModelPackage

    folder = RunFolder(run_dir)
    if not (folder.model_dir / "card.json").is_file():
        raise fail(f"{folder.model_dir}: no packaged model of a finished run (train first, without --package-only).")
    prov = ModelPackage.load(folder.model_dir, verify=True).card["provenance"]
    reached = int(prov.get("iterations") or 0)
    planned = int(json.loads(folder.config.read_text(encoding="utf-8")).get("iterations") or reached)
    result: dict[str, Any] = {"iteration": reached, "stopped": False, "device": None}
    if reached < planned:       # the recipe stopped it at the hard time limit and packaged it there
        result.update(stopped_at_limit=True, planned_iterations=planned)
    return result


def init_identity(init: Optional[str]) -> Optional[str]:
    """``<id> <version>`` of the package a stage started from (``--init``), or None for a fresh start."""
    if not init:
        return None
    card_file = Path(init) / "card.json"
    if card_file.is_file():
        card = json.loads(card_file.read_text(encoding="utf-8"))
        return f"{card.get('id')} {card.get('version')}"
    return str(init)


def train(manifest: Path, config: Path, out: Path, iterations: int, device: str, cache: Path,
          deadline_s: Optional[float]) -> dict[str, Any]:
    """The training run; a run stopped at the hard limit is packaged at the iteration it reached."""
    run_dir = out / "train"
    if RunFolder(run_dir).holds_run():
        raise fail(f"{run_dir}: holds an earlier run; choose a new --out folder.")
    result = run_train(manifest, config, run_dir, iterations, device, cache, deadline_s, extra=TRAIN_EXTRA)
    if result["stopped"]:
        from scdl.training import checkpoint as ckpt

        reached = int(ckpt.load_checkpoint(RunFolder(run_dir).checkpoint, map_location="cpu")["iteration"])
        log(f"packaging the networks of iteration {reached} (of {iterations} planned)")
        first_device = result.get("device")
        result = _stream_train(_scdl("train", "--resume", str(run_dir), "--iterations", str(reached),
                                     "--device", device, "--progress", "json"), None)
        result["device"] = first_device or result.get("device")
        result["stopped_at_limit"] = True
        result["planned_iterations"] = iterations
    return result


# -- step 4: held-out metrics ------------------------------------------------------------------------
def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a child ``scdl`` command; a failure ends in one line naming the command (its own error is above)."""
    try:
        return subprocess.run(cmd, check=True, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise fail(f"scdl {' '.join(cmd[3:])} failed (exit {exc.returncode}).") from None


def segment_and_score(package: Path, image: Path | str, label: Path | str, gt_labels: str, out: Path, name: str,
                      device: str) -> tuple[dict[str, Any], str, float]:
    """``scdl segment`` ``image`` with ``package`` into ``out/name.nii.gz``, then ``scdl evaluate`` it against
    ``label`` (table ``gt_labels``, matched by name; ``--resample``) into ``out/name.json``.

    Returns (the JSON report, the printed table, seconds of the segmentation).
    """
    out.mkdir(parents=True, exist_ok=True)
    pred, report = out / f"{name}.nii.gz", out / f"{name}.json"
    t0 = time.monotonic()
    _run(_scdl("segment", str(image), "-o", str(pred), "--model", str(package), "--device", device,
               "--progress", "none"), stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - t0
    table = _run(_scdl("evaluate", str(pred), str(label), "--labels", str(Path(package) / LABELS_FILE),
                       "--gt-labels", gt_labels, "--resample", "--json", str(report)),
                 capture_output=True, text=True).stdout
    return json.loads(report.read_text(encoding="utf-8")), table, seconds


def held_out_metrics(package: Path, cohort: dict[str, Any], data: Path, out: Path, device: str) -> dict[str, Any]:
    """``scdl segment`` + ``scdl evaluate`` of every held-out patient; per-organ scores from the JSON report."""
    results = {}
    for case in cohort["held_out"]:
        name = case["patient"].rsplit("/", 1)[-1]
        scores, table, seconds = segment_and_score(package, data / case["image"], data / case["label"],
                                                   case["labels"], out, name, device)
        log(f"held-out {case['patient']}:\n{table}")
        results[case["patient"]] = summarise_scores(scores, seconds)
    return results


def validation_scores(package: Path, manifest: Path, out: Path, device: str) -> dict[str, Any]:
    """:func:`segment_and_score` of a package on the ``val`` rows of a cohort manifest, on each case's own grid:
    ``{"cases": {name: mean Dice over its labelled organs}, "mean": mean over the cases}``.

    This is how a new build and the installed model are compared before installing (same cases, same code).
    """
    import csv

    with Path(manifest).open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val" and r["label"]]
    cases: dict[str, float] = {}
    for row in rows:
        name = Path(row["image"]).name.split(".")[0]
        scores, _, _ = segment_and_score(package, row["image"], row["label"],
                                         row["labels"] or str(Path(package) / LABELS_FILE), out, name, device)
        cases[name] = summarise_scores(scores)["mean_dice_labelled_organs"]
    mean = round(sum(cases.values()) / len(cases), 4) if cases else None
    return {"cases": cases, "mean": mean}


def ship_refusal(compared: dict[str, Any]) -> Optional[str]:
    """Why a new build must not replace the installed model, or None: it scores lower on the validation cases
    (``{"new": validation_scores, "installed": validation_scores}``; a tie installs the new build)."""
    new, old = compared["new"]["mean"], compared["installed"]["mean"]
    if new is None:
        return "the new build has no validation score"
    if old is not None and new < old:
        return f"worse than the installed model on the validation cases (mean Dice {new:.3f} < {old:.3f})"
    return None


def summarise_scores(report: dict[str, Any], seconds: Optional[float] = None) -> dict[str, Any]:
    """Card-ready numbers from a ``scdl evaluate --json`` report.

    ``mean_dice_labelled_organs``: mean Dice over the organs the ground truth contains (the headline number,
    ``scdl evaluate``'s ``mean.dice``); ``mean_dice``: over the organs in either map, false positives counting 0
    (``mean.dice_all_classes``; a report from before that key was added has this number as ``mean.dice``).
    """
    organs = {c["name"]: {"dice": _round(c["dice"]), "hd95_mm": _round(c["hd95_mm"]), "asd_mm": _round(c["asd_mm"]),
                          "status": c["status"]}
              for c in report["classes"] if c["status"] != "absent"}
    labelled = [c["dice"] for c in report["classes"] if c["gt_voxels"] > 0]
    false_pos = [c["name"] for c in report["classes"] if c["status"] == "false_positive"]
    out = {"mean_dice_labelled_organs": _round(sum(labelled) / len(labelled)) if labelled else None,
           "mean_dice": _round(report["mean"].get("dice_all_classes", report["mean"]["dice"])),
           "mean_hd95_mm": _round(report["mean"]["hd95_mm"]),
           "organs": organs, "organs_labelled": len(labelled), "false_positive_organs": false_pos,
           "grid": "the CT's native grid", "spacing_mm": [round(s, 4) for s in report["spacing_mm"]]}
    if seconds is not None:
        out["segment_seconds"] = round(seconds, 1)
    return out


def _round(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


# -- step 5: the package -----------------------------------------------------------------------------
def lineage(cohort: dict[str, Any], described: dict[str, Any], prov: dict[str, Any], training: dict[str, Any],
            compared: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages that made this model: the recipe's earlier stages (``cohort.json`` ``lineage``), then this one
    (version, what it started from, data, changes, iterations, minutes, validation scores)."""
    stage = {
        "version": cohort["version"],
        "init": training.get("init"),
        "data": ([c["patient"] for c in cohort["labeled"]] + [c["patient"] for c in described.get("anatomy", [])]),
        "changes": list(cohort.get("changes", [])),
        "iterations": int(prov.get("iterations") or training.get("iteration") or 0),
        "minutes": round(float(prov.get("training_time_s") or 0.0) / 60.0, 1),
        "validation": (compared or {}).get("new"),
        "validation_of_init": (compared or {}).get("installed"),
        "command": cohort.get("command"),
    }
    return [*cohort.get("lineage", []), stage]


def build_card(run_card: dict[str, Any], cohort: dict[str, Any], described: dict[str, Any], config: dict[str, Any],
               held_out: dict[str, Any], training: dict[str, Any], machine: dict[str, Any],
               smoke: bool, validation_comparison: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The default model's card from the trained run's card, the recipe and the measured numbers."""
    from scdl.models.card import new_card

    prov = run_card["provenance"]
    patients = [c["patient"] for c in cohort["labeled"]]
    validating = [c["patient"] for c in cohort.get("validation_real", [])]
    held = [c["patient"] for c in cohort["held_out"] if c["patient"] not in validating]
    ph = described["phantoms"]
    headline = "; ".join(f"{p.rsplit('/', 1)[-1]}: mean Dice {m['mean_dice_labelled_organs']} over "
                         f"{m['organs_labelled']} organs" for p, m in held_out.items())
    data = [f"{c['patient']}: {c['description']} (labeled; {len(c.get('cases_in_manifest', []))} sub-volume(s))"
            for c in described["labeled"]]
    data += [f"{c['patient']}: {c['description']} (anatomy case: label map only, CT synthesised by scdl.synth)"
             for c in described.get("anatomy", [])]
    data.append(f"{ph['cases'] - ph.get('labeled', 0) - ph.get('val', 0)} synthetic phantoms (scdl phantom, seed "
                f"{ph['seed']}, {ph['spacing_mm']} mm) as unlabeled data; {ph.get('labeled', 0)} labeled phantoms; "
                f"{ph.get('val', 0)} phantom as a validation case")
    data += [f"validation: CT synthesised from {v['anatomy']} (seed {v['seed']}, {v['phase']} phase, elastic "
             f"deformation)" for v in described.get("validation_synth", [])]
    licences = "; ".join(f"{c['patient']}: {c['licence']}" for c in cohort["labeled"])
    licences += "".join(f"; {c['patient']}: {c['licence']}" for c in cohort.get("anatomy", []))
    licences += f"; phantoms: {cohort['phantoms']['licence']}"
    n_maps = len(described.get("anatomy", []))
    warnings = [
        f"Trained on ONE real CT image (patient A, TotalSegmentator silver labels, model predictions) plus "
        f"synthetic CTs made from {n_maps} label maps (A's and TotalSegmentator dataset subjects'); "
        + ("patient B (20 slices, silver labels) and CTs synthesised from a label map kept out of training are the "
           "VALIDATION cases that chose the checkpoint and the ship decision: their Dice is optimistic, not a "
           "blind test." if validating else
           "held-out Dice is measured on ONE other patient (B, 20 slices, silver labels): a rough indication of "
           "accuracy, not a validation."),
        "Not for clinical use.",
        "The unlabeled phantoms' contrast-phase organ intensities (HU mean and std) were measured on patient "
        "B's CT within its silver labels (docs/phantom.md), so the unlabeled data carry those summary numbers of "
        "the held-out patient; no voxel or label of B is trained on.",
    ]
    warnings += [str(w) for w in cohort.get("warnings", [])]      # the recipe's own (design decisions to disclose)
    if not ph.get("labeled") and not described.get("anatomy"):
        warnings.append("esophagus: no labeled training case contains it (patient A's label map has no "
                        "oesophagus, no labeled phantoms), so the model has not learned it.")
    with_oesophagus = [c["patient"].rsplit("/", 1)[-1] for c in described.get("anatomy", []) if c.get("has_esophagus")]
    if described.get("anatomy"):
        warnings.append(f"esophagus: only {len(with_oesophagus)} training subject(s) ({', '.join(with_oesophagus)}, "
                        "synthetic images) contain it; expect it to be weak.")
    if training.get("stopped_at_limit"):
        warnings.append(f"training was stopped at the time limit after {training['iteration']} of "
                        f"{training['planned_iterations']} planned iterations (learning-rate schedule cut).")
    if smoke:
        warnings.insert(0, f"SMOKE RUN ({training['iteration']} iterations): checks the recipe end to end; the "
                           "weights are NOT a usable model.")
    validation = {"held_out": held_out,
                  "held_out_note": ("scdl segment on the patient's own DICOM grid, scdl evaluate against "
                                    "its TotalSegmentator label map (--resample, names matched to Synapse). "
                                    "mean_dice_labelled_organs = mean over the organs the label map contains."
                                    + (" This patient is the VALIDATION case (never trained on; it chose the "
                                       "checkpoint and the ship decision)." if validating else "")),
                  "validation": prov.get("validation_metrics"),
                  "selection": (f"best mean Dice on the {described.get('manifest_counts', {}).get('val', '?')} validation case(s), "
                                f"every {config.get('validation', {}).get('every')} iterations and at the end "
                                + ("(patient B and CTs synthesised from the held-out label map)" if validating else
                                   "(the held-out patient never seen)")
                                if int(config.get("validation", {}).get("every", 0) or 0) > 0 else
                                "last checkpoint (no checkpoint selection; the held-out patient never seen)")}
    title = cohort["title"] + (" [SMOKE RUN]" if smoke else "")
    card = new_card(
        id=cohort["model_id"], title=title, version=cohort["version"] + ("-smoke" if smoke else ""),
        architecture=run_card["architecture"], preprocessing=run_card["preprocessing"],
        ensemble=int(run_card["ensemble"]), inference=cohort.get("inference"),
        description=(f"CPS + SCDL VNet pair (width {run_card['architecture']['n_filters']}) at "
                     f"{' x '.join(f'{float(v):g}' for v in run_card['preprocessing'].get('spacing_mm') or [])} mm, trained on the CPU with "
                     f"bench/train_default_model.py on one real CT (patient A) plus CTs synthesised from {n_maps} "
                     f"anatomy label maps and unlabeled phantoms. "
                     f"{'Validation' if validating else 'Held-out'}: {headline}."),
        provenance={
            "data": data, "data_licence": licences, "framework": prov.get("framework"),
            "iterations": int(prov.get("iterations") or training.get("iteration") or 0),
            "training_time_s": prov.get("training_time_s"), "validation_metrics": validation,
            "source": "bench/train_default_model.py with Resources/Models/recipes/scdl-abdominal-ct",
            "training_patients": patients, "held_out_patients": held, "validation_patients": validating,
            "lineage": lineage(cohort, described, prov, training, validation_comparison),
            "excluded_data": cohort.get("excluded", []), "seed": prov.get("seed"),
            "recipe": {"config": config, "cohort": cohort}, "machine": machine,
        },
        intended_use=("Demonstration of SCDL (scdl demo, the SCDLSegment module) and a starting point for "
                      "fine-tuning on your own data (scdl train --init scdl-abdominal-ct). Not a medical device; "
                      "not for clinical use or any decision about a patient."),
        licence=("CC BY 4.0: the weights derive from CC BY 4.0 CT data; credit the TotalSegmentator project "
                 "(Wasserthal et al., University Hospital Basel) and SCDL. The SCDL code is Apache-2.0."),
        warnings=warnings)
    return card


def readme_text(card: dict[str, Any]) -> str:
    """The package's README.md: the card in Markdown (scdl.models.cardtext) with the recipe's note."""
    from scdl.models.cardtext import card_markdown

    return card_markdown(card, training_notes=[
        "Recipe: Resources/Models/recipes/scdl-abdominal-ct (config.json, cohort.json); reproduce with "
        "`python bench/train_default_model.py --out runs/default`."],
        held_out_heading=("Patient B, the validation case (native grid, against TotalSegmentator silver labels)"
                          if card["provenance"].get("validation_patients") else
                          "Held-out metrics (native grid, against TotalSegmentator silver labels)"))


def write_package(card: dict[str, Any], states: list[dict], labels: Any, out: Path) -> Path:
    """Write the package (card, weights, labels, README.md + manifest) atomically and verify it."""
    from scdl.models.package import ModelPackage, package_files, write_files

    files = package_files(card, states, labels)
    files["README.md"] = readme_text(card).encode("utf-8")
    write_files(out, files)
    ModelPackage.load(out, verify=True)
    for path in [out, *out.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def half_states(states: list[dict]) -> list[dict]:
    """The state dicts with every floating tensor in float16 (integers, e.g. BN counters, unchanged)."""
    return [{k: (v.half() if v.is_floating_point() else v) for k, v in state.items()} for state in states]


def labels_identical(a: Path, b: Path, manifest: Path, out: Path, device: str) -> dict[str, Any]:
    """Segment the ``val`` cases of ``manifest`` with packages ``a`` and ``b``; per case the number of voxels whose
    label differs (``scdl segment``, the shipped inference path). ``{"identical": bool, "differing_voxels": {...}}``."""
    import csv

    import numpy as np
    import SimpleITK as sitk

    with Path(manifest).open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val"]
    out.mkdir(parents=True, exist_ok=True)
    diffs = {}
    for row in rows:
        name = Path(row["image"]).name.split(".")[0]
        maps = []
        for tag, pkg in (("a", a), ("b", b)):
            pred = out / f"{name}_{tag}.nii.gz"
            _run(_scdl("segment", row["image"], "-o", str(pred), "--model", str(pkg), "--device", device,
                       "--progress", "none"), stdout=subprocess.DEVNULL)
            maps.append(sitk.GetArrayFromImage(sitk.ReadImage(str(pred))))
        diffs[name] = int(np.count_nonzero(maps[0] != maps[1]))
    return {"identical": not any(diffs.values()), "differing_voxels": diffs}


def package_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


# -- step 6: install ---------------------------------------------------------------------------------
def check_catalog(resources: Path, model_id: str) -> None:
    """The catalog must name ``model_id`` as a bundled model and as the default (it is not edited here)."""
    from scdl.models.catalog import load_catalog

    catalog = load_catalog(resources / "Catalog.json")
    entry = next((e for e in catalog["models"] if e["id"] == model_id), None)
    if entry is None or entry["kind"] != "bundled" or catalog.get("default") != model_id:
        raise fail(f"{resources / 'Catalog.json'}: needs a 'bundled' entry {model_id!r} that is the default.")


def install(package: Path, resources: Path, model_id: str) -> Path:
    from scdl.models.package import copy_package

    check_catalog(resources, model_id)
    from scdl.models.package import ModelPackage

    target = copy_package(package, resources / "Models" / model_id)
    for path in [target, *target.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    ModelPackage.load(target, verify=True)
    return target


def demo_check(package: Path, resources: Path, out: Path, device: str, held_out: dict[str, Any]) -> dict[str, Any]:
    """``scdl demo --model package`` (sample of ``resources``); its per-organ Dice must equal the held-out
    evaluation, which also proves that the bundled sample matches the shared data."""
    env = {**os.environ, "SCDL_RESOURCES": str(resources)}
    proc = subprocess.run(_scdl("demo", "--out", str(out), "--model", str(package), "--device", device,
                                "--progress", "json"), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise fail(f"scdl demo failed with the installed model:\n{proc.stderr}")
    events = [e for e in map(parse_event, proc.stdout.splitlines()) if e is not None]
    dice = next(e for e in events if e.get("event") == "dice")
    done = next(e for e in events if e.get("phase") == "done")
    sample = next(e for e in events if e.get("event") == "sample")
    patient = sample["patient"]
    if patient in held_out:
        expected = held_out[patient]["organs"]
        for cls in dice["classes"]:
            if cls["name"] in expected and cls["dice"] is not None:
                if abs(cls["dice"] - (expected[cls["name"]]["dice"] or 0.0)) > 1e-3:
                    raise fail(f"scdl demo's Dice for {cls['name']} ({cls['dice']:.4f}) differs from the held-out "
                               f"evaluation ({expected[cls['name']]['dice']}): the bundled sample does not match "
                               "the shared data.")
    return {"seconds": done["seconds"], "mean_dice_labelled_organs": done["mean_dice_labelled_organs"],
            "in_training_data": done["in_training_data"]}


# -- the whole job -------------------------------------------------------------------------------------
def machine_info(device: str) -> dict[str, Any]:
    import torch

    return {"device": device, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


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
                        help=f"pipeline check: {SMOKE_ITERATIONS} iterations, 2 unlabeled phantoms; installs only "
                             "into an explicit --resources folder")
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

    from scdl.resources import resources_dir

    if args.score_validation:
        manifest = args.out.resolve() / "cohort" / MANIFEST_NAME
        if not manifest.is_file():
            raise fail(f"{manifest}: no cohort of an earlier run (run the recipe with this --out first).")
        scores = {str(m): validation_scores(m.resolve(), manifest, args.out.resolve() / "validation" / f"model_{i}",
                                            args.device) for i, m in enumerate(args.score_validation)}
        print(json.dumps(scores, indent=2))
        return 0

    started = time.monotonic()
    if args.init:
        TRAIN_EXTRA.extend(["--init", str(Path(args.init).resolve()) if Path(args.init).exists() else args.init])
    cohort, config_path = load_recipe(args.recipe)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    budget = dict(cohort["budget"])
    minutes = float(args.minutes if args.minutes is not None else budget["minutes"])
    resources = (args.resources or resources_dir()).resolve()
    if args.smoke and not args.no_install and args.resources is None:
        raise fail("--smoke installs only into an explicit --resources folder (a smoke model is never shipped).")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"

    manifest, described = build_cohort(cohort, args.data.resolve(), out / "cohort", args.smoke)
    calibration = None
    iterations = args.iterations or (SMOKE_ITERATIONS if args.smoke else None)
    if args.package_only:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8")) if (out / "summary.json").is_file() else {}
        calibration = previous.get("calibration")
        iterations = -1
    if iterations is None:
        rate = measure_speed(manifest, config_path, out, int(budget["calibration_iterations"]), args.device, cache)
        iterations = plan_iterations(rate, minutes, budget)
        calibration = {"it_per_s": round(rate, 4), "minutes": minutes, "planned_iterations": iterations}
        log(f"calibration: {rate:.3f} it/s -> {iterations} iterations for {minutes:g} min")
    deadline = minutes * 60.0 * float(budget["hard_limit_factor"]) if calibration else None
    if args.package_only:
        training = packaged_run(out / "train")
    else:
        training = train(manifest, config_path, out, iterations, args.device, cache, deadline)
    training["init"] = init_identity(args.init)
    run_model = RunFolder(out / "train").model_dir

    from scdl.models.package import ModelPackage

    run_pkg = ModelPackage.load(run_model, verify=True)
    held_out = held_out_metrics(run_model, cohort, args.data.resolve(), out / "eval", args.device)
    machine = machine_info(str(training.get("device") or args.device))
    machine["calibration"] = calibration
    installed_pkg = resources / "Models" / cohort["model_id"]
    compared = None
    if not args.smoke and (installed_pkg / "card.json").is_file():
        # the ship decision: the new build against the installed model on the SAME validation cases
        compared = {"new": validation_scores(run_model, manifest, out / "validation" / "new", args.device),
                    "installed": validation_scores(installed_pkg, manifest, out / "validation" / "installed",
                                                   args.device)}
        compared["installed_version"] = json.loads((installed_pkg / "card.json").read_text(encoding="utf-8")).get("version")
    card = build_card(run_pkg.card, cohort, described, config, held_out, training, machine, args.smoke, compared)
    package = write_package(card, run_pkg.state_dicts(), run_pkg.labels, out / "package")
    if cohort.get("weights_float16") and not args.smoke:
        # float16 weights halve the package (the repository grows by every shipped version): taken only if the
        # labels of every validation case are identical to float32's
        half = write_package({**card, "weights_dtype": "float16"}, half_states(run_pkg.state_dicts()),
                             run_pkg.labels, out / "package_float16")
        check = labels_identical(package, half, manifest, out / "float16_check", args.device)
        log(f"float16 weights: {check}")
        if check["identical"]:
            shutil.rmtree(package)
            package = write_package({**card, "weights_dtype": "float16",
                                     "weights_dtype_check": check}, half_states(run_pkg.state_dicts()),
                                    run_pkg.labels, out / "package")
        else:
            log("float16 weights change labels on the validation cases: the package keeps float32")
    size = package_size_mb(package)
    if size > float(cohort["max_package_mb"]):
        raise fail(f"{package}: {size:.1f} MB, over the {cohort['max_package_mb']} MB limit of a bundled model.")
    summary = {"package": str(package), "size_mb": round(size, 2), "iterations": card["provenance"]["iterations"],
               "training_time_s": card["provenance"]["training_time_s"], "held_out": held_out,
               "calibration": calibration}
    summary["demo"] = demo_check(package, resources, out / "demo", args.device, held_out)
    log(f"scdl demo with the package: {summary['demo']}")
    if compared is not None:
        summary["validation_comparison"] = compared
        log(f"validation mean Dice: new {compared['new']['mean']}, installed {compared['installed']['mean']}")
        refused = None if args.no_install or args.force_install else ship_refusal(compared)
        if refused:
            log(f"not installed: {refused} ({installed_pkg}; --force-install installs it anyway)")
            args.no_install = True
            summary["not_installed_because"] = refused
    if not args.no_install:
        target = install(package, resources, cohort["model_id"])
        summary["installed"] = str(target)
        log(f"installed {target} ({size:.1f} MB)")
    summary["total_minutes"] = round((time.monotonic() - started) / 60.0, 2)
    from scdl.io.atomic import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
