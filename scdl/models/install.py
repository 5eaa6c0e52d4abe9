"""Install a verified package into the user cache (``scdl models import``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from scdl.errors import ScdlError
from scdl.models.cache import cached_path
from scdl.models.catalog import bundled_path
from scdl.models.package import ModelPackage, copy_package


def install(src: Union[str, os.PathLike], force: bool = False) -> Path:
    """Verify the package at ``src`` (folder or ``.scdlmodel``) and copy it into the cache under its id.

    Refuses an id that a bundled model uses, and an id already in the cache unless ``force``.
    """
    pkg = ModelPackage.load(Path(src), verify=True)
    if bundled_path(pkg.id) is not None:
        raise ScdlError(f"the id {pkg.id!r} belongs to a model bundled with SCDL.", src,
                        "give the package another id (it is in card.json).")
    target = cached_path(pkg.id)
    if target.exists() and not force:
        raise ScdlError(f"a model with id {pkg.id!r} is already installed ({target}).", src,
                        "use --force to replace it, or give the package another id.")
    return copy_package(pkg.path, target)
