"""Benchmark of one training step: supervised vs CPS vs CPS+SCDL, seconds per step and peak memory (CPU).

All runs use the same random batch (2 labeled + 2 unlabeled patches, seed 0) and do forward, backward and
an SGD step. Per patch size:

1. Peak memory: one child process per framework runs ``--memory-steps`` steps (default 1); its peak is the
   resident-set high-water mark ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux) read at its
   end, so each framework's peak is its own. "built" is the RSS after building the networks. The peak
   creeps up by a few per cent over later steps (allocator growth).
2. Time: ONE child process holds the three steps (sharing networks A and B, SCDL adds its head) and runs
   them interleaved, round after round (1 warm-up round + N timed rounds), so that the three frameworks
   see the same machine load; it reports wall seconds and process CPU seconds per step. With one torch
   thread (default), CPU seconds are much less sensitive to other processes on a shared machine than wall
   seconds, and the SCDL/CPS ratio is taken from them (median of the per-round ratios).

    python bench/step.py                       # 64³ and 96³, width 16, 14 classes, 1 warm-up + 3 rounds, 1 thread
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


def _setup(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = args.size
    arch = {"name": "vnet", "in_channels": 1, "n_classes": args.classes, "n_filters": args.width, "norm": "batch"}
    batch = (torch.rand(2, 1, s, s, s), torch.randint(0, args.classes, (2, s, s, s)), torch.rand(2, 1, s, s, s))
    return torch, arch, batch


def _one_step(torch, step, opt, batch) -> None:
    terms = step(*batch, progress=0.5)
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()


def _sgd(torch, step):
    return torch.optim.SGD(step.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def memory_worker(args: argparse.Namespace) -> None:
    """One framework in its own process: peak RSS. Prints one JSON line."""
    torch, arch, batch = _setup(args)
    from scdl.training.step import TrainingStep

    step = TrainingStep.build(arch, args.framework).train()
    opt = _sgd(torch, step)
    built = _rss_now_kib()
    for _ in range(args.memory_steps):
        _one_step(torch, step, opt, batch)
    print(json.dumps({"framework": args.framework, "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "rss_built_kib": built}))


def timing_worker(args: argparse.Namespace) -> None:
    """The three frameworks interleaved in one process. Prints one JSON line."""
    torch, arch, batch = _setup(args)
    from scdl.training.step import TrainingStep

    cps_scdl = TrainingStep.build(arch, "cps-scdl").train()
    nets = list(cps_scdl.networks)
    steps = {
        "supervised": TrainingStep(nets[:1], "supervised").train(),
        "cps": TrainingStep(nets, "cps").train(),
        "cps-scdl": cps_scdl,
    }
    opts = {name: _sgd(torch, step) for name, step in steps.items()}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.warmup + args.repeats):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            _one_step(torch, step, opts[name], batch)
            if r >= args.warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    print(json.dumps({"wall": wall, "cpu": cpu, "threads": torch.get_num_threads()}))


def _child(args: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--size", str(args.size), "--width", str(args.width),
           "--classes", str(args.classes), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--memory-steps", str(args.memory_steps), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(1)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="cubic patch sizes (multiples of 16)")
    parser.add_argument("--width", type=int, default=16, help="VNet n_filters (16: paper)")
    parser.add_argument("--classes", type=int, default=14, help="classes incl. background (14: Synapse)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (one step of each framework per round)")
    parser.add_argument("--memory-steps", type=int, default=1,
                        help="steps of each memory child; the peak creeps up a few %% over later steps "
                             "(allocator growth; measured 442 -> 475 MiB from 1 to 4 steps at 32³, width 4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two threads made step times vary "
                             "10-fold between repeats; 0: torch's default)")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory", metavar="FRAMEWORK", help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory:
        args.framework = args.memory
        memory_worker(args)
        return 0
    if args.timing:
        timing_worker(args)
        return 0

    print(f"training step on CPU: 2 labeled + 2 unlabeled patches, VNet width {args.width}, {args.classes} classes, "
          f"forward + backward + SGD; torch threads: {args.threads or 'default'}")
    print(f"time: one process, frameworks interleaved, {args.warmup} warm-up + {args.repeats} timed rounds; "
          "wall = elapsed s/step, CPU = process CPU s/step")
    print(f"memory: one process per framework ({args.memory_steps} steps), peak RSS = its ru_maxrss "
          "(resident-set high-water mark); built = RSS before the first step")
    print(f"{'patch':>6} {'framework':>11} {'wall med':>9} {'wall min':>9} {'CPU med':>8} {'CPU min':>8} "
          f"{'peak RSS MiB':>13} {'built MiB':>10}", flush=True)
    for size in args.sizes:
        args.size = size
        mem = {fw: _child(args, "--memory", fw) for fw in FRAMEWORKS}
        tim = _child(args, "--timing")
        for fw in FRAMEWORKS:
            w, c = tim["wall"][fw], tim["cpu"][fw]
            print(f"{size:>4}^3 {fw:>11} {statistics.median(w):>9.2f} {min(w):>9.2f} {statistics.median(c):>8.2f} "
                  f"{min(c):>8.2f} {mem[fw]['peak_rss_kib'] / 1024:>13.0f} {mem[fw]['rss_built_kib'] / 1024:>10.0f}")
        key = "cpu" if tim["threads"] == 1 else "wall"
        ratios = [s / c for s, c in zip(tim[key]["cps-scdl"], tim[key]["cps"])]
        ratio = statistics.median(ratios)
        verdict = "meets" if ratio <= 1.15 else "misses"
        print(f"{size:>4}^3 SCDL/CPS: {key} time x{ratio:.3f} (median of per-round ratios "
              f"{', '.join(f'{r:.3f}' for r in ratios)}; {verdict} the 1.15 target); "
              f"peak RSS x{mem['cps-scdl']['peak_rss_kib'] / mem['cps']['peak_rss_kib']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
