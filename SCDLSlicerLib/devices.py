"""Compute devices for ``scdl segment --device``: auto / CPU / GPU index, and a free-memory check.

torch is imported only inside the functions, only when it is installed, and only when the user asks for
GPU details (importing it costs seconds and creating a CUDA context costs GPU memory in Slicer's process).
No Qt here.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Optional

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover
    def _(text: str) -> str:
        return text

#: Below this much free GPU memory (GiB) a warning suggests the CPU (3D inference of a CT needs ~2 GiB).
MIN_FREE_GPU_GIB = 2.0

GIB = 1024.0 ** 3


def torch_installed() -> bool:
    """True if torch can be imported (checked without importing it)."""
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def base_devices() -> list[tuple[str, str]]:
    """(value, label) pairs that need no torch: automatic choice and the CPU."""
    return [("auto", _("auto (GPU if available)")), ("cpu", _("CPU"))]


def list_devices(probe_gpus: bool = False) -> list[tuple[str, str]]:
    """Devices for the selector: ``auto``, ``cpu`` and, when ``probe_gpus`` (or torch is already imported)
    and CUDA works, ``cuda:N`` with the GPU's name."""
    devices = base_devices()
    if not (probe_gpus or "torch" in sys.modules) or not torch_installed():
        return devices
    import torch

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            devices.append((f"cuda:{index}", _("GPU {index}: {name}").format(index=index, name=torch.cuda.get_device_name(index))))
    return devices


def gpu_memory(index: int = 0) -> Optional[tuple[float, float]]:
    """(free, total) memory of GPU ``index`` in bytes (``torch.cuda.mem_get_info``), None without CUDA."""
    if not torch_installed():
        return None
    import torch

    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    free, total = torch.cuda.mem_get_info(index)
    return float(free), float(total)


def device_index(device: str) -> Optional[int]:
    """``"cuda:1"`` -> 1, ``"cuda"`` -> 0, anything else -> None."""
    if not device.startswith("cuda"):
        return None
    _prefix, _sep, number = device.partition(":")
    return int(number) if number.isdigit() else 0


def check_device(device: str, min_free_gib: float = MIN_FREE_GPU_GIB) -> Optional[str]:
    """A warning for the chosen device, or None. Only explicit GPUs are checked (``auto`` lets the child
    choose and fall back to the CPU)."""
    index = device_index(device)
    if index is None:
        return None
    if not torch_installed():
        return _("PyTorch is not installed yet, so the GPU cannot be checked; install the dependencies first.")
    memory = gpu_memory(index)
    if memory is None:
        return _("GPU {index} is not available to PyTorch (no CUDA build or no such GPU): the CPU will be used.").format(index=index)
    free, total = memory
    if free / GIB < min_free_gib:
        return _("GPU {index} has only {free:.1f} GiB free of {total:.1f} GiB; segmentation may fail or fall back "
                 "to the CPU. Close other GPU programs or choose the CPU.").format(index=index, free=free / GIB, total=total / GIB)
    return None


def describe_gpu(index: int) -> str:
    """``"GPU 0: 71.3 GiB free of 80.0 GiB"`` (or why it cannot be told)."""
    memory = gpu_memory(index)
    if memory is None:
        return _("GPU {index}: not available").format(index=index)
    free, total = memory
    return _("GPU {index}: {free:.1f} GiB free of {total:.1f} GiB").format(index=index, free=free / GIB, total=total / GIB)


def gpu_report(device_values, work: str = "the work") -> str:
    """What "Detect GPUs" shows: one line per GPU torch sees (name, memory), else why the CPU is used."""
    gpus = [value for value in device_values if str(value).startswith("cuda")]
    if gpus:
        return "\n".join(describe_gpu(device_index(value)) for value in gpus)
    if torch_installed():
        return _("PyTorch sees no GPU: {work} runs on the CPU.").format(work=work)
    return _("PyTorch is not installed yet (see Python dependencies).")
