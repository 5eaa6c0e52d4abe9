"""Inference benchmark (a script, not a test): run once, read the printed numbers.

    python bench/inference.py [--json results.json] [--repeats 2] [--skip-rss] [--ensemble 1]

In one run it measures, with a random-weight 16-filter VNet at 3 mm (96^3 windows, overlap 0.5; random
weights time the same as trained ones):

1. end-to-end ``python -m scdl segment`` on patient A (example_ct.nii.gz, 122x101x112 at 3 mm) in a child
   process, wall clock from launch to exit (Python start-up and imports included), plus the phase times
   the command reports; target <= 10 s on 2 CPU cores.
2. the inner sliding-window time of scdl (``predict_volume``, labels streamed slab by slab) against
   ``monai.inferers.sliding_window_inference`` (+ argmax) with the same networks, window, overlap, Gaussian
   blending and input, interleaved ``--repeats`` times; the ratio of medians (target <= 1.0) and whether the
   label maps agree.
3. the peak resident memory (``ru_maxrss`` of the child) of ``scdl segment`` with ``--uncertainty`` on a
   synthetic 512x512x1000 CT (0.8 x 0.8 x 1.0 mm, int16), end to end from an uncompressed NIfTI;
   target <= 24 GB.

4. ``--cpu-options`` (alone): what PyTorch offers for CPU inference, with the bundled default model (trained
   weights: label agreement means something) on patient A: float32 (the reference), ``channels_last_3d``,
   bfloat16 autocast, both, ``torch.compile`` and 1 vs 2 threads, interleaved ``--repeats`` times; per variant
   the median inner time, its ratio to float32, the share of voxels whose label equals float32's and the
   lowest per-organ Dice between the variant's and float32's labels.

    python bench/inference.py --cpu-options --repeats 3

The machine's load average is printed before and after: on a shared machine other work inflates the times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SCDL_SHARED", REPO.parent / "shared"))
PATIENT_A = SHARED / "data" / "totalsegmentator_fixtures" / "example_ct.nii.gz"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def make_package(folder: Path, ensemble: int) -> Path:
    sys.path.insert(0, str(REPO / "Testing"))
    from model_factory import make_tiny_package

    return make_tiny_package(folder / "bench-vnet16-3mm", n_filters=16, ensemble=ensemble, spacing=(3.0, 3.0, 3.0),
                             patch=(96, 96, 96), model_id="bench-vnet16-3mm", seed=0)


def run_child(cmd: list[str]) -> tuple[float, float, str, str, int]:
    """Run a child; returns (wall s, peak RSS GiB of that child alone, stdout, stderr, exit status)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return wall, usage.ru_maxrss / 1024 ** 2, out.read(), err.read(), child.returncode


def end_to_end(package: Path, work: Path) -> dict:
    out = work / "patient_a.seg.nrrd"
    cmd = [sys.executable, "-m", "scdl", "segment", str(PATIENT_A), "-o", str(out), "--model", str(package),
           "--device", "cpu", "--progress", "json"]
    wall, rss, stdout, stderr, code = run_child(cmd)
    if code != 0:
        raise SystemExit(f"segment failed ({code}): {stderr}")
    done = [json.loads(line) for line in stdout.splitlines() if line.strip()][-1]
    return {"wall_s": round(wall, 2), "phases_s": done.get("timings_s"), "peak_rss_gib": round(rss, 2),
            "command": " ".join(cmd)}


def inner(package: Path, repeats: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from scdl.inference.config import InferenceSettings
    from scdl.inference.sliding_window import predict_volume, window_starts
    from scdl.io.image import read_ct
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(package)
    pre = pkg.preprocessor()
    arr, _ = pre.forward(read_ct(PATIENT_A))
    nets = pkg.build_networks("cpu")
    settings = InferenceSettings.from_card(pkg.card)
    config = settings.window_config(pre.patch_size, "cpu")
    volume = torch.from_numpy(arr)

    def ours():
        return predict_volume(volume, nets, config, "cpu").labels

    def monai():
        def predictor(x):
            total = nets[0](x)
            for net in nets[1:]:
                total = total + net(x)
            return total / len(nets)

        with torch.inference_mode():
            logits = sliding_window_inference(volume[None, None], config.roi_size, config.sw_batch_size, predictor,
                                              overlap=config.overlap, mode=config.mode,
                                              sigma_scale=config.sigma_scale)
            return logits[0].argmax(0)

    times = {"scdl": [], "monai": []}
    labels = {}
    with torch.inference_mode():
        nets[0](volume[None, None, :96, :96, :96])  # warm-up (one-off allocations)
    for _ in range(repeats):
        for name, fn in (("scdl", ours), ("monai", monai)):
            start = time.perf_counter()
            labels[name] = fn()
            times[name].append(time.perf_counter() - start)
    agree = float((labels["scdl"].long() == labels["monai"].long()).float().mean())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"input_shape": list(arr.shape),
            "windows_per_run": len(window_starts(arr.shape, config.roi_size, config.overlap)),
            "networks": len(nets), "roi": list(config.roi_size), "overlap": config.overlap,
            "times_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
            "median_s": {k: round(v, 2) for k, v in med.items()}, "ratio_scdl_over_monai": round(med["scdl"] / med["monai"], 3),
            "label_agreement": agree, "torch_threads": torch.get_num_threads()}


from cpu_variants import INFERENCE, REFERENCE, VARIANTS, apply  # noqa: E402 - beside this script


def cpu_options(repeats: int, model: str) -> dict:
    """Inner sliding-window time and labels of each CPU variant against float32 (same weights and input)."""
    import copy

    import torch

    from scdl.inference.config import InferenceSettings
    from scdl.inference.sliding_window import predict_volume
    from scdl.io.image import read_ct
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(model)
    pre = pkg.preprocessor()
    arr, _ = pre.forward(read_ct(PATIENT_A))
    base = pkg.build_networks("cpu")
    config = InferenceSettings.from_card(pkg.card).window_config(pre.patch_size, "cpu")
    volume = torch.from_numpy(arr)
    runs = {}
    for name in INFERENCE:
        nets, ctx = apply([copy.deepcopy(n) for n in base], VARIANTS[name])
        runs[name] = (VARIANTS[name].threads, nets, ctx)
    times = {n: [] for n in runs}
    labels = {}
    first = {}
    for r in range(repeats + 1):                       # round 0: warm-up (compilation, allocations)
        for name, (threads, nets, ctx) in runs.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            with ctx():
                labels[name] = predict_volume(volume, nets, config, "cpu").labels.long()
            elapsed = time.perf_counter() - start
            if r == 0:
                first[name] = elapsed
            else:
                times[name].append(elapsed)
    ref_name = REFERENCE
    ref = labels[ref_name]
    ref_med = statistics.median(times[ref_name])
    out = {}
    for name in runs:
        lab = labels[name]
        dices = []
        for c in range(1, pkg.labels.num_classes):
            a, b = ref == c, lab == c
            n = int(a.sum() + b.sum())
            if n:
                dices.append(2.0 * float((a & b).sum()) / n)
        ratios = [t / r for t, r in zip(times[name], times[ref_name])]
        out[name] = {"median_s": round(statistics.median(times[name]), 3), "ratio": round(statistics.median(ratios), 3),
                     "first_s": round(first[name], 1),
                     "label_agreement": float((lab == ref).float().mean()),
                     "min_organ_dice_vs_float32": round(min(dices), 4) if dices else None}
    return {"model": str(pkg.path), "input_shape": list(arr.shape), "reference_median_s": round(ref_med, 3),
            "variants": out}


SYNTHETIC = r'''
import sys, numpy as np, SimpleITK as sitk
d, h, w = int(sys.argv[2]), 512, 512
yy, xx = np.mgrid[0:h, 0:w]
body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 240.0) ** 2 <= 1.0
organ = ((yy - 230) / 70.0) ** 2 + ((xx - 180) / 90.0) ** 2 <= 1.0
plane = np.where(body, 40, -1000).astype(np.int16)
plane[organ] = 60
arr = np.empty((d, h, w), np.int16)
rng = np.random.default_rng(0)
noise = rng.integers(-20, 21, size=(8, h, w), dtype=np.int16)
for z in range(d):
    arr[z] = plane + noise[z % 8]
img = sitk.GetImageFromArray(arr)
img.SetSpacing((0.8, 0.8, 1.0))
img.SetOrigin((-204.8, -204.8, -500.0))
sitk.WriteImage(img, sys.argv[1], useCompression=False)
'''


def peak_rss(package: Path, work: Path, depth: int) -> dict:
    big = work / f"synthetic_512x512x{depth}.nii"
    subprocess.run([sys.executable, "-c", SYNTHETIC, str(big), str(depth)], check=True)
    cmd = [sys.executable, "-m", "scdl", "segment", str(big), "-o", str(work / "big_labels.nii.gz"),
           "--uncertainty", str(work / "big_uncertainty.nii"), "--model", str(package), "--device", "cpu",
           "--progress", "json"]
    wall, rss, stdout, stderr, code = run_child(cmd)
    if code != 0:
        raise SystemExit(f"segment of the synthetic volume failed ({code}): {stderr}")
    done = [json.loads(line) for line in stdout.splitlines() if line.strip()][-1]
    input_gib = big.stat().st_size / 1024 ** 3
    big.unlink()
    return {"volume": f"512x512x{depth} int16, 0.8x0.8x1.0 mm", "input_file_gib": round(input_gib, 2),
            "peak_rss_gib": round(rss, 2), "wall_s": round(wall, 1), "phases_s": done.get("timings_s")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the inner comparison")
    parser.add_argument("--ensemble", type=int, default=1, help="networks in the benchmark package (CPS pair: 2)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 512x512x1000 memory measurement")
    parser.add_argument("--rss-depth", type=int, default=1000, help=argparse.SUPPRESS)  # smaller: smoke tests only
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--cpu-options", action="store_true",
                        help="only compare CPU variants (channels_last_3d, bfloat16, torch.compile, threads; see 4.)")
    parser.add_argument("--model", default="scdl-abdominal-ct", help="--cpu-options: model package (default: bundled)")
    args = parser.parse_args()
    if args.cpu_options:
        print(_load(), flush=True)
        res = cpu_options(max(1, args.repeats), args.model)
        print(f"CPU inference variants, {res['model']}, patient A {res['input_shape']}: inner sliding window")
        print(f"{'variant':>42} {'median s':>9} {'x float32':>10} {'first s':>8} {'labels = f32':>13} {'min organ Dice':>15}")
        for name, v in res["variants"].items():
            print(f"{name:>42} {v['median_s']:>9.3f} {v['ratio']:>10.3f} {v['first_s']:>8.1f} "
                  f"{100 * v['label_agreement']:>12.3f}% {v['min_organ_dice_vs_float32']!s:>15}")
        res["machine_after"] = _load()
        print(res["machine_after"], flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        return 0

    results: dict = {"machine_before": _load()}
    print(results["machine_before"], flush=True)
    with tempfile.TemporaryDirectory(prefix="scdl-bench-") as tmp:
        work = Path(tmp)
        package = make_package(work, args.ensemble)
        results["package"] = f"VNet n_filters 16, {args.ensemble} network(s), 3 mm, 96^3 windows, overlap 0.5, random weights"
        print(results["package"], flush=True)

        results["end_to_end"] = end_to_end(package, work)
        e2e = results["end_to_end"]
        print(f"[1] end-to-end scdl segment, patient A: {e2e['wall_s']:.2f} s wall (target <= 10 s); "
              f"phases {e2e['phases_s']}; peak RSS {e2e['peak_rss_gib']:.2f} GiB", flush=True)

        results["inner"] = inner(package, args.repeats)
        r = results["inner"]
        print(f"[2] inner sliding window on {r['input_shape']} ({r['windows_per_run']} windows): scdl {r['times_s']['scdl']} s, MONAI "
              f"{r['times_s']['monai']} s; ratio of medians scdl/MONAI = {r['ratio_scdl_over_monai']:.3f} "
              f"(target <= 1.0); labels agree on {100 * r['label_agreement']:.4f} % of voxels", flush=True)

        if not args.skip_rss:
            results["peak_rss"] = peak_rss(package, work, args.rss_depth)
            m = results["peak_rss"]
            print(f"[3] scdl segment --uncertainty on a synthetic {m['volume']}: peak RSS {m['peak_rss_gib']:.2f} GiB "
                  f"(target <= 24 GB), {m['wall_s']:.1f} s wall, phases {m['phases_s']}", flush=True)
    results["machine_after"] = _load()
    print(results["machine_after"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
