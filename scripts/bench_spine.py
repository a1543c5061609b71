"""Benchmark the spine stage (segmentation with level labelling, then measurements) on one sample study.

    python scripts/bench_spine.py --threads 2 [--study sample_data/nmh_case]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from pipeline.core.config import load_config
from pipeline.core.layout import StudyDir
from pipeline.io.study import ingest_study
from pipeline.workflow import spine, stages

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--study", type=Path, default=ROOT / "sample_data" / "nmh_case")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ingest_study(args.study, out)
        t0 = time.perf_counter()
        models = stages.bundle_cache()
        models.get(load_config("default")["segment"]["spine_bundle"])  # the configured bundles, before the timing
        spine.configured_level_bundle(models.get)
        load = time.perf_counter() - t0
        seg, meas = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            spine.segment(StudyDir(out), models)
            seg.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            spine.measure(StudyDir(out))
            meas.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.study.name}, {args.threads} threads: bundle load {load:.2f} s; spine segment (1 sagittal + "
          f"axial stacks) best {min(seg):.2f} s; spine measure best {min(meas):.2f} s; total best "
          f"{min(seg) + min(meas):.2f} s; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
