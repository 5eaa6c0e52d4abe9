"""VNet: the authors' reference output, key layout, feature output, input checks, initialisation schemes."""

from __future__ import annotations

import math

import pytest
import torch

from scdl.errors import ScdlError
from scdl.networks import VNet, arch_from_state_dict, build_network, init_weights
from scdl.networks.init import kaiming_normal_init, xavier_normal_init


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def ref_vnet(reference_file):
    return torch.load(reference_file, weights_only=True)["vnet"]


def test_reference_state_loads_strictly_and_reproduces_output(ref_vnet):
    arch = arch_from_state_dict(ref_vnet["state"])
    assert arch == {"name": "vnet", "in_channels": 1, "n_classes": 4, "n_filters": 4, "norm": "batch"}
    net = build_network(arch)
    net.load_state_dict(ref_vnet["state"], strict=True)
    net.eval()
    with torch.no_grad():
        out = net(ref_vnet["input"])
    assert out.shape == (1, 4, 32, 32, 32)
    assert rel_err(out, ref_vnet["output"]) <= 1e-5
    assert float((out - ref_vnet["output"]).abs().max()) <= 1e-5 * float(ref_vnet["output"].abs().max())


def test_key_layout_is_the_authors_at_any_width(ref_vnet):
    # The key names do not depend on the width: a paper-width network has exactly the reference's keys.
    keys = set(VNet(1, 14, 16, "batch").state_dict())
    assert keys == set(ref_vnet["state"])
    assert "block_two.conv.3.weight" in keys and "block_two.conv.2.weight" not in keys  # index 2 is a ReLU


def test_features_are_x9_and_feed_the_head(ref_vnet):
    net = build_network(arch_from_state_dict(ref_vnet["state"]))
    net.load_state_dict(ref_vnet["state"])
    net.eval()
    with torch.no_grad():
        logits, x9 = net(ref_vnet["input"], return_features=True)
        assert x9.shape == (1, 4, 32, 32, 32)
        assert torch.equal(net.out_conv(x9), logits)
        assert rel_err(logits, ref_vnet["output"]) <= 1e-5


def test_decoder_shapes_and_parameter_count_at_paper_width():
    net = VNet(1, 14, 16, "batch")
    # Hand count of conv weights+biases: 3x3x3 convs (stage convs), 2x2x2 (down/up), 1x1x1 head.
    f = 16
    conv3 = lambda cin, cout: cin * cout * 27 + cout  # noqa: E731
    conv2 = lambda cin, cout: cin * cout * 8 + cout  # noqa: E731
    enc = conv3(1, f) + 1 * conv3(2 * f, 2 * f) * 2 + conv3(4 * f, 4 * f) * 3 + conv3(8 * f, 8 * f) * 3 + conv3(16 * f, 16 * f) * 3
    down = conv2(f, 2 * f) + conv2(2 * f, 4 * f) + conv2(4 * f, 8 * f) + conv2(8 * f, 16 * f)
    up = conv2(16 * f, 8 * f) + conv2(8 * f, 4 * f) + conv2(4 * f, 2 * f) + conv2(2 * f, f)
    dec = conv3(8 * f, 8 * f) * 3 + conv3(4 * f, 4 * f) * 3 + conv3(2 * f, 2 * f) * 2 + conv3(f, f)
    head = f * 14 + 14
    n_norm_channels = (f + 2 * f * 2 + 4 * f * 3 + 8 * f * 3 + 16 * f * 3 + 2 * f + 4 * f + 8 * f + 16 * f
                       + 8 * f + 4 * f + 2 * f + f + 8 * f * 3 + 4 * f * 3 + 2 * f * 2 + f)
    expected = enc + down + up + dec + head + 2 * n_norm_channels
    assert sum(p.numel() for p in net.parameters()) == expected


def test_input_not_multiple_of_16_is_a_clear_error():
    net = VNet(1, 3, 2)
    with pytest.raises(ScdlError, match=r"\(32, 40, 32\).*multiple of 16"):
        net(torch.zeros(1, 1, 32, 40, 32))
    with pytest.raises(ScdlError, match="expects input of shape"):
        net(torch.zeros(1, 32, 32, 32))


def test_instance_norm_variant_is_per_sample():
    torch.manual_seed(0)
    net = build_network({"name": "vnet", "n_classes": 3, "n_filters": 2, "norm": "instance"})
    assert not any("running_mean" in k for k in net.state_dict())
    assert arch_from_state_dict(net.state_dict())["norm"] == "instance"
    x = torch.randn(2, 1, 32, 32, 32)  # 32: instance norm needs more than one voxel at the 1/16 level
    net.train()
    with torch.no_grad():
        both = net(x)
        alone = net(x[:1])
    # Instance norm: a sample's output does not depend on the other samples of the batch (only rounding,
    # amplified by the 2x2x2 deepest level), while batch norm's does.
    assert float((both[:1] - alone).abs().max()) < 1e-3
    torch.manual_seed(0)
    bn = build_network({"name": "vnet", "n_classes": 3, "n_filters": 2, "norm": "batch"}).train()
    with torch.no_grad():
        assert float((bn(x)[:1] - bn(x[:1])).abs().max()) > 1e-2


@pytest.mark.parametrize("arch, message", [
    ({"name": "unet", "n_classes": 3}, "unknown network architecture"),
    ({"name": "vnet"}, "no 'n_classes'"),
    ({"name": "vnet", "n_classes": 3, "norm": "layer"}, "unknown normalisation"),
    ({"name": "vnet", "n_classes": 3, "width": 8}, "unknown architecture fields"),
    ({"name": "vnet", "n_classes": 0}, "positive integer"),
])
def test_build_network_refuses_bad_arch(arch, message):
    with pytest.raises(ScdlError, match=message):
        build_network(arch)


def test_arch_round_trip():
    arch = {"name": "vnet", "in_channels": 1, "n_classes": 5, "n_filters": 3, "norm": "batch"}
    net = build_network(arch)
    assert net.arch == arch
    assert arch_from_state_dict(net.state_dict()) == arch
    with pytest.raises(ScdlError, match="not a VNet state dict"):
        arch_from_state_dict({"weight": torch.zeros(1)})


def test_init_schemes_match_their_formulas():
    torch.manual_seed(0)
    net_a = kaiming_normal_init(VNet(1, 4, 8, "batch"))
    net_b = xavier_normal_init(VNet(1, 4, 8, "batch"))
    # block_five.conv.0: Conv3d(128 -> 128, 3x3x3): fan_in = fan_out = 128*27 = 3456 (442k weights).
    w_a = net_a.block_five.conv[0].weight
    w_b = net_b.block_five.conv[0].weight
    assert w_a.std().item() == pytest.approx(math.sqrt(2.0 / 3456), rel=0.01)   # Kaiming: sqrt(2 / fan_in)
    assert w_b.std().item() == pytest.approx(math.sqrt(2.0 / (3456 + 3456)), rel=0.01)  # Xavier
    # Transposed convs are initialised too: block_five_up ConvTranspose3d(128 -> 64, 2x2x2), weight
    # (128, 64, 2, 2, 2): torch's fan_in is size(1)*8 = 512, fan_out = size(0)*8 = 1024.
    assert net_a.block_five_up.conv[0].weight.std().item() == pytest.approx(math.sqrt(2.0 / 512), rel=0.02)
    assert net_b.block_five_up.conv[0].weight.std().item() == pytest.approx(math.sqrt(2.0 / 1536), rel=0.02)
    for net in (net_a, net_b):
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    with pytest.raises(ScdlError, match="unknown initialisation"):
        init_weights(net_a, "orthogonal")
