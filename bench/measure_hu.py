#!/usr/bin/env python
"""Measure the HU statistics behind the phantom generator's defaults on the real CT in shared/data.

Usage:
    python bench/measure_hu.py                       # Markdown table on stdout
    python bench/measure_hu.py --json hu.json        # also every number as JSON
    python bench/measure_hu.py --check               # exit 1 if scdl/phantom/hu_table.py disagrees
    python bench/measure_hu.py --data /path/to/totalsegmentator_fixtures

Definitions (interior = 3 mm from the organ border, tissues) are in scdl/phantom/measure.py; the table it
prints is the one in docs/phantom.md and, as numbers, in scdl/phantom/hu_table.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scdl.phantom import hu_table  # noqa: E402
from scdl.phantom.measure import as_dict, measure_patients  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("SCDL_SHARED", REPO.parent / "shared")) / "data" / "totalsegmentator_fixtures"


def _cell(stats: dict, name: str) -> str:
    s = stats.get(name)
    if s is None:
        return "-"
    flag = " (full mask)" if s.interior_fallback else ""
    return f"{s.mean:.1f} ± {s.std:.1f}{flag}"


def markdown(result: dict) -> str:
    a, b = result["A"], result["B"]
    lines = ["| structure | patient A (non-contrast), HU | patient B (contrast), HU | volume A / B (mL) |",
             "|---|---|---|---|"]
    names = [n for n in hu_table.STRUCTURES if n != "stomach"] + ["stomach", "stomach_soft"]
    for name in names:
        if name not in a and name not in b:
            lines.append(f"| {name} | not labelled | not labelled | - |")
            continue
        vol = " / ".join(f"{d[name].volume_ml:.1f}" if name in d else "-" for d in (a, b))
        lines.append(f"| {name} | {_cell(a, name)} | {_cell(b, name)} | {vol} |")
    for name in ("stomach_gas_fraction", "bowel_gas_fraction"):
        cells = " | ".join(f"{d[name].mean:.3f}" if name in d else "-" for d in (a, b))
        lines.append(f"| {name} | {cells} | - |")
    return "\n".join(lines)


def check(result: dict) -> list[str]:
    """Differences between the measurement and the numbers hard-coded in hu_table.py."""
    problems = []
    for patient, table in (("A", hu_table.MEASURED_A), ("B", hu_table.MEASURED_B)):
        measured = result[patient]
        for name, (mean, std) in table.items():
            key = "stomach_soft" if name == "stomach" else name
            s = measured.get(key)
            if s is None:
                problems.append(f"{patient} {name}: in hu_table.py but not measured")
            elif abs(s.mean - mean) > 0.05 or abs(s.std - std) > 0.05:
                problems.append(f"{patient} {name}: hu_table.py ({mean}, {std}) != measured ({s.mean}, {s.std})")
    for name, pair in (("stomach_gas_fraction", hu_table.STOMACH_GAS_FRACTION),
                       ("bowel_gas_fraction", hu_table.BOWEL_GAS_FRACTION)):
        got = (result["A"][name].mean, result["B"][name].mean)
        if got != pair:
            problems.append(f"{name}: hu_table.py {pair} != measured {got}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="totalsegmentator_fixtures folder")
    parser.add_argument("--json", type=Path, default=None, help="write every number as JSON")
    parser.add_argument("--check", action="store_true", help="compare with scdl/phantom/hu_table.py")
    args = parser.parse_args(argv)
    result = measure_patients(args.data)
    print(markdown(result))
    if args.json:
        from scdl.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(as_dict(result), indent=1))
    if args.check:
        problems = check(result)
        for p in problems:
            print(f"MISMATCH {p}", file=sys.stderr)
        print("hu_table.py matches the measurement." if not problems else f"{len(problems)} mismatches.",
              file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
