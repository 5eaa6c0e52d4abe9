"""Running the ``scdl`` command line inside the test process (for tests that need its exceptions or monkeypatches)."""

from __future__ import annotations

import signal

from scdl.cli.main import main


def run_scdl(argv: list[str]) -> int:
    """``scdl ...`` in this process; the SIGINT/SIGTERM handlers it installs are put back afterwards."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main(argv)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
