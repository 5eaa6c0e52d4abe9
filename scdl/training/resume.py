"""What ``scdl train --resume`` may change, and the one check of it.

A resume continues a run exactly where its checkpoint left it, with the settings the checkpoint was trained
with (stored in the checkpoint, ``config``). Before this check, ``--resume`` applied ``--set`` to a config that
the restored optimiser state then overrode (``--set optimizer.lr`` did nothing), ignored ``--framework`` and
``--seed``, and an edited ``config.json`` (another network width) ended in a traceback. Now:

- settings in :data:`RESUME_SETTINGS` (how long, how often, where the data comes from) may change: they are
  applied, said in one line each, and written into ``config.json``;
- any other change (``--set``, ``--framework``, ``--seed`` or an edit of ``config.json``) is refused in one
  line that lists each change and says how to undo it or start a new run from this one.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from scdl.errors import ScdlError

#: Settings a resumed run may change (a prefix covers its whole block). ``iterations`` stretches the learning
#: -rate schedule from the checkpoint on (the trainer says so).
RESUME_SETTINGS = ("iterations", "data.num_workers", "data.cache_dir", "data.prefetch_factor", "threads", "log_every",
                   "checkpoint_every", "validation")


def _flat(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key in sorted(tree, key=str):
            yield from _flat(tree[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _plain(value: Any) -> Any:
    """JSON-normal form (tuples -> lists, ints and floats compared by value)."""
    return json.loads(json.dumps(value, default=str))


def changed_settings(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs (missing = None)."""
    old, new = dict(_flat(_plain(before))), dict(_flat(_plain(after)))
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def may_change(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUME_SETTINGS)


def _show(value: Any) -> str:
    text = json.dumps(value) if value is not None else "(none)"
    return text if len(text) <= 60 else text[:57] + "..."


def check_resume_settings(trained: Optional[dict[str, Any]], config: dict[str, Any], config_file: Any,
                          run_dir: Any) -> list[str]:  # noqa: ARG001 - run_dir: the callers' signature
    """Compare the settings a checkpoint was trained with (``trained``; None for a checkpoint written before
    they were stored: nothing to compare) with the resumed run's ``config``.

    Returns one line per applied change; raises one :class:`ScdlError` naming ``config_file`` when a setting
    outside :data:`RESUME_SETTINGS` changed."""
    if not trained:
        return []
    changes = changed_settings(trained, config)
    refused = [c for c in changes if not may_change(c[0])]
    if refused:
        listed = "; ".join(f"{key} {_show(old)} -> {_show(new)}" for key, old, new in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise ScdlError(
            f"--resume continues a run with the settings its checkpoint was trained with, but these differ "
            f"(from --set, --framework, --seed or an edit of this file): {listed}{more}.", config_file,
            f"undo the change (only {', '.join(RESUME_SETTINGS)} may change on resume), or start a new run "
            f"with the new settings (scdl train --out NEW_DIR ...; a finished run's model can be its --init).")
    return [f"resumed with {key} {_show(old)} -> {_show(new)}" for key, old, new in changes]
