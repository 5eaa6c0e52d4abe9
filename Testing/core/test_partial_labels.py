"""Partially labeled cohorts (issue 13): the marginal / exclusion losses against hand-computed values, exact
equality with the paper's losses when every class is annotated, SCDL's partial token weights, the per-case
bookkeeping (manifest ``annotated`` column, label tables that list a few classes), the cohort errors and
warnings, small-cohort defaults and a tiny liver-only fine-tuning run end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scdl.labels.table import LabelTable
from scdl.losses.ga_ce import ga_ce_loss
from scdl.losses.ga_dice import ga_dice_loss
from scdl.losses.partial import exclusion_dice_loss, marginal_ga_ce_loss, marginal_ga_dice_loss
from scdl.losses.supervised import supervised_terms
from scdl.method.tokens import annotated_anchor_proportions, partial_token_weights
from scdl.training.annotation import annotation_mask, case_annotation
from scdl.training.checks import check_cohort
from scdl.training.cohort import load_manifest, parse_annotated
from scdl.training.step import TrainingStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the losses, by hand ---------------------------------------------------------------------------------
def _two_voxels():
    """C = 3, two voxels: voxel 0 is background (p = 1/4, 1/4, 1/2), voxel 1 is class 1 (p = 1/5, 3/5, 1/5);
    class 2 is not annotated."""
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [math.log(2.0), 0.0]]], dtype=torch.float64)
    target = torch.tensor([[0, 1]])
    annotated = torch.tensor([[True, True, False]])
    return logits, target, annotated


def test_marginal_ga_ce_by_hand() -> None:
    logits, target, annotated = _two_voxels()
    # voxel 0: -log(p0 + p2) = log(4/3); voxel 1: -log p1 = log(5/3); one kept voxel per class,
    # weights (1 + eps)^0.5 * 2^0.5 each
    got = marginal_ga_ce_loss(logits, target, annotated, k=100.0, gamma=0.5)
    assert float(got) == pytest.approx(math.log(20.0 / 9.0) / math.sqrt(2.0), rel=1e-9)
    # the paper's GA-CE on the same voxels charges voxel 0 with -log p0 = log 4
    full = ga_ce_loss(logits, target, k=100.0, gamma=0.5)
    assert float(full) == pytest.approx((math.log(4.0) + math.log(5.0 / 3.0)) / math.sqrt(2.0), rel=1e-9)


def test_marginal_ga_dice_by_hand() -> None:
    logits, target, annotated = _two_voxels()
    probs = torch.softmax(logits, dim=1)
    # merged q: voxel 0 (3/4, 1/4), voxel 1 (2/5, 3/5); class 2 is annotated nowhere: left out of the mean
    dice0 = 1.0 - 2 * 0.75 / ((0.75 ** 2 + 0.4 ** 2) + 1.0)
    dice1 = 1.0 - 2 * 0.6 / ((0.25 ** 2 + 0.6 ** 2) + 1.0)
    got = marginal_ga_dice_loss(probs, target, annotated)
    assert float(got) == pytest.approx((dice0 + dice1) / 2.0, rel=1e-9)


def test_marginal_ga_dice_absent_class_counts_only_its_patches() -> None:
    """Class 2 annotated (and absent) in patch 1 only: its push-down divides by patch 1's voxels only."""
    probs = torch.tensor([[[0.5, 0.5], [0.25, 0.25], [0.25, 0.25]],
                          [[0.6, 0.6], [0.2, 0.2], [0.2, 0.2]]], dtype=torch.float64)
    target = torch.zeros(2, 2, dtype=torch.long)
    annotated = torch.tensor([[True, True, False], [True, True, True]])
    # per class: 0 present (Dice), 1 absent in both (N = 4 voxels), 2 absent in patch 1 (N = 2)
    q0 = torch.tensor([0.75, 0.75, 0.6, 0.6], dtype=torch.float64)
    dice0 = 1.0 - 2 * q0.sum() / ((q0 ** 2).sum() + 4.0)
    absent1 = (2 * 0.25 ** 2 + 2 * 0.2 ** 2) / 4.0
    absent2 = (2 * 0.2 ** 2) / 2.0
    got = marginal_ga_dice_loss(probs, target, annotated)
    assert float(got) == pytest.approx(float(dice0 + absent1 + absent2) / 3.0, rel=1e-9)


def test_exclusion_dice_by_hand() -> None:
    logits, target, annotated = _two_voxels()
    probs = torch.softmax(logits, dim=1)
    # class 2 on the annotated organ (voxel 1): 2 * 1/5 / (1 + (1/2 + 1/5))
    assert float(exclusion_dice_loss(probs, target, annotated)) == pytest.approx(0.4 / 1.7, rel=1e-9)
    assert float(exclusion_dice_loss(probs, target, torch.ones_like(annotated))) == 0.0


def test_every_class_annotated_equals_the_paper_exactly() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6, 6)
    target = torch.randint(0, 5, (2, 6, 6, 6))
    every = torch.ones(2, 5, dtype=torch.bool)
    probs = torch.softmax(logits, dim=1)
    assert torch.equal(marginal_ga_ce_loss(logits, target, every), ga_ce_loss(logits, target))
    assert torch.equal(marginal_ga_dice_loss(probs, target, every), ga_dice_loss(probs, target))
    terms = supervised_terms(logits, target, annotated=every)
    assert torch.equal(terms["total"], ga_ce_loss(logits, target) + ga_dice_loss(probs, target))
    assert float(terms["exclusion"]) == 0.0


def test_marginal_loss_does_not_teach_unknown_classes_as_background() -> None:
    """On a background voxel of a liver-only patch, the paper's CE pushes the spleen logit down; the marginal
    CE does not (its gradient on an unknown class is <= 0: it may only rise with background)."""
    logits = torch.tensor([[[0.0], [1.0], [0.5]]], requires_grad=True)     # C = 3: bg, liver, spleen
    target = torch.tensor([[0]])
    liver_only = torch.tensor([[True, True, False]])
    (g_full,) = torch.autograd.grad(ga_ce_loss(logits, target, k=100.0), logits)
    (g_marg,) = torch.autograd.grad(marginal_ga_ce_loss(logits, target, liver_only, k=100.0), logits)
    assert float(g_full[0, 2, 0]) > 0.05            # gradient descent lowers the spleen logit
    assert float(g_marg[0, 2, 0]) <= 0.0            # ... not any more
    assert float(g_marg[0, 1, 0]) > 0.05            # the liver, annotated, is still pushed down here


def test_losses_refuse_bad_masks() -> None:
    logits, target, annotated = _two_voxels()
    with pytest.raises(ValueError, match="annotated"):
        marginal_ga_ce_loss(logits, target, torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="background"):
        marginal_ga_ce_loss(logits, target, torch.tensor([[False, True, True]]))


# -- SCDL's labeled weights and anchors ----------------------------------------------------------------
def test_partial_token_weights_by_hand() -> None:
    y = torch.tensor([[[0.5, 0.5, 0.0]]])                   # one token: half bg-or-unknown, half liver
    bi = torch.tensor([[[0.2, 0.2, 0.6]]])
    got = partial_token_weights(y, bi, torch.tensor([[True, True, False]]))
    assert torch.allclose(got, torch.tensor([[[0.125, 0.5, 0.375]]]))
    full = partial_token_weights(y, bi, torch.tensor([[True, True, True]]))
    assert torch.equal(full, y)
    anchors = annotated_anchor_proportions(y, torch.tensor([[True, True, False]]))
    assert torch.equal(anchors, torch.tensor([[[0.0, 0.5, 0.0]]]))


def test_training_step_with_every_class_annotated_is_unchanged() -> None:
    torch.manual_seed(0)
    step = TrainingStep.build({"name": "vnet", "n_classes": 4, "n_filters": 2}, framework="cps-scdl")
    lx, ux = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 16)
    ly = torch.randint(0, 4, (2, 16, 16, 16))
    eps = torch.randn(4, step.scdl_config.num_samples, step.scdl_config.embed_dim)
    results = []
    for annotated in (None, torch.ones(2, 4, dtype=torch.bool)):
        torch.manual_seed(1)
        results.append(step(lx, ly, ux, progress=0.5, eps=eps, annotated=annotated))
    plain, every = results
    assert set(every) == set(plain) | {"exclusion"} and float(every["exclusion"]) == 0.0
    assert all(torch.equal(plain[k], every[k]) for k in plain)
    torch.manual_seed(1)
    partial = step(lx, torch.where(ly == 3, 0, ly), ux, progress=0.5, eps=eps,
                   annotated=torch.tensor([[True, True, True, False], [True, True, True, True]]))
    assert float(partial["exclusion"]) > 0.0 and math.isfinite(float(partial["total"].detach()))


# -- bookkeeping ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synapse() -> LabelTable:
    return LabelTable.load("synapse")


def test_case_annotation_from_table_and_column(synapse: LabelTable, tmp_path: Path) -> None:
    liver = synapse.by_name("liver").value
    spleen = synapse.by_name("spleen").value
    everything = sorted(e.value for e in synapse.entries if e.value)
    assert case_annotation(None, None, synapse).values == everything
    ts = LabelTable.load("totalsegmentator_v2")
    assert case_annotation(None, ts, synapse).values == everything          # TS v2 names every Synapse organ
    table = tmp_path / "liver_study.csv"
    table.write_text("LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n1,Liver,220,60,40,255\n", encoding="utf-8")
    only = LabelTable.load(str(table))
    ann = case_annotation(None, only, synapse)
    assert ann.values == [liver] and ann.source == "table"
    ann = case_annotation(parse_annotated(" liver ; Spleen;"), ts, synapse)
    assert ann.values == sorted([liver, spleen]) and ann.source == "column" and not ann.unknown
    assert case_annotation([str(liver)], None, synapse).values == [liver]
    assert case_annotation(["livre"], None, synapse).unknown == ["livre"]
    mask = annotation_mask([liver], synapse.num_classes)
    assert mask.dtype == bool and mask[0] and mask[liver] and mask.sum() == 2


def _liver_only_manifest(folder: Path, crops_manifest: Path, annotated: str = "liver") -> Path:
    with crops_manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    base = crops_manifest.parent
    out = folder / "liver_only.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split", "labels", "annotated"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"image": str(base / r["image"]), "label": str(base / r["label"]) if r["label"] else "",
                             "split": r["split"], "labels": r["labels"],
                             "annotated": annotated if r["label"] else ""})
    return out


@pytest.fixture(scope="module")
def crops(tmp_path_factory, patient_a_ct, patient_a_seg) -> Path:
    from scdl.training.sample_cohort import make_crop_cohort

    return make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path_factory.mktemp("partial_crops"))


def test_check_reports_annotated_classes(crops: Path, synapse: LabelTable, tmp_path: Path) -> None:
    cohort = load_manifest(_liver_only_manifest(tmp_path, crops))
    report, _ = check_cohort(cohort, synapse, framework="cps")
    labeled = [c for c in report.cases if c["label"]]
    assert labeled and all(c["annotated_names"] == ["liver"] and c["partial"] for c in labeled)
    codes = {p.code: p for p in report.problems}
    # the label maps hold spleen, kidneys ... which the column leaves out: unknown, and said so
    assert codes["drawn_not_annotated"].severity == "warning" and "spleen" in codes["drawn_not_annotated"].message
    err = codes["class_not_annotated"]
    assert err.severity == "error" and "spleen" in err.message and "--labels" in err.fix and "--init" in err.fix
    # an initial model that knows the classes turns the error into a warning
    report, _ = check_cohort(cohort, synapse, framework="cps",
                             init_classes={e.value for e in synapse.entries if e.value})
    assert report.ok and "class_kept_from_init" in {p.code for p in report.warnings}
    # a fine-tune without validation case is told that its own drawn cases would choose for it
    from scdl.training.cohort import Cohort

    no_val_cohort = Cohort(cases=[c for c in cohort.cases if c.split != "val"], source=cohort.source)
    assert len(no_val_cohort.cases) < len(cohort.cases)
    warned = check_cohort(no_val_cohort, synapse, framework="cps", init_classes={e.value for e in synapse.entries
                                                                               if e.value})[0]
    no_val = next(p for p in warned.warnings if p.code == "no_validation")
    assert "learn those patients rather than the organ" in no_val.message and "another patient" in no_val.fix
    plain = next(p for p in check_cohort(no_val_cohort, synapse, framework="cps")[0].warnings
                 if p.code == "no_validation")
    assert "learn those patients" not in plain.message and "another patient" not in plain.fix
    # a name that is no class of the model: one clear line naming the row and the fix
    cohort = load_manifest(_liver_only_manifest(tmp_path, crops, annotated="liver;livre"))
    report, _ = check_cohort(cohort, synapse, framework="cps")
    bad = [p for p in report.errors if p.code == "unknown_annotated"]
    assert bad and "'livre'" in bad[0].message and bad[0].case.startswith("liver_only.csv:")


def test_small_cohort_defaults(crops: Path, synapse: LabelTable, tmp_path: Path) -> None:
    """1 labeled + 1 unlabeled case passes with the default batch of 2 + 2 (warnings, no error); with no
    unlabeled case, cps needs them but supervised does not; no fix text proposes the setting in force."""
    base = crops.parent
    manifest = tmp_path / "one_one.csv"
    manifest.write_text("image,label,split,labels\n"
                        f"{base}/images/lab_a.nii.gz,{base}/labels/lab_a.nii.gz,train,totalsegmentator_v2\n"
                        f"{base}/images/unl_a.nii.gz,,train,\n", encoding="utf-8")
    report, _ = check_cohort(load_manifest(manifest), synapse, framework="cps-scdl", labeled_batch=2,
                             unlabeled_batch=2)
    assert report.ok, [p.line() for p in report.errors]
    few = [p for p in report.warnings if p.code == "few_cases"]
    assert len(few) == 2 and all("same case" in p.message for p in few)
    only = tmp_path / "one.csv"
    only.write_text("image,label,split,labels\n"
                    f"{base}/images/lab_a.nii.gz,{base}/labels/lab_a.nii.gz,train,totalsegmentator_v2\n",
                    encoding="utf-8")
    report, _ = check_cohort(load_manifest(only), synapse, framework="cps", labeled_batch=1, unlabeled_batch=1)
    errors = [p for p in report.errors if p.code == "too_few_cases"]
    assert len(errors) == 1 and "supervised" in errors[0].fix and "labeled_batch" not in errors[0].fix
    report, _ = check_cohort(load_manifest(only), synapse, framework="supervised", labeled_batch=1)
    assert report.ok


def test_stream_masks_unknown_labels(crops: Path, synapse: LabelTable, tmp_path: Path) -> None:
    from scdl.processing.config import PreprocessConfig  # noqa: F401 - the card block below is its schema
    from scdl.training.cache import PreprocessCache
    from scdl.training.config import resolve_config
    from scdl.training.data import StepBatches
    from scdl.training.trainer import _preprocessing_block

    cfg = resolve_config("cpu", overrides=["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]"])
    cache = PreprocessCache(tmp_path / "cache", _preprocessing_block(cfg), synapse)
    cohort = load_manifest(_liver_only_manifest(tmp_path, crops))
    _, prepared = check_cohort(cohort, synapse, framework="supervised", cache=cache, prepare=True)
    cases = [prepared[c.row] for c in cohort.labeled_train]
    liver = synapse.by_name("liver").value
    masks = [annotation_mask([liver], synapse.num_classes)] * len(cases)
    data = StepBatches(cases, [], (32, 32, 32), 2, 0, 1.0, cfg["augment"], 0, annotated=masks)
    full = StepBatches(cases, [], (32, 32, 32), 2, 0, 1.0, cfg["augment"], 0)
    seen_other = False
    for n in range(4):
        item, plain = data[n], full[n]
        assert item["labeled_annotated"].shape == (2, synapse.num_classes)
        assert set(np.unique(item["labeled_label"].numpy())) <= {0, liver}
        seen_other |= bool(((plain["labeled_label"] != 0) & (plain["labeled_label"] != liver)).any())
        assert torch.equal(item["labeled_image"], plain["labeled_image"])
    assert seen_other                      # the crops do hold other organs: they were erased, not absent
    assert "labeled_annotated" not in full[0]


def test_liver_only_fine_tuning_end_to_end(crops: Path, tiny_model: Path, tmp_path: Path, capsys) -> None:
    """scdl train --init on liver-only cases: the check and the events say what is annotated, the partial
    losses run (exclusion in the log), validation scores only the liver, the package is written."""
    from scdl.cli.main import main

    manifest = _liver_only_manifest(tmp_path, crops)
    run = tmp_path / "run"
    code = main(["train", "--cohort", str(manifest), "--out", str(run), "--init", str(tiny_model), "--preset", "cpu",
                 "--iterations", "3", "--device", "cpu", "--progress", "json", "--cache-dir", str(tmp_path / "cache"),
                 "--set", "data.num_workers=0", "--set", "threads=1", "--set", "log_every=1",
                 "--set", "labeled_batch=2", "--set", "unlabeled_batch=1"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    annotation = [e for e in events if e.get("event") == "annotation"]
    assert annotation and {tuple(c["annotated"]) for c in annotation[0]["cases"]} == {("liver",)}
    assert any("class_kept_from_init" in json.dumps(e) or "keeps what the initial model" in json.dumps(e)
               for e in events)
    with (run / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(float(r["exclusion"]) >= 0.0 for r in rows)
    assert all(math.isfinite(float(r["total"])) for r in rows)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["patch_size"] == [32, 32, 32]              # the init model's patch (its card), not the preset's
    with (run / "validation.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    scored = {k for k, v in last.items() if k.startswith("dice_") and v not in ("", "nan")}
    assert scored == {"dice_liver"}, last
    report = json.loads((run / "cohort_report.json").read_text(encoding="utf-8"))
    assert all(c.get("annotated_names") == ["liver"] for c in report["cases"] if c["label"])
    assert (run / "model" / "card.json").is_file()


def test_liver_only_fine_tune_resumes(crops: Path, tiny_model: Path, tmp_path: Path, capsys) -> None:
    """A stopped liver-only fine-tune continues with --resume (the classes no case draws stay kept: the cohort check
    of the resumed run does not turn them into an error because the initial model is not loaded again)."""
    from scdl.cli.main import main

    manifest = _liver_only_manifest(tmp_path, crops)
    run = tmp_path / "run"
    common = ["--device", "cpu", "--progress", "none"]
    assert main(["train", "--cohort", str(manifest), "--out", str(run), "--init", str(tiny_model), "--preset", "cpu",
                 "--iterations", "2", "--cache-dir", str(tmp_path / "cache"), *common, "--set", "data.num_workers=0",
                 "--set", "threads=1", "--set", "labeled_batch=2", "--set", "unlabeled_batch=1"]) == 0
    code = main(["train", "--resume", str(run), "--iterations", "4", *common])
    assert code == 0, capsys.readouterr().err[-2000:]
    with (run / "log.csv").open() as handle:
        assert [int(r["iteration"]) for r in csv.DictReader(handle)][-1] == 4
    assert "no initial model brings them" not in capsys.readouterr().err


def test_norm_stats_setting(tmp_path: Path) -> None:
    """finetune.norm_stats: "update" lets batch norm track the batches (what "auto", the default, gives a run
    without --init); "frozen" keeps the running statistics while the affine weights still learn; anything else is
    one clear error."""
    from scdl.errors import ScdlError
    from scdl.training.config import resolve_config
    from scdl.training.settings import TrainConfig
    from scdl.training.trainer import Trainer

    assert resolve_config("cpu")["finetune"]["norm_stats"] == "update"
    with pytest.raises(ScdlError, match="finetune.norm_stats"):
        resolve_config("cpu", overrides=["finetune.norm_stats=sometimes"])
    torch.manual_seed(0)
    for mode, changes in (("update", True), ("frozen", False)):
        trainer = Trainer.__new__(Trainer)
        trainer.config = TrainConfig.from_dict(resolve_config("cpu", overrides=[f"finetune.norm_stats={mode}"]))
        trainer.step = TrainingStep.build({"name": "vnet", "n_classes": 3, "n_filters": 2}, framework="supervised")
        bn = next(m for m in trainer.step.modules() if isinstance(m, torch.nn.BatchNorm3d))
        before = bn.running_mean.clone()
        trainer.step.train()
        trainer._freeze_norm_stats()
        trainer.step(torch.randn(2, 1, 16, 16, 16) + 3.0, torch.randint(0, 3, (2, 16, 16, 16)))
        assert bool((bn.running_mean != before).any()) is changes, mode
        assert bn.weight.requires_grad
