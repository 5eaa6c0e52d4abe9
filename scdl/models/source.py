"""Reading the files of a model package from a folder or from a single-file ``.scdlmodel`` (zip) archive.

Only plain file names at the top level are accepted (no sub-folders, no absolute or ``..`` paths), so an
archive cannot write or read outside the package. Sizes are bounded against the manifest before reading.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from scdl.errors import ScdlError
from scdl.models.manifest import MANIFEST_FILE

SINGLE_FILE_SUFFIX = ".scdlmodel"
_MAX_MEMBERS = 64


def is_package_path(path: Path) -> bool:
    """True for a folder holding ``manifest.json`` or a zip (``.scdlmodel``) with ``manifest.json`` at its top."""
    if path.is_dir():
        return (path / MANIFEST_FILE).is_file()
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return MANIFEST_FILE in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


class PackageSource:
    """Read-only access to the files of a package (folder or ``.scdlmodel`` zip)."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._zip = None
        if self.path.is_dir():
            if not (self.path / MANIFEST_FILE).is_file():
                raise ScdlError(f"not a model package: there is no {MANIFEST_FILE} in this folder.", self.path,
                                "give the folder of an SCDL model package (or a .scdlmodel file).")
        elif self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
                infos = self._zip.infolist()
            except (zipfile.BadZipFile, OSError) as err:
                raise ScdlError(f"not a readable model package ({err}).", self.path,
                                "give an SCDL model package: a folder or a .scdlmodel file.") from None
            try:
                names = [i.filename for i in infos]
                if MANIFEST_FILE not in names:
                    fix = "use a .scdlmodel written by SCDL."
                    if self.path.suffix.lower() in (".pth", ".pt", ".ckpt"):
                        fix = ("this looks like a PyTorch state dict: import it with `scdl models import FILE --id ID "
                               "--labels TABLE --spacing X Y Z` (or --as CATALOG_ID for the authors' checkpoints).")
                    raise ScdlError(f"not a model package: the archive has no {MANIFEST_FILE}.", self.path, fix)
                if len(infos) > _MAX_MEMBERS or any(_unsafe(n) for n in names) or len(set(names)) != len(names):
                    raise ScdlError("the archive holds unexpected paths (sub-folders, absolute or '..' names).",
                                    self.path, "use a .scdlmodel written by SCDL.")
                self._sizes = {i.filename: i.file_size for i in infos}
            except ScdlError:
                self.close()
                raise
        else:
            raise ScdlError("the model package does not exist.", self.path, "check the path.")

    @property
    def is_archive(self) -> bool:
        return self._zip is not None

    def where(self, name: str) -> str:
        """How to name a member in messages: ``folder/name`` or ``archive.scdlmodel:name``."""
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)

    def exists(self, name: str) -> bool:
        if _unsafe(name):
            return False
        if self._zip is not None:
            return name in self._sizes
        return (self.path / name).is_file()

    def size(self, name: str) -> int:
        if self._zip is not None:
            return self._sizes[name]
        return (self.path / name).stat().st_size

    def read(self, name: str, max_size: int | None = None) -> bytes:
        """The bytes of member ``name`` (``ScdlError`` if it is missing or larger than ``max_size``)."""
        if not self.exists(name):
            raise ScdlError(f"the package is incomplete: file {name!r} is missing.", self.where(name),
                            "download or import the model package again.")
        if max_size is not None and self.size(name) > max_size:
            raise ScdlError(f"file {name!r} is larger than the manifest says (the package was modified).",
                            self.where(name), "download or import the model package again.")
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.path / name).read_bytes()
        except (OSError, zipfile.BadZipFile) as err:
            raise ScdlError(f"cannot read {name!r} ({err}).", self.where(name),
                            "download or import the model package again.") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> "PackageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unsafe(name: str) -> bool:
    return (not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(".")
            or ":" in name or os.path.isabs(name))
