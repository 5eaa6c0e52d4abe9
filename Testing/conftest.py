"""Shared pytest fixtures: paths to the real CT samples in ../shared and to the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SCDL_SHARED", REPO.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the real CT samples live in ../shared beside the checkout)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module's small networks and tensors, restored afterwards.

    On the shared 2-core machine under load the four method test files (losses, SCDL module, step, VNet) took
    127 s with two threads and 15 s with one (measured): with two threads OpenMP spin-waits for a core.
    Use it per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real CT samples (TotalSegmentator fixtures, dcmqi 3-slice CT)."""
    return _require(SHARED / "data")


@pytest.fixture(scope="session")
def ts_dir(shared_data: Path) -> Path:
    return _require(shared_data / "totalsegmentator_fixtures")


@pytest.fixture(scope="session")
def patient_a_ct(ts_dir: Path) -> Path:
    """Patient A CT: 122x101x112, 3 mm isotropic NIfTI."""
    return _require(ts_dir / "example_ct.nii.gz")


@pytest.fixture(scope="session")
def patient_a_seg(ts_dir: Path) -> Path:
    """Patient A TotalSegmentator v2 label map on the CT grid."""
    return _require(ts_dir / "example_seg_fast_force_split.nii.gz")


@pytest.fixture(scope="session")
def patient_b_dicom(ts_dir: Path) -> Path:
    """Patient B: 20-slice DICOM series without file extensions."""
    return _require(ts_dir / "example_ct_dicom")


@pytest.fixture(scope="session")
def patient_b_seg(ts_dir: Path) -> Path:
    """Patient B label map (NIfTI with direction diag(1,-1,1): must be resampled onto the DICOM grid)."""
    return _require(ts_dir / "example_seg_dicom.nii.gz")


@pytest.fixture(scope="session")
def reference_file() -> Path:
    """The authors' reference numbers (``../shared/reference/scdl_reference.pt``)."""
    return _require(SHARED / "reference" / "scdl_reference.pt")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random-weight model package folder (VNet n_filters 2, CPS pair, Synapse labels, 6 mm, 32³ patches)."""
    from model_factory import make_tiny_package

    return make_tiny_package(tmp_path_factory.mktemp("tiny_model") / "tiny-test-model")


@pytest.fixture(scope="session")
def resources_without_default_model(tmp_path_factory) -> Path:
    """A copy of ``Resources/`` without the bundled default model, for tests of the "nothing installed" state.

    Use it with ``monkeypatch.setenv("SCDL_RESOURCES", str(path))`` (child processes inherit the variable).
    """
    import shutil

    from scdl.models.catalog import DEFAULT_MODEL_ID

    target = tmp_path_factory.mktemp("resources_no_default") / "Resources"
    shutil.copytree(REPO / "Resources", target, ignore=shutil.ignore_patterns(DEFAULT_MODEL_ID))
    assert not (target / "Models" / DEFAULT_MODEL_ID).exists()
    return target
