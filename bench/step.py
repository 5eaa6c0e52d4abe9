"""Benchmark of one training step: supervised vs CPS vs CPS+SCDL, seconds per step and peak memory (CPU).

Every (patch size, framework) runs in its own child process on the same random batch (2 labeled +
2 unlabeled patches, seed 0): forward, backward and an SGD step, 1 warm-up + N timed repeats. Peak memory
is the child's resident-set high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on
Linux), read at the end of the child, so each configuration's peak is its own; the RSS after building
the networks (before the first step) is printed too. Prints the SCDL/CPS time and memory ratios
(target: time ratio <= 1.15).

    python bench/step.py                       # 64³ and 96³, width 16, 14 classes, 1 warm-up + 3 repeats, 1 thread
    python bench/step.py --sizes 64 --repeats 5 --threads 0   # torch's default thread count
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

FRAMEWORKS = ("supervised", "cps", "cps-scdl")


def _rss_now_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def worker(args: argparse.Namespace) -> None:
    """One configuration; prints one JSON line."""
    import torch

    from scdl.training.step import TrainingStep

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = args.size
    arch = {"name": "vnet", "in_channels": 1, "n_classes": args.classes, "n_filters": args.width, "norm": "batch"}
    step = TrainingStep.build(arch, args.framework)
    step.train()
    xl = torch.rand(2, 1, s, s, s)
    yl = torch.randint(0, args.classes, (2, s, s, s))
    xu = torch.rand(2, 1, s, s, s)
    opt = torch.optim.SGD(step.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    rss_built = _rss_now_kib()
    times, cpu_times = [], []
    for i in range(args.warmup + args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        terms = step(xl, yl, xu, progress=0.5)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    print(json.dumps({
        "size": s, "framework": args.framework, "times": times, "cpu_times": cpu_times,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rss_built_kib": rss_built,
        "threads": torch.get_num_threads(), "terms": {k: float(v) for k, v in terms.items()},
    }))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="cubic patch sizes (multiples of 16)")
    parser.add_argument("--width", type=int, default=16, help="VNet n_filters (16: paper)")
    parser.add_argument("--classes", type=int, default=14, help="classes incl. background (14: Synapse)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two threads made step times vary "
                             "10-fold between repeats; 0: torch's default)")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    common = ["--width", str(args.width), "--classes", str(args.classes), "--warmup", str(args.warmup),
              "--repeats", str(args.repeats), "--threads", str(args.threads)]
    print(f"training step on CPU: 2 labeled + 2 unlabeled patches, VNet width {args.width}, {args.classes} classes, "
          f"{args.warmup} warm-up + {args.repeats} timed steps (forward + backward + SGD), one child process per row")
    print("peak RSS = the child's ru_maxrss (resident-set high-water mark); 'built' = RSS before the first step")
    print("wall = elapsed seconds per step; CPU = process CPU seconds per step (with 1 thread, robust to other load "
          "on a shared machine; the ratio uses it)")
    print(f"{'patch':>6} {'framework':>11} {'wall med':>9} {'wall min':>9} {'CPU med':>8} {'CPU min':>8} "
          f"{'peak RSS MiB':>13} {'built MiB':>10}")
    results: dict[tuple[int, str], dict] = {}
    for size in args.sizes:
        for fw in args.frameworks:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--size", str(size), "--framework", fw, *common]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(size, fw)] = res
            t, c = res["times"], res["cpu_times"]
            print(f"{size:>4}^3 {fw:>11} {statistics.median(t):>9.2f} {min(t):>9.2f} {statistics.median(c):>8.2f} "
                  f"{min(c):>8.2f} "
                  f"{res['peak_rss_kib'] / 1024:>13.0f} {res['rss_built_kib'] / 1024:>10.0f}", flush=True)
        if (size, "cps") in results and (size, "cps-scdl") in results:
            cps, scdl = results[(size, "cps")], results[(size, "cps-scdl")]
            key = "cpu_times" if cps["threads"] == 1 else "times"
            ratio_med = statistics.median(scdl[key]) / statistics.median(cps[key])
            ratio_min = min(scdl[key]) / min(cps[key])
            ratio_m = scdl["peak_rss_kib"] / cps["peak_rss_kib"]
            verdict = "meets" if ratio_med <= 1.15 else "misses"
            what = "CPU" if key == "cpu_times" else "wall"
            print(f"{size:>4}^3 SCDL/CPS: {what} time x{ratio_med:.3f} (medians; {verdict} the 1.15 target), "
                  f"x{ratio_min:.3f} (minima); peak RSS x{ratio_m:.3f}  [torch threads {cps['threads']}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
