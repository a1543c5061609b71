"""End-to-end benchmark (``make bench``): cost per stage against image size, and batch throughput.

Studies (``--cases``, comma-separated; all by default):

* ``samples``    the studies of ``sample_data/`` (DICOM, calf 229 x 119 x 28 and a lumbar study)
* ``real``       the real studies of ``../shared/real_mri`` (or ``--real-root``) when present: the calf 3D Dixon
                 (448 x 210 x 96, in-phase TE 4.60 ms + opposed-phase TE 3.45 ms) and the lumbar sagittal T2
* ``calf3d_448`` phantom calf water + fat at 448 x 210 x 96
* ``calf3d_512`` phantom calf water + fat at 512 x 512 x 160
* ``calf2d_512`` phantom calf water, fat, in-phase and opposed-phase at 512 x 512 x 40
* ``lumbar_512`` phantom lumbar sagittal T2 512 x 512 x 15 with three axial stacks of 512 x 512 x 10

Phantoms are drawn once by :mod:`pipeline.synth` at their own resolution, padded to a square field of view and
resampled (trilinear) to the matrix named; they are written as NIfTI studies with a ``study.yaml`` under
``OUT/studies/`` (reused on the next run).

Each study runs in a fresh process (``--one``) through the stages of ``legmri run`` (the CLI's ingest, segment,
measure, rules, report) with ``--threads`` torch threads. Per stage: wall time, CPU time of the process (all its
threads) and peak resident memory (VmHWM, reset before every stage through ``/proc/self/clear_refs``). The process
time includes interpreter start and imports. Batch throughput: ``legmri batch`` over ``--batch-cases`` with
``-j 1`` and ``-j 2`` (studies per hour). The 1-minute load average is recorded before and after every run: the
figures are only comparable when the machine was otherwise idle.

Writes ``OUT/bench_stages.csv`` (one row per study and stage), ``OUT/bench_studies.csv`` (one row per study),
``OUT/bench_batch.csv``, ``OUT/bench.json`` (all of it with the machine description) and ``OUT/bench.png``.

    python scripts/bench.py --out bench_out [--cases samples,real,calf3d_448] [--threads 2] [--no-batch]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "segment", "measure", "rules", "report")
ALL_CASES = ("samples", "real", "calf3d_448", "calf3d_512", "calf2d_512", "lumbar_512")
REAL_CALF_FILES = {"calf_inphase": "0028-dix3d_TR23_448m_fa05_460.nii.gz",  # TE 4.60 ms
                   "calf_outphase": "0026-dix3d_TR23_448m_fa05_345.nii.gz"}  # TE 3.45 ms


# -- memory and machine -----------------------------------------------------------------------------------------
def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident memory (MiB) since the last :func:`reset_peak_rss` (VmHWM), else of the whole process."""
    hwm = _status_kib("VmHWM")
    return round((hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS and library versions."""
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(_status_kib_meminfo() / 1024**2, 1), "os": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "torch_default_threads": torch.get_num_threads()}


def _status_kib_meminfo() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


# -- one study in this process ----------------------------------------------------------------------------------
def bench_one(study: Path, out: Path, threads: int) -> dict[str, Any]:
    """Run the stages of ``legmri run`` on ``study`` in this process: wall, CPU and peak RSS per stage."""
    import torch

    torch.set_num_threads(threads)
    from pipeline.cli import main as cli

    t_import = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    args = {"ingest": ["ingest", str(study), "--out", str(out)], "segment": ["segment", str(out)],
            "measure": ["measure", str(out)], "rules": ["rules", str(out)], "report": ["report", str(out)]}
    stages: dict[str, dict[str, float]] = {}
    for name in STAGES:
        reset_peak_rss()
        w0, c0 = time.perf_counter(), time.process_time()
        rc = cli(args[name])
        if rc not in (0, None):
            raise SystemExit(f"legmri {name} failed with exit code {rc}")
        stages[name] = {"wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(time.process_time() - c0, 3),
                        "peak_rss_mib": peak_rss_mib()}
    series = json.loads((out / "series.json").read_text())["series"]
    voxels = {s["role"]: int(np.prod(s["shape"])) for s in series if s.get("role") and s.get("shape")}
    return {"study": study.name, "stages": stages, "voxels_by_role": voxels, "voxels": sum(voxels.values()),
            "stages_wall_s": round(sum(s["wall_s"] for s in stages.values()), 3),
            "stages_cpu_s": round(sum(s["cpu_s"] for s in stages.values()), 3),
            "import_s": round(t_import - T_START, 3),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values())}  # ru_maxrss is reset with VmHWM


# -- study folders ----------------------------------------------------------------------------------------------
def _square_resample(vol: Any, matrix: tuple[int, int, int], slice_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the in-plane field of view of ``vol`` to a square (background 0), then resample (trilinear, voxel edges
    kept) to ``matrix``; returns the array and its affine (same field of view, new spacing)."""
    from scipy import ndimage

    arr = np.asarray(vol.array, np.float32)
    aff = np.array(vol.affine, float)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    in_plane = [a for a in range(3) if a != slice_axis]
    fov = [arr.shape[a] * spacing[a] for a in in_plane]
    side = max(fov)
    pad = [(0, 0)] * 3
    for a, f in zip(in_plane, fov):
        extra = int(round((side - f) / spacing[a]))
        pad[a] = (extra // 2, extra - extra // 2)
        aff[:3, 3] -= aff[:3, a] * (extra // 2)
    arr = np.pad(arr, pad)
    factors = [m / n for m, n in zip(matrix, arr.shape)]
    out = ndimage.zoom(arr, factors, order=1, mode="nearest", grid_mode=True)
    new = aff.copy()
    for a in range(3):
        s = arr.shape[a] / out.shape[a]
        new[:3, a] = aff[:3, a] * s
        new[:3, 3] += aff[:3, a] * (s - 1) / 2  # first voxel centre moves with the voxel edge kept
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16), new


def _write_study(folder: Path, images: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for role, (arr, aff) in images.items():
        img = nib.Nifti1Image(arr, aff)
        img.set_qform(aff, code=1)
        img.set_sform(aff, code=1)
        nib.save(img, str(folder / f"{role}.nii.gz"))
    lines = ["series:"] + [f"  - {{file: {role}.nii.gz, role: {role}}}" for role in images]
    (folder / "study.yaml").write_text("\n".join(lines) + "\n")
    return folder


def make_calf(folder: Path, matrix: tuple[int, int, int], roles: tuple[str, ...], seed: int = 7) -> Path:
    """A phantom calf study at ``matrix`` (rows, columns, slices) with the images ``roles``."""
    from pipeline.synth.calf import CalfSpec, generate_calf

    if (folder / "study.yaml").exists():
        return folder
    ph = generate_calf(CalfSpec(n_slices=24, slice_mm=9.0, in_plane_mm=1.0), seed=seed, fast=True)
    return _write_study(folder, {r: _square_resample(ph.volume(r), matrix, 2) for r in roles})


def make_lumbar(folder: Path, sag: tuple[int, int, int], ax: tuple[int, int, int], seed: int = 7) -> Path:
    """A phantom lumbar study: sagittal T2 at ``sag`` and three axial stacks at ``ax`` (in-plane, in-plane,
    slices)."""
    from pipeline.synth.lumbar import generate_lumbar

    if (folder / "study.yaml").exists():
        return folder
    ph = generate_lumbar(seed=seed, fast=True)
    images = {}
    for s in ph.series:
        v = s.volume
        slice_axis = int(np.argmax(np.linalg.norm(np.asarray(v.affine)[:3, :3], axis=0)))
        target = sag if s.role == "lumbar_sag_t2" else ax
        matrix = [0, 0, 0]
        in_plane = [a for a in range(3) if a != slice_axis]
        matrix[in_plane[0]], matrix[in_plane[1]], matrix[slice_axis] = target
        images[s.role] = _square_resample(v, tuple(matrix), slice_axis)  # type: ignore[arg-type]
    return _write_study(folder, images)


def _copy_in(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` unless an identical-size regular file is there (a link from an older run is
    replaced)."""
    if dst.is_symlink():
        dst.unlink()
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        shutil.copyfile(src, dst)


def make_real(root: Path, folder: Path) -> list[Path]:
    """NIfTI study folders (copies + study.yaml) for the real studies under ``root``: copies, because a study reads
    only its own files (ingestion refuses links that lead outside the study folder)."""
    out = []
    calf = root / "calf_dixon3d_siemens"
    if all((calf / f).exists() for f in REAL_CALF_FILES.values()):
        d = folder / "real_calf"
        d.mkdir(parents=True, exist_ok=True)
        for role, f in REAL_CALF_FILES.items():
            _copy_in(calf / f, d / f"{role}.nii.gz")
        (d / "study.yaml").write_text("series:\n" + "".join(f"  - {{file: {r}.nii.gz, role: {r}}}\n"
                                                            for r in REAL_CALF_FILES))
        out.append(d)
    lumbar = sorted((root / "lumbar_sag_t2").glob("*.nii.gz")) if (root / "lumbar_sag_t2").exists() else []
    if lumbar:
        d = folder / "real_lumbar"
        d.mkdir(parents=True, exist_ok=True)
        _copy_in(lumbar[0], d / "lumbar_sag_t2.nii.gz")
        (d / "study.yaml").write_text("series:\n  - {file: lumbar_sag_t2.nii.gz, role: lumbar_sag_t2}\n")
        out.append(d)
    return out


def studies_for(cases: list[str], out: Path, real_root: Path) -> list[Path]:
    from pipeline.workflow.batch import find_studies

    folder = out / "studies"
    found: list[Path] = []
    for case in cases:
        if case == "samples":
            found += find_studies(ROOT / "sample_data")
        elif case == "real":
            found += make_real(real_root, folder)
        elif case == "calf3d_448":
            found.append(make_calf(folder / case, (448, 210, 96), ("calf_water", "calf_fat")))
        elif case == "calf3d_512":
            found.append(make_calf(folder / case, (512, 512, 160), ("calf_water", "calf_fat")))
        elif case == "calf2d_512":
            found.append(make_calf(folder / case, (512, 512, 40),
                                   ("calf_water", "calf_fat", "calf_inphase", "calf_outphase")))
        elif case == "lumbar_512":
            found.append(make_lumbar(folder / case, (512, 512, 15), (512, 512, 10)))
        else:
            raise SystemExit(f"unknown case {case!r}; known: {', '.join(ALL_CASES)}")
    return found


# -- driver -----------------------------------------------------------------------------------------------------
def run_study(study: Path, out: Path, threads: int, env: dict[str, str]) -> dict[str, Any]:
    """One study in a fresh process; adds the process wall time and the load average before and after."""
    load_before = load1()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--one", str(study), "--out", str(out), "--threads",
                           str(threads)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"study": study.name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec.update(process_wall_s=round(wall, 2), load1_before=load_before, load1_after=load1())
    return rec


def run_batch(studies: list[Path], out: Path, jobs: int, env: dict[str, str]) -> dict[str, Any]:
    """``legmri batch -j jobs`` over links to ``studies``; studies per hour from the wall time of the command."""
    root = out / "batch_root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for s in studies:
        (root / s.name).symlink_to(s.resolve())
    dest = out / f"batch_j{jobs}"
    if dest.exists():
        shutil.rmtree(dest)
    legmri = Path(sys.executable).with_name("legmri")
    load_before = load1()
    t0 = time.perf_counter()
    proc = subprocess.run([str(legmri), "batch", str(root), "--out", str(dest), "-j", str(jobs), "--force"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    return {"jobs": jobs, "studies": len(studies), "wall_s": round(wall, 2),
            "studies_per_hour": round(len(studies) / wall * 3600, 1), "exit_code": proc.returncode,
            "load1_before": load_before, "load1_after": load1(), "names": [s.name for s in studies]}


def loglog_slope(x: list[float], y: list[float]) -> float | None:
    """Exponent b of y ~ x^b by least squares on log-log (1 = linear growth).

    >>> round(loglog_slope([1e6, 2e6, 4e6], [1.0, 2.0, 4.0]), 6)
    1.0
    """
    if len(x) < 2:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def write_outputs(out: Path, results: list[dict[str, Any]], batch: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    ok = [r for r in results if "error" not in r]
    with open(out / "bench_stages.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study", "voxels", "stage", "wall_s", "cpu_s", "peak_rss_mib", "load1_before", "load1_after"])
        for r in ok:
            for name in STAGES:
                st = r["stages"][name]
                w.writerow([r["study"], r["voxels"], name, st["wall_s"], st["cpu_s"], st["peak_rss_mib"],
                            r["load1_before"], r["load1_after"]])
    with open(out / "bench_studies.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study", "voxels", "stages_wall_s", "stages_cpu_s", "process_wall_s", "import_s",
                    "peak_rss_mib", "wall_us_per_voxel", "load1_before", "load1_after"])
        for r in ok:
            w.writerow([r["study"], r["voxels"], r["stages_wall_s"], r["stages_cpu_s"], r["process_wall_s"],
                        r["import_s"], r["peak_rss_mib"], round(1e6 * r["stages_wall_s"] / r["voxels"], 3),
                        r["load1_before"], r["load1_after"]])
    with open(out / "bench_batch.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["jobs", "studies", "wall_s", "studies_per_hour", "exit_code", "load1_before", "load1_after"])
        for b in batch:
            w.writerow([b[k] for k in ("jobs", "studies", "wall_s", "studies_per_hour", "exit_code", "load1_before",
                                       "load1_after")])
    (out / "bench.json").write_text(json.dumps({**meta, "results": results, "batch": batch}, indent=1))
    if ok:
        plot(out / "bench.png", ok)


def plot(path: Path, results: list[dict[str, Any]]) -> None:
    """Wall time per stage and peak memory against the voxel count of the study (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    rs = sorted(results, key=lambda r: r["voxels"])
    vox = np.array([r["voxels"] for r in rs], float)
    for name, marker in zip((*STAGES, "total"), "osD^vx"):
        t = np.array([r["stages_wall_s"] if name == "total" else r["stages"][name]["wall_s"] for r in rs])
        ax1.plot(vox, np.maximum(t, 1e-3), marker=marker, linestyle="", label=name)
    tot = np.array([r["stages_wall_s"] for r in rs])
    ref = np.geomspace(vox.min(), vox.max(), 10)
    ax1.plot(ref, tot[-1] * ref / vox[-1], "k--", lw=0.8, label="linear (through the largest)")
    ax1.set(xscale="log", yscale="log", xlabel="voxels in the study (all series)", ylabel="wall time (s)",
            title="time per stage")
    ax1.legend(fontsize=8)
    for r in rs:
        ax1.annotate(r["study"], (r["voxels"], r["stages_wall_s"]), fontsize=6, rotation=20)
    ax2.plot(vox, [r["peak_rss_mib"] for r in rs], "o", label="process")
    ax2.plot(vox, [max(s["peak_rss_mib"] for s in r["stages"].values()) for r in rs], "x", label="max over stages")
    ax2.set(xscale="log", xlabel="voxels in the study (all series)", ylabel="peak resident memory (MiB)",
            title="peak memory")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_table(results: list[dict[str, Any]], batch: list[dict[str, Any]]) -> None:
    head = f"{'study':<14}{'Mvox':>7}" + "".join(f"{s:>16}" for s in STAGES) + f"{'total':>9}{'process':>9}{'MiB':>7}"
    print("wall s / cpu s / peak MiB per stage")
    print(head)
    for r in sorted(results, key=lambda r: r.get("voxels", 0)):
        if "error" in r:
            print(f"{r['study']:<14} failed: {r['error']}")
            continue
        cells = "".join(f"{r['stages'][s]['wall_s']:>6.1f}/{r['stages'][s]['cpu_s']:>4.1f}/"
                        f"{r['stages'][s]['peak_rss_mib']:>4.0f}" for s in STAGES)
        print(f"{r['study']:<14}{r['voxels'] / 1e6:>7.2f}{cells}{r['stages_wall_s']:>9.1f}{r['process_wall_s']:>9.1f}"
              f"{r['peak_rss_mib']:>7.0f}   load {r['load1_before']}->{r['load1_after']}")
    for b in batch:
        print(f"batch -j {b['jobs']}: {b['studies']} studies in {b['wall_s']} s = {b['studies_per_hour']} studies/hour "
              f"(load {b['load1_before']}->{b['load1_after']})")


T_START = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    ap.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated, from {', '.join(ALL_CASES)}")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per study process (default 2)")
    ap.add_argument("--real-root", type=Path, default=ROOT.parent / "shared" / "real_mri")
    ap.add_argument("--batch-cases", default="samples,real",
                    help="studies of the batch-throughput runs (same names as --cases)")
    ap.add_argument("--batch-jobs", default="1,2", help="comma-separated -j values for the batch runs")
    ap.add_argument("--no-batch", action="store_true", help="skip the batch-throughput runs")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(bench_one(args.one, args.out, args.threads)))
        return 0
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    studies = studies_for([c for c in args.cases.split(",") if c], args.out, args.real_root)
    meta = {"machine": machine(), "threads": args.threads, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load1_start": load1()}
    results = []
    for study in studies:
        results.append(run_study(study, args.out / "runs" / study.name, args.threads, env))
        print_table(results[-1:], [])
        write_outputs(args.out, results, [], meta)
    batch = []
    if not args.no_batch:
        batch_studies = studies_for([c for c in args.batch_cases.split(",") if c], args.out, args.real_root)
        benv = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        for jobs in [int(j) for j in args.batch_jobs.split(",") if j]:
            batch.append(run_batch(batch_studies, args.out, jobs, benv))
    calf = [r for r in results if "error" not in r and r["study"].startswith(("calf3d", "calf2d", "real_calf"))]
    meta["calf_growth_exponent"] = loglog_slope([r["voxels"] for r in calf], [r["stages_wall_s"] for r in calf])
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_outputs(args.out, results, batch, meta)
    print()
    print(json.dumps(meta["machine"]))
    print_table(results, batch)
    if meta["calf_growth_exponent"] is not None:
        print(f"calf studies: wall time ~ voxels^{meta['calf_growth_exponent']:.2f} (1 = linear)")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
