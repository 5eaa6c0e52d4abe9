"""Weight initialisation of the two CPS networks (METHOD.md §2).

Network A: Kaiming-normal convolutions; network B: Xavier-normal convolutions. Both set norm weights to
1 and norm biases to 0. "Convolutions" are the 3D convolutions and the transposed convolutions of the
decoder; convolution biases keep PyTorch's default initialisation.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from scdl.errors import ScdlError

_CONVS = (nn.Conv3d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm3d, nn.InstanceNorm3d, nn.GroupNorm)


def _apply(net: nn.Module, conv_init: Callable) -> nn.Module:
    for module in net.modules():
        if isinstance(module, _CONVS):
            conv_init(module.weight)
        elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return net


def kaiming_normal_init(net: nn.Module) -> nn.Module:
    """Scheme A: ``kaiming_normal_`` (fan-in, ReLU gain) on every conv weight; norms 1/0. In place; returns ``net``."""
    return _apply(net, nn.init.kaiming_normal_)


def xavier_normal_init(net: nn.Module) -> nn.Module:
    """Scheme B: ``xavier_normal_`` on every conv weight; norms 1/0. In place; returns ``net``."""
    return _apply(net, nn.init.xavier_normal_)


#: Schemes by name; the i-th CPS network uses ``INIT_SCHEMES_BY_INDEX[i % 2]``.
INIT_SCHEMES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "kaiming": kaiming_normal_init,
    "xavier": xavier_normal_init,
}
INIT_SCHEMES_BY_INDEX: tuple[str, ...] = ("kaiming", "xavier")


def init_weights(net: nn.Module, scheme: str) -> nn.Module:
    """Initialise ``net`` in place with scheme ``"kaiming"`` (A) or ``"xavier"`` (B); returns ``net``."""
    if scheme not in INIT_SCHEMES:
        raise ScdlError(f"unknown initialisation {scheme!r}.", fix=f"use one of {sorted(INIT_SCHEMES)}.")
    return INIT_SCHEMES[scheme](net)
