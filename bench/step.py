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

3. ``--cpu-options``: what PyTorch offers for a CPU training step, at the default model's settings (CPS+SCDL,
   width 8, 64 × 64 × 32 patches, 14 classes): float32 (the reference), ``channels_last_3d`` memory format,
   bfloat16 autocast, ``torch.compile`` (inductor) and 1 vs 2 threads. Every variant starts from the same weights
   and batch, the variants run interleaved round after round in one process (same machine load), and the table
   gives the wall-time ratio to float32 (median of per-round ratios) and the largest relative difference of the
   total loss from float32's over the steps (equal losses = the same training).

    python bench/step.py --cpu-options --repeats 4
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
from pathlib import Path

from scdl.training.config import Framework

FRAMEWORKS = tuple(f.value for f in (Framework.SUPERVISED, Framework.CPS, Framework.CPS_SCDL))


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


def _one_step(torch, step, opt, batch) -> None:  # noqa: ARG001 - torch: the callers pass it
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


from cpu_variants import REFERENCE, TRAINING, VARIANTS, apply  # noqa: E402 - beside this script


def cpu_options_worker(args: argparse.Namespace) -> None:
    """The CPU variants interleaved in one process from identical weights. Prints one JSON line."""
    import copy

    import torch

    from scdl.training.step import TrainingStep

    torch.manual_seed(0)
    arch = {"name": "vnet", "in_channels": 1, "n_classes": args.classes, "n_filters": args.width, "norm": "batch"}
    d, h, w = args.patch
    gen = torch.Generator().manual_seed(0)
    batch = (torch.rand(2, 1, d, h, w, generator=gen), torch.randint(0, args.classes, (2, d, h, w), generator=gen),
             torch.rand(2, 1, d, h, w, generator=gen))
    base = TrainingStep.build(arch, "cps-scdl").train()
    names = [n for n in TRAINING if args.variants is None or n in args.variants]
    steps, opts, calls = {}, {}, {}
    for name in names:
        variant = VARIANTS[name]
        step = copy.deepcopy(base)
        nets, ctx = apply(list(step.networks), variant)       # the SCDL head has no 5-D tensors: networks only
        for i, net in enumerate(nets):
            step.networks[i] = net
        x = batch
        if variant.channels_last:
            x = (batch[0].contiguous(memory_format=torch.channels_last_3d), batch[1],
                 batch[2].contiguous(memory_format=torch.channels_last_3d))
        steps[name], opts[name] = step, _sgd(torch, step)
        calls[name] = (variant.threads, ctx, x)
    wall = {n: [] for n in names}
    loss = {n: [] for n in names}
    first = {}
    for r in range(args.warmup + args.repeats):
        for name in names:
            threads, ctx, x = calls[name]
            torch.set_num_threads(threads)
            torch.manual_seed(1000 + r)                       # the same SCDL proxy noise for every variant
            t0 = time.perf_counter()
            with ctx():
                terms = steps[name](*x, progress=0.5)
            opts[name].zero_grad(set_to_none=True)
            terms["total"].backward()
            opts[name].step()
            elapsed = time.perf_counter() - t0
            if r == 0:
                first[name] = elapsed
            loss[name].append(float(terms["total"].detach()))
            if r >= args.warmup:
                wall[name].append(elapsed)
    print(json.dumps({"wall": wall, "loss": loss, "first": first}))


def cpu_options(args: argparse.Namespace) -> int:
    extra = ["--patch", *map(str, args.patch)]
    for v in args.variants or []:
        extra += ["--variant", v]
    cmd = [sys.executable, os.path.abspath(__file__), "--cpu-options-worker", "--width", str(args.width),
           "--classes", str(args.classes), "--warmup", str(args.warmup), "--repeats", str(args.repeats), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return 1
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = REFERENCE
    print(f"CPU training step, CPS+SCDL, VNet width {args.width}, patch {'x'.join(map(str, args.patch))}, "
          f"{args.classes} classes, 2 + 2 patches; {args.warmup} warm-up + {args.repeats} timed rounds, interleaved")
    print(f"{'variant':>30} {'wall med s':>10} {'x float32':>10} {'first step s':>12} {'max |dloss|/loss':>17}")
    out = {}
    for name, w in res["wall"].items():
        ratios = [a / b for a, b in zip(w, res["wall"][ref])]
        dl = max(abs(a - b) / abs(b) for a, b in zip(res["loss"][name], res["loss"][ref]))
        out[name] = {"wall_median_s": statistics.median(w), "ratio": statistics.median(ratios),
                     "first_step_s": res["first"][name], "max_rel_loss_diff": dl}
        print(f"{name:>30} {statistics.median(w):>10.3f} {statistics.median(ratios):>10.3f} "
              f"{res['first'][name]:>12.1f} {dl:>17.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


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
    parser.add_argument("--cpu-options", action="store_true",
                        help="compare channels_last_3d, bfloat16 autocast, torch.compile and threads (see above)")
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"),
                        help="--cpu-options patch, z first (default 32 64 64: the default model's 64x64x32)")
    parser.add_argument("--variant", dest="variants", action="append", choices=TRAINING,
                        help="--cpu-options: only these variants (repeatable; the reference always runs)")
    parser.add_argument("--json", metavar="OUT", help="--cpu-options: also write the table as JSON")
    parser.add_argument("--cpu-options-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory", metavar="FRAMEWORK", help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variants and REFERENCE not in args.variants:
        args.variants = [REFERENCE, *args.variants]
    if args.cpu_options_worker:
        cpu_options_worker(args)
        return 0
    if args.cpu_options:
        if args.width == 16 and "--width" not in (argv or sys.argv):
            args.width = 8
        return cpu_options(args)
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
