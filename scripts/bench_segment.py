"""Benchmark the calf segmentation: bundle load time, and inference on a 2 x 40 x 256 x 256 Dixon study on N threads.

    python scripts/bench_segment.py --threads 2
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from pipeline.core.config import load_config
from pipeline.core.volume import Volume
from pipeline.segment.bundle import load_bundle
from pipeline.synth.calf import CalfSpec, generate_calf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # a 256 x 256 x 40 phantom study at 1.0 mm in-plane, 6 mm slices
    ph = generate_calf(CalfSpec(n_slices=40, slice_mm=6.0, in_plane_mm=1.0), seed=7, fast=True)
    w, f = ph.volume("calf_water"), ph.volume("calf_fat")
    pad = [(0, max(0, 256 - s)) for s in w.shape[:2]] + [(0, 0)]
    water = Volume(np.pad(w.array, pad)[:256, :256], w.affine)
    fat = water.with_array(np.pad(f.array, pad)[:256, :256])
    name = load_config("default")["segment"]["calf_bundle"]
    t0 = time.perf_counter()
    bundle = load_bundle(name)
    first_s = time.perf_counter() - t0  # includes importing MONAI's network modules, once per process
    t0 = time.perf_counter()
    bundle = load_bundle(name)
    load_s = time.perf_counter() - t0
    bundle.predict([water, fat])  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bundle.predict([water, fat])
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"input 2 x {water.shape[2]} x {water.shape[0]} x {water.shape[1]}, {args.threads} threads")
    print(f"bundle load: first {first_s:.2f} s (with the MONAI imports), then {load_s:.2f} s; inference: median {np.median(times):.2f} s (min {min(times):.2f}, "
          f"max {max(times):.2f}); peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
