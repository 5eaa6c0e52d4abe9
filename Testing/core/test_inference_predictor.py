"""``segment_image`` / ``segment_file`` with a random-weight package: the output lies on exactly the input's
grid for NIfTI, NRRD, DICOM and oblique inputs; results are deterministic; the uncertainty map and the
per-organ confidence are consistent with the labels."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.inference.predictor import segment_image
from scdl.inference.runner import segment_file
from scdl.io.geometry import same_grid
from scdl.io.image import read_ct, read_label_map
from scdl.labels.table import LabelTable
from scdl.models.package import ModelPackage


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def package(tiny_model):
    return ModelPackage.load(tiny_model)


@pytest.fixture(scope="module")
def ct_a(patient_a_ct):
    return read_ct(patient_a_ct)


def _assert_on_grid(labels: sitk.Image, image: sitk.Image) -> None:
    assert labels.GetSize() == image.GetSize()
    assert np.allclose(labels.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert np.allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-5)
    assert np.allclose(labels.GetDirection(), image.GetDirection(), atol=1e-7)


def test_nifti_input_labels_uncertainty_and_confidence(ct_a, package):
    result = segment_image(ct_a, package, device="cpu", uncertainty=True)
    _assert_on_grid(result.labels, ct_a)
    _assert_on_grid(result.uncertainty, ct_a)
    labels = sitk.GetArrayViewFromImage(result.labels)
    unc = sitk.GetArrayViewFromImage(result.uncertainty)
    assert np.issubdtype(labels.dtype, np.integer) and labels.max() <= 13
    assert unc.dtype == np.float32 and 0.0 <= unc.min() and unc.max() <= 1.0 + 1e-6
    assert unc.max() > 0.0  # two different random networks disagree somewhere
    names = [e.name for e in LabelTable.load("synapse").entries]
    assert list(result.confidence) == names
    present = {int(v) for v in np.unique(labels) if v}
    for entry in LabelTable.load("synapse").entries:
        value = result.confidence[entry.name]
        if entry.value in present:
            assert value is not None and 1.0 / 14 <= value <= 1.0  # a max-probability of 14 classes
    assert set(result.timings) == {"preprocess", "infer", "postprocess"}
    assert result.n_windows == 27  # 6 mm grid of patient A: 61x51x56 -> 3 windows of 32 per axis


def test_deterministic(ct_a, package):
    block = sitk.RegionOfInterest(ct_a, [90, 90, 90], [16, 5, 11])  # 45^3 at 6 mm: 2 x 2 x 2 windows
    a = segment_image(block, package, device="cpu", confidence=False)
    b = segment_image(block, package, device="cpu", confidence=False)
    assert a.n_windows == 8
    assert np.array_equal(sitk.GetArrayViewFromImage(a.labels), sitk.GetArrayViewFromImage(b.labels))


def test_channels_last_on_cpu_gives_the_same_labels(ct_a, package):
    """The CPU default runs the networks in channels_last_3d (faster, InferenceSettings): labels equal float32's
    in the standard memory format voxel for voxel."""
    import torch

    block = ct_a[:64, :64, :48]
    nets = package.build_networks("cpu")
    fast = segment_image(block, package, device="cpu", confidence=False, networks=nets)
    conv = next(m for m in nets[0].modules() if isinstance(m, torch.nn.Conv3d) and m.weight.shape[1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    plain = segment_image(block, package, device="cpu", confidence=False, channels_last=False)
    a, b = sitk.GetArrayFromImage(fast.labels), sitk.GetArrayFromImage(plain.labels)
    assert a.any() and np.array_equal(a, b)


def test_nrrd_input_to_nrrd_output(ct_a, tiny_model, tmp_path):
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_a, str(src))
    out = segment_file(src, tmp_path / "labels.nrrd", model=str(tiny_model), device="cpu")
    written = read_label_map(out.output)
    assert same_grid(written, read_ct(src), tol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "labels.nrrd"]


def test_dicom_input_to_seg_nrrd(patient_b_dicom, tiny_model, tmp_path):
    import slicerio

    out = segment_file(patient_b_dicom, tmp_path / "b.seg.nrrd", model=str(tiny_model), device="cpu")
    ct = read_ct(patient_b_dicom)
    labels = read_label_map(out.output)
    assert labels.GetSize() == (512, 512, 5)      # patient B's 5 DICOM slices in Testing/data
    assert same_grid(labels, ct, tol=1e-5)
    seg = slicerio.read_segmentation(str(out.output))
    names = {s["name"] for s in seg["segments"]}
    present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels)) if v}
    synapse = {e.value: e.name for e in LabelTable.load("synapse").entries}
    assert {synapse[v] for v in present} <= names


def test_oblique_input_keeps_its_grid(ct_a, package):
    oblique = sitk.Image(ct_a)
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique.SetDirection(tuple((rot @ np.asarray(ct_a.GetDirection()).reshape(3, 3)).ravel()))
    result = segment_image(oblique, package, device="cpu", confidence=False)
    _assert_on_grid(result.labels, oblique)
    assert sitk.GetArrayViewFromImage(result.labels).any()
