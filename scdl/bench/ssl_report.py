"""The benchmark's outputs: ``results.json``, ``table.md`` (Dice %, mean ± std over seeds) and ``dice.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from scdl.io.atomic import atomic_path, atomic_write_text

RESULTS_NAME = "results.json"
TABLE_NAME = "table.md"
CHART_NAME = "dice.png"
SMALL_MARK = "†"


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, NumPy scalars/arrays -> Python, recursively (strict JSON)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results(path: Path, results: Mapping[str, Any]) -> Path:
    atomic_write_text(path, json.dumps(json_safe(results), indent=1) + "\n")
    return Path(path)


def _cell(stat: Mapping[str, Any], bold: bool = False) -> str:
    mean, std = stat.get("mean"), stat.get("std")
    if mean is None or not math.isfinite(float(mean)):
        return "–"
    text = f"{100.0 * float(mean):.1f}"
    if std is not None and math.isfinite(float(std)):
        text += f" ± {100.0 * float(std):.1f}"
    return f"**{text}**" if bold else text


def _best(stats: Sequence[Mapping[str, Any]]) -> int:
    """Index of the highest finite mean at table precision (-1 when none, a tie, or only one column)."""
    means = [round(100.0 * float(s["mean"]), 1) if s.get("mean") is not None and math.isfinite(float(s["mean"]))
             else -math.inf for s in stats]
    top = max(means) if means else -math.inf
    if len(means) < 2 or top == -math.inf or means.count(top) > 1:
        return -1
    return means.index(top)


def markdown_table(summary: Mapping[str, Any], classes: Sequence[str], small: Sequence[str],
                   volumes_ml: Mapping[str, float], unscored: Sequence[str] = ()) -> str:
    """Rows: the classes, the foreground mean, the smallest-classes mean; columns: configurations.
    Cells: Dice in % as mean ± std over seeds; the best mean of each row in bold (none on a tie).
    ``unscored`` classes (in no test reference) show "–" and are left out of the foreground mean."""
    configs = list(summary)
    scored = [c for c in classes if c not in set(unscored)]
    lines = ["| class (mean volume) | " + " | ".join(configs) + " |",
             "|---|" + "---:|" * len(configs)]
    for name in classes:
        stats = [summary[c]["dice"][name] for c in configs]
        best = _best(stats)
        mark = f" {SMALL_MARK}" if name in small else ""
        label = f"{name}{mark} ({volumes_ml.get(name, math.nan):.1f} mL)"
        if name in unscored:
            label = f"{name} (in no test case: not scored)"
        lines.append(f"| {label} | " + " | ".join(_cell(s, i == best) for i, s in enumerate(stats)) + " |")
    for key, label in (("foreground", f"**foreground mean ({len(scored)} classes)**"),
                       ("small", f"**smallest {len(small)} classes ({SMALL_MARK})**")):
        stats = [summary[c][key] for c in configs]
        best = _best(stats)
        lines.append(f"| {label} | " + " | ".join(_cell(s, i == best) for i, s in enumerate(stats)) + " |")
    return "\n".join(lines) + "\n"


def paired_section(paired: Mapping[str, Any], n_small: int, reference: str = "cps") -> list[str]:
    """Markdown lines: each configuration minus ``reference`` (CPS; or, for knob variants, the configuration
    with the paper's values, named per row by ``metrics["reference"]``), per seed, with the bootstrap 95 %
    interval of the mean difference and the minimum detectable effect (Dice points)."""
    if not paired:
        return []
    lines = ["", f"Paired by seed, each configuration minus `{reference}` (Dice points; interval: bootstrap 95 % of "
             "the mean difference; MDE: the true difference this design detects with 80 % power at α = 0.05):", "",
             "| configuration | metric | per-seed differences | mean | 95 % interval | MDE |", "|---|---|---|---:|---:|---:|"]
    for config, metrics in paired.items():
        for key, label in (("foreground", "foreground"), ("small", f"smallest {n_small}")):
            d = metrics[key]
            diffs = ", ".join(f"{100 * v:+.1f}" for v in d["diffs"])
            ci = "n/a" if d["ci95"] is None else f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
            mde = "n/a" if d["mde"] is None else f"{100 * d['mde']:.1f}"
            mean = "n/a" if not math.isfinite(d["mean"]) else f"{100 * d['mean']:+.1f}"
            lines.append(f"| `{config}` | {label} | {diffs} | {mean} | {ci} | {mde} |")
    return lines


def table_document(results: Mapping[str, Any]) -> str:
    """``table.md``: what was run, the table, the configurations' meaning, and the reproducing command."""
    s = results["settings"]
    summary = results["summary"]
    seeds = ", ".join(str(x) for x in s["seeds"])
    training = (f"VNet width {s['width']}, {s['patch']}³ patches, "
                f"{s['iterations']} iteration{'s' if s['iterations'] != 1 else ''}, device {s['device']}, training "
                f"seeds {seeds}. Cells: mean ± sample std over the seeds of each run's Dice (averaged over the test "
                "cases); best mean in bold.")
    cohort = results.get("cohort") or {}
    if s.get("cohort", "phantom") == "anatomy":
        gen = cohort.get("generation") or {}
        real = cohort.get("real_test_cases") or []
        head = [
            "## SSL benchmark: Dice (%) on the anatomy test cases",
            "",
            f"Cohort `anatomy` (split by anatomy, cohort seed {s['cohort_seed']}): {s['labeled']} labeled + "
            f"{s['unlabeled']} unlabeled training CTs synthesised from the anatomies "
            f"{', '.join(s['train_anatomies'])}; {s['test']} test cases from the anatomies "
            f"{', '.join(s['test_anatomies'])} (no anatomy on both sides"
            + (f"; real CT: {', '.join(real)}" if real else "") + f"); {s['spacing_mm']:g} mm in-plane, slice "
            f"spacing drawn per case; labels mapped to Synapse by name"
            + (f"; generated in {gen['wall_s']:.1f} s" if gen.get("wall_s") is not None else "") + ". " + training,
        ]
    else:
        head = [
            "## SSL benchmark: Dice (%) on the phantom test cases",
            "",
            f"Cohort: {s['labeled']} labeled + {s['unlabeled']} unlabeled training phantoms, {s['test']} test phantoms "
            f"(cohort seed {s['cohort_seed']}), {s['spacing_mm']:g} mm. " + training,
        ]
    out = head + [
        "",
        markdown_table(summary, results["classes"], results["small_classes"], results["class_volumes_ml"],
                       results.get("unscored_classes") or ()),
        "Configurations:",
        "",
    ]
    for name in summary:
        out.append(f"- `{name}`: {results['configurations'][name]['description']}")
    out += paired_section(results.get("paired") or {}, len(results["small_classes"]))
    variants = results.get("paired_variants") or {}
    for base in dict.fromkeys(v["reference"] for v in variants.values()):
        out += paired_section({k: v for k, v in variants.items() if v["reference"] == base},
                              len(results["small_classes"]), reference=base)
    timing = results.get("timing") or {}
    out += ["", f"Reproduce: `{results['command']}`"]
    if timing:
        out.append(f"Wall time {timing.get('total_wall_s', 0.0) / 60:.1f} min for {timing.get('runs', 0)} runs "
                   f"({timing.get('runs_reused', 0)} reused from an earlier invocation); load average "
                   f"{timing.get('load_avg_start', 0.0):.1f} at the start.")
    return "\n".join(out) + "\n"


def write_table(path: Path, results: Mapping[str, Any]) -> str:
    text = table_document(results)
    atomic_write_text(path, text)
    return text


def write_chart(path: Path, results: Mapping[str, Any]) -> Path:
    """Grouped bars: one group per class plus the two means, one bar per configuration, error bars = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    summary = results["summary"]
    configs = list(summary)
    unscored = set(results.get("unscored_classes") or ())
    classes = [c for c in results["classes"] if c not in unscored]
    groups = classes + ["foreground mean", f"smallest {len(results['small_classes'])}"]

    def stat(config: str, group: str) -> tuple[float, float]:
        if group == "foreground mean":
            st = summary[config]["foreground"]
        elif group.startswith("smallest"):
            st = summary[config]["small"]
        else:
            st = summary[config]["dice"][group]
        mean = st.get("mean")
        std = st.get("std")
        mean = float(mean) if mean is not None and math.isfinite(float(mean)) else 0.0
        std = float(std) if std is not None and math.isfinite(float(std)) else 0.0
        return mean, std

    x = np.arange(len(groups), dtype=np.float64)
    x[len(classes):] += 0.6                      # a gap before the two summary groups
    width = 0.8 / max(len(configs), 1)
    fig, ax = plt.subplots(figsize=(max(10.0, 0.9 * len(groups) + 2), 5.0), dpi=110)
    for i, config in enumerate(configs):
        values = [stat(config, g) for g in groups]
        ax.bar(x - 0.4 + width * (i + 0.5), [v[0] for v in values], width, yerr=[v[1] for v in values],
               capsize=2, label=config, error_kw={"elinewidth": 0.8})
    small = set(results["small_classes"])
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g} {SMALL_MARK}" if g in small else g for g in groups], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Dice (mean ± std over seeds)")
    s = results["settings"]
    kind = "phantoms" if s.get("cohort", "phantom") == "phantom" else "anatomy cases"
    ax.set_title(f"SSL benchmark: {s['labeled']}+{s['unlabeled']} training / {s['test']} test {kind}, "
                 f"{s['spacing_mm']:g} mm, width {s['width']}, {s['patch']}³, {s['iterations']} it, "
                 f"seeds {','.join(str(v) for v in s['seeds'])}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(configs), 3), loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
