"""Common pytest fixtures: paths to the real CT samples in ``Testing/data`` and to the repository.

Every file a test reads is inside the repository (``Testing/data``: sources, commits, licences in its README;
``Resources/Sample``: patient B, the demo sample); nothing outside the checkout is read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "Testing" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (Testing/data is part of the repository: see Testing/data/README.md)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module's small networks and tensors, restored afterwards.

    On the busy 2-core development machine the four method test files (losses, SCDL module, step, VNet) took
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
def real_data() -> Path:
    """``Testing/data``: real CT samples (TotalSegmentator fixtures and dataset label maps, dcmqi 3-slice CT)."""
    return _require(DATA)


@pytest.fixture(scope="session")
def ts_dir(real_data: Path) -> Path:
    """TotalSegmentator test fixtures: patient A, patient B's label map and 5 of its DICOM slices, the class map."""
    return _require(real_data / "totalsegmentator_fixtures")


@pytest.fixture(scope="session")
def ts_dataset(real_data: Path) -> Path:
    """TotalSegmentator dataset label maps: s0001, s0004, s0006 (cropped; also as a mask folder), two s0001 masks."""
    return _require(real_data / "totalsegmentator_dataset")


@pytest.fixture(scope="session")
def dcmqi_dir(real_data: Path) -> Path:
    """The dcmqi 3-slice CT (DICOM, .dcm), its label maps (.nrrd) and the liver as a DICOM SEG (liver.dcm)."""
    return _require(real_data / "dcmqi_ct3slice")


@pytest.fixture(scope="session")
def patient_a_ct(ts_dir: Path) -> Path:
    """Patient A CT: 122x101x112, 3 mm isotropic NIfTI."""
    return _require(ts_dir / "example_ct.nii.gz")


@pytest.fixture(scope="session")
def patient_a_seg(ts_dir: Path) -> Path:
    """Patient A TotalSegmentator v2 label map on the CT grid."""
    return _require(ts_dir / "example_seg_fast_force_split.nii.gz")


@pytest.fixture(scope="session")
def patient_b_ct() -> Path:
    """Patient B's whole CT (512x512x20, 0.977 x 0.977 x 2 mm, identity direction): the bundled demo sample,
    its 20-slice DICOM series read losslessly into one NIfTI (``Resources/Sample/PROVENANCE.txt``)."""
    return _require(REPO / "Resources" / "Sample" / "sample_ct.nii.gz")


@pytest.fixture(scope="session")
def patient_b_dicom(ts_dir: Path) -> Path:
    """Patient B as DICOM: the 5 lowest of its 20 slices (unchanged files without extensions, JPEG 2000 lossless,
    empty Series Instance UID); slice z = 0..4 of ``patient_b_ct``, same origin."""
    return _require(ts_dir / "example_ct_dicom")


@pytest.fixture(scope="session")
def patient_b_seg(ts_dir: Path) -> Path:
    """Patient B label map (NIfTI with direction diag(1,-1,1): must be resampled onto the CT's grid)."""
    return _require(ts_dir / "example_seg_dicom.nii.gz")


#: The authors' reference numbers; produced by the script beside it (Testing/data/reference/README.md).
REFERENCE_FILE = DATA / "reference" / "scdl_reference.pt"


@pytest.fixture(scope="session")
def reference_file() -> Path:
    """The authors' reference numbers (``Testing/data/reference/scdl_reference.pt``). Missing, the tests that
    compare against it FAIL (they are the method's numerics oracle, never skipped)."""
    if not REFERENCE_FILE.is_file():
        pytest.fail(f"{REFERENCE_FILE} is missing: the reference numbers of the SCDL module, the GA losses and the "
                    "VNet are part of the repository (see Testing/data/reference/README.md for how they are "
                    "produced); restore the file (git checkout) or regenerate it.", pytrace=False)
    return REFERENCE_FILE


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
