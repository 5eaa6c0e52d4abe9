"""The tests need nothing outside the repository: no file under Testing/ reads a data folder beside the checkout
(``../shared``) or the ``SCDL_SHARED`` variable, and Testing/data (the real CT samples) stays small."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTING = REPO / "Testing"
DATA = TESTING / "data"
MAX_DATA_BYTES = 20_000_000

#: Ways a test could reach the data folder beside the checkout. ``SCDL_SHARED_RESOURCES`` (a CMake variable of
#: the extension's shared Slicer library) and the words "shared library" are not such a way.
OUTSIDE = re.compile(r"\.\./shared\b"                     # ../shared, ../shared/data
                     r"|\bSCDL_SHARED\b"                  # the environment variable (not SCDL_SHARED_RESOURCES)
                     r"|[\"']shared[\"']"                 # a path part: REPO.parent / "shared"
                     r"|\bshared/(data|reference|docs)\b"  # shared/data/..., shared/reference/...
                     r"|\bshared_data\b")                 # the old fixture
SELF = Path(__file__).resolve()


def _text_files(root: Path):
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".pytest_cache")]
        for name in files:
            path = Path(folder) / name
            if path.resolve() == SELF or path.stat().st_size > 1_000_000:
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:           # DICOM, NIfTI, NRRD, torch files: data, not readers
                continue


def test_nothing_under_testing_reads_a_folder_beside_the_checkout():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path, text in _text_files(TESTING)
             for number, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "tests must read only files inside the repository (Testing/data, Resources/):\n" + \
        "\n".join(found)


def test_the_pattern_catches_the_old_readers_and_spares_the_shared_library():
    for line in ('SHARED = Path(os.environ.get("SCDL_SHARED", REPO.parent / "shared"))',
                 "return _require(shared_data / 'dcmqi_ct3slice')", "(../shared/reference/scdl_reference.pt)",
                 "text = (root / 'shared/docs/METHOD.md').read_text()"):
        assert OUTSIDE.search(line), line
    for line in ('listed = _cmake_list(text, "SCDL_SHARED_RESOURCES")', "SHARED_LIB_DIR = REPO / 'SCDLSlicerLib'",
                 "def test_shared_library_imports_neither_module_nor_qt(path):"):
        assert not OUTSIDE.search(line), line


def test_test_data_stay_small_and_documented():
    files = [p for p in DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    size = sum(p.stat().st_size for p in files)
    assert size <= MAX_DATA_BYTES, f"Testing/data holds {size / 1e6:.1f} MB (limit {MAX_DATA_BYTES / 1e6:.0f} MB)"
    # every entry of Testing/data is described in its README (source, commit, licence)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in DATA.iterdir() if p.name not in ("README.md", "__pycache__") and p.name not in readme]
    assert not missing, f"Testing/data/README.md does not describe {missing}"
