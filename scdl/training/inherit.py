"""The training recipe a fine-tune inherits from its init model (``--init``), as a layer of the configuration.

The init model's card records the settings it was trained with (``provenance.recipe.config``; ``scdl train``
writes it into every card it makes). ``scdl.training.config.resolve_config(..., init=...)`` resolves that
recipe as it was trained and puts its :data:`INHERITED` groups (optimiser, step and SCDL loss settings,
sampling, augmentation, batch) between the preset and the user's ``--config`` / flags / ``--set``
(``scdl.training.config.recipe_layer``, with :func:`inherited_groups`); :func:`inherited_settings` says what was inherited and what the user overrode.
Imports nothing of the configuration module (which imports this one); no torch at import.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

#: Groups of the training config a fine-tune takes from the init model's recipe (unless the user sets them).
#: ``network`` and ``preprocessing`` come from the card itself (architecture, preprocessing) and ``patch_size``
#: from its ``preprocessing.patch_size``; iterations, validation, data and the seed stay the run's own.
INHERITED: tuple[str, ...] = ("optimizer", "step", "scdl", "sampling", "augment", "synth", "labeled_batch",
                              "unlabeled_batch", "accumulate")
#: What ``scdl train`` records as the recipe of the cards it writes (the inherited groups and what the card
#: already states in its own words).
RECIPE_KEYS: tuple[str, ...] = ("preset", "framework", "patch_size", "network", "preprocessing") + INHERITED


def load_init_card(ref: Any) -> dict[str, Any]:
    """The card of the package named by ``ref`` (path or id), without reading its weights."""
    from scdl.models.catalog import resolve_model
    from scdl.models.package import ModelPackage

    return dict(ModelPackage.load(resolve_model(str(ref)), verify=False).card)


def recipe_config(card: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The card's recorded training settings (``provenance.recipe.config``), or None."""
    recipe = ((card or {}).get("provenance") or {}).get("recipe") or {}
    config = recipe.get("config") if isinstance(recipe, Mapping) else None
    return dict(config) if isinstance(config, Mapping) and config else None


def recipe_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved run config that a card records as its recipe (:data:`RECIPE_KEYS`)."""
    return json.loads(json.dumps({k: config[k] for k in RECIPE_KEYS if k in config}, default=str))


def _known(tree: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` without the keys ``reference`` does not have (a recipe from another version of SCDL)."""
    out = {}
    for key, value in tree.items():
        if key not in reference:
            continue
        if isinstance(value, Mapping) and isinstance(reference[key], Mapping) and reference[key]:
            out[key] = _known(value, reference[key])
        else:
            out[key] = value
    return out


def inherited_groups(trained: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a fine-tune inherits from the init model's recipe resolved as it was trained (``trained``:
    defaults -> its preset -> its config, built by ``scdl.training.config.resolve_config``): the
    :data:`INHERITED` groups of it, without keys that ``defaults`` (this version's) does not have."""
    from dataclasses import fields

    from scdl.method.config import SCDLConfig

    layer = {k: trained[k] for k in INHERITED if k in trained and trained[k] is not None}
    layer = _known(layer, defaults)
    if isinstance(layer.get("scdl"), Mapping):
        names = {f.name for f in fields(SCDLConfig)}
        layer["scdl"] = {k: v for k, v in layer["scdl"].items() if k in names}
    return layer


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key in sorted(tree, key=str):
            out.update(_flat(tree[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def inherited_settings(layer: Mapping[str, Any], before: Mapping[str, Any],
                       after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(inherited, yours)``: the recipe's settings that changed the run (``before``: the preset's config,
    ``after``: the resolved one) and those the user set to something else (``{key: [recipe, yours]}``)."""
    recipe, base, final = _flat(dict(layer)), _flat(dict(before)), _flat(dict(after))
    inherited, yours = {}, {}
    for key, value in recipe.items():
        if json.dumps(value, default=str) == json.dumps(base.get(key), default=str):
            continue                                    # the preset says the same: nothing inherited
        if json.dumps(value, default=str) == json.dumps(final.get(key), default=str):
            inherited[key] = value
        else:
            yours[key] = [value, final.get(key)]
    return inherited, yours
