"""End-to-end benchmark (``make bench``): wall time per study and per stage, and peak memory, on 2 CPU threads.

Each study of ``sample_data/`` (or ``--root``) runs in its own process (so its peak resident memory is its own):
ingest, segment, measure, rules, report, each timed with ``time.perf_counter``; peak memory is the process's
``ru_maxrss``. Writes ``OUT/bench.json`` and prints a table.

    python scripts/bench.py --out bench_out [--root sample_data] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("ingest", "segment", "measure", "rules", "report")


def bench_one(study: Path, out: Path, threads: int) -> dict:
    """Run the stages of one study in this process; returns seconds per stage, total and peak memory (MiB)."""
    import torch

    torch.set_num_threads(threads)
    from pipeline.workflow import stages

    times: dict[str, float] = {}
    t_all = time.perf_counter()
    for name in STAGES:
        t0 = time.perf_counter()
        if name == "ingest":
            stages.ingest(study, out)
        else:
            getattr(stages, name)(out)
        times[name] = round(time.perf_counter() - t0, 2)
    total = round(time.perf_counter() - t_all, 2)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
    return {"study": study.name, "stages_s": times, "total_s": total, "peak_rss_mib": round(peak_mib, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(bench_one(args.one, args.out, args.threads)))
        return 0
    from pipeline.workflow.batch import find_studies

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    results = []
    for study in find_studies(args.root):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", str(study), "--out", str(args.out / study.name),
                               "--threads", str(args.threads)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            results.append({"study": study.name, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        rec["process_wall_s"] = round(time.perf_counter() - t0, 2)  # includes interpreter and library start-up
        results.append(rec)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"threads": args.threads, "results": results}, indent=1))
    print(f"{'study':<12}" + "".join(f"{s:>9}" for s in STAGES) + f"{'total':>9}{'process':>9}{'peak MiB':>10}")
    for r in results:
        if "error" in r:
            print(f"{r['study']:<12} failed: {r['error']}")
            continue
        print(f"{r['study']:<12}" + "".join(f"{r['stages_s'][s]:>9.2f}" for s in STAGES)
              + f"{r['total_s']:>9.2f}{r['process_wall_s']:>9.2f}{r['peak_rss_mib']:>10.0f}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
