"""Render the SCDL Segment and SCDL Train panels into docs/images/panel_segment.png and panel_train.png.

    pip install -e ".[qt]" && python docs/make_panel_screenshots.py [--width 480] [--out docs/images]

The ``.ui`` files are loaded by PySide6's QUiLoader on the offscreen platform, with plain-Qt stand-ins for the
CTK / MRML widgets (``Testing/qt/qtpanels.py``), and the combos are filled as the modules fill them (the model
combo with the real catalog's titles; no user models: an empty SCDL home). So these are Qt renders of the
panels' layout, not Slicer screenshots: node selectors, folder buttons and collapsible sections look plainer
than in Slicer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "Testing" / "qt"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=480, help="panel width in px (default 480)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="output folder")
    args = parser.parse_args(argv)
    os.environ["SCDL_HOME"] = tempfile.mkdtemp(prefix="scdl-screens-")  # the catalog only, no user models
    os.environ.pop("SCDL_MODELS_DIR", None)
    import qtpanels as q

    q.app()
    models = q.catalog_models()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fill, file in (("SCDLSegment", q.fill_segment, "panel_segment.png"),
                             ("SCDLTrain", q.fill_train, "panel_train.png")):
        panel = q.load_ui(name)
        fill(panel, models)
        width = max(args.width, q.min_width(panel))
        height = q.layout_at_width(panel, width)
        target = args.out / file
        if not panel.grab().save(str(target)):
            print(f"could not write {target}", file=sys.stderr)
            return 1
        print(f"{target}: {width} x {height} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
