"""Data pipeline: preprocessing cache, class-aware sampling, augmentation, deterministic step batches, workers."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from scdl.labels.table import LabelTable
from scdl.training.augment import Augmenter
from scdl.training.cache import PreprocessCache, class_locations
from scdl.training.checks import check_cohort
from scdl.training.cohort import load_manifest
from scdl.training.data import StepBatches, make_loader
from scdl.training.sample_cohort import make_crop_cohort
from scdl.training.sampling import crop, sample_patch

PRE = {"mode": "spacing", "spacing_mm": [6.0, 6.0, 6.0], "orientation": "LPS", "patch_size": [32, 32, 32],
       "window": [-125.0, 275.0], "scale": [0.0, 1.0]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, patient_a_ct, patient_a_seg):
    out = tmp_path_factory.mktemp("data_cohort")
    manifest = make_crop_cohort(patient_a_ct, patient_a_seg, out)
    cohort = load_manifest(manifest)
    synapse = LabelTable.load("synapse")
    cache = PreprocessCache(tmp_path_factory.getbasetemp() / "h5_cache", PRE, synapse)
    report, cases = check_cohort(cohort, synapse, cache=cache, prepare=True)
    assert report.ok
    return cohort, cache, cases, synapse


def test_cache_holds_mapped_labels_and_is_reused(prepared, patient_a_ct, patient_a_seg) -> None:
    cohort, cache, cases, synapse = prepared
    lab_a = cases["cohort.csv:2"]
    assert isinstance(lab_a.image, np.memmap) and lab_a.image.dtype == np.float32
    assert lab_a.image.shape == lab_a.label.shape == lab_a.shape
    # 98x81x90 voxels of 3 mm -> 6 mm: 49x40x45 (x, y, z) -> (D, H, W) = (45, 40, 49)
    assert lab_a.shape == (45, 40, 49)
    assert 0.0 <= float(lab_a.image.min()) and float(lab_a.image.max()) <= 1.0
    # TotalSegmentator liver (5) became Synapse liver (6); window [-125, 275] -> (HU + 125) / 400
    liver = synapse.by_name("liver").value
    mask = np.asarray(lab_a.label) == liver
    hu = float(np.asarray(lab_a.image)[mask].mean()) * 400 - 125
    assert 0 < hu < 100                                 # non-contrast liver, partial volume at 6 mm
    # the same grid, TotalSegmentator ids: every organ lands on its Synapse value, everything else on 0
    from scdl.processing.pipeline import Preprocessor

    pre = Preprocessor(cache.preprocessing)
    _, ctx = pre.forward(sitk.ReadImage(str(cohort.cases[0].image)))
    raw = np.asarray(pre.forward_labels(sitk.ReadImage(str(cohort.cases[0].label)), ctx))
    ts_to_synapse = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 7, 7: 11, 8: 12, 9: 13, 15: 5, 52: 8, 63: 9, 64: 10}
    expected = np.zeros_like(raw)
    for ts_value, syn_value in ts_to_synapse.items():       # class_map_total_v2.json vs synapse.csv
        expected[raw == ts_value] = syn_value
    assert np.array_equal(np.asarray(lab_a.label), expected)
    assert (raw > 0).sum() > (expected > 0).sum() > 0       # other TotalSegmentator classes became background
    # class locations point at voxels of their class
    for cls in lab_a.present:
        flat = lab_a.locations(cls)
        assert len(flat) and np.all(np.asarray(lab_a.label).reshape(-1)[flat] == cls)
    # a second check reads nothing: every case is a cache hit
    report, again = check_cohort(cohort, synapse, cache=cache, prepare=True)
    assert all(c.get("cached") for c in report.cases)
    assert {k: v.folder for k, v in again.items()} == {k: v.folder for k, v in cases.items()}
    # another setting -> another key
    other = PreprocessCache(cache.root, {**PRE, "spacing_mm": [8.0, 8.0, 8.0]}, synapse)
    assert other.settings_hash != cache.settings_hash


def test_class_locations_by_hand() -> None:
    label = np.zeros((2, 3, 4), np.uint8)
    label[0, 1, 2] = 2
    label[1, 2, 3] = 2
    label[1, 0, 0] = 1
    locations, ranges, counts = class_locations(label, 4, max_per_class=10)
    assert counts == [21, 1, 2, 0]
    assert locations[slice(*ranges[1])].tolist() == [12]
    assert locations[slice(*ranges[2])].tolist() == [6, 23]
    assert 3 not in ranges


def test_crop_pads_outside_volume() -> None:
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = crop(vol, (-1, 0, 2), (4, 3, 3), pad_value=-5)
    assert out.shape == (4, 3, 3)
    assert np.all(out[0] == -5) and np.all(out[3] == -5) and np.all(out[1:3, :, 2] == -5)
    assert np.array_equal(out[1:3, :, :2], vol[:, :, 2:4])


def test_class_aware_sampling_centres_on_rare_organs(prepared) -> None:
    _, _, cases, synapse = prepared
    case = cases["cohort.csv:3"]
    rng = np.random.default_rng(0)
    centred, hits = [], 0
    for _ in range(200):
        _, label, cls = sample_patch(case, (32, 32, 32), rng, class_prob=1.0)
        centred.append(cls)
        hits += int(cls in np.unique(label))
    counts = np.bincount(centred, minlength=synapse.num_classes)
    present = case.present
    assert hits == 200 and set(np.flatnonzero(counts)) == set(present)
    # uniform over present classes: every class 200/12 ~ 17 times, far from voxel-proportional sampling
    assert counts[present].min() >= 5
    adrenal = synapse.by_name("left adrenal gland").value
    fraction = np.asarray(case.meta["counts"])[adrenal] / sum(np.asarray(case.meta["counts"])[1:])
    assert fraction < 0.01 and counts[adrenal] / 200 > 0.02
    # class_prob 0: plain random crops, never centred
    assert all(sample_patch(case, (32, 32, 32), rng, class_prob=0.0)[2] is None for _ in range(20))


def test_augmentation_moves_image_and_labels_together() -> None:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, size=(16, 16, 16))
    image = label.astype(np.float32) / 4
    flip = Augmenter({"flip": True, "flip_prob": 1.0})
    img, lab = flip(image, label, seed=3)
    assert np.array_equal(lab, label[::-1, ::-1, ::-1]) and np.array_equal(img, image[::-1, ::-1, ::-1])
    affine = Augmenter({"affine": True, "affine_prob": 1.0, "rotate_deg": 10.0, "scale": 0.1})
    img, lab = affine(image, label, seed=4)
    assert not np.array_equal(lab, label)
    inner = (slice(4, 12),) * 3
    assert np.mean(np.rint(img[inner] * 4) == lab[inner]) > 0.8
    jitter = Augmenter({"intensity": True, "intensity_prob": 1.0, "intensity_scale": 0.1, "intensity_shift": 0.1,
                        "noise": True, "noise_prob": 1.0, "noise_std": 0.02})
    img, lab = jitter(image, label, seed=5)
    assert np.array_equal(lab, label) and not np.allclose(img, image)
    img2, _ = jitter(image, label, seed=5)
    assert np.array_equal(img, img2)
    off = Augmenter({"flip": False})
    assert off(image, label, seed=1)[0] is image


def test_organ_shift_gives_each_organ_one_offset_in_range() -> None:
    label = np.zeros((8, 8, 8), dtype=np.int64)
    label[:, :4] = 1
    label[:, 4:6] = 2                                    # rows 6..7: background
    image = np.full(label.shape, 0.25, dtype=np.float32)
    aug = Augmenter({"organ_shift": True, "organ_shift_prob": 1.0, "organ_shift_range": [0.1, 0.3]})
    img, lab = aug(image, label, seed=11)
    assert np.array_equal(lab, label)
    shifts = {v: np.unique(img[label == v] - 0.25) for v in (0, 1, 2)}
    assert shifts[0].tolist() == [0.0]                                  # background untouched
    for v in (1, 2):
        assert shifts[v].size == 1 and 0.1 <= float(shifts[v][0]) <= 0.3   # one offset per organ, in range
    assert not np.isclose(shifts[1][0], shifts[2][0])
    assert np.array_equal(aug(image, label, seed=11)[0], img)           # deterministic per seed
    assert np.array_equal(aug(image, None, seed=11)[0], image)          # unlabeled patches: no organs to shift


def test_slab_keeps_a_run_of_slices_and_blanks_the_rest() -> None:
    rng = np.random.default_rng(2)
    label = rng.integers(1, 4, size=(20, 6, 6))
    image = rng.uniform(0.2, 1.0, size=label.shape).astype(np.float32)
    aug = Augmenter({"slab": True, "slab_prob": 1.0, "slab_min": 0.25, "slab_value": 0.0})
    kept_sizes = set()
    for seed in range(30):
        img, lab = aug(image, label, seed=seed)
        kept = np.flatnonzero(img.reshape(20, -1).any(axis=1))
        assert kept.size >= 5 and np.array_equal(kept, np.arange(kept[0], kept[-1] + 1))   # one run, >= ceil(0.25 * 20)
        assert np.array_equal(img[kept], image[kept]) and np.array_equal(lab[kept], label[kept])
        outside = np.setdiff1d(np.arange(20), kept)
        assert (img[outside] == 0).all() and (lab[outside] == 0).all()
        kept_sizes.add(kept.size)
    assert len(kept_sizes) > 5 and min(kept_sizes) < 20


def _dataset(cases, world_size=1, rank=0, labeled_batch=2, unlabeled_batch=2, augment=None):
    lab = [cases["cohort.csv:2"], cases["cohort.csv:3"]]
    unl = [cases["cohort.csv:4"], cases["cohort.csv:5"]]
    return StepBatches(lab, unl, (32, 32, 32), labeled_batch, unlabeled_batch, 0.5,
                       augment or {"flip": True, "noise": True}, seed=7, rank=rank, world_size=world_size)


def test_step_batches_are_deterministic_and_split_across_ranks(prepared) -> None:
    _, _, cases, _ = prepared
    one = _dataset(cases)
    item = one[5]
    assert item["labeled_image"].shape == (2, 1, 32, 32, 32) and item["labeled_label"].dtype == torch.int64
    assert item["unlabeled_image"].shape == (2, 1, 32, 32, 32)
    assert torch.equal(item["labeled_image"], _dataset(cases)[5]["labeled_image"])
    assert not torch.equal(item["labeled_image"], one[6]["labeled_image"])
    # two labeled patches of a step come from the two different labeled cases
    halves = [_dataset(cases, world_size=2, rank=r, labeled_batch=1, unlabeled_batch=1)[5] for r in (0, 1)]
    for key in ("labeled_image", "labeled_label", "unlabeled_image"):
        assert torch.equal(torch.cat([h[key] for h in halves]), item[key])


def test_loader_with_worker_matches_in_process(prepared) -> None:
    _, _, cases, _ = prepared
    dataset = _dataset(cases)
    loader = make_loader(dataset, start_step=3, num_workers=1, prefetch_factor=2, seed=7)
    batches = iter(loader)
    got = [next(batches) for _ in range(3)]
    del batches, loader
    assert [int(b["step"]) for b in got] == [3, 4, 5]
    for b in got:
        ref = dataset[int(b["step"])]
        assert torch.equal(b["labeled_image"], ref["labeled_image"])
        assert torch.equal(b["unlabeled_image"], ref["unlabeled_image"])
    # creating the loader does not draw from torch's global generator (exact resume depends on it)
    state = torch.get_rng_state()
    next(iter(make_loader(dataset, start_step=0, num_workers=0, seed=7)))
    assert torch.equal(state, torch.get_rng_state())
