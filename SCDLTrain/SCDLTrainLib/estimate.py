"""The panel's time and memory estimate: the core's (``scdl.training.estimate``, the one owner of the measured
numbers and the formula, also printed by ``scdl train --check-only``), imported when first used (no torch, no
Qt; ``scdl`` is not imported at file scope on the Slicer side).
"""

from __future__ import annotations

#: Names forwarded to ``scdl.training.estimate`` (``estimate.MEASURED``, ``estimate.Estimate`` ...).
FORWARDED = ("MEASURED", "COLUMNS", "BENCH_PATCHES", "MEASURED_PATCH", "MEASURED_WIDTH", "REFERENCE", "Estimate",
             "step_seconds", "step_memory_mib", "estimate", "estimate_run", "patch_edge", "format_seconds")


def __getattr__(name: str):
    if name in FORWARDED:
        from scdl.training import estimate as core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def estimate(*args, **kwargs):
    """``scdl.training.estimate.estimate`` (see there)."""
    from scdl.training.estimate import estimate as core_estimate

    return core_estimate(*args, **kwargs)
