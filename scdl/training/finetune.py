"""Fine-tuning from a model package (``--init``): classes matched by name, the output layer re-shaped.

The init model decides the architecture (width, norm) and the preprocessing (its card); the run's label
table decides the classes. Output channels of classes the init model knows (matched by name through
``scdl.labels.mapping``, synonyms included; background is channel 0) are copied; new classes keep the fresh
initialisation of their channel; classes the run does not learn are dropped. Every other weight is copied.
If the framework trains more networks than the package holds (a 1-network package into CPS), the extra
networks start from their own fresh initialisation and the report says so.

The one owner of what ``--init`` changes in the settings as well: the **training recipe** of the init model
(its card's ``provenance.recipe.config``; ``scdl train`` writes it into every card it makes) is inherited
(:data:`INHERITED`: optimiser, step and SCDL loss settings, sampling, augmentation, batch) as a layer between
the preset and the user's ``--config`` / flags / ``--set`` (``scdl.training.config.recipe_layer``, used by
``resolve_config(..., init=...)``; ``scdl.training.inherit``); the grid, the network and the patch come from the
card's preprocessing and architecture (:func:`adjust_to_init`, a new configuration for the trainer).
:func:`inherited_line` is the log line that says so.
No torch at import (the SCDLTrain panel resolves settings with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from scdl.errors import ScdlError
from scdl.training.inherit import (  # noqa: F401 - the inherited recipe's names, also used from here
    INHERITED,
    RECIPE_KEYS,
    inherited_settings,
    load_init_card,
    recipe_config,
    recipe_of,
)
from scdl.training.config import recipe_layer  # noqa: F401 - the inherited recipe's layer, also used from here

if TYPE_CHECKING:
    import torch

    from scdl.training.settings import TrainConfig

def inherited_line(init: Mapping[str, Any]) -> str:
    """One log line: what the run inherited from the init model's recipe (``config["init"]``)."""
    name = init.get("id") or init.get("model") or "the init model"
    if not init.get("inherit", True):
        return (f"fine-tuning {name}: its training recipe is NOT inherited (finetune.inherit=false): the preset's "
                "settings are used.")
    if not init.get("recipe"):
        return (f"fine-tuning {name}: its card records no training recipe; the preset's optimiser and loss "
                "settings are used (grid, network and patch come from its card).")
    show = lambda v: json.dumps(v, default=str)  # noqa: E731
    inherited = init.get("inherited") or {}
    parts = ", ".join(f"{k}={show(v)}" for k, v in inherited.items()) or "nothing the preset does not already say"
    line = (f"fine-tuning {name} with its training recipe (card provenance.recipe): inherited {parts}; grid, network "
            "and patch from its card")
    scaled = init.get("lr_scaled")
    if scaled:
        line += (f"; learning rate {show(scaled[1])} = the recipe's {show(scaled[0])} x finetune.lr_scale "
                 "(a fine-tune moves less; --set optimizer.lr=... to choose it)")
    if init.get("norm_stats_frozen"):
        line += ("; batch-norm statistics frozen (finetune.norm_stats auto; --set finetune.norm_stats=update to let "
                 "them follow your scans)")
    yours = init.get("yours") or {}
    if yours:
        line += "; your settings kept: " + ", ".join(f"{k}={show(v[1])} (recipe {show(v[0])})" for k, v in yours.items())
    return line + ". Override with --set KEY=VALUE, or --set finetune.inherit=false for the preset's settings."

HEAD_KEYS: tuple[str, ...] = ("out_conv.weight", "out_conv.bias")


@dataclass
class InitModel:
    """What ``--init`` brings: the package's card, label table and network weights."""

    source: str
    card: dict[str, Any]
    labels: Any
    state_dicts: list[dict[str, torch.Tensor]]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> dict[str, Any]:
        return dict(self.card["architecture"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.card["preprocessing"])


def adjust_to_init(config: "TrainConfig", init: InitModel) -> "TrainConfig":
    """The run's configuration fitted to the init model (a new one; ``config`` is not changed): the network's
    width, norm and input channels and the preprocessing from its card, ``patch_size`` "init" -> the patch it was
    trained with (its card's sliding window: same BN regime, same inference window; an explicit patch wins),
    and ``init`` records the model (``model``, ``id``, ``networks``) beside what the resolution recorded."""
    from dataclasses import replace

    from scdl.training.config import DEFAULTS

    arch = init.architecture
    pre = init.preprocessing
    init_patch = pre.pop("patch_size", None)
    changes: dict[str, Any] = {
        "network": replace(config.network, n_filters=int(arch["n_filters"]), norm=str(arch["norm"]),
                           in_channels=int(arch["in_channels"])),
        "preprocessing": pre,
        "init": {**dict(config.init or {}), "model": init.source, "id": init.card.get("id"),
                 "networks": len(init.state_dicts)}}
    if config.patch_size == "init":
        changes["patch_size"] = [int(v) for v in (init_patch or DEFAULTS["patch_size"])]
    return config.replace(**changes)


def load_init_model(ref: str) -> InitModel:
    """Load (and verify) the package named by ``ref``: a path, a cached id or a bundled id."""
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(ref, verify=True)
    return InitModel(source=str(pkg.path), card=dict(pkg.card), labels=pkg.labels, state_dicts=pkg.state_dicts())


def class_correspondence(source: Any, target: Any) -> dict[int, int]:
    """``{target value: source value}`` for every target class the source table also has (by name); 0 -> 0."""
    from scdl.labels.mapping import match_tables

    pairs = {0: 0}
    for src_value, dst_value in sorted(match_tables(source, target).value_map.items()):
        if int(dst_value) != 0 and int(dst_value) not in pairs:
            pairs[int(dst_value)] = int(src_value)
    return pairs


def adapt_state_dict(init_state: dict[str, torch.Tensor], fresh_state: dict[str, torch.Tensor],
                     correspondence: dict[int, int]) -> dict[str, torch.Tensor]:
    """The fresh network's state with every init weight copied and the head rows copied per class.

    Args:
        init_state: weights of the init network (head with C_src rows).
        fresh_state: state of a freshly initialised network of the run (head with C_dst rows).
        correspondence: ``{target channel: source channel}``.
    """
    out = {k: v.clone() for k, v in fresh_state.items()}
    for key, value in init_state.items():
        if key in HEAD_KEYS:
            continue
        if key not in out:
            raise ScdlError(f"the init model has a weight {key!r} that the network of this run lacks.",
                            fix="use an init model of the same architecture (VNet).")
        if out[key].shape != value.shape:
            raise ScdlError(f"the init model's weight {key!r} has shape {tuple(value.shape)}, the run's network "
                            f"{tuple(out[key].shape)}.", fix="take the architecture from the init model's card.")
        out[key] = value.detach().clone().to(out[key].dtype)
    for key in HEAD_KEYS:
        if key not in init_state:
            raise ScdlError(f"the init model has no output layer {key!r}.", fix="use an SCDL model package.")
        src = init_state[key]
        for dst_channel, src_channel in correspondence.items():
            if dst_channel < out[key].shape[0] and src_channel < src.shape[0]:
                out[key][dst_channel] = src[src_channel].to(out[key].dtype)
    return out


def initialise_from(init: InitModel, networks: Sequence[torch.nn.Module], target: Any) -> dict[str, Any]:
    """Load ``init``'s weights into ``networks`` (in place) for the classes of ``target``; returns a report."""
    pairs = class_correspondence(init.labels, target)
    names = {int(e.value): e.name for e in target.entries}
    kept = sorted(names[v] for v in pairs if v in names and v != 0)
    new = sorted(names[v] for v in names if v not in pairs and v != 0)
    target_names = set(names.values())
    src_pairs = set(pairs.values())
    dropped = sorted(e.name for e in init.labels.entries if int(e.value) != 0 and int(e.value) not in src_pairs
                     and e.name not in target_names)
    loaded = 0
    for i, net in enumerate(networks):
        if i >= len(init.state_dicts):
            continue
        state = adapt_state_dict(init.state_dicts[i], net.state_dict(), pairs)
        net.load_state_dict(state, strict=True)
        loaded += 1
    report = {"init": init.source, "matched": kept, "new": new, "dropped": dropped,
              "networks_loaded": loaded, "networks_fresh": len(networks) - loaded}
    init.report = report
    return report


def inherited_inference(config: Mapping[str, Any], label_names: Sequence[str]) -> Optional[dict[str, Any]]:
    """The card ``inference`` section of a fine-tune: the init model's (``config["init"]["inference"]``: its
    post-processing and test-time batch-norm statistics were chosen on that model's validation), with
    ``largest_component_organs`` cut to the organs of the fine-tune's label table. ``validation.window_size``,
    when set (a fine-tune inherits its init card's), is the card's ``window_size``, for a fine-tune or not: a
    model segments with the window its checkpoints were chosen with. None without ``--init`` and without a
    validation window, or for a run folder from before this was recorded (then the card gets the defaults)."""
    from scdl.labels.names import normalize_name

    section = dict((config.get("init") or {}).get("inference") or {})
    window = (config.get("validation") or {}).get("window_size")
    if window:             # the window the checkpoints were chosen with (validation.window_size) is the card's
        section["window_size"] = [int(v) for v in window]
    if not section:
        return None
    if "largest_component_organs" in section:
        names = {normalize_name(n) for n in label_names}
        section["largest_component_organs"] = [o for o in section["largest_component_organs"]
                                               if normalize_name(o) in names]
    return section
