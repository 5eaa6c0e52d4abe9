"""The extension is ready for the 3D Slicer ExtensionsIndex: the catalog entry ``SCDL.json`` against Slicer's JSON
schemas (``Testing/data/schemas``, with their sources), and in agreement with the ``EXTENSION_*`` metadata of
``CMakeLists.txt``; what the index's validation (``scripts/check_description_files.py`` of Slicer/ExtensionsIndex)
checks in the repository: project name = entry name, repository name, icon and screenshot URLs found by its
patterns, a licence file at the root. Plus the licence and credits themselves (LICENSE, NOTICE, README)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import urllib.parse
from pathlib import Path

import jsonschema  # in the test extra of pyproject.toml
import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "SCDL.json"
SCHEMAS = REPO / "Testing" / "data" / "schemas"
NEWEST_SCHEMA = SCHEMAS / "slicer-extension-catalog-entry-schema-v1.0.2.json"   # Slicer/Slicer Schemas/
INDEX_SCHEMA = SCHEMAS / "slicer-extension-catalog-entry-schema-v1.0.1.json"    # what the index's lint uses
#: SHA-256 of the Apache License 2.0 text as apache.org publishes it (LICENSE-2.0.txt).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def _entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def _cmake() -> str:
    return (REPO / "CMakeLists.txt").read_text(encoding="utf-8")


def _cmake_value(name: str) -> str:
    match = re.search(rf'^set\({name}\s+"([^"]*)"\)', _cmake(), re.M)
    assert match, f"{name} is not set to one quoted value in CMakeLists.txt"
    return match.group(1)


def _github_repo(url: str) -> tuple[str, str]:
    """(owner, name) of a github.com or raw.githubusercontent.com URL."""
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "https", url
    owner, name = parts.path.strip("/").split("/")[:2]
    if parts.netloc == "github.com":
        return owner, name.removesuffix(".git")
    assert parts.netloc == "raw.githubusercontent.com", url
    return owner, name


def _raw_file(url: str, revision: str) -> Path:
    """The checkout file a raw.githubusercontent.com URL of ``revision`` serves."""
    path = urllib.parse.urlsplit(url).path.strip("/").split("/")
    assert path[2] == revision, f"{url} is not on the catalog entry's revision {revision!r}"
    return REPO.joinpath(*path[3:])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# -- the catalog entry against the schemas -----------------------------------------------------------------------
@pytest.mark.parametrize("schema_file", [NEWEST_SCHEMA, INDEX_SCHEMA], ids=lambda p: p.stem[-6:])
def test_entry_validates_against_the_catalog_schema(schema_file):
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(_entry())


def test_schema_rejects_what_the_index_rejects():
    """The saved schema is the real oracle: a misspelt key, a missing required one, a tier out of range fail."""
    validator = jsonschema.Draft7Validator(json.loads(NEWEST_SCHEMA.read_text(encoding="utf-8")))
    good = _entry()
    for bad in ({**good, "scmurl": good["scm_url"]}, {k: v for k, v in good.items() if k != "scm_url"},
                {**good, "tier": 6}, {**good, "build_dependencies": "PyTorch"}):
        assert not validator.is_valid(bad), bad


def test_entry_names_the_schema_the_index_validates_with():
    schema = json.loads(INDEX_SCHEMA.read_text(encoding="utf-8"))
    assert _entry()["$schema"] == schema["$id"]
    assert schema["$id"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")


def test_entry_is_formatted_as_the_index_formats_entries():
    """Two-space indentation, sorted keys, multi-line arrays, final newline (the index's prettier settings)."""
    text = ENTRY.read_text(encoding="utf-8")
    assert text == json.dumps(_entry(), indent=2, sort_keys=True) + "\n"


def test_schema_sources_are_recorded():
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    for text in ("github.com/Slicer/Slicer", "5767566820c4378c7c28c967d60d114892fb443d", "github.com/Slicer/ExtensionsIndex",
                 "00b8d9c914b86fe153543074aa49fe1b21d02c1b", "3D Slicer License", NEWEST_SCHEMA.name, INDEX_SCHEMA.name):
        assert text in readme, text


# -- the catalog entry against CMakeLists.txt ---------------------------------------------------------------------
def test_entry_name_is_the_cmake_project_and_the_repository_is_slicer_plus_name():
    # the index takes the first "project(" of the file, case-insensitive, comments included
    project = re.findall(r"project\s*\(\s*([^\s)\n\r]+)", _cmake(), re.I | re.M)[0]
    assert ENTRY.stem == project == "SCDL"
    assert not project.lower().startswith("slicer")
    owner, name = _github_repo(_entry()["scm_url"])
    assert name == "Slicer" + project                      # the index asks for "slicer" in the repository name
    assert _entry()["scm_url"].startswith("https://")     # its supported schemes: git, https


def test_entry_agrees_with_the_extension_metadata():
    entry = _entry()
    assert entry["category"] == _cmake_value("EXTENSION_CATEGORY") == "Segmentation"  # one of the index's categories
    assert entry["build_dependencies"] == _cmake_value("EXTENSION_DEPENDS").split() == ["PyTorch"]
    assert entry["scm_revision"] == "main"
    assert entry.get("build_subdirectory", ".") == "."    # not a superbuild extension
    assert entry.get("enabled", True) is True
    # tier 1 = experimental in the schema; the Extensions Manager shows EXTENSION_STATUS
    assert (entry.get("tier", 1), _cmake_value("EXTENSION_STATUS")) == (1, "Experimental")


def test_homepage_icon_and_screenshots_are_in_the_entrys_repository():
    entry = _entry()
    repo = _github_repo(entry["scm_url"])
    homepage = _cmake_value("EXTENSION_HOMEPAGE")
    assert homepage.startswith("https://") and _github_repo(homepage) == repo
    icon = _cmake_value("EXTENSION_ICONURL")
    assert _github_repo(icon) == repo and _png_size(_raw_file(icon, entry["scm_revision"])) == (128, 128)
    screenshots = _cmake_value("EXTENSION_SCREENSHOTURLS").split()
    assert screenshots, "at least one screenshot"
    for url in screenshots:
        assert _github_repo(url) == repo
        assert _png_size(_raw_file(url, entry["scm_revision"]))[0] >= 400, url
    # the panels (real-Qt renders of the .ui files, docs/make_panel_screenshots.py), not the off-screen 3D render
    assert [Path(u).name for u in screenshots] == ["panel_segment.png", "panel_train.png"]


def test_the_index_finds_the_icon_and_screenshots_in_cmakelists():
    """The index reads these two with regular expressions: one quoted value on one line, nothing before ``)``."""
    text = _cmake()
    assert re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text) == [_cmake_value("EXTENSION_ICONURL")]
    assert re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text) == [
        _cmake_value("EXTENSION_SCREENSHOTURLS")]


def test_extension_metadata_is_complete_and_cmake_safe():
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS", "STATUS"):
        value = _cmake_value(f"EXTENSION_{key}")
        assert value.strip(), key
        assert ";" not in value, f"EXTENSION_{key}: a ';' splits the value into a CMake list"
    description = _cmake_value("EXTENSION_DESCRIPTION")
    assert 1 <= description.count(". ") + 1 <= 2, "1-2 sentences (ExtensionsIndex checklist)"


def test_module_contributors_match_the_extension():
    contributors = _cmake_value("EXTENSION_CONTRIBUTORS")
    for module in ("SCDLSegment", "SCDLTrain"):
        assert f'self.parent.contributors = ["{contributors}"]' in (REPO / module / f"{module}.py").read_text(encoding="utf-8")


# -- licence and credits ------------------------------------------------------------------------------------------
def test_licence_is_the_apache_2_text_the_project_declares():
    license_file = REPO / "LICENSE"                       # a name the index's licence check looks for
    assert hashlib.sha256(license_file.read_bytes()).hexdigest() == APACHE_2_SHA256
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


def test_cmake_packages_and_installs_the_licence_and_notice():
    text = _cmake()
    assert "set(EXTENSION_LICENSE_FILE ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE)" in text
    assert "set(EXTENSION_README_FILE ${CMAKE_CURRENT_SOURCE_DIR}/README.md)" in text
    assert text.index("EXTENSION_LICENSE_FILE") < text.index("include(${Slicer_USE_FILE})")  # before the defaults
    install = re.search(r"install\(FILES LICENSE NOTICE\s+DESTINATION \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}",
                        text)
    assert install and install.start() > text.index("include(${Slicer_USE_FILE})")


def test_notice_credits_every_bundled_source_with_its_licence():
    notice = (REPO / "NOTICE").read_text(encoding="utf-8")
    for text in (
            "Apache License, Version 2.0",
            # the paper
            "Su et al.", "Semantic Class Distribution Learning for Debiasing Semi-Supervised Medical Image Segmentation",
            "arXiv:2603.05202", "github.com/Zyh55555/SCDL",
            # TotalSegmentator: citation, licences, exact sources
            "Wasserthal", "doi:10.1148/ryai.230024", "University Hospital", "CC BY 4.0", "10047292",
            "github.com/wasserth/TotalSegmentator", "0e65a448d557382b1e925276212b3bec7f5aff83",
            "eadce27c48353ccb34057d9f9963b92f56d59d92", "s0001, s0004, s0006 and s0327",
            # what is bundled, and the test data
            "Resources/Sample/", "Resources/Sample/PROVENANCE.txt", "Resources/Models/scdl-abdominal-ct/",
            "patient B", "patient A", "dcmqi", "BSD 3-Clause", "3D Slicer License", "SNOMED"):
        assert text in " ".join(notice.split()), text
    # the model card and the sample's provenance name the same sources
    card = json.loads((REPO / "Resources/Models/scdl-abdominal-ct/card.json").read_text(encoding="utf-8"))
    assert "CC BY 4.0" in card["licence"] and "0e65a448" in card["provenance"]["data_licence"]
    assert "0e65a448d557382b1e925276212b3bec7f5aff83" in (REPO / "Resources/Sample/PROVENANCE.txt").read_text(encoding="utf-8")


def _readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title)}\s*$(.*?)(?=^#{{1,3}} |\Z)", text, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(2)


def test_readme_licence_and_credits_section():
    section = _readme_section("Licence and credits")
    for text in ("Apache-2.0", "[LICENSE](LICENSE)", "[NOTICE](NOTICE)", "CC BY 4.0", "TotalSegmentator",
                 "arXiv 2603.05202"):
        assert text in section, text


def test_readme_install_section_tells_the_truth():
    section = _readme_section("Install")
    minimum = _cmake_value("SCDL_MINIMUM_SLICER_VERSION")
    assert f"3D Slicer {minimum} or newer" in section
    assert "not in the Extensions Index yet" in section and "SCDL.json" in section
    for step in ("PyTorch", "Application Settings", "Modules", "Additional module paths", "SCDLSegment", "SCDLTrain",
                 "restart", "Apply", "Extensions Manager"):
        assert step in section, step
