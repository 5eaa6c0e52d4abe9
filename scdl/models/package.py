"""Model packages: ``card.json`` + ``weights.safetensors`` + ``labels.csv`` + ``manifest.json`` (SHA-256).

A package is a folder or the same files in one ``.scdlmodel`` zip. All networks of the ensemble share one
safetensors file, their keys prefixed ``net0.``, ``net1.``, ... (the rest of each key is the authors' VNet
layout, e.g. ``net0.block_one.conv.0.weight``). Loading verifies every checksum and validates the card;
nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_dir, atomic_path
from scdl.models.card import CARD_FILE, validate_card
from scdl.models.catalog import damaged_cache_fix, resolve_model
from scdl.models.manifest import MANIFEST_FILE, build_manifest, parse_manifest, sha256_bytes
from scdl.models.source import SINGLE_FILE_SUFFIX, PackageSource

_NET_KEY = re.compile(r"^net(\d+)\.(.+)$")
_REFETCH = "download or import the model package again."


class ModelPackage:
    """A loaded (and by default fully verified) model package.

    Attributes:
        path: the package folder or ``.scdlmodel`` file.
        card: the validated card (dict). labels: its :class:`~scdl.labels.table.LabelTable`.
        id: ``card["id"]``. networks: number of networks in the ensemble.
    """

    def __init__(self, path: Path, card: dict[str, Any], labels, manifest: dict[str, dict], verified: bool,
                 state_dicts: Optional[list[dict]] = None):
        self.path = path
        self.card = card
        self.labels = labels
        self.manifest = manifest
        self.verified = verified
        self._state_dicts = state_dicts

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path_or_id: Union[str, os.PathLike], verify: bool = True) -> "ModelPackage":
        """Load a package by path (folder or ``.scdlmodel``) or by id (bundled or in the user cache).

        With ``verify=True`` every file's SHA-256 is checked against the manifest and the weights are read
        and matched to the card (networks, classes); with ``verify=False`` only the card and labels are read
        now (the weights on first use, still without unpickling).

        Raises:
            ScdlError: missing, corrupt, tampered or incomplete package, naming the file.
        """

        path = resolve_model(path_or_id)
        try:
            return cls._load(path, verify)
        except ScdlError as err:
            fix = damaged_cache_fix(path)
            if fix is None or err.fix not in _DAMAGED_FIXES:
                raise
            raise ScdlError(err.message, err.path, fix) from None

    @classmethod
    def _load(cls, path: Path, verify: bool) -> "ModelPackage":
        with PackageSource(path) as src:
            manifest = parse_manifest(src.read(MANIFEST_FILE), src.where(MANIFEST_FILE))
            if CARD_FILE not in manifest:
                raise ScdlError(f"the package is incomplete: the manifest does not list {CARD_FILE}.",
                                src.where(MANIFEST_FILE), _REFETCH)
            for name in manifest:
                if not src.exists(name):
                    raise ScdlError(f"the package is incomplete: file {name!r} is missing.", src.where(name), _REFETCH)
            card_bytes = _read_checked(src, manifest, CARD_FILE, verify=True)
            try:
                raw = json.loads(card_bytes.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:    # nested 100,000 deep
                raise ScdlError(f"the model card is not valid JSON ({err}).", src.where(CARD_FILE), _REFETCH) from None
            card = validate_card(raw, src.where(CARD_FILE))
            for key in ("weights", "labels"):
                if card[key] not in manifest:
                    raise ScdlError(f"the package is incomplete: the manifest does not list {card[key]!r}.",
                                    src.where(MANIFEST_FILE), _REFETCH)
            labels = _parse_labels(_read_checked(src, manifest, card["labels"], verify=True), src.where(card["labels"]))
            n_classes = card["architecture"]["n_classes"]
            if labels.num_classes != n_classes:
                raise ScdlError(f"the label table has {labels.num_classes} classes (largest value + 1) but the "
                                f"network has {n_classes}.", src.where(card["labels"]), _REFETCH)
            state_dicts = None
            if verify:
                for name in manifest:
                    if name not in (CARD_FILE, card["labels"], card["weights"]):
                        _read_checked(src, manifest, name, verify=True)
                state_dicts = _parse_weights(_read_checked(src, manifest, card["weights"], verify=True),
                                             card, src.where(card["weights"]))
        return cls(path, card, labels, manifest, verify, state_dicts)

    # -- properties ------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.card["id"]

    @property
    def title(self) -> str:
        return self.card["title"]

    @property
    def networks(self) -> int:
        """Number of networks in the ensemble."""
        return int(self.card["ensemble"])

    @property
    def warnings(self) -> list[str]:
        return list(self.card.get("warnings", []))

    def preprocessor(self):
        """A :class:`~scdl.processing.pipeline.Preprocessor` for this model's card."""
        from scdl.processing.pipeline import Preprocessor

        return Preprocessor(self.card["preprocessing"])

    # -- weights ---------------------------------------------------------------------------------
    def state_dicts(self) -> list[dict[str, Any]]:
        """One state dict (authors' VNet keys, CPU tensors) per network."""
        if self._state_dicts is None:
            try:
                with PackageSource(self.path) as src:
                    name = self.card["weights"]
                    self._state_dicts = _parse_weights(_read_checked(src, self.manifest, name,
                                                                     verify=self.verified),
                                                       self.card, src.where(name))
            except ScdlError as err:
                fix = damaged_cache_fix(self.path)
                if fix is None or err.fix not in _DAMAGED_FIXES:
                    raise
                raise ScdlError(err.message, err.path, fix) from None
        return self._state_dicts

    def build_networks(self, device: Any = "cpu") -> list:
        """The ensemble as eval-mode ``torch.nn.Module`` s on ``device``, weights loaded (strict)."""
        from scdl.networks.vnet import build_network

        nets = []
        where = _where(self.path, self.card["weights"])
        for index, state in enumerate(self.state_dicts()):
            net = build_network(self.card["architecture"])
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise ScdlError(f"network {index} does not fit the card's architecture ({first}).", where,
                                _REFETCH) from None
            nets.append(net.to(device).eval())
        return nets

    def __repr__(self) -> str:
        return f"ModelPackage(id={self.id!r}, networks={self.networks}, path={str(self.path)!r})"


# -- writing ---------------------------------------------------------------------------------------
def package_files(card: dict[str, Any], state_dicts: list[dict], labels) -> dict[str, bytes]:
    """The files of a package as ``{name: bytes}`` (card completed and validated, weights checked)."""
    from safetensors.torch import save as save_safetensors

    from scdl.labels.table import LabelTable

    if not state_dicts:
        raise ScdlError("a model package needs at least one network.")
    if not isinstance(labels, LabelTable):
        labels = LabelTable.load(labels)
    card = dict(card)
    card["ensemble"] = len(state_dicts)
    card = validate_card(card)
    if labels.num_classes != card["architecture"]["n_classes"]:
        raise ScdlError(f"the label table {labels.name or ''!s} has {labels.num_classes} classes (largest value + 1) "
                        f"but the network has {card['architecture']['n_classes']}.",
                        fix="use the label table the network was trained with.")
    _check_state_dicts(card, state_dicts)
    tensors = {}
    for index, state in enumerate(state_dicts):
        for key, value in state.items():
            tensors[f"net{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
    # one metadata key only: safetensors stores metadata in a hash map, so several keys make the bytes vary
    weights = save_safetensors(tensors, metadata={"format": "pt"})
    return {
        CARD_FILE: (json.dumps(_json_safe(card), indent=2, allow_nan=False) + "\n").encode("utf-8"),
        card["labels"]: labels.to_csv_text().encode("utf-8"),
        card["weights"]: weights,
    }


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN/inf (e.g. the Dice of a class absent from validation) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def save_package(out_dir: Union[str, os.PathLike], card: dict[str, Any], state_dicts: list[dict], labels) -> Path:
    """Write a package atomically: a folder at ``out_dir``, or one file if it ends with ``.scdlmodel``.

    Args:
        card: a card (e.g. from :func:`scdl.models.card.new_card`); ``ensemble`` is set to ``len(state_dicts)``.
        state_dicts: one VNet state dict per network (authors' key layout), all fitting ``card["architecture"]``.
        labels: a ``LabelTable``, a bundled table name or a CSV path.

    Returns:
        The package path. An existing package at ``out_dir`` is replaced only once the new one is complete.
    """
    files = package_files(card, state_dicts, labels)
    return write_files(out_dir, files)


def write_files(out: Union[str, os.PathLike], files: dict[str, bytes]) -> Path:
    """Write ``files`` + their manifest as a package folder or ``.scdlmodel`` file (atomic)."""
    out = Path(out)
    files = dict(files)
    files[MANIFEST_FILE] = (json.dumps(build_manifest(files), indent=2) + "\n").encode("utf-8")
    if out.suffix == SINGLE_FILE_SUFFIX:
        with atomic_path(out) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for name in sorted(files):
                    zf.writestr(name, files[name])
        return out
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a package folder is readable like any other
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return out


def copy_package(src: Union[str, os.PathLike], out: Union[str, os.PathLike]) -> Path:
    """Verify the package at ``src`` and write its files to ``out`` (folder or ``.scdlmodel``), atomically."""
    pkg = ModelPackage.load(Path(src), verify=True)
    with PackageSource(pkg.path) as source:
        files = {name: source.read(name) for name in pkg.manifest}
    for name, data in files.items():  # the bytes written are the bytes verified
        if sha256_bytes(data) != pkg.manifest[name]["sha256"]:
            raise ScdlError(f"file {name!r} changed while it was being copied.", _where(pkg.path, name), "try again.")
    return write_files(out, files)


# -- helpers ---------------------------------------------------------------------------------------
#: The fixes of a damaged package (this module's and the manifest's), replaced for a model in the user cache.
_DAMAGED_FIXES = (_REFETCH, "the package is damaged: download or import it again.")


def _where(path: Path, name: str) -> str:
    return f"{path}:{name}" if path.is_file() else str(path / name)


def _read_checked(src: PackageSource, manifest: dict, name: str, verify: bool) -> bytes:
    entry = manifest.get(name)
    if entry is None:
        raise ScdlError(f"the manifest does not list {name!r}.", src.where(MANIFEST_FILE), _REFETCH)
    data = src.read(name, max_size=entry["size"] if verify else None)
    if verify and (len(data) != entry["size"] or sha256_bytes(data) != entry["sha256"]):
        raise ScdlError(f"file {name!r} does not match its SHA-256 in {MANIFEST_FILE}: the package is corrupt or "
                        "was modified.", src.where(name), _REFETCH)
    return data


def _parse_labels(data: bytes, where: str):
    from scdl.labels.table import LabelTable

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ScdlError(f"the label table is not UTF-8 text ({err}).", where, _REFETCH) from None
    return LabelTable.from_csv_text(text, source=where)


def _parse_weights(data: bytes, card: dict[str, Any], where: str) -> list[dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ScdlError(f"the weights file is not valid safetensors ({err}).", where, _REFETCH) from None
    groups: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        match = _NET_KEY.match(key)
        if not match:
            raise ScdlError(f"unexpected tensor {key!r} (keys must start with 'net0.', 'net1.', ...).", where, _REFETCH)
        groups.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if sorted(groups) != list(range(card["ensemble"])):
        raise ScdlError(f"the weights hold networks {sorted(groups)} but the card says ensemble = {card['ensemble']}.",
                        where, _REFETCH)
    states = [groups[i] for i in range(card["ensemble"])]
    _check_state_dicts(card, states, where)
    return states


def _check_state_dicts(card: dict[str, Any], states: list[dict], where: Optional[str] = None) -> None:
    """Each state dict must have the architecture the card states (same keys and shapes as the built network)."""
    import torch

    from scdl.networks.vnet import build_network

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        reference = {k: tuple(v.shape) for k, v in build_network(card["architecture"]).state_dict().items()}
    for index, state in enumerate(states):
        keys = set(state)
        missing, extra = sorted(set(reference) - keys), sorted(keys - set(reference))
        if missing or extra:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
            raise ScdlError(f"network {index} does not match the card's architecture ({detail}).", where,
                            _REFETCH if where else "give state dicts of the architecture in the card.")
        for key, shape in reference.items():
            if tuple(state[key].shape) != shape:
                raise ScdlError(f"network {index}: tensor {key!r} has shape {tuple(state[key].shape)}, the card's "
                                f"architecture needs {shape}.", where,
                                _REFETCH if where else "give state dicts of the architecture in the card.")
        # NaN/inf weights make every voxel background: say so, instead of "no organ was found" on every scan
        bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items()
               if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())}
        if bad:
            first = next(iter(bad))
            raise ScdlError(f"network {index} has {sum(bad.values())} weight(s) that are NaN or infinite (in "
                            f"{len(bad)} tensor(s), e.g. {first!r}): the model cannot segment anything (a training "
                            "run that diverged?).", where,
                            "use another model; retrain with a lower learning rate if this one comes from your run.")
