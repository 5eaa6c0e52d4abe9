"""VNet backbone (METHOD.md §3) with the SCDL authors' module names, and ``build_network(arch)``.

Encoder stages of 1, 2, 3, 3, 3 convolutions with F, 2F, 4F, 8F, 16F channels (F = ``n_filters``),
stride-2 convs between them; decoder of stride-2 transposed convs whose outputs are ADDED to the encoder
skips, stages of 3, 3, 2, 1 convolutions; the last decoder feature ``x9`` (F channels, full resolution)
feeds a 1×1×1 convolution head. The authors' checkpoints load with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import Tensor, nn

from scdl.errors import ScdlError
from scdl.networks.blocks import ConvBlock, DownsamplingConvBlock, UpsamplingDeconvBlock, canonical_norm

#: Total down-sampling factor: every spatial size of the input must be a multiple of it.
DIVISOR = 16


class VNet(nn.Module):
    """VNet for 3D segmentation.

    Args:
        in_channels: image channels (1 for CT).
        n_classes: output classes C, background included.
        n_filters: width F of the first stage (16 in the paper; smaller for CPU work).
        norm: ``"batch"`` (CPS host), ``"instance"`` (MagicNet host) or ``"none"``;
            the authors' spellings ``"batchnorm"``/``"instancenorm"`` are accepted.

    ``forward(x)``: x (B, in_channels, D, H, W) with D, H, W multiples of 16 -> logits (B, C, D, H, W).
    ``forward(x, return_features=True)`` -> (logits, x9) with x9 (B, F, D, H, W), the last decoder feature.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 14, n_filters: int = 16, norm: str = "batch"):
        super().__init__()
        norm = canonical_norm(norm)
        f = n_filters
        self.in_channels, self.n_classes, self.n_filters, self.norm = in_channels, n_classes, n_filters, norm

        self.block_one = ConvBlock(1, in_channels, f, norm)
        self.block_one_dw = DownsamplingConvBlock(f, 2 * f, norm)
        self.block_two = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_two_dw = DownsamplingConvBlock(2 * f, 4 * f, norm)
        self.block_three = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_three_dw = DownsamplingConvBlock(4 * f, 8 * f, norm)
        self.block_four = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_four_dw = DownsamplingConvBlock(8 * f, 16 * f, norm)
        self.block_five = ConvBlock(3, 16 * f, 16 * f, norm)

        self.block_five_up = UpsamplingDeconvBlock(16 * f, 8 * f, norm)
        self.block_six = ConvBlock(3, 8 * f, 8 * f, norm)
        self.block_six_up = UpsamplingDeconvBlock(8 * f, 4 * f, norm)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f, norm)
        self.block_seven_up = UpsamplingDeconvBlock(4 * f, 2 * f, norm)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f, norm)
        self.block_eight_up = UpsamplingDeconvBlock(2 * f, f, norm)
        self.block_nine = ConvBlock(1, f, f, norm)
        self.out_conv = nn.Conv3d(f, n_classes, 1, padding=0)

    @property
    def arch(self) -> dict[str, Any]:
        """The ``arch`` dict that rebuilds this network with :func:`build_network`."""
        return {
            "name": "vnet",
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "n_filters": self.n_filters,
            "norm": self.norm,
        }

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features [x1 (F, full), x2 (2F, /2), x3 (4F, /4), x4 (8F, /8), x5 (16F, /16)]."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ScdlError(
                f"the VNet expects input of shape (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}.",
                fix="add the batch and channel axes (x[None, None]) to a (D, H, W) patch.",
            )
        bad = [s for s in x.shape[2:] if s % DIVISOR]
        if bad:
            raise ScdlError(
                f"the VNet input size {tuple(x.shape[2:])} is not a multiple of {DIVISOR} on every axis.",
                fix=f"pad or crop patches to multiples of {DIVISOR} (e.g. 96×96×96).",
            )
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        return [x1, x2, x3, x4, x5]

    def decode(self, features: list[Tensor]) -> Tensor:
        """Decoder with added skips; returns x9 (B, F, D, H, W)."""
        x1, x2, x3, x4, x5 = features
        x6 = self.block_six(self.block_five_up(x5) + x4)
        x7 = self.block_seven(self.block_six_up(x6) + x3)
        x8 = self.block_eight(self.block_seven_up(x7) + x2)
        return self.block_nine(self.block_eight_up(x8) + x1)

    def forward(self, x: Tensor, return_features: bool = False) -> Union[Tensor, tuple[Tensor, Tensor]]:
        x9 = self.decode(self.encode(x))
        logits = self.out_conv(x9)
        return (logits, x9) if return_features else logits


_ARCH_KEYS = {"name", "in_channels", "n_classes", "n_filters", "norm"}


def build_network(arch: Mapping[str, Any]) -> VNet:
    """Build the network an ``arch`` dict describes (a model card's ``"architecture"``).

    ``arch = {"name": "vnet", "in_channels": 1, "n_classes": C, "n_filters": F, "norm": "batch"|"instance"}``;
    ``in_channels`` (1), ``n_filters`` (16) and ``norm`` ("batch") may be left out.
    Weights are PyTorch's default initialisation; see :mod:`scdl.networks.init` for the paper's schemes.
    """
    if not isinstance(arch, Mapping):
        raise ScdlError(f"the architecture must be a dict, got {type(arch).__name__}.", fix="see docs/method.md.")
    name = str(arch.get("name", "")).lower()
    if name != "vnet":
        raise ScdlError(f"unknown network architecture {arch.get('name')!r}.", fix='use "name": "vnet".')
    unknown = set(arch) - _ARCH_KEYS
    if unknown:
        raise ScdlError(f"unknown architecture fields {sorted(unknown)}.", fix=f"use only {sorted(_ARCH_KEYS)}.")
    if "n_classes" not in arch:
        raise ScdlError("the architecture has no 'n_classes'.", fix="add the number of classes, background included.")
    ints = {}
    for key, default in (("in_channels", 1), ("n_classes", None), ("n_filters", 16)):
        value = arch.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScdlError(f"architecture field {key!r} must be a positive integer, got {value!r}.")
        ints[key] = value
    return VNet(norm=arch.get("norm", "batch"), **ints)


def arch_from_state_dict(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Read the ``arch`` dict off a VNet state dict in the authors' key layout.

    ``n_filters`` and ``in_channels`` come from ``block_one.conv.0.weight`` (F, Cin, 3, 3, 3), ``n_classes``
    from ``out_conv.weight`` (C, F, 1, 1, 1); batch norm is recognised by its running statistics, instance
    norm by norm weights without them, "none" by a ReLU at index 1.
    """
    try:
        first = state["block_one.conv.0.weight"]
        head = state["out_conv.weight"]
    except KeyError as err:
        raise ScdlError(
            f"not a VNet state dict in the authors' layout (no key {err.args[0]!r}).",
            fix="give a plain VNet state dict (keys block_one.conv.0.weight, ..., out_conv.weight).",
        ) from None
    if "block_one.conv.1.running_mean" in state:
        norm = "batch"
    elif "block_one.conv.1.weight" in state:
        norm = "instance"
    else:
        norm = "none"
    return {
        "name": "vnet",
        "in_channels": int(first.shape[1]),
        "n_classes": int(head.shape[0]),
        "n_filters": int(first.shape[0]),
        "norm": norm,
    }

