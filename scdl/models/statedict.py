"""Import of plain VNet state dicts (the authors' ``.pth`` checkpoints, METHOD.md §3) into model packages.

``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``: tensors and plain containers only,
never pickled code. ``.safetensors`` state dicts are read with safetensors. Wrappers are unwrapped
(``{"state_dict": ...}``, ``{"model": ...}``, a ``module.`` prefix from DataParallel). The architecture is
read off the tensors (``scdl.networks.vnet.arch_from_state_dict``) and must agree with the options given.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from scdl.errors import ScdlError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")


def load_state_dict_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """A flat ``{key: tensor}`` state dict from a ``.pth``/``.pt`` (weights only) or ``.safetensors`` file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ScdlError("the state dict file does not exist.", path, "check the path.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ScdlError(f"not a readable safetensors file ({err}).", path, "give an intact state dict file.") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ScdlError(f"the file holds Python objects that SCDL will not unpickle ({load_error_text(err)}).",
                            path, "save the network with torch.save(model.state_dict(), path): tensors only.") from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
            raise ScdlError(f"not a readable PyTorch state dict ({str(err).splitlines()[0][:200]}).", path,
                            "give an intact .pth file (the download may be truncated).") from None
    for _ in range(3):  # unwrap {"state_dict": {...}} and similar
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        raise ScdlError("the file is not a state dict (a mapping of parameter names to tensors).", path,
                        "give a VNet state dict saved with torch.save(model.state_dict(), path).")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_error_text(err: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, in its own words but WITHOUT its advice to load the file
    with ``weights_only=False`` (that runs any code a crafted file holds; a message never suggests what would be
    unsafe to follow): the line naming the refused object (``Trying to load unsupported GLOBAL posix.system``),
    else the error's first line, else a plain description."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line:
            if "weights_only" not in line:
                return line[:200]
    safe = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    if safe:
        return safe[0][:200]
    return "it holds objects other than tensors and plain containers, which are never loaded"


def _is_tensor_dict(obj: dict) -> bool:
    import torch

    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def architecture_of(states: Sequence[dict], paths: Sequence[Union[str, os.PathLike]],
                    n_filters: Optional[int] = None, n_classes: Optional[int] = None,
                    norm: Optional[str] = None) -> dict[str, Any]:
    """The common VNet architecture of ``states``, checked against the options the user gave."""
    from scdl.networks.vnet import arch_from_state_dict

    arch = None
    for state, path in zip(states, paths):
        try:
            this = arch_from_state_dict(state)
        except ScdlError as err:
            raise ScdlError(err.message, path, err.fix) from None
        for key, wanted in (("n_filters", n_filters), ("n_classes", n_classes), ("norm", norm)):
            if wanted is not None and this[key] != wanted:
                raise ScdlError(f"the network has {key} = {this[key]!r}, not {wanted!r} as requested.", path,
                                f"drop the {key} option (it is read from the file) or give the right file.")
        if arch is not None and this != arch:
            raise ScdlError(f"this network ({this}) differs from the first one ({arch}).", path,
                            "import networks of one architecture together.")
        arch = this
    return arch


def import_state_dicts(paths: Sequence[Union[str, os.PathLike]], out: Union[str, os.PathLike], *, model_id: str,
                       title: str, labels: Any, preprocessing: dict, n_filters: Optional[int] = None,
                       norm: Optional[str] = None, card_fields: Optional[dict] = None) -> Path:
    """Make a model package at ``out`` from VNet state dict files (one network per file, an ensemble if several).

    Args:
        labels: label table (bundled name, CSV path or ``LabelTable``); its class count must match the networks.
        preprocessing: the card's preprocessing section.
        card_fields: further card fields (version, description, inference, provenance, intended_use,
            licence, warnings).

    Returns:
        The package path (written atomically; every network is checked to load into the architecture).
    """
    from scdl.labels.table import LabelTable
    from scdl.models.card import new_card
    from scdl.models.package import save_package

    if not paths:
        raise ScdlError("no state dict files were given.", fix="give one .pth file per network.")
    table = labels if isinstance(labels, LabelTable) else LabelTable.load(labels)
    states = [load_state_dict_file(p) for p in paths]
    arch = architecture_of(states, paths, n_filters=n_filters, norm=norm)
    if arch["n_classes"] != table.num_classes:
        raise ScdlError(f"the network predicts {arch['n_classes']} classes but the label table "
                        f"{table.name or ''!s} has {table.num_classes} (largest value + 1).", paths[0],
                        "give the label table the network was trained with (--labels).")
    fields = dict(card_fields or {})
    provenance = dict(fields.pop("provenance", {}) or {})
    provenance.setdefault("source", ", ".join(Path(p).name for p in paths))
    card = new_card(id=model_id, title=title, architecture=arch, preprocessing=preprocessing, ensemble=len(states),
                    provenance=provenance, **fields)
    return save_package(out, card, states, table)
