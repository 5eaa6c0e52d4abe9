"""VNet building blocks (convolution stage, stride-2 down- and up-sampling), in the authors' key layout.

Every block holds one ``nn.Sequential`` named ``conv`` whose indices run conv, norm, ReLU, conv, norm,
ReLU, ... (the ReLU takes an index), so a state dict key reads ``<block>.conv.<i>.<param>``: e.g.
``block_two.conv.3.weight`` is the second convolution of the second encoder stage. With ``norm="none"``
the norm layer is left out and the indices run conv, ReLU, conv, ReLU, ...
"""

from __future__ import annotations

from torch import Tensor, nn

from scdl.errors import ScdlError

#: Spellings accepted for each normalisation (the authors' names included).
NORM_ALIASES: dict[str, str] = {
    "batch": "batch",
    "batchnorm": "batch",
    "instance": "instance",
    "instancenorm": "instance",
    "none": "none",
}


def canonical_norm(norm: str) -> str:
    """Map ``"batchnorm"``/``"batch"``/... to ``"batch"``, ``"instance"`` or ``"none"``."""
    key = str(norm).lower()
    if key not in NORM_ALIASES:
        raise ScdlError(
            f"unknown normalisation {norm!r} for the VNet.",
            fix=f"use one of {sorted(set(NORM_ALIASES.values()))}.",
        )
    return NORM_ALIASES[key]


def norm_layer(norm: str, channels: int) -> list[nn.Module]:
    """The normalisation layer after a convolution, as a list (empty for ``"none"``).

    Batch norm keeps running statistics (CPS host); instance norm is affine without running statistics
    (MagicNet host), so both have a weight (init 1) and a bias (init 0).
    """
    kind = canonical_norm(norm)
    if kind == "batch":
        return [nn.BatchNorm3d(channels)]
    if kind == "instance":
        return [nn.InstanceNorm3d(channels, affine=True)]
    return []


def _conv_norm_relu(conv: nn.Module, norm: str, channels: int) -> list[nn.Module]:
    return [conv, *norm_layer(norm, channels), nn.ReLU(inplace=True)]


class ConvBlock(nn.Module):
    """``n_stages`` × (3×3×3 conv, padding 1, norm, ReLU); keeps the spatial size.

    Input (B, in_channels, D, H, W) -> output (B, out_channels, D, H, W).
    """

    def __init__(self, n_stages: int, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_stages):
            cin = in_channels if i == 0 else out_channels
            layers += _conv_norm_relu(nn.Conv3d(cin, out_channels, 3, padding=1), norm, out_channels)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DownsamplingConvBlock(nn.Module):
    """2×2×2 stride-2 conv, norm, ReLU: (B, Cin, D, H, W) -> (B, Cout, D/2, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        conv = nn.Conv3d(in_channels, out_channels, 2, stride=2, padding=0)
        self.conv = nn.Sequential(*_conv_norm_relu(conv, norm, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UpsamplingDeconvBlock(nn.Module):
    """2×2×2 stride-2 transposed conv, norm, ReLU: (B, Cin, D, H, W) -> (B, Cout, 2D, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        conv = nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, padding=0)
        self.conv = nn.Sequential(*_conv_norm_relu(conv, norm, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

