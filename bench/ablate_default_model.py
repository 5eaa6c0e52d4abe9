"""Each change of the default model's recipe 4, alone, at one short equal budget from the previous model
(issue 27, "Evidence"), and the paired float32 / bfloat16 run ("more training in the same CPU hours").

Every arm fine-tunes the same initial model (``--init``, e.g. 3.0.0) with the same seed, iterations, cohort and
validation cases; the arms differ only in the recipe switches below. ``base`` is recipe 4 with every switch off
and without the new anatomy map s0327; each ``+change`` arm is ``base`` plus one change; ``all`` is recipe 4 as
shipped and ``all-bfloat16`` the same run under ``cpu_bfloat16`` (bfloat16 autocast of the training step).

Every arm's last networks are scored like a release candidate (``scdl.release.scoring.segment_and_score``:
``scdl segment`` + ``scdl evaluate`` of the validation rows: patient B and the CTs synthesised from the held-out
map s0328). Nothing here trains on patient B.

Uses the cohort of a recipe work folder (``bench/train_default_model.py --out WORK`` builds ``WORK/cohort``; the
shared data it names must exist). One arm after the other, resumable: an arm with ``scores.json`` is skipped.

    python bench/ablate_default_model.py --work runs/m4b --init runs/v3init --out runs/ablation --iterations 200

Writes ``OUT/results.json`` and ``OUT/results.md`` (per organ: mean Dice over the validation cases that contain
it; B's mean; the held-out map's 13-organ mean; organs found; minutes).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from scdl.models.card import LABELS_FILE
from scdl.release.commands import log
from scdl.release.recipe import RECIPE
from scdl.release.scoring import segment_and_score, summarise_scores
from scdl.release.training import run_train
from scdl.training.runfolder import RunFolder, recipe_files

#: every recipe-4 switch off (the HU table's widening and the bone fix are not switches: every arm has them)
OFF = {"synth.random_hu_prob": 0.0, "synth.liver_like_prob": 0.0, "synth.calcify_prob": 0.0,
       "sampling.small_prob": 0.0, "augment.edge_cut": False}
NEW_MAP = "s0327"

#: arm -> (what it changes, settings over recipe 4, whether the new map s0327 is in the cohort)
ARMS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "all": ("recipe 4 as shipped", {}, True),
    "all-bfloat16": ("recipe 4, bfloat16 autocast", {"cpu_bfloat16": True}, True),
    "base": ("every switch off, without s0327", OFF, False),
    "+anatomy": ("base + the map s0327", OFF, True),
    "+synthseg-hu": ("base + per-structure random HU (0.2)", {**OFF, "synth.random_hu_prob": 0.2}, False),
    "+liver-like": ("base + IVC/veins/adrenals at the liver's HU (0.5)", {**OFF, "synth.liver_like_prob": 0.5}, False),
    "+calcify": ("base + calcified cartilage (0.3)", {**OFF, "synth.calcify_prob": 0.3}, False),
    "+small-patches": ("base + small-organ patches (0.5)", {**OFF, "sampling.small_prob": 0.5}, False),
    "+edge-cut": ("base + scans ending inside an organ (0.25)", {**OFF, "augment.edge_cut": True}, False),
}


def arm_config(recipe_config: dict[str, Any], settings: dict[str, Any], iterations: int) -> dict[str, Any]:
    """Recipe 4's config with the arm's dotted ``settings``; validation off (the arms are scored afterwards),
    one checkpoint at the end."""
    cfg = copy.deepcopy(recipe_config)
    for key, value in settings.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    cfg["iterations"] = iterations
    cfg["validation"] = {**cfg.get("validation", {}), "every": -1}
    cfg["checkpoint_every"] = iterations
    return cfg


def arm_manifest(manifest: Path, out: Path, with_new_map: bool) -> Path:
    """The work folder's cohort manifest, without the rows of s0327 unless ``with_new_map``."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    if not with_new_map:
        rows = [r for r in rows if NEW_MAP not in r["label"] and NEW_MAP not in r["image"]]
    path = out / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def score_arm(package: Path, manifest: Path, out: Path, device: str) -> dict[str, Any]:
    """Per validation case: per-organ Dice and mean over its labelled organs (the release scoring)."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val" and r["label"]]
    cases = {}
    for row in rows:
        name = Path(row["image"]).name.split(".")[0]
        report, _, _ = segment_and_score(package, row["image"], row["label"],
                                         row["labels"] or str(package / LABELS_FILE), out, name, device)
        summary = summarise_scores(report)
        cases[name] = {"mean": summary["mean_dice_labelled_organs"],
                       "organs": {k: v["dice"] for k, v in summary["organs"].items()},
                       "found": {k: v["status"] == "found" for k, v in summary["organs"].items()}}
    return cases


def summarise(cases: dict[str, Any]) -> dict[str, Any]:
    """B's mean, the held-out map's mean (its synthetic CTs) and per-organ means over the cases that have it."""
    synth = [c for n, c in cases.items() if "s0328" in n]
    real = [c for n, c in cases.items() if "s0328" not in n]
    organs: dict[str, list[float]] = {}
    found: dict[str, list[bool]] = {}
    for case in cases.values():
        for organ, dice in case["organs"].items():
            organs.setdefault(organ, []).append(dice)
            found.setdefault(organ, []).append(case["found"][organ])
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"b_mean": mean([c["mean"] for c in real]), "held_out_map_mean": mean([c["mean"] for c in synth]),
            "validation_mean": mean([c["mean"] for c in cases.values()]),
            "organs": {k: mean(v) for k, v in organs.items()},
            "found": {k: f"{sum(v)}/{len(v)}" for k, v in found.items()}}


def run_arm(name: str, work: Path, init: Path, out: Path, iterations: int, device: str,
            recipe_config: dict[str, Any]) -> dict[str, Any]:
    folder = out / name.replace("+", "plus-")
    done = folder / "scores.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    what, settings, with_map = ARMS[name]
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "arm_settings.json"
    config.write_text(json.dumps(arm_config(recipe_config, settings, iterations), indent=2), encoding="utf-8")
    manifest = arm_manifest(work / "cohort" / "manifest.csv", folder, with_map)
    run_dir = folder / "train"
    t0 = time.monotonic()
    run = RunFolder(run_dir)
    if not (run.model_dir / LABELS_FILE).is_file():
        log(f"arm {name}: {what}")
        run_train(manifest, config, run_dir, iterations, device, work / "cache",
                  extra=("--init", str(init)))
    minutes = (time.monotonic() - t0) / 60
    log_rows = list(csv.DictReader(run.log.open(encoding="utf-8")))
    train_s = float(log_rows[-1]["elapsed_s"]) - float(log_rows[0]["elapsed_s"]) if len(log_rows) > 1 else None
    iters = int(log_rows[-1]["iteration"]) - int(log_rows[0]["iteration"]) if len(log_rows) > 1 else None
    cases = score_arm(run.model_dir, manifest, folder / "scores", device)
    result = {"arm": name, "what": what, "settings": settings, "with_s0327": with_map, "iterations": iterations,
              "minutes": round(minutes, 1),
              "seconds_per_iteration": round(train_s / iters, 3) if train_s and iters else None,
              "cases": cases, **summarise(cases)}
    done.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def table(results: list[dict[str, Any]], reference: Optional[dict[str, Any]]) -> str:
    """Markdown: organs x arms, each cell the Dice and (arms other than ``base``) its change from ``base``."""
    base = next((r for r in results if r["arm"] == "base"), None)
    names = [r["arm"] for r in results]
    lines = ["| organ | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def cell(r: dict[str, Any], value: Optional[float], ref: Optional[float]) -> str:
        if value is None:
            return "–"
        if ref is None or r is base:
            return f"{value:.3f}"
        return f"{value:.3f} ({value - ref:+.3f})"

    organs = list(results[0]["organs"])
    for organ in organs:
        lines.append(f"| {organ} | " + " | ".join(
            cell(r, r["organs"].get(organ), base["organs"].get(organ) if base else None) for r in results) + " |")
    for key, label in (("b_mean", "**B mean** (its 8 organs)"), ("held_out_map_mean", "**s0328 synthetic mean**"),
                       ("validation_mean", "**validation mean** (6 cases)")):
        lines.append(f"| {label} | " + " | ".join(
            cell(r, r[key], base[key] if base else None) for r in results) + " |")
    lines.append("| organs never found (of 13) | " + " | ".join(
        str(sum(1 for v in r["found"].values() if v.startswith("0/"))) for r in results) + " |")
    lines.append("| s / iteration | " + " | ".join(str(r["seconds_per_iteration"]) for r in results) + " |")
    lines.append("| minutes (train + score) | " + " | ".join(str(r["minutes"]) for r in results) + " |")
    text = "\n".join(lines)
    if reference:
        text += (f"\n\nInitial model before any arm: B mean {reference['b_mean']}, s0328 synthetic mean "
                 f"{reference['held_out_map_mean']}, validation mean {reference['validation_mean']}.")
    return text


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True,
                        help="recipe work folder of bench/train_default_model.py (its cohort/ and cache/)")
    parser.add_argument("--init", type=Path, required=True, help="the model every arm starts from (3.0.0)")
    parser.add_argument("--out", type=Path, required=True, help="one sub-folder per arm, results.json/.md")
    parser.add_argument("--iterations", type=int, default=200, help="the equal budget (default 200)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms, in this order")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="recipe folder (its training config)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    manifest = args.work / "cohort" / "manifest.csv"
    if not manifest.is_file():
        parser.error(f"{manifest}: no cohort; build one with bench/train_default_model.py --out {args.work}")
    args.out.mkdir(parents=True, exist_ok=True)
    recipe_config = json.loads(recipe_files(args.recipe)[0].read_text(encoding="utf-8"))
    reference_file = args.out / "init_scores.json"
    if not reference_file.is_file():
        cases = score_arm(args.init, manifest, args.out / "init_scores", args.device)
        reference_file.write_text(json.dumps(summarise(cases), indent=2), encoding="utf-8")
    reference = json.loads(reference_file.read_text(encoding="utf-8"))
    results = []
    for name in args.arms:
        results.append(run_arm(name, args.work, args.init.resolve(), args.out, args.iterations, args.device,
                               recipe_config))
        (args.out / "results.json").write_text(json.dumps({"init": reference, "arms": results}, indent=2),
                                               encoding="utf-8")
        (args.out / "results.md").write_text(table(results, reference) + "\n", encoding="utf-8")
        log(f"arm {name}: B {results[-1]['b_mean']}, s0328 {results[-1]['held_out_map_mean']}, "
                   f"{results[-1]['minutes']} min")
    print(table(results, reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
