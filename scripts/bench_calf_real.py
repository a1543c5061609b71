"""Benchmark the calf segmentation with its QC passes on the shared real calf study (448 x 210 x 96), after the model
is loaded: the network pass with the entropy map, the sided label map (with the folded-in slices left out) and the
test-time flip pass, each timed.

    python scripts/bench_calf_real.py [--real-root ../shared/real_mri] [--threads 2] [--repeats 3]

The input is the in-phase echo (TE 4.60 ms), the image the calf driver gives a one-input bundle for this study
(``pipeline.workflow.calf.network_inputs``); the bundle is the configuration's ``calf_computed_water_fat_bundle``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.calf.extent import without_folds
from pipeline.calf.legs import sided_label_map
from pipeline.calf.metrics import slice_axis
from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.io.nifti import load_volume
from pipeline.segment.bundle import load_bundle
from pipeline.workflow.calf import flip_check, leave_out_slices

INPHASE = "calf_dixon3d_siemens/0028-dix3d_TR23_448m_fa05_460.nii.gz"


def run_once(bundle, image, reg, seg_cfg, calf_cfg, qc_cfg) -> dict[str, float]:
    """Seconds per step of one segmentation of ``image`` with its QC passes."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    classes, entropy = bundle.predict_entropy([image])
    t["network + entropy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels, sides = sided_label_map(classes, reg, seg_cfg["min_component_ml"])
    labels, folds = leave_out_slices(labels, [image], reg, calf_cfg)
    t["sided label map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    legs = without_folds([(leg.side, leg.mask) for leg in sides.legs], folds, slice_axis(labels))
    if qc_cfg["flip_check"]:
        flip_check(bundle, [image], classes, legs, reg.classes, int(qc_cfg["flip_check_every_nth_slice"]), "cpu")
    t["flip pass"] = time.perf_counter() - t0
    t["total"] = sum(t.values())
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-root", type=Path, default=Path("../shared/real_mri"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = args.real_root / INPHASE
    if not path.exists():
        raise SystemExit(f"{path} not found: give --real-root, the folder holding calf_dixon3d_siemens/")
    image = load_volume(path)
    seg_cfg = load_config("default")["segment"]
    qc_cfg = load_config("qc")["calf"]
    calf_cfg = load_config("default")["calf"]
    bundle = load_bundle(seg_cfg["calf_computed_water_fat_bundle"])
    reg = registry("calf")
    run_once(bundle, image, reg, seg_cfg, calf_cfg, qc_cfg)  # warm-up: first-call allocations and kernel choice
    runs = [run_once(bundle, image, reg, seg_cfg, calf_cfg, qc_cfg) for _ in range(args.repeats)]
    print(f"{bundle.name} {bundle.metadata.get('version')}, input {' x '.join(map(str, image.shape))}, "
          f"{args.threads} threads, flip pass on every n-th slice (n = {qc_cfg['flip_check_every_nth_slice']}), "
          f"median of {args.repeats}:")
    for step in runs[0]:
        print(f"  {step:18s} {np.median([r[step] for r in runs]):6.2f} s")


if __name__ == "__main__":
    main()
