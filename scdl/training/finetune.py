"""Fine-tuning from a model package (``--init``): classes matched by name, the output layer re-shaped.

The init model decides the architecture (width, norm) and the preprocessing (its card); the run's label
table decides the classes. Output channels of classes the init model knows (matched by name through
``scdl.labels.mapping``, synonyms included; background is channel 0) are copied; new classes keep the fresh
initialisation of their channel; classes the run does not learn are dropped. Every other weight is copied.
If the framework trains more networks than the package holds (a 1-network package into CPS), the extra
networks start from their own fresh initialisation and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from scdl.errors import ScdlError

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
