"""Choosing the compute device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, with a CPU fallback.

A CUDA device that was asked for but is not there is not an error: inference falls back to the CPU and
says so once through ``warn`` (the progress reporter's warning in the CLI). A misspelt device is an error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from scdl.errors import ScdlError

if TYPE_CHECKING:
    import torch

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
T = TypeVar("T")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(request: str = "auto", warn: Optional[Callable[[str], None]] = None):
    """Turn a device request into a ``torch.device``.

    Args:
        request: ``"auto"`` (first CUDA device if there is one, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        warn: called with one sentence when a CUDA request falls back to the CPU.

    Returns:
        the ``torch.device`` to compute on.

    Raises:
        ScdlError: the request is not one of the forms above.
    """
    import torch

    text = str(request or "auto").strip().lower()
    if not _DEVICE_RE.match(text):
        raise ScdlError(f"unknown device {request!r}.", fix="use --device auto, cpu, cuda or cuda:N (N = GPU index).")
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        return torch.device("cuda", 0) if _cuda_available() else torch.device("cpu")
    if not _cuda_available():
        if warn:
            warn(f"{text} was requested but no CUDA GPU is available to PyTorch; running on the CPU (slower).")
        return torch.device("cpu")
    index = int(text.split(":")[1]) if ":" in text else 0
    count = torch.cuda.device_count()
    if index >= count:
        if warn:
            warn(f"{text} was requested but only {count} CUDA device(s) exist; running on the CPU (slower).")
        return torch.device("cpu")
    return torch.device("cuda", index)


def is_cuda_oom(err: BaseException) -> bool:
    """True for CUDA out-of-memory errors (``torch.cuda.OutOfMemoryError`` or its RuntimeError spelling)."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower() and "cuda" in str(err).lower()


def with_cpu_fallback(work: Callable[["torch.device"], T], device, warn: Optional[Callable[[str], None]] = None) -> T:
    """Run ``work(device)``; if a CUDA device runs out of memory, say so through ``warn`` and run
    ``work(cpu)`` instead. Other errors propagate unchanged.
    """
    import torch

    if device.type != "cuda":
        return work(device)
    try:
        return work(device)
    except Exception as err:  # only CUDA out-of-memory is handled here (the others are raised again)
        if not is_cuda_oom(err):
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if warn:
        warn(f"the GPU ({device}) ran out of memory; running on the CPU instead (slower). "
             "Fix: close other programs that use the GPU, lower --sw-batch-size, or use --device cpu.")
    return work(torch.device("cpu"))
