"""Entry point of the ``scdl`` command: dispatches to the sub-command modules.

Each sub-command lives in ``scdl/cli/<name>.py`` and provides ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit status). Command modules
import heavy packages (torch, SimpleITK) inside their ``run`` functions so that ``--help`` stays fast.

Exit status: 0 success, 1 unexpected failure, 2 a user error (one line ``error: ...`` on stderr),
130 cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import importlib
import sys
from typing import Optional, Sequence

from scdl import __version__
from scdl.errors import Cancelled, ScdlError

#: Sub-command modules, in the order ``scdl --help`` lists them.
COMMANDS: tuple[str, ...] = ("segment", "evaluate", "models", "phantom", "synth", "train", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scdl",
        description="SCDL: semi-supervised, class-imbalance-aware CT organ segmentation.",
        epilog="Run 'scdl COMMAND --help' for the options and an example of each command.",
    )
    parser.add_argument("--version", action="version", version=f"scdl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"scdl.cli.{name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ScdlError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except Cancelled:
        print("cancelled: nothing was written.", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:
        print("cancelled: nothing was written.", file=sys.stderr, flush=True)
        return 130
    except MemoryError:
        print("error: out of memory. Fix: use a smaller batch/window, or --device cpu with more RAM.", file=sys.stderr)
        return 2
    except BrokenPipeError:            # `scdl models list | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")       # noqa: SIM115 - silences the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
