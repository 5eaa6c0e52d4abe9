"""The SSL benchmark (``scdl bench ssl``): statistics on hand-made numbers, the ablation definitions through the
real training step, settings/keys, and one tiny end-to-end benchmark (2 configurations, 1 seed, 1 iteration)."""

from __future__ import annotations

import json
import math
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scdl.bench.ssl_aggregate import aggregate, class_means, mean_std, run_summary, smallest_classes
from scdl.bench.ssl_configs import CONFIGURATIONS, DEFAULT_CONFIGS, parse_configs
from scdl.bench.ssl_settings import SSLBenchSettings
from scdl.errors import ScdlError

SYNAPSE = ["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
           "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland"]


# -- statistics -------------------------------------------------------------------------------------------
def test_class_means_skip_nan_cases_and_keep_all_nan_classes_nan():
    dice = np.array([[0.5, np.nan, 1.0], [0.7, np.nan, 0.0], [0.9, np.nan, np.nan]])
    means = class_means(dice)
    assert means[0] == pytest.approx(0.7)            # (0.5 + 0.7 + 0.9) / 3
    assert math.isnan(means[1])                      # absent everywhere
    assert means[2] == pytest.approx(0.5)            # (1.0 + 0.0) / 2, the NaN case skipped


def test_smallest_third_of_the_synapse_organs_by_volume():
    # median phantom volumes (mL) of docs/phantom.md
    volumes = dict(zip(SYNAPSE, [167.0, 115.8, 111.9, 39.1, 10.6, 1051.9, 171.2, 64.3, 71.5, 12.8, 43.9, 3.5, 3.7]))
    assert smallest_classes(volumes) == ["esophagus", "portal and splenic veins", "right adrenal gland",
                                         "left adrenal gland"]          # round(13/3) = 4, in the table's order
    assert smallest_classes(volumes, 0.5) == ["gallbladder", "esophagus", "aorta", "portal and splenic veins",
                                              "pancreas", "right adrenal gland", "left adrenal gland"]  # 6.5 -> 7
    assert smallest_classes({"a": 2.0, "b": 1.0, "c": 1.0}, 1 / 3) == ["b"]   # tie: the earlier class
    assert smallest_classes({"a": 5.0}, 0.01) == ["a"]                 # at least one


def test_mean_std_is_the_sample_std_over_seeds():
    stat = mean_std([0.6, 0.7, 0.8])
    assert stat["mean"] == pytest.approx(0.7)
    assert stat["std"] == pytest.approx(0.1)         # sqrt(((-.1)^2 + 0 + .1^2) / (3 - 1))
    assert stat["n"] == 3
    one = mean_std([0.42])
    assert one["mean"] == pytest.approx(0.42) and math.isnan(one["std"])
    assert mean_std([0.2, float("nan"), 0.4])["mean"] == pytest.approx(0.3)


def test_aggregate_by_hand():
    classes = ["big", "mid", "tiny"]
    runs = [
        {"config": "cps", "seed": 0, "class_dice": [0.9, 0.6, 0.0]},
        {"config": "cps", "seed": 1, "class_dice": [0.8, 0.6, 0.3]},
        {"config": "scdl", "seed": 0, "class_dice": [0.9, 0.7, 0.5]},
    ]
    out = aggregate(runs, classes, small=["tiny"])
    assert list(out) == ["cps", "scdl"]
    cps = out["cps"]
    assert cps["seeds"] == [0, 1]
    assert cps["dice"]["big"]["mean"] == pytest.approx(0.85)
    assert cps["dice"]["big"]["std"] == pytest.approx(math.sqrt(0.005))      # |0.9 - 0.8| / sqrt(2)
    # foreground per run: 0.5 and 1.7/3; mean of the two, sample std of the two
    fg = [0.5, 1.7 / 3]
    assert cps["foreground"]["mean"] == pytest.approx(np.mean(fg))
    assert cps["foreground"]["std"] == pytest.approx(np.std(fg, ddof=1))
    assert cps["small"]["mean"] == pytest.approx(0.15)
    assert cps["small"]["std"] == pytest.approx(0.3 / math.sqrt(2))
    assert out["scdl"]["foreground"]["mean"] == pytest.approx(0.7)
    assert math.isnan(out["scdl"]["foreground"]["std"])
    summary = run_summary([0.2, float("nan"), 0.4], classes, ["mid", "tiny"])
    assert summary["foreground"] == pytest.approx(0.3) and summary["small"] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        run_summary([0.1, 0.2], classes, [])


# -- configurations: each ablation rung adds exactly the documented loss term --------------------------------
def test_default_configurations_are_six_distinct_ones():
    configs = parse_configs(None)
    assert [c.name for c in configs] == list(DEFAULT_CONFIGS) and len(configs) == 6
    assert len({(c.framework, tuple(sorted(c.scdl.items()))) for c in configs}) == 6
    assert [c.name for c in parse_configs("cps, cps ,supervised")] == ["cps", "supervised"]
    with pytest.raises(ScdlError, match="unknown configuration"):
        parse_configs("cps,cps-magic")
    with pytest.raises(ScdlError):
        parse_configs(" , ")


@pytest.fixture
def one_thread():
    """One torch thread: two threads on a shared 2-core machine made these tiny steps 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loss_terms(name: str) -> dict[str, float]:
    from scdl.training.step import TrainingStep

    config = CONFIGURATIONS[name] if name in CONFIGURATIONS else parse_configs(name)[0]
    torch.manual_seed(0)
    step = TrainingStep.build({"name": "vnet", "in_channels": 1, "n_classes": 4, "n_filters": 2, "norm": "batch"},
                              framework=config.framework, scdl=config.scdl)
    x = torch.rand(2, 1, 16, 16, 16)
    y = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12, :8] = 1
    y[:, 4:12, 4:12, 8:] = 2
    y[0, :4, :4, :4] = 3
    terms = step(x, y, torch.rand(2, 1, 16, 16, 16), progress=0.5)
    return {k: float(v.detach()) for k, v in terms.items()}


def test_ablation_ladder_through_the_training_step(one_thread):
    sup, cps = _loss_terms("supervised"), _loss_terms("cps")
    assert "cps" not in sup and "scdl" not in sup
    assert "cps" in cps and "scdl" not in cps
    cdba = _loss_terms("cps+cdba")
    assert {"p2e", "e2p", "proxy"} <= set(cdba) and "sac" not in cdba and "kl" not in cdba
    cdba_sac = _loss_terms("cps+cdba+sac")
    assert "sac" in cdba_sac and "kl" not in cdba_sac
    full = _loss_terms("cps-scdl")
    assert {"proxy", "sac", "kl"} <= set(full) and full["kl"] > 1e-3       # tokens axis: KL is a real term
    classes = _loss_terms("cps-scdl-classes")
    assert {"proxy", "sac", "kl"} <= set(classes)
    assert classes["kl"] == pytest.approx(0.0, abs=1e-6)                     # released code: P_p2e = P_e2p
    # the rungs add their weighted terms: scdl = lam * (0.3 proxy + 0.1 sac [+ 0.02 kl])
    assert cdba["scdl"] == pytest.approx(0.1 * 0.3 * cdba["proxy"], rel=1e-5)
    assert cdba_sac["scdl"] == pytest.approx(0.1 * (0.3 * cdba_sac["proxy"] + 0.1 * cdba_sac["sac"]), rel=1e-5)
    assert full["scdl"] == pytest.approx(0.1 * (0.3 * full["proxy"] + 0.1 * full["sac"] + 0.02 * full["kl"]), rel=1e-5)


def test_knob_variants_change_only_their_knob(one_thread):
    from scdl.bench.ssl_configs import SENSITIVITY_CONFIGS, variant_base

    configs = parse_configs("sensitivity")
    assert [c.name for c in configs] == list(SENSITIVITY_CONFIGS) and configs[1].name == "cps-scdl"
    lam = parse_configs("cps-scdl@lam=0.3")[0]
    assert lam.framework == "cps-scdl" and lam.scdl == {"lam": 0.3} and variant_base(lam.name) == "cps-scdl"
    assert parse_configs("cps+cdba@tau=0.1")[0].scdl == {"use_sac": False, "use_kl": False, "tau": 0.1}
    assert parse_configs("cps-scdl@kl_reduction=tokens@num_samples=10")[0].scdl == {"kl_reduction": "tokens",
                                                                                  "num_samples": 10}
    # the varied weight reaches the loss: scdl = 0.3 * (0.3 proxy + 0.1 sac + 0.02 kl) instead of 0.1 * (...)
    terms = _loss_terms("cps-scdl@lam=0.3")
    assert terms["scdl"] == pytest.approx(0.3 * (0.3 * terms["proxy"] + 0.1 * terms["sac"] + 0.02 * terms["kl"]),
                                          rel=1e-5)
    for bad, match in (("cps@lam=0.2", "no SCDL knobs"), ("cps-scdl@gamma=1", "not an SCDL setting"),
                       ("cps-scdl@lam", "not KEY=VALUE"), ("cps-scdl@kl_reduction=mean", "kl_reduction"),
                       ("cps-scdl@num_samples=0", "num_samples"), ("magic@lam=1", "unknown base")):
        with pytest.raises(ScdlError, match=match):
            parse_configs(bad)


def test_variants_are_paired_with_their_base_and_reported():
    from scdl.bench.ssl_aggregate import variant_comparisons
    from scdl.bench.ssl_report import table_document

    classes, small = ["liver", "spleen", "pancreas"], ["pancreas"]
    base = {0: [0.8, 0.6, 0.10], 1: [0.7, 0.5, 0.20], 2: [0.9, 0.7, 0.30]}
    runs = [{"config": "cps-scdl", "seed": s, "class_dice": v} for s, v in base.items()]
    runs += [{"config": "cps-scdl@lam=0.3", "seed": s, "class_dice": [v[0], v[1], v[2] + 0.05]}
             for s, v in base.items()]
    runs += [{"config": "cps", "seed": s, "class_dice": [0.0, 0.0, 0.0]} for s in base]
    paired = variant_comparisons(runs, classes, small, {"cps-scdl@lam=0.3": "cps-scdl"})
    assert set(paired) == {"cps-scdl@lam=0.3"} and paired["cps-scdl@lam=0.3"]["reference"] == "cps-scdl"
    small_diff = paired["cps-scdl@lam=0.3"]["small"]
    assert small_diff["diffs"] == pytest.approx([0.05, 0.05, 0.05]) and small_diff["seeds"] == [0, 1, 2]
    assert paired["cps-scdl@lam=0.3"]["foreground"]["mean"] == pytest.approx(0.05 / 3)
    assert variant_comparisons(runs, classes, small, {"cps-scdl@tau=0.1": "cps-scdl"}) == {}  # variant not run
    results = {"settings": SSLBenchSettings(seeds=(0, 1, 2)).to_dict(), "summary": aggregate(runs, classes, small),
               "classes": classes, "small_classes": small, "class_volumes_ml": {c: 1.0 for c in classes},
               "configurations": {n: {"description": n} for n in ("cps-scdl", "cps-scdl@lam=0.3", "cps")},
               "paired": {}, "paired_variants": paired, "command": "scdl bench ssl ..."}
    text = table_document(results)
    assert "each configuration minus `cps-scdl`" in text and "| `cps-scdl@lam=0.3` | smallest 1 | +5.0, +5.0, +5.0 |" in text


# -- settings ------------------------------------------------------------------------------------------------
def test_settings_validation_and_keys():
    base = SSLBenchSettings()
    assert (base.labeled, base.unlabeled, base.test, base.seeds) == (4, 16, 10, (0, 1, 2))
    with pytest.raises(ScdlError, match="multiple of 16"):
        SSLBenchSettings(patch=24)
    with pytest.raises(ScdlError, match="seeds"):
        SSLBenchSettings(seeds=(1, 1))
    cps, scdl = CONFIGURATIONS["cps"], CONFIGURATIONS["cps-scdl"]
    assert base.run_key(cps) == SSLBenchSettings().run_key(cps)
    assert base.run_key(cps) != base.run_key(scdl)
    assert base.run_key(cps) != base.with_changes(iterations=401).run_key(cps)
    assert base.cohort_key() == base.with_changes(width=8, iterations=10).cohort_key()   # same cohort
    assert base.cohort_key() != base.with_changes(spacing_mm=3.0).cohort_key()
    config = base.train_config(CONFIGURATIONS["cps-scdl-classes"])
    assert config["patch_size"] == [32, 32, 32] and config["scdl"] == {"p2e_axis": "classes"}
    assert config["preprocessing"]["spacing_mm"] == [4.0, 4.0, 4.0] and config["network"]["n_filters"] == 8
    assert config["optimizer"] == {"name": "adamw", "lr": 0.01}           # measured choice, docs/ssl_benchmark.md
    assert base.run_key(cps) != base.with_changes(optimizer="sgd").run_key(cps)
    with pytest.raises(ScdlError, match="not one of adamw, sgd|not one of sgd, adamw"):
        SSLBenchSettings(optimizer="adam")
    with pytest.raises(ScdlError, match="positive"):
        SSLBenchSettings(lr=0.0)


def test_bad_training_setting_fails_before_anything_is_written(tmp_path, capsys):
    from scdl.cli.main import main

    out = tmp_path / "bench"
    rc = main(["bench", "ssl", "--out", str(out), "--quick", "--set", "optimizer.lr=-1", "--progress", "none"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "optimizer.lr" in err[0]
    assert not out.exists()
    rc = main(["bench", "ssl", "--out", str(out), "--quick", "--configs", "cps,nope", "--progress", "none"])
    assert rc == 2 and "nope" in capsys.readouterr().err and not out.exists()


def test_reproduce_command_parses_back_to_the_same_settings():
    from scdl.cli.bench import reproduce_command, settings_from_args
    from scdl.cli.main import build_parser

    settings = SSLBenchSettings(iterations=123, width=8, spacing_mm=3.5, seeds=(4, 7), optimizer="sgd", lr=0.02,
                                overrides=("optimizer.momentum=0.8",))
    configs = parse_configs("cps,cps-scdl,cps-scdl@lam=0.3")
    argv = shlex.split(reproduce_command("out dir", settings, configs))[1:]
    args = build_parser().parse_args(argv)
    again, again_configs = settings_from_args(args)
    assert again == settings and again_configs == configs and args.out == "out dir"


# -- a tiny end-to-end benchmark ------------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_tiny_benchmark_end_to_end(tmp_path, capsys):
    import SimpleITK as sitk

    from scdl.cli.main import main
    from scdl.metrics.scores import class_scores
    from scdl.training.validation import dice_per_class

    out = tmp_path / "bench"
    argv = ["bench", "ssl", "--out", str(out), "--quick", "--configs", "supervised,cps-scdl", "--iterations", "1",
            "--threads", "1", "--progress", "none"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["classes"] == SYNAPSE
    assert results["settings"]["labeled"] == 2 and results["settings"]["iterations"] == 1
    assert [(r["config"], r["seed"]) for r in results["runs"]] == [("supervised", 0), ("cps-scdl", 0)]
    test_cases = results["cohort"]["test_cases"]
    assert len(test_cases) == 2
    for run in results["runs"]:
        dice = np.array([[np.nan if v is None else v for v in row] for row in run["dice_per_case"]])
        assert dice.shape == (2, 13) and run["cases"] == test_cases
        finite = dice[np.isfinite(dice)]
        assert finite.size == dice.size and ((finite >= 0) & (finite <= 1)).all()   # every organ is in each case
        assert np.allclose(run["class_dice"], dice.mean(axis=0))
        assert (Path(run["model_dir"]) / "card.json").is_file()
        assert run["train"]["wall_s"] > 0 and run["reused"] is False
    assert set(results["summary"]) == {"supervised", "cps-scdl"}
    for stats in results["summary"].values():
        assert set(stats["dice"]) == set(SYNAPSE)
        assert 0.0 <= stats["foreground"]["mean"] <= 1.0 and stats["foreground"]["std"] is None    # one seed

    # the class volumes and the smallest third, recomputed from the reference label maps
    manifest = Path(results["cohort"]["manifest"])
    refs = [manifest.parent / "labels" / f"{name}.nii.gz" for name in test_cases]
    volumes = np.zeros(14)
    for ref in refs:
        img = sitk.ReadImage(str(ref))
        volumes += np.bincount(sitk.GetArrayFromImage(img).ravel(), minlength=14)[:14] * np.prod(img.GetSpacing()) / 1000
    volumes /= len(refs)
    assert [results["class_volumes_ml"][n] for n in SYNAPSE] == pytest.approx(list(volumes[1:]))
    smallest = [SYNAPSE[i] for i in sorted(np.argsort(volumes[1:], kind="stable")[:4])]
    assert results["small_classes"] == smallest

    # the benchmark's Dice (confusion counts) equals scdl.metrics' (MONAI) on a real pair of maps
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(refs[0]))).astype(np.int64)
    other = sitk.GetArrayFromImage(sitk.ReadImage(str(refs[1]))).astype(np.int64)
    ours = dice_per_class(other, ref, 14)
    monai = [s.dice for s in class_scores(other, ref, (10.0, 10.0, 10.0), {v: SYNAPSE[v - 1] for v in range(1, 14)})]
    assert ours == pytest.approx(monai, abs=1e-6)

    # table: header + separator + 13 classes + 2 summary rows, printed and written
    table = (out / "table.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows[0] == "| class (mean volume) | supervised | cps-scdl |" and len(rows) == 2 + 13 + 2
    assert "foreground mean (13 classes)" in rows[-2] and "smallest 4 classes" in rows[-1]
    assert "scdl bench ssl --out" in table and rows[0] in printed
    width, height = _png_size(out / "dice.png")
    assert width > 500 and height > 300

    # the same command again reuses both runs (no training) and writes the same numbers
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [r["reused"] for r in again["runs"]] == [True, True]
    assert again["summary"] == results["summary"]


def test_paired_difference_interval_and_detectable_effect() -> None:
    """Hand values: differences (0.02, 0.00, 0.04) -> mean 0.02, sd 0.02, MDE (4.303 + 1.061) * 0.02 / sqrt(3);
    the bootstrap interval lies within the observed range and is deterministic for a seed."""
    import math

    from scdl.bench.ssl_aggregate import paired_comparisons, paired_difference

    d = paired_difference([0.52, 0.50, 0.54], [0.50, 0.50, 0.50])
    assert d["diffs"] == pytest.approx([0.02, 0.0, 0.04]) and d["mean"] == pytest.approx(0.02)
    assert d["sd"] == pytest.approx(0.02) and d["n"] == 3
    assert d["mde"] == pytest.approx((4.303 + 1.061) * 0.02 / math.sqrt(3))
    lo, hi = d["ci95"]
    assert 0.0 <= lo < 0.02 < hi <= 0.04 + 1e-12
    assert paired_difference([0.52, 0.50, 0.54], [0.50, 0.50, 0.50])["ci95"] == d["ci95"]
    one = paired_difference([0.6], [0.5])
    assert one["ci95"] is None and one["mde"] is None and one["mean"] == pytest.approx(0.1)
    runs = [{"config": c, "seed": s, "class_dice": [v, v]} for c, vals in (("cps", (0.5, 0.6)), ("cps-scdl", (0.55, 0.6)))
            for s, v in zip((0, 1), vals)]
    out = paired_comparisons(runs, ["a", "b"], ["a"], reference="cps")
    assert set(out) == {"cps-scdl"} and out["cps-scdl"]["small"]["diffs"] == pytest.approx([0.05, 0.0])
    assert out["cps-scdl"]["small"]["seeds"] == [0, 1]
