"""Paired statistics of a finished SSL benchmark: every configuration minus CPS, per seed, with the bootstrap 95 %
interval of the mean difference and the minimum detectable effect (scdl.bench.ssl_aggregate.paired_comparisons).

    python bench/ssl_power.py docs/results/ssl_results_cps_vs_scdl_5seeds.json

New runs of ``scdl bench ssl`` print this section in their table.md themselves; this script reads results
written before it existed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scdl.bench.ssl_aggregate import paired_comparisons
from scdl.bench.ssl_report import paired_section


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+", help="results.json of scdl bench ssl")
    ap.add_argument("--reference", default="cps", help="the configuration the others are compared with")
    args = ap.parse_args(argv)
    for path in args.results:
        results = json.loads(path.read_text(encoding="utf-8"))
        paired = paired_comparisons(results["runs"], results["classes"], results["small_classes"], args.reference)
        print(f"### {path}")
        print("\n".join(paired_section(paired, len(results["small_classes"]))))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
