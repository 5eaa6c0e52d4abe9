"""The fine-tuning protocol of docs/training.md (issue 24): a gain on the drawn organ, the other organs kept.

An institution fine-tunes the default model on a few of its own CTs with only the organ of its study drawn.
This script does that on a CT the default model was not trained on, in a phase its labeled training CT did not
have, and scores EVERY organ before and after on other cases:

- **fine-tuning cohort**: CTs synthesised by ``scdl synth`` from the TotalSegmentator dataset label map s0328
  (lower thorax to femora, kept out of the default model's training) in the **portal** phase: seed 1 with only
  its **liver** drawn (every other structure erased from its label map, as in a liver study) and seeds 2 and 3
  unlabeled;
- **scored cases** (never trained on): another synthetic CT of s0328 (seed 4, every organ), patient B
  (``Resources/Sample``: upper abdomen, contrast, Synapse labels) and patient A (TotalSegmentator fixtures:
  abdomen + pelvis, non-contrast look, TotalSegmentator v2 labels; ``scdl evaluate --gt-labels
  totalsegmentator_v2``). Patient A is the default model's labeled training CT: it measures forgetting, not
  generalisation.

Rows, all from ``--init scdl-abdominal-ct --preset cpu`` with the same seed, data and iterations, validation off
(the package holds the last weights):

- ``background``: the old treatment: the liver-only label map without an ``annotated`` column, so every class of
  its table counts as drawn and the erased organs are taught as background;
- ``marginal``: ``annotated=liver`` with ``finetune.keep_weight=0``: the partial-label losses only (marginal +
  exclusion, issue 13's default);
- ``keep``: ``annotated=liver`` with the keep-what-you-know distillation from the frozen initial model;
- these three at the recipe's learning rate 0.01 (``optimizer.lr=0.01``: what every ``--init`` run used before
  ``finetune.lr_scale``);
- ``keep-lr0.001``: the keep row at a tenth of it, today's default (``finetune.lr_scale`` 0.1);
- ``default`` (optional): whatever ``scdl train``'s defaults are when the script runs;
- ``marginal-sgd`` (optional, ``--rows``): the marginal row with ``finetune.inherit=false``: the preset's SGD and
  batch-summed SCDL KL that every ``--init`` run used before issue 24, for the recipe's share of the difference;
- ``keep-frozen-bn`` (optional): the keep row with batch-norm running statistics frozen (``finetune.norm_stats``):
  does the new scanner's statistics, not the weights, move the other organs?
- ``keep-w5`` (optional): the keep row with five times the distillation weight;
- ``keep-lr0.001-frozen-bn`` (optional): the two that helped most, together;
- ``keep-lr0.001-frozen-bn-wise`` (optional): that row's weights mixed with the initial model's, half and half
  (``finetune.interpolate=0.5``, WiSE-FT). Every other named row sets ``finetune.interpolate=1`` (the fine-tuned
  weights alone), so that it stays what its name says when the defaults change.

Target per scored case: the drawn organ (liver) +0.03 Dice or more, every other organ within -0.02.

``--mix A[,B...]`` (rows that package the fine-tuned weights alone): each row's weights are also mixed with the
initial model's offline, (1 - a) x initial + a x fine-tuned (what ``finetune.interpolate`` a does at the end of a
run, exactly: a run at 0.5 and the offline mix at 0.5 of a run at 1 give identical weights), and scored as row
``ROW@a``: the trade-off curve of the mix from one training. Mix rows are listed after the trained rows; a later
start without ``--mix`` leaves them out of ``results.md`` (their scores stay in ``results.json``). A mix already
written under ``--out`` is reused as it is: use a new ``--out`` after changing ``--model`` or the run.

**Your own cases** (the check of issue 24 on real patients of another hospital): ``--cohort MANIFEST`` replaces
the synthetic fine-tuning cohort (``scdl train``'s manifest format; the labeled training rows name the drawn organ
in their ``annotated`` column, e.g. ``annotated=liver``; the ``background`` row ignores that column) and
``--scored CSV`` the scored cases (columns ``name,image,label,labels``: a CT, its reference label map and that
map's label table, paths relative to the CSV). With both, ``../shared/data`` is not read:

    python bench/finetune_protocol.py --out runs/hospital --cohort hospital/finetune.csv \
        --scored hospital/scored.csv --organ liver --rows background,marginal,keep,default

``--organ NAME`` draws another organ of the TotalSegmentator v2 table instead of the liver (same cases, rows and
target): from model 4.5.1 on the liver starts at 0.96-0.97 on every scored case and has nothing left to gain,
while the pancreas starts at 0.22 on patient B.

Reads ``../shared/data`` beside the checkout (``--data``): the s0328 label map and patient A. Writes everything
under ``--out``: the synthetic CTs, the cohorts, one run folder per row, the predictions, ``results.json`` and
``results.md``. Steps already done (a CT, a run's model, a score) are reused when the script is started again.

    python bench/finetune_protocol.py --out runs/protocol --iterations 200
    nice -n 10 python bench/finetune_protocol.py --out /tmp/protocol-smoke --iterations 5   # does it work?
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MAP = "totalsegmentator_dataset/s0328_seg.nii.gz"
PATIENT_A = ("totalsegmentator_fixtures/example_ct.nii.gz", "totalsegmentator_fixtures/example_seg_fast_force_split.nii.gz")
PATIENT_B = (ROOT / "Resources/Sample/sample_ct.nii.gz", ROOT / "Resources/Sample/sample_labels.nii.gz")
DRAWN = "liver"               # --organ changes it
_DRAWN = "<drawn>"            # in ROWS: the drawn organ
#: Synthesis seeds: the labeled case, the unlabeled cases, the scored case.
SEEDS = {"train": 1, "unlabeled": (2, 3), "scored": 4}
#: row -> (annotated column of the labeled case, extra ``scdl train`` settings)
ROWS: dict[str, tuple[str, list[str]]] = {
    # the first rows at the recipe's learning rate 0.01 (what every --init run used before finetune.lr_scale);
    # every named row packages the fine-tuned weights alone (finetune.interpolate=1) unless its name ends in -wise
    "background": ("", ["optimizer.lr=0.01", "finetune.interpolate=1"]),
    "marginal": (_DRAWN, ["finetune.keep_weight=0", "optimizer.lr=0.01", "finetune.interpolate=1"]),
    "keep": (_DRAWN, ["optimizer.lr=0.01", "finetune.interpolate=1"]),
    "marginal-sgd": (_DRAWN, ["finetune.keep_weight=0", "finetune.inherit=false", "finetune.interpolate=1"]),
    "keep-lr0.001": (_DRAWN, ["optimizer.lr=0.001", "finetune.interpolate=1"]),    # lr_scale 0.1 of 0.01
    "keep-frozen-bn": (_DRAWN, ["optimizer.lr=0.01", "finetune.norm_stats=frozen", "finetune.interpolate=1"]),
    "keep-w5": (_DRAWN, ["optimizer.lr=0.01", "finetune.keep_weight=5", "finetune.interpolate=1"]),
    "keep-lr0.001-frozen-bn": (_DRAWN, ["optimizer.lr=0.001", "finetune.norm_stats=frozen", "finetune.interpolate=1"]),
    # the same mixed with the initial model: 0.5 x initial + 0.5 x fine-tuned (WiSE-FT, finetune.interpolate)
    "keep-lr0.001-frozen-bn-wise": (_DRAWN, ["optimizer.lr=0.001", "finetune.norm_stats=frozen",
                                            "finetune.interpolate=0.5"]),
    "default": (_DRAWN, []),                              # whatever scdl train's defaults are now
}
DEFAULT_ROWS = ("background", "marginal", "keep", "keep-lr0.001")
GAIN, TOLERANCE = 0.03, -0.02


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def scdl(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scdl", *args], check=True, text=True,
                          capture_output=capture)


def synthesise(out: Path, data: Path, seed: int, labels: bool, spacing: Optional[float]) -> tuple[Path, Optional[Path]]:
    """``scdl synth`` of s0328 in the portal phase (reused when present)."""
    stem = f"s0328_portal_seed{seed}" + (f"_{spacing:g}mm" if spacing else "")
    ct, lab = out / f"{stem}.nii.gz", out / f"{stem}_labels.nii.gz"
    if not ct.is_file() or (labels and not lab.is_file()):
        args = [str(data / MAP), "--labels", "totalsegmentator_v2", "-o", str(ct), "--seed", str(seed),
                "--phase", "portal"]
        if spacing:
            args += ["--spacing", str(spacing)]
        if labels:
            args += ["--label-out", str(lab)]
        scdl("synth", *args, capture=True)
    return ct, (lab if labels else None)


def organ_only(label: Path, out: Path) -> Path:
    """The label map with every structure but the drawn organ erased (TotalSegmentator v2 values)."""
    import SimpleITK as sitk

    from scdl.labels.table import LabelTable

    if out.is_file():
        return out
    value = LabelTable.load("totalsegmentator_v2").by_name(DRAWN).value
    image = sitk.ReadImage(str(label))
    only = sitk.Cast(sitk.BinaryThreshold(image, value, value, value, 0), image.GetPixelID())
    only.CopyInformation(image)
    sitk.WriteImage(only, str(out), True)
    return out


def score(model: str, case: str, image: Path, truth: Path, gt_labels: str, out: Path, tag: str) -> dict[str, Any]:
    """Dice per organ of ``model`` on one case (``scdl segment`` + ``scdl evaluate``), organs of the truth only."""
    from scdl.models.card import LABELS_FILE

    pred, report = out / f"{case}_{tag}.nii.gz", out / f"{case}_{tag}.json"
    if not report.is_file():
        scdl("segment", str(image), "-o", str(pred), "--model", model, "--device", "cpu", "--progress", "none")
        scdl("evaluate", str(pred), str(truth), "--labels", str(Path(model) / LABELS_FILE), "--gt-labels", gt_labels,
             "--resample", "--json", str(report), capture=True)
    scores = json.loads(report.read_text(encoding="utf-8"))
    return {c["name"]: round(float(c["dice"]), 4) for c in scores["classes"] if c["gt_voxels"] > 0}


def mixed_package(initial: str, tuned: Path, alpha: float, out: Path) -> Path:
    """A package at ``out`` whose networks are (1 - ``alpha``) x ``initial``'s + ``alpha`` x ``tuned``'s
    (scdl.training.averaging, as ``finetune.interpolate`` mixes them); reused when present."""
    from scdl.models.package import ModelPackage, save_package
    from scdl.training.averaging import interpolate_state_dicts

    if (out / "card.json").is_file():
        return out
    start, fine = ModelPackage.load(initial), ModelPackage.load(tuned)
    entries = [[(int(e.value), e.name) for e in p.labels.entries] for p in (start, fine)]
    if entries[0] != entries[1] or start.card["architecture"] != fine.card["architecture"] \
            or start.networks != fine.networks:
        raise SystemExit(f"--mix: {tuned} and {initial} differ in classes, architecture or networks; mix a run "
                         "with the model it was fine-tuned from (same label table)")
    mixed = [interpolate_state_dicts(s, f, alpha) for s, f in zip(start.state_dicts(), fine.state_dicts())]
    share = f"{1 - alpha:g} x initial + {alpha:g} x fine-tuned"
    card = {**fine.card, "id": f"{fine.id}-mix{alpha:g}", "title": f"{fine.title}, mixed offline: {share}",
            "description": f"{fine.card.get('description', '').rstrip('.')}; mixed offline by "
                           f"bench/finetune_protocol.py --mix with {initial}: {share}."}
    return save_package(out, card, mixed, fine.labels)


def user_cohort(manifest: Path, drawn: str) -> list[dict[str, str]]:
    """``--cohort``: the rows of your fine-tuning manifest (scdl.training.cohort's format), paths made absolute.

    The labeled training rows must annotate ``drawn`` (``annotated`` column); rows are used as written, except by the
    ``background`` row (see :func:`cohort_for_row`). Raises SystemExit with one line on a problem."""
    from scdl.errors import ScdlError
    from scdl.labels.names import name_alternatives
    from scdl.training.cohort import load_manifest

    try:
        cohort = load_manifest(manifest)
    except ScdlError as error:
        raise SystemExit(f"--cohort: {error}") from None
    errors = [p for p in cohort.problems if p.severity == "error"]
    if errors:
        raise SystemExit(f"--cohort {errors[0].line()}")
    for case in cohort.cases:
        for need in (case.image, case.label):
            if need is not None and not need.exists():
                raise SystemExit(f"--cohort {manifest} [{case.row}]: {need} does not exist. Fix: correct the path "
                                 "(relative paths are relative to the manifest's folder)")
    rows = [{"image": str(c.image or ""), "label": str(c.label or ""), "split": c.split, "labels": c.labels or "",
             "annotated": ";".join(c.annotated or [])} for c in cohort.cases]
    keys = set(name_alternatives(drawn))
    drawing = [c for c in cohort.cases if c.labeled and c.split == "train"
               and any(keys & set(name_alternatives(a)) for a in (c.annotated or []))]
    if not drawing:
        raise SystemExit(f"--cohort {manifest}: no labeled training row annotates {drawn!r}. Fix: name it in the "
                         f"'annotated' column of the rows where it is drawn (e.g. annotated={drawn}), or use --organ")
    return rows


def cohort_for_row(rows: list[dict[str, str]], annotated: str) -> list[dict[str, str]]:
    """A protocol row's copy of your cohort: as written, or for ``background`` (``annotated`` "") without the
    ``annotated`` column, so that every class of a label map's table counts as drawn (the old treatment)."""
    return [dict(r) if annotated else {**r, "annotated": ""} for r in rows]


def scored_cases(path: Path) -> dict[str, tuple[Path, Path, str]]:
    """``--scored``: a CSV with columns name,image,label,labels (paths relative to the CSV's folder; labels: the
    reference's label table, e.g. synapse or totalsegmentator_v2). Raises SystemExit with one line on a problem."""
    import csv
    import re

    from scdl.training.cohort import _resolve, _table_ref     # the manifest's own path rules

    if not path.is_file():
        raise SystemExit(f"--scored {path}: no such file. Fix: give the CSV of the cases to score")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "image", "label", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"--scored {path}: no column {', '.join(sorted(missing))}. Fix: a header line "
                             "name,image,label,labels")
        cases: dict[str, tuple[Path, Path, str]] = {}
        for line, row in enumerate(reader, start=2):
            cells = {k: (row.get(k) or "").strip() for k in ("name", "image", "label", "labels")}
            empty = [k for k, v in cells.items() if not v]
            if empty:
                raise SystemExit(f"--scored {path}:{line}: column {', '.join(empty)} is empty. Fix: fill in "
                                 "name, image, label and labels on every row")
            name = cells["name"]
            if not re.fullmatch(r"[\w.-]+", name) or name in cases:
                raise SystemExit(f"--scored {path}:{line}: name {name!r} is repeated or not a plain word. Fix: a new "
                                 "name of letters, digits, '.', '-' or '_' per row")
            image, label = (_resolve(path.parent, cells[k]) for k in ("image", "label"))
            for need in (image, label):
                if not need.exists():
                    raise SystemExit(f"--scored {path}:{line}: {need} does not exist. Fix: correct the path "
                                     "(relative paths are relative to the CSV's folder)")
            cases[name] = (image, label, _table_ref(path.parent, cells["labels"]))
    if not cases:
        raise SystemExit(f"--scored {path}: no case listed. Fix: one row per scored CT")
    return cases


def packaged_share(settings: list[str]) -> float:
    """``finetune.interpolate`` of a row's run as ``scdl train`` resolves it (the core's resolver and defaults)."""
    from scdl.training.config import resolve_config

    return float(resolve_config("cpu", overrides=settings)["finetune"]["interpolate"])


def verdict(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The target on one case: the drawn organ +0.03 or more, every other organ within -0.02."""
    deltas = {o: round(after[o] - before[o], 4) for o in before if o in after}
    worst = min(((d, o) for o, d in deltas.items() if o != DRAWN), default=(0.0, None))
    gain = deltas.get(DRAWN)
    return {"drawn_gain": gain, "drawn_ok": gain is not None and gain >= GAIN, "worst_other": worst[1],
            "worst_other_change": worst[0], "others_ok": worst[0] >= TOLERANCE,
            "met": gain is not None and gain >= GAIN and worst[0] >= TOLERANCE, "changes": deltas}


def diagnose(manifest: Path, model: str, out: Path, batches: int = 3) -> dict[str, Any]:
    """Why a fine-tune did not move the drawn organ (issue 24): the loss terms and their gradients on the same
    first ``batches`` batches under the settings every ``--init`` run used before (the preset's SGD, batch-summed
    SCDL KL, no keep term) and under the inherited recipe with keep-what-you-know. Per term: its value, the norm
    of its gradient on the networks' weights and that norm's share of the sum of the terms' norms; and the size
    of the first optimiser step the total gradient gives (SGD: lr·|g|; AdamW's first step moves every weight by
    about lr, i.e. lr·sqrt(#weights)). No training."""
    import math

    import torch

    from scdl.progress import SilentProgress
    from scdl.training.cohort import load_manifest
    from scdl.training.config import Framework, resolve_config
    from scdl.training.data import StepBatches
    from scdl.training.trainer import Trainer

    report: dict[str, Any] = {}
    variants = {"before issue 24 (SGD, batch KL)": ["finetune.inherit=false", "finetune.keep_weight=0"],
                "inherited recipe + keep": []}
    for name, sets in variants.items():
        values = {"labels": "init", "patch_size": "init", "iterations": 200}
        cfg = resolve_config("cpu", values=values, overrides=["data.num_workers=0", f'data.cache_dir="{out / "cache"}"',
                                                              *sets], init=model)
        scratch = Path(tempfile.mkdtemp(prefix="diagnose_", dir=out)) / "run"
        trainer = Trainer(cfg, load_manifest(manifest), scratch, device="cpu", init=model, progress=SilentProgress())
        trainer.prepare()                           # checked and preprocessed into the protocol's cache
        labeled, unlabeled, _val = trainer._cases()
        trainer._announce_partial_labels()
        trainer._build()
        step = trainer.step
        step.train()
        patch = tuple(reversed([int(v) for v in cfg["patch_size"]]))
        data = StepBatches(labeled, unlabeled, patch, cfg["labeled_batch"],
                           cfg["unlabeled_batch"] if Framework(cfg["framework"]).uses_unlabeled else 0,
                           cfg["sampling"]["class_prob"], cfg["augment"], int(cfg["seed"]),
                           annotated=trainer.labeled_masks if trainer.partial else None)
        params = [p for p in step.networks.parameters() if p.requires_grad]
        n_weights = sum(p.numel() for p in params)
        rows: dict[str, dict[str, list[float]]] = {}
        first_step = []
        for index in range(batches):
            batch = data[index]
            ann = batch.get("labeled_annotated")
            torch.manual_seed(index)
            terms = step(batch["labeled_image"], batch["labeled_label"], batch["unlabeled_image"], progress=0.0,
                         annotated=ann)
            parts = {"sup": terms["sup"], "cps (w_cps * cps)": terms["w_cps"] * terms["cps"]}
            if "scdl" in terms:
                parts["scdl (lambda-weighted)"] = terms["scdl"]
            if "keep" in terms:
                parts["keep"] = terms["keep"]
            norms = {}
            for key, value in parts.items():
                grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                norms[key] = math.sqrt(sum(float((g * g).sum()) for g in grads if g is not None))
                rows.setdefault(key, {"value": [], "grad_norm": []})
                rows[key]["value"].append(float(value.detach()))
                rows[key]["grad_norm"].append(norms[key])
            if "kl" in terms:
                rows.setdefault("kl (raw SCDL KL)", {"value": [], "grad_norm": []})["value"].append(float(terms["kl"].detach()))
            grads = torch.autograd.grad(terms["total"], params, allow_unused=True)
            total_norm = math.sqrt(sum(float((g * g).sum()) for g in grads if g is not None))
            lr = float(cfg["optimizer"]["lr"])
            first_step.append(lr * total_norm if cfg["optimizer"]["name"] == "sgd" else lr * math.sqrt(n_weights))
        mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
        total = sum(mean(r["grad_norm"]) or 0.0 for r in rows.values())
        report[name] = {"optimizer": cfg["optimizer"], "scdl.kl_reduction": cfg["scdl"].get("kl_reduction", "batch"),
                        "weights": n_weights, "first_step_size": mean(first_step),
                        "terms": {k: {"value": mean(r["value"]), "grad_norm": mean(r["grad_norm"]),
                                      "grad_share": (mean(r["grad_norm"]) / total) if r["grad_norm"] and total else None}
                                  for k, r in rows.items()}}
        trainer.release()
        shutil.rmtree(scratch.parent, ignore_errors=True)
    return report


def markdown(results: dict[str, Any]) -> str:
    rows = [r for r in results["rows"] if r in results["after"]]
    lines = [f"Fine-tuning protocol (bench/finetune_protocol.py): {results['iterations']} iterations, init "
             f"{results['model']}, rows {', '.join(rows)}. Target: {DRAWN} +{GAIN:.2f} or more, every other organ "
             f"within {TOLERANCE:.2f}.", ""]
    for case in results["cases"]:
        before = results["before"][case]
        lines += [f"### {case}", "", "| organ | before | " + " | ".join(rows) + " |",
                  "|---|---|" + "---|" * len(rows)]
        for organ, value in before.items():
            cells = []
            for r in rows:
                v = results["after"][r][case].get(organ)
                cells.append("–" if v is None else f"{v:.3f} ({v - value:+.3f})")
            name = f"**{organ}** (drawn)" if organ == DRAWN else organ
            lines.append(f"| {name} | {value:.3f} | " + " | ".join(cells) + " |")
        lines.append("| target met | | " + " | ".join("yes" if results["verdict"][r][case]["met"] else "no"
                                                     for r in rows) + " |")
        lines.append("")
    times = ", ".join(f"{r} {results['train_minutes'][r]:.1f} min" for r in rows if r in results["train_minutes"])
    lines.append(f"Training time (wall): {times}; whole script {results.get('total_minutes', 0):.1f} min.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    global DRAWN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=SHARED, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--model", default="scdl-abdominal-ct", help="the initial model (bundled id or package folder)")
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                    help=f"comma-separated rows of {', '.join(ROWS)} (default {','.join(DEFAULT_ROWS)})")
    ap.add_argument("--spacing", type=float, default=None,
                    help="voxel size of the synthetic CTs in mm (default: the map's own 1.5 mm grid)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting for every row (scdl train --set), repeatable")
    ap.add_argument("--cases", default=None, help="the scored cases to use, by name (default: s0328-seed4,B,A, or "
                                                  "every case of --scored)")
    ap.add_argument("--cohort", type=Path, default=None,
                    help="your fine-tuning manifest (scdl train's format; the drawn organ in the 'annotated' column of "
                         "its labeled rows) instead of the synthetic s0328 cohort")
    ap.add_argument("--scored", type=Path, default=None,
                    help="your scored cases instead of s0328-seed4, B and A: a CSV name,image,label,labels")
    ap.add_argument("--organ", default=DRAWN, help=f"the drawn organ, a TotalSegmentator v2 name (default {DRAWN})")
    ap.add_argument("--mix", default="",
                    help="comma-separated shares a in (0, 1): also score (1 - a) x initial + a x fine-tuned, mixed "
                         "offline, for rows that package the fine-tuned weights alone (rows ROW@a)")
    ap.add_argument("--diagnose", action="store_true",
                    help="no training: the loss terms and their gradients on the first batches, the settings of "
                         "every --init run before issue 24 against the inherited recipe + keep (diagnose.json)")
    args = ap.parse_args(argv)
    from scdl.labels.table import LabelTable

    try:
        DRAWN = LabelTable.load("totalsegmentator_v2").by_name(args.organ).name
    except (KeyError, ValueError, LookupError):
        ap.error(f"--organ {args.organ!r} is not an organ of the TotalSegmentator v2 table")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    try:
        mixes = [float(a) for a in args.mix.split(",") if a.strip()]
    except ValueError:
        ap.error(f"--mix {args.mix!r}: give shares such as 0.5,0.75")
    if any(not 0.0 < a < 1.0 for a in mixes):
        ap.error(f"--mix {args.mix!r}: every share must lie between 0 and 1 (1 = the row itself)")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown row(s) {unknown}: use {', '.join(ROWS)}")
    if mixes:                  # before anything runs: a row that packages a mix cannot be mixed again
        from scdl.errors import ScdlError

        try:
            mixed_rows = [r for r in rows if packaged_share(["validation.every=-1", *ROWS[r][1], *args.set]) < 1.0]
        except ScdlError as error:
            ap.error(str(error))
        if mixed_rows:
            ap.error(f"--mix: row(s) {', '.join(mixed_rows)} package a mix already (finetune.interpolate < 1); "
                     "add --set finetune.interpolate=1 or choose rows that package the fine-tuned weights alone")
    t_start = time.monotonic()
    out = args.out.resolve()
    data = args.data.resolve()
    cohort_path, scored_path = (str(p.resolve()) if p else None for p in (args.cohort, args.scored))
    try:
        yours = user_cohort(Path(cohort_path), DRAWN) if cohort_path else None
        scored = scored_cases(Path(scored_path)) if scored_path else None
    except SystemExit as error:
        ap.error(str(error))
    out.mkdir(parents=True, exist_ok=True)
    if yours is None or scored is None:             # the synthetic cohort or the default scored cases
        for need in (data / MAP, data / PATIENT_A[0], data / PATIENT_A[1], *PATIENT_B):
            if not Path(need).is_file():
                ap.error(f"missing input {need} (the shared data folder: --data; or give --cohort and --scored)")
        synth = out / "synth"
        synth.mkdir(parents=True, exist_ok=True)
    if yours is None:
        log(f"synthesising s0328 in the portal phase: 1 {DRAWN}-only labeled, 2 unlabeled")
        train_ct, train_lab = synthesise(synth, data, SEEDS["train"], True, args.spacing)
        drawn_only = organ_only(train_lab, train_lab.with_name(train_lab.name.replace("_labels", f"_{DRAWN}_only")))
        unlabeled = [synthesise(synth, data, s, False, args.spacing)[0] for s in SEEDS["unlabeled"]]
        yours = [{"image": str(train_ct), "label": str(drawn_only), "split": "train", "labels": "totalsegmentator_v2",
                  "annotated": DRAWN}] + [{"image": str(p), "label": "", "split": "train", "labels": "",
                                           "annotated": ""} for p in unlabeled]
    if scored is None:
        scored_ct, scored_lab = synthesise(synth, data, SEEDS["scored"], True, args.spacing)
        cases = {"s0328-seed4": (scored_ct, scored_lab, "totalsegmentator_v2"),
                 "B": (PATIENT_B[0], PATIENT_B[1], "synapse"),
                 "A": (data / PATIENT_A[0], data / PATIENT_A[1], "totalsegmentator_v2")}
    else:
        cases = scored
    if args.cases:
        chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in cases]
        if unknown:
            ap.error(f"--cases {', '.join(unknown)}: no such scored case (there are {', '.join(cases)})")
        cases = {k: v for k, v in cases.items() if k in chosen}
    bundled = ROOT / "Resources" / "Models" / args.model
    model = str(bundled if bundled.is_dir() else Path(args.model).resolve())
    if args.diagnose:
        from scdl.training.cohort import write_manifest

        manifest = out / "cohort_diagnose.csv"
        write_manifest(manifest, cohort_for_row(yours, DRAWN))
        found = diagnose(manifest, model, out)
        (out / "diagnose.json").write_text(json.dumps(found, indent=1), encoding="utf-8")
        print(json.dumps(found, indent=1))
        return 0
    summary = out / "results.json"
    results: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
    grid = args.spacing or "the map's own grid"
    if results and (results.get("iterations") not in (None, args.iterations)
                    or (results.get("settings") or []) != list(args.set)
                    or (results.get("inputs") or {}).get("spacing_mm", grid) != grid
                    or results.get("organ", "liver") != DRAWN
                    or (results.get("inputs") or {}).get("cohort") != cohort_path
                    or (results.get("inputs") or {}).get("scored") != scored_path):
        inputs = results.get("inputs") or {}
        ap.error(f"{out} holds results of other settings ({results.get('iterations')} iterations, "
                 f"--set {results.get('settings')}, organ {results.get('organ', 'liver')}, --cohort "
                 f"{inputs.get('cohort')}, --scored {inputs.get('scored')}): use another --out")
    results.update({"organ": DRAWN, "iterations": args.iterations, "model": args.model, "rows": list(rows),
                    "cases": list(cases),
                    "settings": list(args.set), "inputs": {"map": MAP, "phase": "portal", "seeds": SEEDS,
                                                           "spacing_mm": args.spacing or "the map's own grid",
                                                           "cohort": cohort_path, "scored": scored_path}})
    results.setdefault("before", {})
    results.setdefault("after", {})
    results.setdefault("train_minutes", {})
    results.setdefault("verdict", {})
    preds = out / "predictions"
    preds.mkdir(exist_ok=True)
    for case, (image, truth, table) in cases.items():
        if case not in results["before"]:
            log(f"scoring the initial model on {case}")
            results["before"][case] = score(model, case, image, truth, table, preds, "before")
    summary.write_text(json.dumps(results, indent=1), encoding="utf-8")
    from scdl.training.cohort import write_manifest
    from scdl.training.runfolder import RunFolder

    for row in rows:
        annotated, settings = ROWS[row]
        annotated = DRAWN if annotated == _DRAWN else annotated
        run = out / f"run_{row}"
        if not (RunFolder(run).model_dir / "card.json").is_file():
            manifest = out / f"cohort_{row}.csv"
            write_manifest(manifest, cohort_for_row(yours, annotated))
            log(f"fine-tuning ({row}): {args.iterations} iterations")
            t0 = time.monotonic()
            sets = ["validation.every=-1", *settings, *args.set]
            scdl("train", "--cohort", str(manifest), "--out", str(run), "--init", args.model, "--preset", "cpu",
                 "--iterations", str(args.iterations), "--device", "cpu", "--cache-dir", str(out / "cache"),
                 "--progress", "none", *[a for kv in sets for a in ("--set", kv)])
            results["train_minutes"][row] = round((time.monotonic() - t0) / 60.0, 2)
        packages = {row: RunFolder(run).model_dir}
        if mixes:
            ran = json.loads(RunFolder(run).config.read_text(encoding="utf-8"))      # a run from an earlier start
            if float(ran["finetune"].get("interpolate", 1.0)) < 1.0:
                ap.error(f"--mix: {run} packages a mix already (finetune.interpolate "
                         f"{ran['finetune']['interpolate']}); use another --out for --set finetune.interpolate=1")
            for a in mixes:
                log(f"mixing {row}: {1 - a:g} x initial + {a:g} x fine-tuned")
                packages[f"{row}@{a:g}"] = mixed_package(model, RunFolder(run).model_dir, a, out / f"mix_{row}_{a:g}")
        for name, package in packages.items():          # the row, then its mixes (rows ROW@a)
            if name not in results["rows"]:
                results["rows"].append(name)
            after = results["after"].setdefault(name, {})
            for case, (image, truth, table) in cases.items():
                if case not in after:
                    log(f"scoring {name} on {case}")
                    after[case] = score(str(package), case, image, truth, table, preds, name.replace("@", "_mix"))
            results["verdict"][name] = {case: verdict(results["before"][case], results["after"][name][case])
                                        for case in cases}
            met = {case: v["met"] for case, v in results["verdict"][name].items()}
            log(f"{name}: target met per case {met}; {DRAWN} change "
                f"{ {c: v['drawn_gain'] for c, v in results['verdict'][name].items()} }")
        summary.write_text(json.dumps(results, indent=1), encoding="utf-8")
    results["total_minutes"] = round((time.monotonic() - t_start) / 60.0, 2) + float(results.get("total_minutes") or 0)
    summary.write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
