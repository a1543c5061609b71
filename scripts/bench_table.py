"""Markdown tables of a ``scripts/bench.py`` run (for the README): per study and stage wall / CPU / peak memory, time
per voxel, and the batch throughput.

    python scripts/bench_table.py bench_out
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = ("ingest", "segment", "measure", "rules", "report")


def tables(bench: dict) -> str:
    ok = sorted((r for r in bench["results"] if "error" not in r), key=lambda r: r["voxels"])
    lines = ["| study | voxels (M) | " + " | ".join(STAGES) + " | stages | process | peak RSS (GiB) | s per Mvox | load |",
             "|---|---:|" + "---:|" * len(STAGES) + "---:|---:|---:|---:|---|"]
    for r in ok:
        cells = [f"{r['stages'][s]['wall_s']:.1f} / {r['stages'][s]['cpu_s']:.1f}" for s in STAGES]
        lines.append(f"| {r['study']} | {r['voxels'] / 1e6:.1f} | " + " | ".join(cells)
                     + f" | {r['stages_wall_s']:.1f} / {r['stages_cpu_s']:.1f} | {r['process_wall_s']:.1f}"
                     f" | {max(st['peak_rss_mib'] for st in r['stages'].values()) / 1024:.2f} | {r['stages_wall_s'] / (r['voxels'] / 1e6):.2f}"
                     f" | {r['load1_before']:.1f}-{r['load1_after']:.1f} |")
    lines += ["", "| study | " + " | ".join(f"{s} peak RSS (GiB)" for s in STAGES) + " |",
              "|---|" + "---:|" * len(STAGES)]
    for r in ok:
        lines.append(f"| {r['study']} | " + " | ".join(f"{r['stages'][s]['peak_rss_mib'] / 1024:.2f}" for s in STAGES)
                     + " |")
    if bench.get("batch"):
        lines += ["", "| batch | studies | wall (s) | studies/hour | load |", "|---|---:|---:|---:|---|"]
        for b in bench["batch"]:
            lines.append(f"| -j {b['jobs']} | {b['studies']} | {b['wall_s']:.0f} | {b['studies_per_hour']:.0f} | "
                         f"{b['load1_before']:.1f}-{b['load1_after']:.1f} |")
    if bench.get("calf_growth_exponent") is not None:
        lines += ["", f"Calf studies: wall time ~ voxels^{bench['calf_growth_exponent']:.2f} (1 = linear)."]
    m = bench.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu')}, {m.get('usable_cpus')} usable CPUs, {m.get('memory_gib')} GiB; "
                  f"{m.get('os')}; Python {m.get('python')}, torch {m.get('torch')}; {bench.get('threads')} threads."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "bench_out")
    print(tables(json.loads((out / "bench.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
