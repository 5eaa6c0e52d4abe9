"""Segmentation backbones. ``VNet`` keeps the SCDL authors' module names so their state dicts load unchanged."""

from scdl.networks.init import init_weights, kaiming_normal_init, xavier_normal_init
from scdl.networks.vnet import VNet, arch_from_state_dict, build_network

__all__ = [
    "VNet",
    "arch_from_state_dict",
    "build_network",
    "init_weights",
    "kaiming_normal_init",
    "xavier_normal_init",
]
