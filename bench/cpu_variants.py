"""The CPU variants compared by ``bench/step.py --cpu-options`` and ``bench/inference.py --cpu-options``.

One place for what a variant is (threads, memory format, bfloat16 autocast, ``torch.compile``) and how it is
applied to a list of networks, so that the training-step and the inference comparisons measure the same thing.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, NamedTuple

REFERENCE = "float32 (reference)"


class Variant(NamedTuple):
    threads: int
    channels_last: bool
    bfloat16: bool
    compiled: bool


VARIANTS = {
    REFERENCE: Variant(1, False, False, False),
    "channels_last_3d": Variant(1, True, False, False),
    "bfloat16 autocast": Variant(1, False, True, False),
    "channels_last_3d + bfloat16": Variant(1, True, True, False),
    "torch.compile": Variant(1, False, False, True),
    "2 threads": Variant(2, False, False, False),
    "2 threads + bfloat16": Variant(2, False, True, False),
    "2 threads + channels_last_3d + bfloat16": Variant(2, True, True, False),
}
#: The rows of each benchmark (the step compares 2 threads with bfloat16 alone, inference with both).
TRAINING = [n for n in VARIANTS if n != "2 threads + channels_last_3d + bfloat16"]
INFERENCE = [n for n in VARIANTS if n != "2 threads + bfloat16"]


def apply(networks: list, variant: Variant) -> tuple[list, Callable[[], ContextManager]]:
    """``networks`` in the variant's memory format (in place) and compiled if it says so, and the context
    (bfloat16 autocast or none) each timed call runs in. Threads are set by the caller per call."""
    import torch

    if variant.channels_last:
        networks = [net.to(memory_format=torch.channels_last_3d) for net in networks]
    if variant.compiled:
        networks = [torch.compile(net) for net in networks]
    if variant.bfloat16:
        return networks, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return networks, contextlib.nullcontext
