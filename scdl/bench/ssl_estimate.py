"""What a benchmark plan would cost, and what interval it would give: ``scdl bench ssl --estimate``.

Nothing is trained. The wall time is a cost model of this machine: seconds per iteration and start-up per
kind of run, scoring seconds per test case and network, cohort generation per case, measured in the published
run (docs/results/ssl_results.json: idle 2-core CPU, 2 threads, VNet width 8, 32³ patches, 4 mm; 18 runs of
350 iterations) or re-measured from any ``results.json`` given with ``--estimate-from``. Other widths and
patches are extrapolated (cost ∝ patch³ x width, flagged); a GPU (``--device cuda``) is not modelled.

The interval comes from the spread of the paired per-seed differences (SCDL minus CPS) of a finished run: by
default the published 5-seed phantom comparison (docs/results/ssl_results_cps_vs_scdl_5seeds.json), or the
``results.json`` of ``--estimate-from``. With n seeds, a t interval of the mean difference has half-width
t(0.975, n-1) · sd / √n and the minimum detectable effect (80 % power, α = 0.05) is
(t(0.975, n-1) + t(0.80, n-1)) · sd / √n (:func:`scdl.bench.ssl_aggregate.paired_difference`). That sd belongs
to the run it was measured on (its cohort, iterations, width): for another cohort or budget it is a guess until
a few seeds of that setting have been run.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Optional, Sequence

from scdl.bench.ssl_aggregate import _T80, _T975, paired_comparisons

#: Calibration of the published run (docs/results/ssl_results.json, 2026-11-25): kind -> (s per iteration, start-up s)
#: at width 8, 32³ patches, 4 mm, 2 threads, idle 2-core CPU (supervised 45.6 s, cps 129.6 s, SCDL variants 136-140 s
#: for 350 iterations).
BUILTIN_COST: dict[str, tuple[float, float]] = {"supervised": (0.119, 4.0), "cps": (0.356, 5.0), "scdl": (0.382, 5.0)}
#: Scoring seconds per test case and network (10 phantom test cases: 5.1 s with one network, 9.5 s with two).
BUILTIN_SCORE_S: float = 0.48
BUILTIN_CALIBRATION = {"width": 8, "patch": 32, "cohort": "phantom",
                       "source": "docs/results/ssl_results.json (published run)"}
#: Cohort generation per case at 4 mm (measured 2026-12-03 on this machine at load average 4-5: 30 phantoms
#: 3.5 s; anatomy cohort 30 cases 18.1 s, 50 cases 21.9 s).
COHORT_S_PER_CASE: dict[str, float] = {"phantom": 0.12, "anatomy": 0.6}
#: Scoring cost of a test case relative to a phantom (the anatomy test CTs are larger grids; A's real CT is
#: 122x101x112: 10 test cases took 18-20 s vs 9-10 s for 10 phantoms, same model, 1 thread, load average 5).
#: Training cost per iteration is the patch's, the same for both cohorts (measured within noise: 0.17 vs 0.23 s/it).
COHORT_SCORE_FACTOR: dict[str, float] = {"phantom": 1.0, "anatomy": 2.0}
#: Sample sd of the paired per-seed differences cps-scdl - cps of the published 5-seed phantom run
#: (docs/results/ssl_results_cps_vs_scdl_5seeds.json; Dice fractions).
BUILTIN_SD: dict[str, float] = {"foreground": 0.01716, "small": 0.01460}
BUILTIN_SD_SOURCE = "docs/results/ssl_results_cps_vs_scdl_5seeds.json (phantoms, 350 iterations, 5 seeds)"


def run_kind(framework: str) -> str:
    return "supervised" if framework == "supervised" else ("cps" if framework == "cps" else "scdl")


def _networks(framework: str) -> int:
    return 1 if framework == "supervised" else 2


def calibrate(results: Mapping[str, Any]) -> dict[str, Any]:
    """A cost model measured from a finished ``results.json`` (runs trained in that invocation only)."""
    fresh = [r for r in results.get("runs", []) if not r.get("reused")] or list(results.get("runs", []))
    frameworks = {name: c["framework"] for name, c in results.get("configurations", {}).items()}
    cost: dict[str, tuple[float, float]] = {}
    for kind in ("supervised", "cps", "scdl"):
        runs = [r for r in fresh if run_kind(frameworks.get(r["config"], r["config"])) == kind]
        if runs:
            startup = BUILTIN_COST[kind][1]
            per_it = statistics.median(max(0.0, r["train"]["wall_s"] - startup) / max(1, r["iterations"]) for r in runs)
            cost[kind] = (per_it, startup)
    for kind in ("supervised", "cps", "scdl"):              # a kind not run there: from a measured neighbour
        if kind not in cost:
            ref = "cps" if "cps" in cost else ("scdl" if "scdl" in cost else None)
            if ref is not None and kind != "supervised":
                cost[kind] = cost[ref]
            elif ref is not None:
                ratio = BUILTIN_COST["supervised"][0] / BUILTIN_COST["cps"][0]
                cost[kind] = (cost[ref][0] * ratio, BUILTIN_COST[kind][1])
            else:
                cost[kind] = BUILTIN_COST[kind]
    per_case = [r["score_s"] / max(1, len(r.get("cases", [])) * _networks(frameworks.get(r["config"], "cps")))
                for r in fresh if r.get("score_s")]
    s = results.get("settings", {})
    return {"cost": cost, "score_s": statistics.median(per_case) if per_case else BUILTIN_SCORE_S,
            "width": s.get("width", 8), "patch": s.get("patch", 32), "cohort": s.get("cohort", "phantom"),
            "source": "measured runs of the given results.json"}


def paired_sd(results: Mapping[str, Any], config: str = "cps-scdl", reference: str = "cps") -> Optional[dict[str, float]]:
    """sd of the paired per-seed differences ``config - reference`` of a results.json (None: too few seeds)."""
    paired = paired_comparisons(results["runs"], results["classes"], results["small_classes"], reference)
    if config not in paired:
        return None
    sd = {k: paired[config][k]["sd"] for k in ("foreground", "small")}
    n = paired[config]["small"]["n"]
    return sd if n >= 2 and all(math.isfinite(v) for v in sd.values()) else None


def interval(sd: float, n: int) -> tuple[float, float]:
    """(t half-width of the 95 % interval, MDE) of a paired mean difference with n seeds and spread sd."""
    if n < 2:
        return math.inf, math.inf
    df = n - 1
    t1 = _T975[df - 1] if df <= 30 else 1.960
    t2 = _T80[df - 1] if df <= 30 else 0.842
    return t1 * sd / math.sqrt(n), (t1 + t2) * sd / math.sqrt(n)


def seeds_needed(sd: float, half_width: float, limit: int = 200, *, mde: bool = False) -> Optional[int]:
    """Fewest seeds whose 95 % half-width (or, with ``mde``, minimum detectable effect) is below ``half_width``."""
    for n in range(2, limit + 1):
        if interval(sd, n)[1 if mde else 0] < half_width:
            return n
    return None


#: The paper's SCDL lift on Synapse 20 % with GA-CPS (66.29 -> 67.50, METHOD.md §6), Dice points.
PAPER_LIFT_POINTS = 1.2


def plan_seconds(settings: Any, configurations: Sequence[Any], model: Mapping[str, Any], n_seeds: Optional[int] = None,
                 cohort_exists: bool = False) -> dict[str, Any]:
    """Wall-time estimate of ``configurations`` x seeds (``n_seeds`` or the settings') at ``settings``' budget."""
    n = len(settings.seeds) if n_seeds is None else int(n_seeds)
    scale = (settings.patch / model["patch"]) ** 3 * (settings.width / model["width"])
    score_factor = COHORT_SCORE_FACTOR[settings.cohort] / COHORT_SCORE_FACTOR[model.get("cohort", "phantom")]
    train = score = 0.0
    for c in configurations:
        per_it, startup = model["cost"][run_kind(c.framework)]
        train += n * (startup + per_it * scale * settings.iterations)
        score += n * model["score_s"] * scale * _networks(c.framework) * settings.test * score_factor
    cases = settings.labeled + settings.unlabeled + settings.test
    cohort = 0.0 if cohort_exists else COHORT_S_PER_CASE[settings.cohort] * cases
    return {"runs": n * len(configurations), "seeds": n, "train_s": train, "score_s": score, "cohort_s": cohort,
            "total_s": train + score + cohort, "extrapolated": scale != 1.0, "scale": scale}


def estimate_text(settings: Any, configurations: Sequence[Any], *, calibration: Optional[Mapping[str, Any]] = None,
                  sd_results: Optional[Mapping[str, Any]] = None, target_points: float = 2.0,
                  budget_min: float = 90.0, cohort_exists: bool = False) -> str:
    """The ``--estimate`` report: plan, wall time, and the interval the plan would give."""
    model = dict(calibration) if calibration else {"cost": BUILTIN_COST, "score_s": BUILTIN_SCORE_S, **BUILTIN_CALIBRATION}
    est = plan_seconds(settings, configurations, model, cohort_exists=cohort_exists)
    lines = [
        f"Plan: {len(configurations)} configurations ({', '.join(c.name for c in configurations)}) x {est['seeds']} seeds "
        f"= {est['runs']} runs of {settings.iterations} iterations; cohort {settings.cohort}, {settings.labeled} labeled + "
        f"{settings.unlabeled} unlabeled / {settings.test} test, width {settings.width}, {settings.patch}³, "
        f"{settings.spacing_mm:g} mm, device {settings.device}.",
        f"Estimated wall time: {est['total_s'] / 60:.1f} min (training {est['train_s'] / 60:.1f} min, scoring "
        f"{est['score_s'] / 60:.1f} min, cohort {est['cohort_s'] / 60:.1f} min); cost model: {model['source']}"
        + (f"; extrapolated x{est['scale']:.2f} from width {model['width']}, {model['patch']}³" if est["extrapolated"] else "")
        + ".",
    ]
    if not str(settings.device).startswith("cpu"):
        lines.append("The cost model is of this CPU; a GPU run is not modelled (the estimate is an upper bound at best).")
    sd, source = (paired_sd(sd_results), "the given results.json") if sd_results else (None, "")
    if sd is None:
        sd, source = dict(BUILTIN_SD), BUILTIN_SD_SOURCE
    lines += ["", f"Interval of the paired mean difference cps-scdl - cps, from the spread of the per-seed differences of "
                  f"{source} (sd: foreground {100 * sd['foreground']:.2f}, smallest organs {100 * sd['small']:.2f} points):",
              "", "| metric | seeds | 95 % half-width (t) | MDE | seeds for half-width < "
                  f"{target_points:g} points (wall time) | seeds for MDE < {PAPER_LIFT_POINTS:g} points, the paper's "
                  "lift (wall time) |", "|---|---:|---:|---:|---:|---:|"]

    def need_cell(n: Optional[int]) -> str:
        if not n:
            return "> 200"
        return f"{n} ({plan_seconds(settings, configurations, model, n, cohort_exists)['total_s'] / 60:.0f} min)"

    for key, label in (("foreground", "foreground"), ("small", "smallest organs")):
        half, mde = interval(sd[key], est["seeds"])
        lines.append(f"| {label} | {est['seeds']} | {'n/a' if not math.isfinite(half) else f'±{100 * half:.1f}'} | "
                     f"{'n/a' if not math.isfinite(mde) else f'{100 * mde:.1f}'} | "
                     f"{need_cell(seeds_needed(sd[key], target_points / 100.0))} | "
                     f"{need_cell(seeds_needed(sd[key], PAPER_LIFT_POINTS / 100.0, mde=True))} |")
    within = est["total_s"] <= budget_min * 60
    lines += ["", f"This plan {'fits' if within else 'does NOT fit'} a {budget_min:g}-min budget on this machine. The sd "
                  "is that of the run it was measured on; another cohort or budget has its own (run a few seeds first)."]
    return "\n".join(lines) + "\n"
