"""The SSL benchmark's anatomy cohort (``scdl bench ssl --cohort anatomy``) and its ``--estimate``.

Split by anatomy, deterministic for a seed, the shapes' counts, labels mapped onto Synapse by name, a tiny
end-to-end run, and the wall-time / interval estimate.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from scdl.bench.ssl_anatomy import ANATOMIES, HELD_OUT, check_split, plan_cases, write_anatomy_cohort
from scdl.bench.ssl_settings import SHAPES, SSLBenchSettings
from scdl.errors import ScdlError


def _parse(argv: list[str]) -> argparse.Namespace:
    from scdl.cli import bench

    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(["bench", "ssl", "--out", "/tmp/x"] + argv)


def _settings(argv: list[str]) -> SSLBenchSettings:
    from scdl.cli.bench import settings_from_args

    return settings_from_args(_parse(argv))[0]


def test_split_is_by_anatomy_and_refuses_overlap_unknown_and_patient_b():
    check_split(("s0004", "s0006"), ("A", "s0001"))
    for train, test in ((("A", "s0004"), ("A",)), ((), ("A",)), (("s0004",), ()), (("B",), ("A",)),
                        (("s0004", "s0004"), ("A",))):
        with pytest.raises(ScdlError):
            check_split(train, test)
    with pytest.raises(ScdlError, match="both a training and a test"):
        SSLBenchSettings(cohort="anatomy", train_anatomies=("s0001", "A"), test_anatomies=("A",))
    with pytest.raises(ScdlError):
        SSLBenchSettings(cohort="patients")
    # patient B is not an anatomy of the cohort: none of its files is named
    named = {a.label for a in ANATOMIES.values()} | {a.ct for a in ANATOMIES.values()}
    assert not named & set(HELD_OUT)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shapes_give_the_counts_and_every_case_comes_from_its_side(shape):
    settings = _settings(["--cohort", "anatomy", "--shape", shape])
    labeled, unlabeled = SHAPES[shape]
    assert (settings.labeled, settings.unlabeled, settings.test) == (labeled, unlabeled, 10)
    plan = plan_cases(settings)
    roles = [c["role"] for c in plan]
    assert roles.count("labeled") == labeled and roles.count("unlabeled") == unlabeled and roles.count("test") == 10
    train = {c["anatomy"] for c in plan if c["role"] != "test"}
    test = {c["anatomy"] for c in plan if c["role"] == "test"}
    assert train == {"s0004", "s0006"} and test == {"A", "s0001"} and not train & test
    assert plan[[c["role"] for c in plan].index("test")]["real"] is True          # A's real CT is test case 0
    assert sum(c["real"] for c in plan) == 1
    synth = [c for c in plan if not c["real"]]
    assert len({c["seed"] for c in synth}) == len(synth)                           # different draws
    assert {c["phase"] for c in synth} <= {"native", "arterial", "portal"} and len({c["phase"] for c in synth}) > 1
    assert all(settings.spacing_mm <= c["slice_spacing_mm"] <= 1.5 * settings.spacing_mm for c in synth)
    assert len({c["slice_spacing_mm"] for c in synth}) > 1                          # resolutions vary
    # deterministic for a seed, another seed draws other cases
    assert plan_cases(settings) == plan
    other = plan_cases(settings.with_changes(cohort_seed=1))
    assert [c["seed"] for c in other if not c["real"]] != [c["seed"] for c in synth]
    # --labeled / --unlabeled still win over the shape; the phantom default is unchanged
    assert _settings(["--shape", "amos5", "--unlabeled", "7"]).unlabeled == 7
    assert _settings([]).cohort == "phantom" and (_settings([]).labeled, _settings([]).unlabeled) == (4, 16)


def test_cohort_key_keeps_the_phantom_key_and_depends_on_the_split():
    phantom = SSLBenchSettings()
    assert "cohort" not in phantom.cohort_spec()                     # the published phantom keys are unchanged
    anatomy = SSLBenchSettings(cohort="anatomy")
    swapped = SSLBenchSettings(cohort="anatomy", train_anatomies=("A", "s0001"), test_anatomies=("s0004", "s0006"))
    assert len({phantom.cohort_key(), anatomy.cohort_key(), swapped.cohort_key()}) == 3
    assert anatomy.cohort_key() == SSLBenchSettings(cohort="anatomy", data_dir="/elsewhere").cohort_key()


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    import SimpleITK as sitk

    return {str(p.relative_to(folder)): sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(folder.rglob("*.nii.gz"))}


def test_generated_cohort_is_deterministic_split_by_anatomy_and_mapped_to_synapse(tmp_path, real_data):
    import csv

    import SimpleITK as sitk

    from scdl.labels.table import LabelTable

    settings = SSLBenchSettings(cohort="anatomy", labeled=2, unlabeled=1, test=2, spacing_mm=10.0,
                                data_dir=str(real_data))
    prov = write_anatomy_cohort(tmp_path / "one", settings)
    write_anatomy_cohort(tmp_path / "two", settings)
    one, two = _arrays(tmp_path / "one"), _arrays(tmp_path / "two")
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)
    assert prov["split_by"] == "anatomy" and prov["generation"]["wall_s"] > 0
    assert prov["test_anatomies"] == ["A", "s0001"] and prov["train_anatomies"] == ["s0004", "s0006"]

    with open(tmp_path / "one" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = {r["anatomy"] for r in rows if r["split"] == "train"}
    test = {r["anatomy"] for r in rows if r["split"] == "test"}
    assert not train & test
    unlabeled = [r for r in rows if r["split"] == "train" and not r["label"]]
    assert len(unlabeled) == 1 and not (tmp_path / "one" / "labels" / Path(unlabeled[0]["image"]).name).exists()
    assert all(r["labels"] == "synapse" for r in rows)

    # labels are Synapse values, mapped by name: A's real test case equals A's TotalSegmentator map relabelled
    ts = LabelTable.load("totalsegmentator_v2")
    syn = LabelTable.load("synapse")
    by_name = {e.name: int(e.value) for e in syn.entries}
    ts_value = {e.name: int(e.value) for e in ts.entries}
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data / ANATOMIES["A"].label)))
    mapped = one["labels/test_000_A_real.nii.gz"]
    assert mapped.shape == original.shape and int(mapped.max()) <= 13
    for ts_name, syn_name in (("liver", "liver"), ("portal_vein_and_splenic_vein", "portal and splenic veins"),
                              ("adrenal_gland_left", "left adrenal gland"), ("inferior_vena_cava", "inferior vena cava")):
        assert np.array_equal(mapped == by_name[syn_name], original == ts_value[ts_name]), ts_name
    assert not np.isin(original[mapped == 0], [ts_value["liver"], ts_value["spleen"]]).any()
    # A's real CT is copied unchanged; the synthetic ones are int16 HU on their drawn grids
    real = sitk.GetArrayFromImage(sitk.ReadImage(str(real_data / ANATOMIES["A"].ct)))
    assert np.array_equal(one["images/test_000_A_real.nii.gz"], real)
    for case in prov["cases"]:
        if not case["real"]:
            assert case["spacing_mm"][:2] == [10.0, 10.0] and case["spacing_mm"][2] == case["slice_spacing_mm"]
            label = one.get(f"labels/{case['name']}.nii.gz")
            if label is not None:
                assert label.shape == one[f"images/{case['name']}.nii.gz"].shape and 0 < int(label.max()) <= 13


def test_tiny_anatomy_benchmark_end_to_end(tmp_path, capsys, real_data):
    from scdl.cli.main import main

    out = tmp_path / "bench"
    argv = ["bench", "ssl", "--out", str(out), "--quick", "--cohort", "anatomy", "--data", str(real_data),
            "--configs", "cps,cps-scdl", "--iterations", "1", "--threads", "1", "--progress", "none"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    cohort = results["cohort"]
    assert cohort["kind"] == "anatomy" and cohort["split_by"] == "anatomy"
    assert cohort["train_anatomies"] == ["s0004", "s0006"] and cohort["test_anatomies"] == ["A", "s0001"]
    assert cohort["real_test_cases"] == ["test_000_A_real"] and cohort["generation"]["wall_s"] > 0
    assert {cohort["anatomy_of"][c] for c in cohort["test_cases"]} == {"A", "s0001"}
    # no test anatomy has an oesophagus: it is not scored (NaN), and the smallest classes are among the scored
    assert results["unscored_classes"] == ["esophagus"]
    assert "esophagus" not in results["small_classes"] and len(results["small_classes"]) == 4
    for run in results["runs"]:
        assert run["class_dice"][results["classes"].index("esophagus")] is None
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "anatomy test cases" in table and "foreground mean (12 classes)" in table and "not scored" in table
    assert "--cohort anatomy" in table and "Paired by seed" in table and "| class (mean volume) |" in printed
    # the paired design applies unchanged: cps-scdl minus cps, per seed
    assert results["paired"]["cps-scdl"]["small"]["seeds"] == [0] and results["paired"]["cps-scdl"]["small"]["n"] == 1
    assert (out / "dice.png").stat().st_size > 10_000
    # the reproduce command parses back to the same settings
    command = results["command"]
    settings = _settings(shlex.split(command)[5:])
    assert settings.cohort_key() == SSLBenchSettings(**{
        **{k: v for k, v in results["settings"].items() if k not in ("seeds", "overrides", "train_anatomies",
                                                                      "test_anatomies")},
        "seeds": tuple(results["settings"]["seeds"]), "train_anatomies": ("s0004", "s0006"),
        "test_anatomies": ("A", "s0001")}).cohort_key()


def test_estimate_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    from scdl.bench.ssl_configs import parse_configs
    from scdl.bench.ssl_estimate import BUILTIN_SD, interval, plan_seconds, seeds_needed, BUILTIN_COST, BUILTIN_SCORE_S
    from scdl.cli.main import main

    out = tmp_path / "never"
    assert main(["bench", "ssl", "--out", str(out), "--estimate", "--cohort", "anatomy", "--shape", "amos5",
                 "--configs", "cps,cps-scdl", "--seeds", "0,1,2,3,4"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "10 runs of 350 iterations" in text and "Estimated wall time" in text and "seeds for half-width < 2" in text
    # the default plan: the published run took 39.1 min
    model = {"cost": BUILTIN_COST, "score_s": BUILTIN_SCORE_S, "width": 8, "patch": 32}
    est = plan_seconds(SSLBenchSettings(), parse_configs(None), model)
    assert est["runs"] == 18 and 37 * 60 < est["total_s"] < 41 * 60 and not est["extrapolated"]
    # half-width t(0.975, n-1) sd / sqrt(n): with the published sd (1.46 points) 5 seeds give < 2 points, 4 do not
    assert interval(BUILTIN_SD["small"], 5)[0] == pytest.approx(2.776 * BUILTIN_SD["small"] / 5 ** 0.5)
    assert seeds_needed(BUILTIN_SD["small"], 0.02) == 5
    assert interval(0.01, 1) == (float("inf"), float("inf"))


def test_estimate_from_a_results_file(tmp_path, capsys, repo_root):
    from scdl.cli.main import main

    published = repo_root / "docs" / "results" / "ssl_results_cps_vs_scdl_5seeds.json"
    assert main(["bench", "ssl", "--out", str(tmp_path / "x"), "--estimate", "--estimate-from", str(published),
                 "--configs", "cps,cps-scdl", "--seeds", "0,1,2,3,4"]) == 0
    text = capsys.readouterr().out
    assert "measured runs of the given results.json" in text and "sd: foreground 1.72, smallest organs 1.46" in text
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["bench", "ssl", "--out", str(tmp_path / "x"), "--estimate", "--estimate-from", str(bad)]) != 0
