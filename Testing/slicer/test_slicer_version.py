"""The minimum 3D Slicer version (``SCDLSlicerLib.extension``): the pure comparison, the one message, that both
module files check it before anything an older Slicer lacks, that what runs before the check parses on an older
Slicer's Python, and that CMake, the README and the help texts say the same version and links."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types

import pytest

from harness import HERE, MODULE_DIR, REPO, SHARED_LIB_DIR, TRAIN_DIR
from SCDLSlicerLib import extension

MODULES = {"SCDLSegment": MODULE_DIR, "SCDLTrain": TRAIN_DIR}


def _app(**fields):
    """What the check reads of ``slicer.app``: a namespace holding only version fields (not the application)."""
    return types.SimpleNamespace(app=types.SimpleNamespace(**fields))


# -- the pure logic ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, version", [("5.10.0", (5, 10)), ("5.9.0-2025-06-30", (5, 9)), (" 6.0", (6, 0)),
                                           ("", None), (None, None), ("preview", None)])
def test_parse_version(text, version):
    assert extension.parse_version(text) == version


def test_version_comes_from_slicer_app():
    assert extension.slicer_version(types.SimpleNamespace()) is None            # no application: tests, plain Python
    assert extension.slicer_version(_app(majorVersion=5, minorVersion=8)) == (5, 8)
    assert extension.slicer_version(_app(applicationVersion="5.10.1")) == (5, 10)  # fallback: the version text
    assert extension.slicer_version(_app()) is None


@pytest.mark.parametrize("version, supported", [((5, 10), True), ((5, 11), True), ((5, 12), True), ((6, 0), True),
                                                ((5, 9), False), ((5, 8), False), ((5, 2), False), ((4, 13), False),
                                                (None, True)])
def test_minimum_is_5_10(version, supported):
    assert extension.MINIMUM_SLICER_VERSION == (5, 10)
    assert extension.is_supported(version) is supported
    assert (extension.unsupported_slicer_message(version) == "") is supported


def test_the_message_says_what_is_needed_what_this_is_and_where_to_get_it():
    message = extension.unsupported_slicer_message((5, 8))
    assert message.startswith("SCDL needs 3D Slicer 5.10 or newer; this is 5.8. Download ")
    assert extension.SLICER_DOWNLOAD_URL in message and extension.HOMEPAGE + "#install" in message


def test_require_shows_one_message_and_stops_the_module(monkeypatch):
    monkeypatch.setattr(extension, "_shown", False)
    shown = []
    old = _app(majorVersion=5, minorVersion=8)
    for _ in ("SCDLSegment", "SCDLTrain"):                      # both modules check; the user sees one message
        with pytest.raises(extension.UnsupportedSlicerError, match=r"needs 3D Slicer 5\.10 or newer; this is 5\.8"):
            extension.require_supported_slicer(old, shown.append)
    assert shown == [extension.unsupported_slicer_message((5, 8))]
    extension.require_supported_slicer(_app(majorVersion=5, minorVersion=10), shown.append)  # supported: nothing
    extension.require_supported_slicer(types.SimpleNamespace(), shown.append)                # no application
    assert len(shown) == 1


# -- the module files ---------------------------------------------------------------------------------------------
def _module_level(path):
    return ast.parse(path.read_text(encoding="utf-8")).body


@pytest.mark.parametrize("name", MODULES)
def test_module_file_checks_the_version_before_anything_an_older_slicer_lacks(name):
    """Before the check: only what every Slicer 5 has (qt, vtk, slicer, os), the module's own ``…Lib`` package
    (its ``__init__`` finds SCDLSlicerLib in a developer checkout) and ``SCDLSlicerLib.extension``."""
    body = _module_level(MODULES[name] / f"{name}.py")
    calls = [i for i, node in enumerate(body) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
             and getattr(node.value.func, "id", "") == "require_supported_slicer"]
    assert len(calls) == 1, "one version check at module level"
    before = set()
    for node in body[:calls[0]]:
        if isinstance(node, ast.Import):
            before |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            before.add(node.module)
    assert before <= {"qt", "vtk", "os", "slicer", f"{name}Lib", "SCDLSlicerLib.extension"}, before
    after = {node.module for node in body[calls[0]:] if isinstance(node, ast.ImportFrom)}
    assert {"slicer.i18n", "slicer.ScriptedLoadableModule", f"{name}Lib.logic"} <= after


@pytest.mark.parametrize("path", [MODULE_DIR / "SCDLSegment.py", TRAIN_DIR / "SCDLTrain.py",
                                  MODULE_DIR / "SCDLSegmentLib" / "__init__.py", TRAIN_DIR / "SCDLTrainLib" / "__init__.py",
                                  SHARED_LIB_DIR / "__init__.py", SHARED_LIB_DIR / "extension.py"],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_what_runs_before_the_check_parses_with_python_3_9(path):
    """Slicer 5.0-5.8 run Python 3.9: a syntax error there would hide the message (the whole file is parsed first)."""
    ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))


def test_the_check_itself_is_plain_old_python():
    source = (SHARED_LIB_DIR / "extension.py").read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 6))
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"re"}, imported                     # standard library only; no __future__, no slicer.i18n


def _import_with_slicer_version(version) -> subprocess.CompletedProcess:
    """Import both module files in a fresh Python whose ``slicer.app`` holds only ``majorVersion/minorVersion``."""
    code = (
        "import sys, types; sys.path.insert(0, %r)\n"
        "import harness, qt, slicer\n"
        "slicer.app = types.SimpleNamespace(majorVersion=%d, minorVersion=%d)\n"
        "slicer.util.errorDisplay = lambda text: print('DIALOG:', text)\n"
        "for name in ('SCDLSegment', 'SCDLTrain'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "        print('LOADED:', name)\n"
        "    except Exception as err:\n"
        "        print('STOPPED:', name, type(err).__name__, err)\n"
        "qt.processEvents()\n"
    ) % ((str(HERE),) + version)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO)


def test_an_older_slicer_gets_one_message_and_no_module():
    out = _import_with_slicer_version((5, 8))
    assert out.returncode == 0, out.stderr
    message = extension.unsupported_slicer_message((5, 8))
    assert out.stdout.splitlines() == [f"STOPPED: SCDLSegment UnsupportedSlicerError {message}",
                                       f"STOPPED: SCDLTrain UnsupportedSlicerError {message}",
                                       f"DIALOG: {message}"]


def test_a_supported_slicer_loads_both_modules():
    out = _import_with_slicer_version((5, 10))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["LOADED: SCDLSegment", "LOADED: SCDLTrain"]


# -- one version, one home page, everywhere -----------------------------------------------------------------------
def test_cmake_readme_and_the_check_name_the_same_minimum():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    minimum = extension.version_text(extension.MINIMUM_SLICER_VERSION)
    assert f'set(SCDL_MINIMUM_SLICER_VERSION "{minimum}")' in cmake
    assert 'VERSION_LESS "${SCDL_MINIMUM_SLICER_VERSION}"' in cmake
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install = readme[readme.index("### Install"):readme.index("### Using the modules")]
    assert f"3D Slicer {minimum} or newer" in install


def test_home_page_and_documentation_links_exist():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"]+)"\)', cmake).group(1)
    assert homepage == extension.docs_url() == extension.HOMEPAGE + "#readme"
    assert set(extension.MODULE_DOCS) == set(MODULES)
    for page in extension.MODULE_DOCS.values():
        assert (REPO / page).is_file(), page


@pytest.mark.parametrize("name", MODULES)
def test_help_text_links_the_module_documentation(name):
    module = __import__(name)
    parent = types.SimpleNamespace(path=str(MODULES[name] / f"{name}.py"))
    getattr(module, name)(parent)
    assert f'<a href="{extension.module_docs_url(name)}">' in parent.helpText
    assert f'<a href="{extension.docs_url()}">' in parent.helpText
    assert "TotalSegmentator" in parent.acknowledgementText and "CC BY 4.0" in parent.acknowledgementText
