"""The switches of default model 4 (issue 27): synthesis (SynthSeg-style HU, liver-like portal vessels, calcified
cartilage, cancellous bone), sampling of small organs, scans cut inside organs, detection in validation, the
per-organ largest component at inference."""

from __future__ import annotations

import numpy as np
import pytest

from scdl.labels.table import LabelTable
from scdl.synth.engine import LIVER_LIKE_TISSUES, RANDOM_HU_TISSUES, SYNTH_DEFAULTS, draw_subject, synthesize, tissue_map
from scdl.synth.layout import make_layout
from scdl.synth.tissues import HU, Tissue, tissue_lut

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TS = LabelTable.load("totalsegmentator_v2")
LUT = tissue_lut(TS)
V = {e.name: int(e.value) for e in TS.entries}


def _map() -> tuple[np.ndarray, tuple[float, float, float]]:
    """40x64x64 at 2 mm (TotalSegmentator ids): liver, IVC, portal vein, adrenal, a vertebra, costal cartilage."""
    lab = np.zeros((40, 64, 64), np.uint8)
    lab[6:34, 8:40, 6:34] = V["liver"]
    lab[:, 20:26, 36:42] = V["inferior_vena_cava"]
    lab[14:22, 40:46, 20:30] = V["portal_vein_and_splenic_vein"]
    lab[26:32, 44:50, 40:46] = V["adrenal_gland_right"]
    lab[10:30, 50:62, 26:40] = V["vertebrae_L1"]
    lab[4:36, 2:6, 10:54] = V["costal_cartilages"]
    return lab, (2.0, 2.0, 2.0)


def _median(hu: np.ndarray, lab: np.ndarray, value: int, erode: int = 2) -> float:
    from scipy import ndimage

    mask = ndimage.binary_erosion(lab == value, iterations=erode)
    return float(np.median(hu[mask]))


def test_switches_off_draw_nothing_extra():
    """Probability 0 (the default) consumes no random number: subjects of earlier configurations are unchanged."""
    config = {**SYNTH_DEFAULTS}
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    s = draw_subject(a, config)
    draw_subject(b, {**config, "random_hu_prob": 0.0, "liver_like_prob": 0.0, "calcify_prob": 0.0})
    assert a.random() == b.random()
    assert not s.random_hu and not s.liver_like and s.calcify == 0.0


def test_random_hu_draws_every_organ_tissue_in_the_wide_range_and_keeps_bone_and_fat():
    config = {**SYNTH_DEFAULTS, "random_hu_prob": 1.0, "random_hu_range": [-50.0, 250.0]}
    seen = []
    for seed in range(20):
        s = draw_subject(np.random.default_rng(seed), config)
        assert s.random_hu
        means = np.array([s.means[int(t)] for t in RANDOM_HU_TISSUES])
        assert means.min() >= -50.0 and means.max() <= 250.0
        seen.append(s.means[int(Tissue.LIVER)])
        fat = HU[Tissue.FAT].mean_range(s.phase)
        width = (fat[1] - fat[0]) * SYNTH_DEFAULTS["mean_jitter"]
        assert fat[0] - width <= s.means[int(Tissue.FAT)] <= fat[1] + width      # fat stays fat
    assert np.ptp(seen) > 150.0        # wide, not the table's 85-125 HU


def test_liver_like_vessels_only_in_the_portal_phase():
    config = {**SYNTH_DEFAULTS, "liver_like_prob": 1.0, "liver_like_hu": 15.0}
    portal = draw_subject(np.random.default_rng(1), config, phase="portal")
    assert portal.liver_like
    liver = portal.means[int(Tissue.LIVER)]
    for tissue in LIVER_LIKE_TISSUES:
        assert abs(portal.means[int(tissue)] - liver) <= 15.0
    native = draw_subject(np.random.default_rng(1), config, phase="native")
    assert not native.liver_like


def test_liver_like_vessels_in_the_image():
    lab, spacing = _map()
    layout = make_layout(lab, spacing)
    config = {**SYNTH_DEFAULTS, "liver_like_prob": 1.0, "liver_like_hu": 15.0, "noise_hu": [4.0, 4.0]}
    hu, subject = synthesize(layout.structures, layout.depth, LUT, spacing, np.random.default_rng(3), config,
                             phase="portal")
    assert subject.liver_like
    liver = _median(hu, lab, V["liver"])
    assert abs(_median(hu, lab, V["inferior_vena_cava"], 1) - liver) < 30.0
    # without the switch, the portal vein is 130-210 HU in the portal phase: well above the liver's 85-125
    hu0, s0 = synthesize(layout.structures, layout.depth, LUT, spacing, np.random.default_rng(3),
                         {**SYNTH_DEFAULTS, "noise_hu": [4.0, 4.0]}, phase="portal")
    assert s0.means[int(Tissue.PORTAL)] >= 130.0 * (1 - 0.15) - 1


def test_cancellous_bone_is_bone_not_soft_tissue():
    """Regression: BONE was listed as a split tissue, so the inside of every bone became soft tissue (~40 HU)."""
    lab, spacing = _map()
    layout = make_layout(lab, spacing)
    subject = draw_subject(np.random.default_rng(0), SYNTH_DEFAULTS, phase="native")
    tissue = tissue_map(layout.structures, layout.depth, LUT, subject)
    inside = tissue[lab == V["vertebrae_L1"]]
    assert (inside == Tissue.BONE).sum() > 0.3 * inside.size
    assert set(np.unique(inside)) <= {int(Tissue.BONE), int(Tissue.BONE_CORTEX)}
    hu, _ = synthesize(layout.structures, layout.depth, LUT, spacing, np.random.default_rng(0),
                       {**SYNTH_DEFAULTS, "noise_hu": [4.0, 4.0]}, phase="native")
    assert _median(hu, lab, V["vertebrae_L1"]) > 100.0


def test_calcified_cartilage_is_brighter_and_seeded():
    lab, spacing = _map()
    layout = make_layout(lab, spacing)
    base = {**SYNTH_DEFAULTS, "noise_hu": [4.0, 4.0]}
    on = {**base, "calcify_prob": 1.0, "calcify_fraction": [0.4, 0.4], "calcify_hu": [500.0, 500.0]}
    a, sa = synthesize(layout.structures, layout.depth, LUT, spacing, np.random.default_rng(2), on)
    b, _ = synthesize(layout.structures, layout.depth, LUT, spacing, np.random.default_rng(2), on)
    assert np.array_equal(a, b)
    assert sa.calcify == pytest.approx(0.4) and sa.calcify_hu == pytest.approx(500.0)
    cartilage = lab == V["costal_cartilages"]
    assert np.mean(a[cartilage] > 300.0) > 0.15            # about 40 % calcified, blurred at the edges
    c, _ = synthesize(layout.structures, layout.depth, LUT, spacing, np.random.default_rng(2), base)
    assert np.mean(c[cartilage] > 300.0) < 0.05


def test_widened_hu_table_covers_what_real_ct_showed():
    """Values seen on real CT of other hospitals (issue 27) lie inside the table's ranges."""
    assert HU[Tissue.PORTAL].portal[0] <= 199.0 <= HU[Tissue.PORTAL].portal[1]
    assert HU[Tissue.SPLEEN].native[0] <= 63.0 <= HU[Tissue.SPLEEN].native[1]
    for tissue in (Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA):
        assert HU[tissue].portal[0] <= 190.0 and HU[tissue].portal[1] >= 255.0


# -- sampling and cuts -------------------------------------------------------------------------------------------
class _Case:
    """A stand-in for a cached labeled case: classes 1 (big) and 9 (small)."""

    def __init__(self):
        self.shape = (40, 40, 40)
        self.labeled = True
        self.present = [1, 2, 9]
        self._loc = {1: np.arange(0, 20000), 2: np.arange(20000, 40000), 9: np.array([40 * 40 * 20 + 40 * 20 + 20])}

    def locations(self, cls):
        return self._loc[cls]


def test_small_organ_share_of_class_centred_draws():
    from scdl.training.sampling import choose_start

    case = _Case()
    counts = {None: 0, 1: 0, 2: 0, 9: 0}
    for seed in range(3000):
        _, cls = choose_start(case, (16, 16, 16), np.random.default_rng(seed), 1.0, small_classes=[9], small_prob=0.5)
        counts[cls] += 1
    # class 9: half of the draws through the small pool + a third of the other half = 2/3
    assert counts[9] / 3000 == pytest.approx(2 / 3, abs=0.03)
    off = {None: 0, 1: 0, 2: 0, 9: 0}
    for seed in range(3000):
        _, cls = choose_start(case, (16, 16, 16), np.random.default_rng(seed), 1.0)
        off[cls] += 1
    assert off[9] / 3000 == pytest.approx(1 / 3, abs=0.03)


def test_small_prob_zero_keeps_the_old_stream():
    from scdl.training.sampling import choose_start

    case = _Case()
    for seed in range(50):
        a = choose_start(case, (16, 16, 16), np.random.default_rng(seed), 0.5)
        b = choose_start(case, (16, 16, 16), np.random.default_rng(seed), 0.5, small_classes=[9], small_prob=0.0)
        assert a == b


def test_edge_cut_ends_the_scan_inside_an_organ():
    from scdl.training.augment import edge_cut

    image = np.ones((32, 8, 8), np.float32)
    label = np.zeros((32, 8, 8), np.int64)
    label[10:20, 2:6, 2:6] = 6
    cut_inside = 0
    for seed in range(40):
        img, lab = edge_cut(image, label, 0.0, np.random.default_rng(seed))
        kept = np.flatnonzero(img.reshape(32, -1).any(axis=1))
        assert kept.size and np.array_equal(kept, np.arange(kept[0], kept[-1] + 1))     # one run of slices
        assert kept[0] == 0 or kept[-1] == 31                                              # touching one end
        assert (lab[img == 0] == 0).all()                                                  # blanked = background
        assert (lab == 6).any()                                                            # the organ is cut, not gone
        if 0 < (lab == 6).sum() < (label == 6).sum():
            cut_inside += 1
    assert cut_inside >= 30
    empty = np.zeros_like(label)
    same, same_lab = edge_cut(image, empty, 0.0, np.random.default_rng(0))
    assert np.array_equal(same, image) and np.array_equal(same_lab, empty)


def test_augmenter_edge_cut_switch():
    from scdl.training.augment import Augmenter

    image = np.ones((32, 8, 8), np.float32)
    label = np.zeros((32, 8, 8), np.int64)
    label[4:28] = 6
    cut = Augmenter({"edge_cut": True, "edge_cut_prob": 1.0})
    img, lab = cut(image, label, 3)
    assert (img == 0).any() and (lab == 6).sum() < (label == 6).sum()
    img2, _ = Augmenter({})(image, label, 3)
    assert np.array_equal(img2, image)


def test_config_refuses_bad_small_prob_and_edge_cut_prob():
    import copy

    from scdl.errors import ScdlError
    from scdl.training.config import DEFAULTS, validate_config

    for path, value in ((("sampling", "small_prob"), 1.5), (("augment", "edge_cut_prob"), -0.1),
                        (("sampling", "small_classes"), "pancreas")):
        config = copy.deepcopy(DEFAULTS)
        config[path[0]][path[1]] = value
        with pytest.raises(ScdlError, match=path[1]):
            validate_config(config)


# -- validation: detection ---------------------------------------------------------------------------------------
def test_validation_reports_which_organs_were_found():
    import torch

    from scdl.training.validation import validate

    class _Net(torch.nn.Module):       # predicts class 1 where the input is > 0.5, class 0 elsewhere: never class 2
        def forward(self, x):
            return torch.cat([1.0 - x, x, torch.zeros_like(x) - 5.0], dim=1) * 10.0

    class _Cached:
        def __init__(self, image, label):
            self.image, self.label = image, label

    image = np.zeros((16, 16, 16), np.float32)
    image[4:10, 4:10, 4:10] = 1.0
    label = np.zeros((16, 16, 16), np.int64)
    label[4:10, 4:10, 4:10] = 1
    label[12:14, 12:14, 12:14] = 2
    result = validate([_Net()], [_Cached(image, label)], (8, 8, 8), 3, torch.device("cpu"), amp=False)
    assert result["found"] == [1.0, 0.0]
    assert result["dice"][0] == pytest.approx(1.0) and result["dice"][1] == 0.0


# -- inference: the largest component of named organs ------------------------------------------------------------
def test_largest_component_organs_setting():
    from scdl.errors import ScdlError
    from scdl.inference.config import InferenceSettings
    from scdl.inference.predictor import _organ_values

    settings = InferenceSettings.from_card({"inference": {"largest_component_organs": ["liver", "Spleen"]}})
    assert settings.largest_component_organs == ("liver", "Spleen")
    table = LabelTable.load("synapse")
    assert _organ_values(table, settings.largest_component_organs) == [6, 1]
    with pytest.raises(ScdlError, match="not in the model's labels"):
        _organ_values(table, ["heart"])
    with pytest.raises(ScdlError):
        InferenceSettings.from_card({"inference": {"largest_component_organs": "liver"}})


def test_largest_component_of_named_organs_only():
    from scdl.processing.postprocess import keep_largest_component

    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:4, 1:4, 1:4] = 6
    labels[7:9, 7:9, 7:9] = 6            # a stray liver island
    labels[1:3, 6:8, 1:3] = 11
    labels[6:8, 1:3, 6:8] = 11           # pancreas in two pieces (it often is)
    out = keep_largest_component(labels, [6])
    assert (out == 6).sum() == 27 and (out == 11).sum() == 16


def test_docs_hu_table_equals_the_code():
    """docs/synthesis.md's table is the code's table (sources included)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "synthesis.md").read_text(encoding="utf-8")
    for tissue, hu in HU.items():
        row = (f"| {tissue.name.lower()} | {hu.native[0]:g} … {hu.native[1]:g} | {hu.arterial[0]:g} … "
               f"{hu.arterial[1]:g} | {hu.portal[0]:g} … {hu.portal[1]:g} | {hu.std:g} | {hu.source} |")
        assert row in text, row


def test_demo_says_when_the_sample_is_the_validation_case():
    from scdl.cli.demo import training_status

    card = {"provenance": {"training_patients": ["a"], "validation_patients": ["b"], "held_out_patients": ["b"]}}
    status, sentence = training_status(card, "b")
    assert status == "validation" and "VALIDATION case" in sentence and "not a blind test" in sentence
    assert training_status(card, "a")[0] == "training"


def test_float16_package_loads_into_float32_networks(tmp_path):
    """The recipe's float16 weights: a package with half tensors verifies, builds float32 networks, and gives the
    float32 package's labels on a test volume (the recipe ships it only when every validation label is equal)."""
    import torch

    from scdl.models.package import ModelPackage
    from scdl.release.package import half_states, write_package
    from model_factory import make_tiny_package

    full = ModelPackage.load(make_tiny_package(tmp_path / "full"))
    halves = half_states(full.state_dicts())
    assert all(v.dtype == torch.float16 for s in halves for v in s.values() if v.is_floating_point())
    assert any(not v.is_floating_point() for s in halves for v in s.values())      # BN counters stay integers
    half_dir = write_package({**full.card, "weights_dtype": "float16"}, halves, full.labels, tmp_path / "half")
    half = ModelPackage.load(half_dir, verify=True)
    assert half.card["weights_dtype"] == "float16"
    def size(p):
        return (p / full.card["weights"]).stat().st_size

    assert size(half_dir) < 0.6 * size(full.path)
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = full.build_networks()[0](x)
        b = half.build_networks()[0](x)
    assert next(half.build_networks()[0].parameters()).dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-2 * float(a.abs().max()))


def test_float16_overflow_names_the_weights_float16_cannot_hold():
    """A batch-norm running variance above 65504 becomes infinite in float16 (stage 4c's did): the release keeps
    float32 for such a model instead of failing on the non-finite check."""
    import torch

    from scdl.release.package import float16_overflow, half_states

    states = [{"a.weight": torch.ones(3), "bn.running_var": torch.tensor([1.0, 7.0e4]),
               "bn.num_batches_tracked": torch.tensor(10**6)}]
    assert float16_overflow(states) == ["net0.bn.running_var"]
    assert not torch.isfinite(half_states(states)[0]["bn.running_var"]).all()
    assert float16_overflow([{"a.weight": torch.full((2,), 6.0e4)}]) == []
