"""What identifies the SCDL extension to its users: the home page and documentation links shown in the modules'
help, and the oldest 3D Slicer it runs on, checked when a module file loads (no Qt, no ``slicer.i18n``).

Why 3D Slicer 5.10 is the minimum (``MINIMUM_SLICER_VERSION``; CMake's ``SCDL_MINIMUM_SLICER_VERSION`` and the
README say the same, a test keeps them equal):

- the core package ``scdl`` needs Python 3.10 or newer (``requires-python`` in ``pyproject.toml``; it is tested
  on 3.10-3.12 only, and current torch / MONAI wheels no longer support 3.9), and it runs in Slicer's own Python
  (imported by the modules and as ``PythonSlicer -m scdl`` in the child processes). 3D Slicer 5.0 to 5.8 ship
  Python 3.9; 5.10 (November 2025) is the first release with Python 3.12;
- the panels bind their widgets with ``parameterNodeWrapper`` and ``SlicerParameterName`` in the ``.ui``
  (Slicer >= 5.2) and translate through ``slicer.i18n`` (Slicer >= 5.6);
- newer APIs are used only where present, with a fallback: ``slicer.util.launchConsoleProcess(blocking=False)``
  and ``slicer.packaging.pip_ensure`` (Slicer >= 5.12), Slicer's own terminology copying on import (>= 5.10;
  ``sceneio.apply_label_table`` sets the codes itself).

This file is imported by the module files BEFORE anything an older Slicer lacks, so it must itself load on any
Slicer 5 (Python 3.9): standard library only, no ``from __future__``, no 3.10-only syntax (a test parses it as
Python 3.6).
"""

import re

#: (major, minor) of the oldest 3D Slicer release SCDL runs on; see the module docstring for why.
MINIMUM_SLICER_VERSION = (5, 10)

#: The extension's home page (``EXTENSION_HOMEPAGE`` in CMakeLists.txt without its ``#readme`` anchor).
HOMEPAGE = "https://github.com/SlicerSCDL/SlicerSCDL"
#: Where 3D Slicer itself is downloaded.
SLICER_DOWNLOAD_URL = "https://download.slicer.org"

#: Documentation pages of each module (paths in the repository).
MODULE_DOCS = {
    "SCDLSegment": "docs/slicer_segment.md",
    "SCDLTrain": "docs/slicer_train.md",
}


class UnsupportedSlicerError(RuntimeError):
    """This 3D Slicer is older than ``MINIMUM_SLICER_VERSION``; the message says what to do."""


def version_text(version):
    """``(5, 10)`` -> ``"5.10"``."""
    return ".".join(str(part) for part in version)


def parse_version(text):
    """``"5.10.0"`` / ``"5.9.0-2025-06-30"`` -> ``(5, 10)`` / ``(5, 9)``; None when ``text`` holds no
    ``major.minor``."""
    match = re.match(r"\s*(\d+)\.(\d+)", str(text or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def slicer_version(slicer_module):
    """``(major, minor)`` of the running 3D Slicer, from ``slicer.app.majorVersion`` / ``minorVersion`` (or its
    ``applicationVersion`` text); None outside the application (no ``slicer.app``: tests, plain Python)."""
    app = getattr(slicer_module, "app", None)
    if app is None:
        return None
    major, minor = getattr(app, "majorVersion", None), getattr(app, "minorVersion", None)
    if isinstance(major, int) and isinstance(minor, int):
        return (major, minor)
    return parse_version(getattr(app, "applicationVersion", None))


def is_supported(version, minimum=MINIMUM_SLICER_VERSION):
    """True when ``version`` is ``minimum`` or newer, or unknown (None: not inside the application)."""
    return version is None or tuple(version[:2]) >= tuple(minimum)


def unsupported_slicer_message(version, minimum=MINIMUM_SLICER_VERSION):
    """The one message an older 3D Slicer gets; ``""`` when ``version`` is supported or unknown."""
    if is_supported(version, minimum):
        return ""
    return ("SCDL needs 3D Slicer {minimum} or newer; this is {version}. Download 3D Slicer {minimum} or newer from "
            "{download}, then install SCDL there ({homepage}#install).").format(
                minimum=version_text(minimum), version=version_text(version[:2]), download=SLICER_DOWNLOAD_URL,
                homepage=HOMEPAGE)


#: True once the message was handed to a ``show`` callback (both modules check; the user sees it once).
_shown = False


def require_supported_slicer(slicer_module, show=None):
    """Stop loading a module on a 3D Slicer older than ``MINIMUM_SLICER_VERSION``.

    On a supported (or unknown) version this does nothing. Otherwise ``show(message)`` is called once per
    session (both module files call this; the first one shows it) and :class:`UnsupportedSlicerError` is raised
    with the same message, so the module file ends there with that message in the error log instead of an
    obscure failure further down. Pure: reads only ``slicer_module.app``'s version.
    """
    global _shown
    message = unsupported_slicer_message(slicer_version(slicer_module))
    if not message:
        return
    if show is not None and not _shown:
        _shown = True
        show(message)
    raise UnsupportedSlicerError(message)


def docs_url(path=""):
    """The URL of a file of the repository on the home page; ``""``: the README (the home page itself)."""
    return HOMEPAGE + ("/blob/main/" + path if path else "#readme")


def module_docs_url(module_name):
    """The URL of a module's documentation page (tutorial and details), for its help text."""
    return docs_url(MODULE_DOCS[module_name])
