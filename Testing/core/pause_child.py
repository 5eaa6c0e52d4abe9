"""``python pause_child.py PHASE scdl-arguments...``: the real ``scdl`` command (``scdl.cli.main.main``) in a child
process that stops and waits at one phase, so that a test can send SIGINT / SIGTERM exactly there
(Testing/core/test_faults_signals.py).

PHASE is a progress phase name (``read``, ``preprocess``, ``infer``, ``postprocess``, ``score``, ``write``): the
child waits right after the phase started, i.e. after its ``{"phase": NAME, "done": 0}`` JSON line. ``write``
waits after the label map was written into its temporary file, so the signal lands while that file exists.
While it waits, the child prints ``{"event": "paused", "phase": NAME, "partials": [...]}`` on stdout; it goes on
when the signal handler of the command has asked for cancellation (or after 60 s).
"""

from __future__ import annotations

import json
import sys
import time


def _pause(reporter, name: str, partial=None) -> None:
    print(json.dumps({"event": "paused", "phase": name, "partials": [str(partial)] if partial else []}), flush=True)
    deadline = time.monotonic() + 60.0
    while not reporter.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)


def install(phase: str) -> None:
    import scdl.progress as progress

    original_init = progress.Phase.__init__
    state = {"reporter": None, "done": False}

    def init(self, reporter, name, total):
        original_init(self, reporter, name, total)
        state["reporter"] = reporter
        if name == phase and phase != "write" and not state["done"]:
            state["done"] = True
            _pause(reporter, name)

    progress.Phase.__init__ = init
    if phase == "write":
        import scdl.io.writers as writers

        original_write = writers.write_label_map

        def write_label_map(image, path, *args, **kwargs):
            written = original_write(image, path, *args, **kwargs)
            if not state["done"]:
                state["done"] = True
                _pause(state["reporter"], "write", path)
            return written

        writers.write_label_map = write_label_map


if __name__ == "__main__":
    install(sys.argv[1])
    from scdl.cli.main import main

    sys.exit(main(sys.argv[2:]))
