"""The model card (``card.json``): schema, defaults, validation with one clear message per bad field.

Schema ``scdl-model-card`` version 1 (documented in docs/model_package.md). A card names its weights and
label files, the network architecture, the ensemble size, the preprocessing (see
:class:`scdl.processing.config.PreprocessConfig`), the inference settings, provenance, intended use and
licence. Readers accept cards of this schema with ``schema_version`` up to :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
from typing import Any, Iterable, Optional

from scdl.choice import Choice
from scdl.errors import ScdlError

SCHEMA_ID = "scdl-model-card"
SCHEMA_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
LABELS_FILE = "labels.csv"

#: Model ids double as folder names in the cache: lower-case letters, digits, ".", "_", "-".
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_FILE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

NORMS = ("batch", "instance", "none")


class Blending(Choice):
    """How overlapping sliding windows are blended (the card's ``inference.blending``; scdl.inference)."""

    GAUSSIAN = "gaussian"       # weights falling off from the window centre (MONAI's importance map)
    CONSTANT = "constant"       # plain average


BLENDINGS: tuple[str, ...] = Blending.values()
DEFAULT_BLENDING = Blending.GAUSSIAN


class LabelResampling(Choice):
    """How the network's answer reaches the CT's own grid (the card's ``inference.label_resampling``).

    The networks run on the model grid (e.g. 3 mm); the CT usually has a finer one.
    """

    NEAREST = "nearest"     # argmax on the model grid, the integer labels resampled nearest-neighbour
    LOGITS = "logits"       # the blended logits resampled linearly onto the CT grid, argmax there


LABEL_RESAMPLINGS: tuple[str, ...] = LabelResampling.values()
DEFAULT_LABEL_RESAMPLING = LabelResampling.NEAREST

DEFAULT_INFERENCE: dict[str, Any] = {"overlap": 0.5, "blending": DEFAULT_BLENDING.value, "keep_largest_component": False}


#: The sliding window's size must divide by this on every axis (the VNet down-samples 16x).
WINDOW_MULTIPLE = 16


def is_window_size(value: Any) -> bool:
    """Three positive multiples of :data:`WINDOW_MULTIPLE` (ints, not bools): the card's ``inference.window_size``
    and ``InferenceSettings.window_size`` (one rule for both)."""
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % WINDOW_MULTIPLE == 0
                    for v in value))


def is_unit_weight(value: Any) -> bool:
    """A number (not a bool) in [0, 1]: the test-time batch-norm weight ``bn_adapt`` of the card's ``inference``
    block, of ``InferenceSettings`` and of ``validation.bn_adapt`` (one rule for the three)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0

_FIX = "correct the model card (schema: docs/model_package.md) or re-create the package."


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _software_version() -> str:
    from scdl import __version__

    return f"scdl {__version__}"


def new_card(*, id: str, title: str, architecture: dict, preprocessing: dict, ensemble: int = 2,
             version: str = "1.0.0", description: str = "", inference: Optional[dict] = None,
             provenance: Optional[dict] = None, intended_use: str = "Research use only; not for clinical use.",
             licence: str = "unstated", warnings: Iterable[str] = ()) -> dict[str, Any]:
    """A complete, valid card (validated before it is returned).

    ``preprocessing`` is a card section (see :class:`~scdl.processing.config.PreprocessConfig`);
    ``provenance`` keys: data, data_licence, framework, iterations, training_time_s, validation_metrics,
    source (``created`` and ``software_version`` are filled in).
    """
    prov = {"data": None, "data_licence": None, "framework": None, "iterations": None, "training_time_s": None,
            "validation_metrics": None, "created": _now(), "software_version": _software_version()}
    prov.update(provenance or {})
    card = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "id": id,
        "title": title,
        "version": version,
        "description": description,
        "architecture": dict(architecture),
        "ensemble": int(ensemble),
        "weights": WEIGHTS_FILE,
        "labels": LABELS_FILE,
        "preprocessing": dict(preprocessing),
        "inference": {**DEFAULT_INFERENCE, **(inference or {})},
        "provenance": prov,
        "intended_use": intended_use,
        "licence": licence,
        "warnings": list(warnings),
    }
    return validate_card(card)


def validate_card(card: Any, path: Optional[os.PathLike | str] = None) -> dict[str, Any]:
    """Check a card against the schema and return a normalised copy (defaults for optional sections).

    Raises:
        ScdlError: naming ``path`` and the first missing or invalid field.
    """

    def bad(message: str) -> ScdlError:
        return ScdlError(f"invalid model card: {message}", path, _FIX)

    if not isinstance(card, dict):
        raise bad("the card must be a JSON object.")
    card = copy.deepcopy(card)
    if card.get("schema") != SCHEMA_ID:
        raise bad(f"field 'schema' must be {SCHEMA_ID!r}, not {card.get('schema')!r}.")
    version = card.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad(f"field 'schema_version' must be a positive integer, not {version!r}.")
    if version > SCHEMA_VERSION:
        raise ScdlError(f"the model card uses schema version {version}; this SCDL reads up to {SCHEMA_VERSION}.",
                        path, "update SCDL to use this model.")

    def need(key: str, kind: type | tuple, where: dict = card, prefix: str = "") -> Any:
        if key not in where:
            raise bad(f"missing field '{prefix}{key}'.")
        value = where[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise bad(f"field '{prefix}{key}' must be of type {names}, not {type(value).__name__}.")
        return value

    model_id = need("id", str)
    if not ID_PATTERN.match(model_id):
        raise bad(f"field 'id' {model_id!r} must be lower-case letters, digits, '.', '_' or '-' (max 80).")
    if not need("title", str).strip():
        raise bad("field 'title' is empty.")
    need("version", str)
    card.setdefault("description", "")
    need("description", str)
    for key in ("weights", "labels"):
        name = need(key, str)
        if not _FILE_PATTERN.match(name) or name in ("manifest.json", CARD_FILE):
            raise bad(f"field '{key}' must be a plain file name inside the package, not {name!r}.")
    if card["weights"] == card["labels"]:
        raise bad("fields 'weights' and 'labels' name the same file.")
    if not card["weights"].endswith(".safetensors"):
        raise bad(f"field 'weights' must name a .safetensors file, not {card['weights']!r}.")

    arch = need("architecture", dict)
    if need("name", str, arch, "architecture.").lower() != "vnet":
        raise bad(f"field 'architecture.name' must be 'vnet', not {arch['name']!r}.")
    for key in ("in_channels", "n_classes", "n_filters"):
        value = need(key, int, arch, "architecture.")
        if value < 1:
            raise bad(f"field 'architecture.{key}' must be >= 1, not {value}.")
    if arch["n_classes"] < 2:
        raise bad("field 'architecture.n_classes' must be >= 2 (background + at least one organ).")
    if need("norm", str, arch, "architecture.") not in NORMS:
        raise bad(f"field 'architecture.norm' must be one of {NORMS}, not {arch['norm']!r}.")
    unknown = set(arch) - {"name", "in_channels", "n_classes", "n_filters", "norm"}
    if unknown:
        raise bad(f"unknown field(s) in 'architecture': {sorted(unknown)}.")
    ensemble = need("ensemble", int)
    if ensemble < 1:
        raise bad(f"field 'ensemble' must be >= 1, not {ensemble}.")

    from scdl.processing.config import PreprocessConfig

    try:
        card["preprocessing"] = PreprocessConfig.from_card(need("preprocessing", dict)).to_card()
    except ValueError as err:
        raise bad(str(err)) from None

    inference = {**DEFAULT_INFERENCE, **(card.get("inference") or {})}
    card["inference"] = inference
    overlap = need("overlap", (int, float), inference, "inference.")
    if not 0.0 <= float(overlap) < 1.0:
        raise bad(f"field 'inference.overlap' must be in [0, 1), not {overlap}.")
    if need("blending", str, inference, "inference.") not in BLENDINGS:
        raise bad(f"field 'inference.blending' must be one of {BLENDINGS}, not {inference['blending']!r}.")
    need("keep_largest_component", bool, inference, "inference.")
    organs = inference.get("largest_component_organs", [])
    if not isinstance(organs, list) or not all(isinstance(o, str) for o in organs):
        raise bad(f"field 'inference.largest_component_organs' must be a list of organ names, not {organs!r}.")
    if inference.get("label_resampling", DEFAULT_LABEL_RESAMPLING.value) not in LABEL_RESAMPLINGS:
        raise bad(f"field 'inference.label_resampling' must be one of {LABEL_RESAMPLINGS}, "
                  f"not {inference['label_resampling']!r}.")
    bn_adapt = inference.get("bn_adapt", 0.0)
    if not is_unit_weight(bn_adapt):
        raise bad(f"field 'inference.bn_adapt' must be a number in [0, 1], not {bn_adapt!r}.")
    window = inference.get("window_size")
    if window is not None and not is_window_size(window):
        raise bad(f"field 'inference.window_size' must be null or three multiples of 16 (x, y, z voxels of the "
                  f"model grid, as preprocessing.patch_size), not {window!r}.")

    prov = need("provenance", dict)
    need("created", str, prov, "provenance.")
    need("software_version", str, prov, "provenance.")
    for key, kind in (("data", (str, list)), ("data_licence", str), ("framework", str), ("iterations", int),
                      ("training_time_s", (int, float)), ("validation_metrics", dict), ("source", str)):
        if prov.get(key) is not None:
            need(key, kind, prov, "provenance.")
    need("intended_use", str)
    need("licence", str)
    card.setdefault("warnings", [])
    warnings = need("warnings", list)
    if not all(isinstance(w, str) for w in warnings):
        raise bad("field 'warnings' must be a list of strings.")
    return card
