"""Benchmark of the training loop WITH the data pipeline: supervised vs CPS vs CPS+SCDL on the same cohort.

The cohort is cut from patient A (scdl.training.sample_cohort: 2 labeled, 2 unlabeled, 1 validation crop,
TotalSegmentator labels mapped to Synapse) and preprocessed once into a cache shared by all runs. Each
framework then trains in its own child process through scdl.training.trainer.Trainer, exactly as
``scdl train`` does (memory-mapped cache, class-aware sampling, augmentation, DataLoader workers, SGD + poly),
for ``--warmup`` + ``--iterations`` steps without validation. Reported per framework, over the timed steps:

- it/s (wall clock) and CPU s/it of the training process (its own CPU time; loader workers not included);
- data wait: the fraction of wall time the loop spent in ``next(loader)`` waiting for a batch;
- peak RSS: ``ru_maxrss`` of the training process and, separately, the largest ``VmHWM`` of its loader workers
  (sampled from /proc every 0.2 s while they live; a forked worker's RSS counts pages it shares with the
  training process, so the two do not add up).

    python bench/train.py                                  # cpu preset: width 8, 48^3, 4 mm, 1 worker, 1 thread
    python bench/train.py --width 16 --patch 96 --spacing 1.5 --device cuda --workers 4 --threads 0
    python bench/train.py --anatomy 4 --frameworks cps-scdl     # + 4 label-only cases synthesised per sample

``--anatomy N`` adds N label-only ("anatomy") cases to the labeled side (patient A's label map and the
TotalSegmentator dataset maps s0001, s0004, s0006): each time one is sampled, the loader worker synthesises a
fresh CT patch from it (scdl.synth), so the data-wait share then includes the synthesis.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scdl.training.config import Framework

FRAMEWORKS = tuple(f.value for f in (Framework.SUPERVISED, Framework.CPS, Framework.CPS_SCDL))
SHARED = Path(os.environ.get("SCDL_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))


def _config(args: argparse.Namespace, framework: str, cache: str) -> dict:
    from scdl.training.config import resolve_config

    p, s = args.patch, args.spacing
    return resolve_config("cpu", values={"framework": framework, "iterations": args.warmup + args.iterations},
                          overrides=[f"patch_size=[{p},{p},{p}]", f"preprocessing.spacing_mm=[{s},{s},{s}]",
                                     f"network.n_filters={args.width}", f"data.num_workers={args.workers}",
                                     f"threads={args.threads}", "log_every=1", "validation.every=-1",
                                     "checkpoint_every=100000", f'data.cache_dir="{cache}"'])


def _children_peak_kib(stop, peak: list) -> None:
    """Largest VmHWM of this process's children (the loader workers), sampled until ``stop`` is set."""
    pid = os.getpid()
    while not stop.is_set():
        kids = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kids += (task / "children").read_text().split()
            except OSError:
                pass
        for kid in kids:
            try:
                for line in Path(f"/proc/{kid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
        stop.wait(0.2)


def _worker(args: argparse.Namespace) -> None:
    import csv
    import threading

    from scdl.training.cohort import load_manifest
    from scdl.training.trainer import Trainer

    cfg = _config(args, args.worker, args.cache)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, load_manifest(args.manifest), Path(run) / "run", device=args.device)
        trainer.prepare()
        stop, worker_peak = threading.Event(), [0]
        sampler = threading.Thread(target=_children_peak_kib, args=(stop, worker_peak), daemon=True)
        sampler.start()
        cpu0 = time.process_time()
        trainer.run(stop_at=args.warmup + args.iterations)
        cpu = time.process_time() - cpu0
        stop.set()
        sampler.join()
        with (Path(run) / "run" / "log.csv").open() as handle:
            rows = list(csv.DictReader(handle))
    timed = rows[args.warmup:]
    seconds = [1.0 / float(r["it_per_s"]) for r in timed]
    wait = sum(float(r["data_wait"]) * t for r, t in zip(timed, seconds))
    peak_cuda = None
    try:
        import torch

        if torch.cuda.is_available():
            peak_cuda = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps({
        "framework": args.worker, "it_per_s": len(seconds) / sum(seconds), "s_per_it": sum(seconds) / len(seconds),
        "cpu_s_per_it_incl_warmup": cpu / (args.warmup + args.iterations),
        "data_wait_fraction": wait / sum(seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_rss_mib": worker_peak[0] / 1024,
        "peak_cuda_mib": peak_cuda, "last_total_loss": float(timed[-1]["total"])}))


#: Label maps of the anatomy cases, under the shared data folder (TotalSegmentator v2 values).
ANATOMY = ("totalsegmentator_fixtures/example_seg_fast_force_split.nii.gz", "totalsegmentator_dataset/s0001_seg.nii.gz",
           "totalsegmentator_dataset/s0004_seg.nii.gz", "totalsegmentator_dataset/s0006_masks")


def add_anatomy(manifest: Path, count: int) -> list[str]:
    """Append ``count`` label-only rows (no image) to ``manifest``; returns their names."""
    import csv

    from scdl.training.cohort import write_manifest

    if not count:
        return []
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    base = manifest.parent
    for row in rows:                                    # write_manifest keeps paths as given: make them absolute
        for key in ("image", "label"):
            if row.get(key):
                row[key] = str((base / row[key]).resolve())
    extra = [{**{c: "" for c in columns}, "image": "", "label": str(SHARED / "data" / rel), "split": "train",
              "labels": "totalsegmentator_v2"} for rel in ANATOMY[:count]]
    for key in ("labels",):
        if key not in columns:
            columns.append(key)
    write_manifest(manifest, rows + extra, columns)
    return [Path(rel).name for rel in ANATOMY[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per framework")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--width", type=int, default=8, help="n_filters (cpu preset: 8)")
    parser.add_argument("--patch", type=int, default=48, help="cubic patch size (cpu preset: 48)")
    parser.add_argument("--spacing", type=float, default=4.0, help="mm (cpu preset: 4)")
    parser.add_argument("--workers", type=int, default=1, help="loader processes (cpu preset: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS))
    parser.add_argument("--anatomy", type=int, default=0, choices=range(0, 5), metavar="N",
                        help="label-only cases synthesised per sample, 0-4 (default 0)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    from scdl.labels.table import LabelTable
    from scdl.training.cache import PreprocessCache
    from scdl.training.checks import check_cohort
    from scdl.training.cohort import load_manifest
    from scdl.training.sample_cohort import make_crop_cohort
    from scdl.training.trainer import _preprocessing_block

    fixtures = SHARED / "data" / "totalsegmentator_fixtures"
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_crop_cohort(fixtures / "example_ct.nii.gz", fixtures / "example_seg_fast_force_split.nii.gz",
                                    Path(tmp) / "cohort")
        anatomy = add_anatomy(manifest, args.anatomy)
        cache = str(Path(tmp) / "cache")
        cfg = _config(args, "supervised", cache)
        t0 = time.monotonic()
        report, cases = check_cohort(load_manifest(manifest), LabelTable.load("synapse"),
                                     cache=PreprocessCache(cache, _preprocessing_block(cfg), LabelTable.load("synapse")),
                                     prepare=True)
        shape = next(iter(cases.values())).shape
        if anatomy:
            print(f"anatomy cases (label maps, a CT synthesised per sample): {', '.join(anatomy)}")
        print(f"cohort: 5 crops of patient A, preprocessed to {shape} (D, H, W) at {args.spacing} mm in "
              f"{time.monotonic() - t0:.1f} s; patch {args.patch}^3, width {args.width}, batch 2 labeled + 2 "
              f"unlabeled, {args.workers} loader worker(s), {args.threads or 'default'} torch thread(s), "
              f"device {args.device}; {args.warmup} warm-up + {args.iterations} timed iterations", flush=True)
        print(f"load average before: {os.getloadavg()[0]:.2f} (2-core machine shared with other jobs)", flush=True)
        results = []
        for framework in args.frameworks:
            cmd = [sys.executable, __file__, "--worker", framework, "--manifest", str(manifest), "--cache", cache,
                   "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--width", str(args.width),
                   "--patch", str(args.patch), "--spacing", str(args.spacing), "--workers", str(args.workers),
                   "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{framework} failed")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{framework:>11}: {r['it_per_s']:.3f} it/s ({r['s_per_it']:.2f} s/it; CPU "
                  f"{r['cpu_s_per_it_incl_warmup']:.2f} s/it incl. warm-up), data wait "
                  f"{100 * r['data_wait_fraction']:.1f}%, peak RSS {r['peak_rss_mib']:.0f} MiB "
                  f"(worker {r['peak_worker_rss_mib']:.0f} MiB, shared pages included)"
                  + (f", peak CUDA {r['peak_cuda_mib']:.0f} MiB" if r["peak_cuda_mib"] else ""), flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        by = {r["framework"]: r for r in results}
        if "cps" in by and "cps-scdl" in by:
            print(f"CPS+SCDL / CPS per iteration: wall {by['cps-scdl']['s_per_it'] / by['cps']['s_per_it']:.2f}x, "
                  f"CPU {by['cps-scdl']['cpu_s_per_it_incl_warmup'] / by['cps']['cpu_s_per_it_incl_warmup']:.2f}x "
                  "(CPU time is less sensitive to other jobs on a shared machine)")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
