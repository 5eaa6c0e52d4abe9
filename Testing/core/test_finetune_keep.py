"""Fine-tuning on another hospital's cases (issue 24): the keep-what-you-know distillation against a value computed
by hand and its exactness where nothing is kept, the inherited training recipe, the plan line of
``scdl train --check-only`` (the preset chosen from the device, one estimate with the panel) and a tiny liver-only
fine-tune end to end where an organ the case does not draw keeps its predicted voxels.

Self-contained: tmp_path, the tiny_model fixture and synthetic phantoms; nothing from outside the repository."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scdl.losses.keep import keep_distillation_loss
from scdl.training.config import resolve_config
from scdl.training.keep import KeepKnowledge
from scdl.training.step import TrainingStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = {"name": "vnet", "in_channels": 1, "n_classes": 4, "n_filters": 2, "norm": "batch"}


# -- the distillation term, by hand ----------------------------------------------------------------------
def _hand_case():
    """C = 3 (class 1 annotated, class 2 kept), 3 voxels; voxel 2 is labeled (an organ): not distilled."""
    # rows: voxels, columns: classes; transposed to (B = 1, C, 3 voxels)
    teacher = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]], dtype=torch.float64).T[None]
    student = torch.tensor([[0.0, math.log(2.0), math.log(3.0)], [0.0, 0.0, 0.0], [5.0, -5.0, 1.0]],
                           dtype=torch.float64).T[None].contiguous()
    taught = torch.tensor([[True, True, False]])
    voxels = torch.tensor([[True, True, False]])
    return teacher, student, taught, voxels


def test_keep_distillation_by_hand() -> None:
    teacher, student, taught, voxels = _hand_case()
    # bins {background + class 1, class 2}. Voxel 0: teacher (0.5 + 0.2, 0.3) = (0.7, 0.3); student softmax
    # (1/6, 2/6, 3/6) -> (1/2, 1/2). Voxel 1: teacher (0.2, 0.8); student softmax (1/3, 1/3, 1/3) -> (2/3, 1/3).
    kl0 = 0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5)
    kl1 = 0.2 * math.log(0.2 / (2.0 / 3.0)) + 0.8 * math.log(0.8 / (1.0 / 3.0))
    # the teacher's bins: voxel 0 -> background, voxel 1 -> class 2: two groups of one voxel, averaged; T = 1
    got = keep_distillation_loss(student, teacher, taught, voxels, temperature=1.0)
    assert float(got) == pytest.approx((kl0 + kl1) / 2.0, rel=1e-12)
    # T = 2: the student's logits are divided by T (here: doubled logits give the same softmax), times T²
    got2 = keep_distillation_loss(2.0 * student, teacher, taught, voxels, temperature=2.0)
    assert float(got2) == pytest.approx(4.0 * (kl0 + kl1) / 2.0, rel=1e-12)
    # class-balanced: two more background voxels like voxel 0 change nothing (a voxel mean would drop)
    t3 = torch.cat([teacher, teacher[..., :1], teacher[..., :1]], dim=2)
    s3 = torch.cat([student, student[..., :1], student[..., :1]], dim=2)
    v3 = torch.cat([voxels, torch.tensor([[True, True]])], dim=1)
    assert float(keep_distillation_loss(s3, t3, taught, v3, 1.0)) == pytest.approx((kl0 + kl1) / 2.0, rel=1e-12)
    # the split between background and the taught class is the labels' business: moving the student's mass
    # between them changes nothing (voxel 0: softmax (2/6, 1/6, 3/6) instead of (1/6, 2/6, 3/6))
    moved = student.clone()
    moved[0, :, 0] = torch.tensor([math.log(2.0), 0.0, math.log(3.0)], dtype=torch.float64)
    assert float(keep_distillation_loss(moved, teacher, taught, voxels, 1.0)) == pytest.approx((kl0 + kl1) / 2.0,
                                                                                                rel=1e-12)
    # every class taught: one bin, exactly 0 (with a gradient path)
    zero = keep_distillation_loss(student.requires_grad_(), teacher, torch.ones(1, 3, dtype=torch.bool), voxels)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    # gradients flow to the student only where the voxels are distilled
    s = student.detach().clone().requires_grad_()
    keep_distillation_loss(s, teacher, taught, voxels, 2.0).backward()
    assert torch.all(s.grad[..., 2] == 0) and bool(s.grad[..., :2].abs().sum() > 0)


# -- the step's pluggable term -----------------------------------------------------------------------------
def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lx = torch.rand(2, 1, 16, 16, 16, generator=g)
    ly = torch.randint(0, 4, (2, 16, 16, 16), generator=g)
    ux = torch.rand(1, 1, 16, 16, 16, generator=g)
    return lx, ly, ux


@pytest.mark.parametrize("framework", ["supervised", "cps"])
def test_keep_term_adds_nothing_where_nothing_is_kept(framework: str) -> None:
    """With every class annotated (and on unlabeled patches with every class taught) the term is exactly 0 and
    the losses equal today's bit for bit; with weight 0 likewise on a partially annotated batch."""
    torch.manual_seed(0)
    plain = TrainingStep.build(ARCH, framework)
    hooked = copy.deepcopy(plain)
    hooked.add_term(KeepKnowledge(list(plain.networks), np.ones(4, bool), weight=1.0))
    off = copy.deepcopy(plain)
    off.add_term(KeepKnowledge(list(plain.networks), np.array([True, True, False, False]), weight=0.0))
    lx, ly, ux = _batch()
    every = torch.ones(2, 4, dtype=torch.bool)
    partial = torch.tensor([[True, True, False, False]] * 2)
    for annotated, other, keep_value in ((None, hooked, 0.0), (every, hooked, 0.0), (partial, off, 0.0)):
        torch.manual_seed(1)
        a = plain(lx, ly, ux, progress=0.3, annotated=annotated)
        torch.manual_seed(1)
        b = other(lx, ly, ux, progress=0.3, annotated=annotated)
        assert float(b["keep"].detach()) == keep_value
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items() if k != "keep"}
        assert torch.equal(a["total"], b["total"])


def test_keep_term_teachers_stay_frozen_and_are_checkpointed() -> None:
    torch.manual_seed(0)
    step = TrainingStep.build(ARCH, "cps")
    term = KeepKnowledge(list(step.networks), np.array([True, True, False, False]), weight=1.0, temperature=2.0)
    step.add_term(term)
    step.train()
    assert not term.teachers.training and all(not m.training for m in term.teachers.modules())
    assert all(not p.requires_grad for p in term.teachers.parameters())
    assert not any(p is q for p in step.trainable_parameters() for q in term.teachers.parameters())
    assert any(k.startswith("terms.0.teachers.") for k in step.state_dict())
    before = {k: v.clone() for k, v in term.teachers.state_dict().items()}
    lx, ly, ux = _batch()
    ly[:, :8] = 1
    ly[:, 8:] = 0
    out = step(lx, ly, ux, annotated=torch.tensor([[True, True, False, False]] * 2))
    assert float(out["keep"].detach()) >= 0.0 and out["keep"].requires_grad
    out["total"].backward()
    after = term.teachers.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)       # BN statistics untouched as well


# -- the inherited recipe ------------------------------------------------------------------------------------
def _card(recipe=None) -> dict:
    card = {"id": "hospital-model", "provenance": {"framework": "cps-scdl"}}
    if recipe is not None:
        card["provenance"]["recipe"] = {"config": recipe}
    return card


RECIPE = {"preset": "cpu", "framework": "cps-scdl", "iterations": 999, "optimizer": {"name": "adamw", "lr": 0.003},
          "scdl": {"kl_reduction": "tokens"}, "augment": {"slab": True}, "validation": {"every": 7},
          "seed": 5, "data": {"num_workers": 3}}


def test_fine_tune_inherits_the_recipe_unless_overridden(tmp_path: Path) -> None:
    paper = resolve_config("paper")
    config = resolve_config("paper", init=_card(RECIPE))
    # the inherited rate times finetune.lr_scale (0.1: measured with bench/finetune_protocol.py, docs/training.md)
    assert config["optimizer"]["name"] == "adamw" and config["optimizer"]["lr"] == pytest.approx(0.0003)
    assert config["init"]["lr_scaled"] == [0.003, pytest.approx(0.0003)]
    assert resolve_config("paper", overrides=["finetune.lr_scale=1"], init=_card(RECIPE))["optimizer"]["lr"] == 0.003
    assert config["scdl"]["kl_reduction"] == "tokens" and config["augment"]["slab"] is True
    # the recipe's preset counts as well (cpu: intensity + noise augmentation), the run's own settings do not
    assert config["augment"]["intensity"] is True and config["sampling"]["class_prob"] == 0.5
    assert (config["iterations"], config["seed"], config["validation"]["every"], config["data"]["num_workers"]) == (
        paper["iterations"], paper["seed"], paper["validation"]["every"], paper["data"]["num_workers"])
    init = config["init"]
    assert init["recipe"] and init["inherit"] and init["id"] == "hospital-model"
    assert init["inherited"]["optimizer.name"] == "adamw" and init["inherited"]["scdl.kl_reduction"] == "tokens"
    from scdl.training.finetune import inherited_line

    line = inherited_line(init)
    assert line.startswith("fine-tuning hospital-model with its training recipe") and 'optimizer.name="adamw"' in line
    assert "x finetune.lr_scale" in line
    # the user's layers win: --set, flags, a config file
    file = tmp_path / "mine.json"
    file.write_text(json.dumps({"augment": {"slab": False}}))
    config = resolve_config("paper", file, {"iterations": 50}, ["optimizer.lr=0.0005"], init=_card(RECIPE))
    assert config["optimizer"] == {**paper["optimizer"], "name": "adamw", "lr": 0.0005}
    assert config["augment"]["slab"] is False and config["iterations"] == 50
    assert config["init"]["yours"]["optimizer.lr"] == [0.003, 0.0005] and "lr_scaled" not in config["init"]
    assert "your settings kept: " in inherited_line(config["init"]) and "augment.slab=false" in inherited_line(config["init"])
    # switched off; a card without a recipe (an imported checkpoint of the authors)
    off = resolve_config("paper", overrides=["finetune.inherit=false"], init=_card(RECIPE))
    assert off["optimizer"] == paper["optimizer"] and "NOT inherited" in inherited_line(off["init"])
    bare = resolve_config("cpu", init=_card())
    assert bare["optimizer"] == resolve_config("cpu")["optimizer"] and not bare["init"]["inherited"]
    assert "records no training recipe" in inherited_line(bare["init"])


def test_norm_stats_auto_freezes_only_a_recipe_fine_tune_at_the_scaled_rate() -> None:
    """finetune.norm_stats "auto" (the default): frozen when the run inherits a recipe and scales its learning
    rate (measured better, docs/training.md), update for a fresh run, a card without a recipe (the preset's SGD
    0.01 collapsed with frozen statistics), a rate the user chose, or an explicit choice; the log line says it."""
    from scdl.training.finetune import inherited_line

    fine = resolve_config("paper", init=_card(RECIPE))
    assert fine["finetune"]["norm_stats"] == "frozen" and fine["init"]["norm_stats_frozen"] is True
    assert "batch-norm statistics frozen" in inherited_line(fine["init"])
    assert resolve_config("cpu")["finetune"]["norm_stats"] == "update"
    assert resolve_config("cpu", init=_card())["finetune"]["norm_stats"] == "update"
    own_lr = resolve_config("paper", overrides=["optimizer.lr=0.0005"], init=_card(RECIPE))
    assert own_lr["finetune"]["norm_stats"] == "update" and "batch-norm" not in inherited_line(own_lr["init"])
    chosen = resolve_config("paper", overrides=["finetune.norm_stats=update"], init=_card(RECIPE))
    assert chosen["finetune"]["norm_stats"] == "update" and "norm_stats_frozen" not in chosen["init"]


def test_cards_of_scdl_train_record_their_recipe(tmp_path: Path) -> None:
    """A model trained by scdl train is a recipe for its own fine-tunes: the card records the settings."""
    from scdl.training.finetune import recipe_layer
    from scdl.training.packaging import training_card

    config = resolve_config("cpu", overrides=["optimizer.name=adamw", "optimizer.lr=0.002", "scdl.lam=0.3",
                                              "augment.organ_shift=true"])
    card = training_card(run_dir=tmp_path / "run", config=config, arch={"name": "vnet", "in_channels": 1,
                         "n_classes": 14, "n_filters": 8, "norm": "batch"}, ensemble=2,
                         preprocessing={"mode": "spacing", "spacing_mm": [3.0, 3.0, 3.0], "patch_size": [32, 32, 32]},
                         iteration=10, chosen=10, elapsed=1.0,
                         best={"mean_dice": 0.6, "dice": {"liver": 0.9}, "iteration": 10},
                         cohort_source="m.csv", summary={"labeled": 1, "unlabeled": 1, "val": 1},
                         validation_source="val", world_size=1,
                         baseline={"mean_dice": 0.5, "dice": {"liver": 0.8}, "iteration": 0})
    layer = recipe_layer(card)
    assert layer["optimizer"]["lr"] == 0.002 and layer["scdl"]["lam"] == 0.3 and layer["augment"]["organ_shift"]
    assert "iterations" not in layer and "seed" not in layer and "validation" not in layer
    assert card["provenance"]["validation_metrics"]["before"]["dice"] == {"liver": 0.8}


def test_fine_tune_card_keeps_the_init_models_inference_settings(tmp_path: Path) -> None:
    """A fine-tune's card gets its init model's post-processing and test-time batch-norm statistics (chosen on
    that model's validation), the largest-component organs cut to the fine-tune's table; without --init the
    card has the defaults."""
    from scdl.models.card import DEFAULT_INFERENCE
    from scdl.training.packaging import training_card

    init_card = {"id": "parent", "inference": {"overlap": 0.5, "bn_adapt": 0.5, "label_resampling": "nearest",
                                               "largest_component_organs": ["liver", "spleen", "aorta"]}}

    def card_of(config, names):
        return training_card(run_dir=tmp_path / "run", config=config, arch={"name": "vnet", "in_channels": 1,
                             "n_classes": 3, "n_filters": 8, "norm": "batch"}, ensemble=2,
                             preprocessing={"mode": "spacing", "spacing_mm": [3.0, 3.0, 3.0],
                                            "patch_size": [32, 32, 32]},
                             iteration=4, chosen=4, elapsed=1.0, best={}, cohort_source="m.csv",
                             summary={"labeled": 1, "unlabeled": 0, "val": 0}, validation_source=None,
                             world_size=1, label_names=names)

    config = resolve_config("cpu", init=init_card)
    assert config["init"]["inference"]["bn_adapt"] == 0.5
    card = card_of(config, ["background", "Liver", "aorta"])
    assert card["inference"]["bn_adapt"] == 0.5
    assert card["inference"]["largest_component_organs"] == ["liver", "aorta"]      # no spleen in its table
    plain = card_of(resolve_config("cpu"), ["background", "liver"])
    assert plain["inference"] == DEFAULT_INFERENCE and "bn_adapt" not in plain["inference"]


# -- the preset and the plan line -----------------------------------------------------------------------------
def test_preset_follows_the_device() -> None:
    from scdl.training.config import choose_preset

    assert choose_preset("auto", False) == ("cpu", "no CUDA on this machine")
    assert choose_preset("auto", True)[0] == "paper" and choose_preset("cuda:1", False)[0] == "paper"
    assert choose_preset("cpu", True) == ("cpu", "--device cpu")


def test_plan_line_and_the_one_estimate() -> None:
    from scdl.training.estimate import estimate, plan_line

    config = resolve_config("cpu", overrides=["iterations=1500"])
    text = plan_line(config, "cpu", "chosen: no CUDA on this machine")
    assert text.startswith("plan: preset cpu (chosen: no CUDA on this machine); cps-scdl, 1500 iterations, "
                           "patch 48x48x48, batch 2 labeled + 2 unlabeled, width 8, device cpu; estimate: about 1.6 s "
                           "per iteration, 39 min 47 s in all, 1.0 GiB")
    # the keep term's teachers cost more time; a GPU has no calibration
    assert estimate("cps-scdl", 48, 8, 100, teachers=2).seconds_per_iteration == pytest.approx(
        estimate("cps-scdl", 48, 8, 100).seconds_per_iteration * (1 + 2 / 6))
    assert "no estimate (not calibrated for GPUs" in plan_line(config, "cuda:0")


# -- a tiny fine-tune end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """3 synthetic cases of 40 x 40 x 24 voxels at 6 mm (Synapse numbering)."""
    from inprocess import run_scdl

    out = tmp_path_factory.mktemp("keep_phantoms") / "cohort"
    assert run_scdl(["phantom", "--out", str(out), "--cases", "3", "--seed", "3", "--size", "40,40,24",
                     "--spacing", "6", "--progress", "none"]) == 0
    return out


def _liver_only(phantoms: Path, folder: Path, val: bool = False) -> Path:
    """Case 0 labeled with only its liver annotated, case 1 unlabeled, case 2 unlabeled (or, ``val``, the
    validation case with every organ)."""
    manifest = folder / "liver_only.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split", "labels", "annotated"])
        writer.writeheader()
        writer.writerow({"image": str(phantoms / "images/case_000.nii.gz"),
                         "label": str(phantoms / "labels/case_000.nii.gz"), "split": "train", "labels": "",
                         "annotated": "liver"})
        writer.writerow({"image": str(phantoms / "images/case_001.nii.gz"), "label": "", "split": "train",
                         "labels": "", "annotated": ""})
        writer.writerow({"image": str(phantoms / "images/case_002.nii.gz"),
                         "label": str(phantoms / "labels/case_002.nii.gz") if val else "",
                         "split": "val" if val else "train", "labels": "", "annotated": ""})
    return manifest


def test_check_only_prints_the_plan_and_what_the_init_model_keeps(phantoms: Path, tiny_model: Path,
                                                                  tmp_path: Path, capsys, monkeypatch) -> None:
    from inprocess import run_scdl

    import scdl.cli.train as cli

    monkeypatch.setattr(cli, "_cuda_available", lambda: False)
    manifest = _liver_only(phantoms, tmp_path)
    common = ["train", "--cohort", str(manifest), "--check-only", "--init", str(tiny_model),
              "--cache-dir", str(tmp_path / "cache"), "--iterations", "300"]
    assert run_scdl(common) == 0
    out = capsys.readouterr().out
    plan = next(line for line in out.splitlines() if line.startswith("plan: "))
    assert plan.startswith("plan: preset cpu (chosen: no CUDA on this machine; --preset paper for the paper's "
                           "settings); cps-scdl, 300 iterations, patch 32x32x32, batch 2 labeled + 2 unlabeled, "
                           "width 2, device cpu; estimate: about ")
    case = next(line for line in out.splitlines() if line.startswith("case_000: annotated liver"))
    assert "taught by the initial model (keep what you know): spleen, " in case
    assert run_scdl(common + ["--preset", "paper", "--progress", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    plan = next(e for e in events if e.get("event") == "plan")
    assert plan["preset"] == "paper" and plan["preset_note"] == "" and plan["text"].startswith("plan: preset paper; ")
    assert plan["keep_teachers"] == 2 and plan["iterations"] == 300
    annotation = next(e for e in events if e.get("event") == "annotation")
    assert annotation["cases"][0]["annotated"] == ["liver"] and "spleen" in annotation["cases"][0]["kept"]


def _predict(model_dir: Path, image: Path) -> np.ndarray:
    import SimpleITK as sitk

    from scdl.inference.predictor import segment_image
    from scdl.models.package import ModelPackage

    result = segment_image(sitk.ReadImage(str(image)), ModelPackage.load(model_dir), device="cpu")
    return sitk.GetArrayFromImage(result.labels)


def test_liver_only_fine_tune_keeps_an_organ_it_does_not_draw(phantoms: Path, tiny_model: Path,
                                                               tmp_path: Path) -> None:
    """The same tiny fine-tune (AdamW 0.01, 8 iterations, no interpolation with the initial model) on a liver-only
    case with keep weight 0 and 1: with the
    initial model teaching the classes the case does not annotate, the voxels of the organ the initial model
    predicts most (not the liver) stay more of that organ than without; the recipe line and the keep line are
    in the log, and the validation before fine-tuning is in the card."""
    from scdl.progress import Progress
    from scdl.training.cohort import load_manifest
    from scdl.training.trainer import Trainer

    manifest = _liver_only(phantoms, tmp_path, val=True)
    probe = phantoms / "images/case_001.nii.gz"
    before = _predict(tiny_model, probe)
    organs = [v for v in np.argsort(np.bincount(before.ravel(), minlength=14))[::-1] if v not in (0, 6)]
    organ = int(organs[0])
    assert (before == organ).sum() > 50
    kept = {}
    for weight in (0.0, 1.0):
        messages: list[str] = []
        progress = Progress("none")
        progress.message = messages.append                     # type: ignore[method-assign]
        cfg = resolve_config("cpu", values={"labels": "init", "patch_size": "init", "iterations": 8},
                             overrides=["data.num_workers=0", "threads=1", "optimizer.name=adamw", "optimizer.lr=0.01",
                                        "validation.every=0", "log_every=1", f"finetune.keep_weight={weight}",
                                        "finetune.interpolate=1",      # the keep term alone (no WiSE-FT mix)
                                        f'data.cache_dir="{tmp_path / "cache"}"'], init=str(tiny_model))
        run = tmp_path / f"run_{weight}"
        result = Trainer(cfg, load_manifest(manifest), run, device="cpu", init=str(tiny_model),
                         progress=progress).run()
        assert result.model_dir is not None
        after = _predict(result.model_dir, probe)
        kept[weight] = float(((after == organ) & (before == organ)).sum() / (before == organ).sum())
        log = list(csv.DictReader((run / "log.csv").open()))
        assert any(m.startswith("fine-tuning tiny-test-model") for m in messages)
        if weight:
            assert float(log[-1]["keep"]) >= 0.0 and any(m.startswith("keep what you know: ") for m in messages)
        else:
            assert "keep" not in log[0]
        card = json.loads((result.model_dir / "card.json").read_text(encoding="utf-8"))
        assert card["provenance"]["validation_metrics"]["before"]["mean_dice"] >= 0.0
        assert card["provenance"]["recipe"]["config"]["optimizer"]["name"] == "adamw"
    assert kept[1.0] > kept[0.0] + 0.1, kept            # measured here: 0.96 against 0.57


@pytest.mark.parametrize("validation", [-1, 0])
def test_fine_tune_is_interpolated_with_the_initial_model(phantoms: Path, tiny_model: Path, tmp_path: Path,
                                                          validation: int) -> None:
    """finetune.interpolate 0.4: the package holds exactly 0.6 x the initial weights + 0.4 x the trained ones
    (validation off: the last; on: the best, validated again and recorded), and the card says so."""
    import torch

    from scdl.models.package import ModelPackage
    from scdl.training.cohort import load_manifest
    from scdl.training.trainer import Trainer

    manifest = _liver_only(phantoms, tmp_path, val=validation >= 0)
    cfg = resolve_config("cpu", values={"labels": "init", "patch_size": "init", "iterations": 4},
                         overrides=["data.num_workers=0", "threads=1", "optimizer.name=adamw", "optimizer.lr=0.01",
                                    f"validation.every={validation}", "finetune.interpolate=0.4",
                                    f'data.cache_dir="{tmp_path / "cache"}"'], init=str(tiny_model))
    trainer = Trainer(cfg, load_manifest(manifest), tmp_path / "run", device="cpu", init=str(tiny_model))
    result = trainer.run()
    trained = trainer.step.network_state_dicts()        # the last weights (the best: iteration 4, validated at 0 only)
    init = ModelPackage.load(tiny_model).state_dicts()
    packaged = ModelPackage.load(result.model_dir).state_dicts()
    moved = 0
    for n, (start, tuned, got) in enumerate(zip(init, trained, packaged)):
        for key, value in got.items():
            if not value.is_floating_point():
                continue
            want = 0.6 * start[key].double() + 0.4 * tuned[key].double()
            assert torch.allclose(value.double(), want, atol=1e-6), key
            moved += int(not torch.equal(value, tuned[key]))
    assert moved > 10                                   # not the trained weights themselves
    card = ModelPackage.load(result.model_dir).card
    assert "0.6 x initial + 0.4 x fine-tuned (finetune.interpolate)" in card["description"]
    if validation >= 0:
        assert card["provenance"]["validation_metrics"]["interpolated"]["alpha"] == 0.4
        assert result.best["interpolated"]["alpha"] == 0.4


def test_protocol_verdict_and_table(repo_root: Path) -> None:
    """bench/finetune_protocol.py's target: the drawn organ +0.03 or more, every other organ within -0.02."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_protocol", repo_root / "bench" / "finetune_protocol.py")
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    before = {"liver": 0.90, "spleen": 0.80, "left kidney": 0.85}
    met = protocol.verdict(before, {"liver": 0.93, "spleen": 0.79, "left kidney": 0.86})
    assert met["met"] and met["drawn_gain"] == pytest.approx(0.03) and met["worst_other"] == "spleen"
    small = protocol.verdict(before, {"liver": 0.92, "spleen": 0.80, "left kidney": 0.85})
    assert not small["met"] and not small["drawn_ok"] and small["others_ok"]
    lost = protocol.verdict(before, {"liver": 0.95, "spleen": 0.70, "left kidney": 0.85})
    assert not lost["met"] and lost["drawn_ok"] and lost["worst_other_change"] == pytest.approx(-0.10)
    results = {"iterations": 5, "model": "m", "rows": ["keep"], "cases": ["B"], "before": {"B": before},
               "after": {"keep": {"B": {"liver": 0.93, "spleen": 0.79, "left kidney": 0.86}}},
               "verdict": {"keep": {"B": met}}, "train_minutes": {"keep": 1.0}, "total_minutes": 2.0}
    text = protocol.markdown(results)
    assert "| **liver** (drawn) | 0.900 | 0.930 (+0.030) |" in text and "| target met | | yes |" in text


def test_protocol_mix_is_the_runs_interpolation(repo_root: Path, tmp_path: Path) -> None:
    """--mix: (1 - a) x the initial package + a x the fine-tuned one, per weight, as a verified package; the
    same classes and networks are required."""
    import importlib.util

    from model_factory import make_tiny_package
    from scdl.models.package import ModelPackage

    spec = importlib.util.spec_from_file_location("finetune_protocol", repo_root / "bench" / "finetune_protocol.py")
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    start = make_tiny_package(tmp_path / "start", seed=1)
    tuned = make_tiny_package(tmp_path / "tuned", seed=2)
    mixed = ModelPackage.load(protocol.mixed_package(str(start), tuned, 0.75, tmp_path / "mix"), verify=True)
    s, f, m = (ModelPackage.load(p).state_dicts()[1] for p in (start, tuned, mixed.path))
    floats = [k for k, v in f.items() if v.is_floating_point()]
    assert sum(not torch.equal(s[k], f[k]) for k in floats) > len(floats) // 2     # two different models
    for k in floats:
        assert torch.allclose(m[k], 0.25 * s[k] + 0.75 * f[k], atol=1e-6), k
    assert "0.25 x initial + 0.75 x fine-tuned" in mixed.title and mixed.id.endswith("-mix0.75")
    for name, kwargs in (("other_table", {"table": "totalsegmentator_v2"}), ("wider", {"n_filters": 4}),
                         ("single", {"ensemble": 1})):
        other = make_tiny_package(tmp_path / name, seed=3, **kwargs)
        with pytest.raises(SystemExit, match="differ in"):
            protocol.mixed_package(str(start), other, 0.5, tmp_path / f"bad_{name}")


def test_protocol_takes_your_cohort_and_scored_cases(repo_root: Path, tmp_path: Path) -> None:
    """--cohort / --scored (issue 24's check on real patients): your manifest's rows with absolute paths, the
    background row without the annotated column; your scored CSV; one-line refusals naming the file and the fix."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_protocol", repo_root / "bench" / "finetune_protocol.py")
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    site = tmp_path / "hospital"
    (site / "ct").mkdir(parents=True)
    for name in ("p1.nii.gz", "p1_liver.nii.gz", "p2.nii.gz", "p3.nii.gz", "p3_seg.nii.gz"):
        (site / "ct" / name).write_bytes(b"x")
    manifest = site / "finetune.csv"
    manifest.write_text("image,label,split,labels,annotated\nct/p1.nii.gz,ct/p1_liver.nii.gz,train,synapse,liver\n"
                        "ct/p2.nii.gz,,train,,\n", encoding="utf-8")
    rows = protocol.user_cohort(manifest, "liver")
    assert rows[0] == {"image": str(site / "ct" / "p1.nii.gz"), "label": str(site / "ct" / "p1_liver.nii.gz"),
                       "split": "train", "labels": "synapse", "annotated": "liver"}
    assert rows[1]["label"] == "" and rows[1]["annotated"] == ""
    assert protocol.cohort_for_row(rows, "liver") == rows
    assert [r["annotated"] for r in protocol.cohort_for_row(rows, "")] == ["", ""] and rows[0]["annotated"] == "liver"
    with pytest.raises(SystemExit, match="no labeled training row annotates 'pancreas'.*annotated=pancreas"):
        protocol.user_cohort(manifest, "pancreas")
    with pytest.raises(SystemExit, match="--cohort.*does not exist"):
        protocol.user_cohort(site / "nope.csv", "liver")
    scored = site / "scored.csv"
    scored.write_text("name,image,label,labels\np3,ct/p3.nii.gz,ct/p3_seg.nii.gz,totalsegmentator_v2\n",
                      encoding="utf-8")
    assert protocol.scored_cases(scored) == {"p3": (site / "ct" / "p3.nii.gz", site / "ct" / "p3_seg.nii.gz",
                                                    "totalsegmentator_v2")}
    (site / "ct" / "mine.csv").write_text("value,name\n0,background\n1,liver\n", encoding="utf-8")
    scored.write_text("name,image,label,labels\np3,ct/p3.nii.gz,ct/p3_seg.nii.gz,ct/mine.csv\n", encoding="utf-8")
    assert protocol.scored_cases(scored)["p3"][2] == str(site / "ct" / "mine.csv")     # a table file: next to the CSV
    scored.write_text("name,image,label,labels\np3,,ct/p3_seg.nii.gz,synapse\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="column image is empty"):
        protocol.scored_cases(scored)
    scored.write_text("name,image,label,labels\na/b,ct/p3.nii.gz,ct/p3_seg.nii.gz,synapse\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="not a plain word"):
        protocol.scored_cases(scored)
    manifest.write_text("image,label,split,labels,annotated\nct/p1.nii.gz,ct/gone.nii.gz,train,synapse,Liver\n",
                        encoding="utf-8")
    with pytest.raises(SystemExit, match="gone.nii.gz does not exist"):
        protocol.user_cohort(manifest, "liver")
    manifest.write_text("image,label,split,labels,annotated\nct/p1.nii.gz,ct/p1_liver.nii.gz,train,synapse,Liver\n",
                        encoding="utf-8")
    assert protocol.user_cohort(manifest, "liver")[0]["annotated"] == "Liver"      # names as scdl train matches them
    scored.write_text("name,image,label\np3,ct/p3.nii.gz,ct/p3_seg.nii.gz\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no column labels"):
        protocol.scored_cases(scored)
    scored.write_text("name,image,label,labels\np3,ct/p4.nii.gz,ct/p3_seg.nii.gz,synapse\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"scored.csv:2: .*p4.nii.gz does not exist"):
        protocol.scored_cases(scored)


def test_keep_is_on_for_partial_cases_with_init_only() -> None:
    """On with --init and a partially annotated cohort (weight > 0); off without --init, with every class
    annotated, with weight 0, and for runs configured before the setting existed (resumed)."""
    from scdl.training.trainer import Trainer

    from scdl.training.settings import TrainConfig

    def trainer(init, partial, old=False, **finetune):
        t = Trainer.__new__(Trainer)
        config = resolve_config("cpu", overrides=[f"finetune.{k}={v}" for k, v in finetune.items()])
        config["init"] = init
        if old:                                     # a run's config.json written before the setting existed
            del config["finetune"]["keep_weight"]
        t.config = TrainConfig.from_dict(config)
        t.partial = partial
        return t

    assert trainer({"model": "m"}, True).keeps_init_knowledge()
    assert not trainer(None, True).keeps_init_knowledge()
    assert not trainer({"model": "m"}, False).keeps_init_knowledge()
    assert not trainer({"model": "m"}, True, keep_weight=0).keeps_init_knowledge()
    assert not trainer({"model": "m"}, True, old=True).keeps_init_knowledge()
