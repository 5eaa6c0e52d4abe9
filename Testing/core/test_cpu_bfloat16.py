"""``cpu_bfloat16``: bfloat16 autocast of the training step on CPU (issue 27, "more training in the same CPU hours").

The switch is validated as a boolean, off by default; under it the cps-scdl step (the default model's framework)
gives finite losses and gradients close to float32's on the same batch and weights. Whether it reaches the same
validation Dice is the paired run of ``bench/ablate_default_model.py`` (docs/default_model.md), not a unit test."""

from __future__ import annotations

import copy

import pytest
import torch

from scdl.errors import ScdlError
from scdl.training.config import DEFAULTS, resolve_config, validate_config
from scdl.training.step import TrainingStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = {"name": "vnet", "in_channels": 1, "n_classes": 4, "n_filters": 2, "norm": "batch"}


def test_off_by_default_and_validated() -> None:
    assert DEFAULTS["cpu_bfloat16"] is False
    cfg = resolve_config(overrides=["cpu_bfloat16=true"])
    assert cfg["cpu_bfloat16"] is True
    cfg["cpu_bfloat16"] = "yes"
    with pytest.raises(ScdlError, match="cpu_bfloat16"):
        validate_config(cfg)


def test_bfloat16_step_is_close_to_float32() -> None:
    torch.manual_seed(0)
    step32 = TrainingStep.build(ARCH, "cps-scdl")
    step16 = copy.deepcopy(step32)
    g = torch.Generator().manual_seed(3)
    lx = torch.rand(2, 1, 16, 16, 16, generator=g)
    ly = torch.randint(0, 4, (2, 16, 16, 16), generator=g)
    ux = torch.rand(2, 1, 16, 16, 16, generator=g)
    torch.manual_seed(1)
    a = step32(lx, ly, ux, progress=0.5)
    a["total"].backward()
    torch.manual_seed(1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        b = step16(lx, ly, ux, progress=0.5)
    b["total"].backward()
    assert b["total"].dtype == torch.float32                  # the losses are summed in float32
    assert torch.isfinite(b["total"])
    assert abs(float(b["total"].detach()) - float(a["total"].detach())) < 0.05 * abs(float(a["total"].detach()))
    for (name, p32), p16 in zip(step32.named_parameters(), step16.parameters()):
        if p32.grad is not None:
            assert torch.isfinite(p16.grad).all(), name
    # the output layer's gradient agrees; deeper layers' only roughly (cosine ~0.6 on this random batch: bfloat16
    # keeps 8 bits of mantissa), which is why adoption waits for the paired validation run
    head32 = torch.cat([p.grad.flatten() for p in step32.networks[0].out_conv.parameters()])
    head16 = torch.cat([p.grad.flatten() for p in step16.networks[0].out_conv.parameters()])
    assert torch.nn.functional.cosine_similarity(head32, head16, dim=0) > 0.99


@pytest.mark.parametrize("supported", [False, True])
def test_a_cpu_without_bfloat16_kernels_trains_in_float32(supported: bool, tmp_path, monkeypatch, capsys,
                                                          patient_a_ct, patient_a_seg) -> None:
    """Where oneDNN has no bfloat16 kernels (17x slower, docs/method.md) the run warns once and trains in float32;
    where it has them the step runs under bfloat16 autocast."""
    from inprocess import run_scdl
    from scdl.training import precision
    from scdl.training.sample_cohort import make_crop_cohort

    monkeypatch.setattr(precision, "cpu_bfloat16_supported", lambda: supported)
    seen = []
    original = torch.autocast.__init__

    def spy(self, device_type, dtype=None, enabled=True, **kw):
        if device_type == "cpu" and enabled:
            seen.append(dtype)
        original(self, device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    manifest = make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path / "cohort")
    tiny = ["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]", "data.num_workers=0", "threads=1",
            "network.n_filters=2", "validation.every=-1", "cpu_bfloat16=true"]
    code = run_scdl(["train", "--cohort", str(manifest), "--out", str(tmp_path / "run"), "--preset", "cpu",
                     "--framework", "supervised", "--iterations", "2", "--device", "cpu", "--progress", "none",
                     "--cache-dir", str(tmp_path / "cache"), *[a for s in tiny for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    warned = "cpu_bfloat16: this CPU has no bfloat16 kernels" in err
    assert warned is (not supported)
    assert (torch.bfloat16 in seen) is supported
