"""Whether bfloat16 autocast pays on this CPU (``cpu_bfloat16`` of the training configuration).

Measured on the development machine (AMD EPYC, AVX2 only, torch 2.13, one thread): a 3-D convolution 8 -> 8
channels on 4 x 32 x 64 x 64 voxels, forward + backward, took 0.36-0.45 s in float32 and 6.6-7.3 s under
bfloat16 autocast (17x slower): without native bfloat16 instructions oneDNN falls back to slow kernels. The
0.55x of ``bench/step.py --cpu-options`` (docs/method.md) was measured on a CPU with them. oneDNN's own test,
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (AVX-512 BW/VL/DQ or newer), decides.
"""

from __future__ import annotations

__all__ = ["cpu_bfloat16_supported"]


def cpu_bfloat16_supported() -> bool:
    """True where oneDNN has bfloat16 kernels for this CPU (else bfloat16 autocast is many times slower)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):          # an older/newer torch without the probe: do not guess
        return False
