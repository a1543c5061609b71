"""Time the multi-echo fat-fraction fits at a real matrix size, and print the phantom error tables of each path.

    python scripts/waterfat_timing.py                      # 448 x 210 x 96 x 3-echo synthetic legs, 2 threads
    python scripts/waterfat_timing.py --study DIR --te 3.45 4.60 5.75 --field 3.0   # NIfTI echoes in DIR (sorted)
    python scripts/waterfat_timing.py --errors             # phantom error tables (tests/calf/test_waterfat.py model)

Set the thread count before numpy loads: this script sets OMP/OPENBLAS/MKL_NUM_THREADS from --threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _legs(shape: tuple[int, int, int], te_ms: list[float], field_t: float, seed: int = 0,
          complex_field_hz: float | None = None):  # noqa: ANN202
    """Two elliptical legs: muscle (FF 5 %, R2* 35 1/s), a 4-voxel subcutaneous fat ring (FF 95 %), a marrow disc
    (FF 98 %, R2* 60 1/s), noise at SNR 50, in an empty background. Magnitudes (Rician), or with
    ``complex_field_hz`` the complex echoes under a left-right field ramp of +-that many Hz."""
    import numpy as np

    from pipeline.calf.waterfat import fat_phasors

    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ff = np.zeros(shape[:2])
    r2 = np.zeros(shape[:2])
    inside = np.zeros(shape[:2], bool)
    for cx in (shape[0] * 0.27, shape[0] * 0.73):
        d = ((x - cx) / (shape[0] * 0.16)) ** 2 + ((y - shape[1] / 2) / (shape[1] * 0.4)) ** 2
        leg = d < 1
        inside |= leg
        ff[leg], r2[leg] = 0.05, 35.0
        ring = leg & (d > 0.8)
        ff[ring] = 0.95
        marrow = ((x - cx) ** 2 + (y - shape[1] * 0.6) ** 2) < (shape[1] * 0.07) ** 2
        ff[marrow], r2[marrow] = 0.98, 60.0
    te = np.asarray(te_ms) * 1e-3
    c = fat_phasors(te, field_t)
    sig = 100.0 * ((1 - ff)[..., None] + ff[..., None] * c) * np.exp(-r2[..., None] * te) * inside[..., None]
    if complex_field_hz is not None:
        sig = sig * np.exp(2j * np.pi * complex_field_hz * ((x - shape[0] / 2) / (shape[0] / 2))[..., None] * te)
    rng = np.random.default_rng(seed)
    out = np.empty((*shape, len(te_ms)), np.complex64 if complex_field_hz is not None else np.float32)
    for k in range(shape[2]):
        noisy = sig + 2.0 * (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape))
        out[:, :, k] = noisy if complex_field_hz is not None else np.abs(noisy)
    return out


def _errors() -> None:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.calf import waterfat as wf
    from tests.calf import test_waterfat as t

    def row(name: str, err: np.ndarray) -> None:
        a = np.abs(err)
        print(f"{name:58s} n={a.size:3d}  median {np.median(a):5.2f} pp  p95 {np.percentile(a, 95):6.2f} pp  "
              f"max {a.max():6.2f} pp")

    s, ff, _, pid = t._phantom(t.MAG_FFS, t.R2S, t.SNRS, t.TE_MAG_MS, seed=1)
    mag = np.abs(s)
    m = wf.fit_magnitude(mag, t.TE_MAG_MS, t.FIELD_T, sigma=100.0 / 60, mask=np.ones(ff.shape, bool))
    row("3-echo magnitude fit, FF 0-45 %", t._patch_errors_pp(m.ff, ff, pid))
    row("2-point IP/OP (echoes 2/1) on the same signals, FF 0-45 %", t._patch_errors_pp(t._two_point(mag, t.TE_MAG_MS),
                                                                                     ff, pid))
    s, ff, _, pid = t._phantom([0.97, 0.99, 1.0], t.R2S, t.SNRS, t.TE_MAG_MS, seed=3)
    m = wf.fit_magnitude(np.abs(s), t.TE_MAG_MS, t.FIELD_T, sigma=100.0 / 60, mask=np.ones(ff.shape, bool))
    row("3-echo magnitude fit, FF 97-100 %", t._patch_errors_pp(m.ff, ff, pid))
    s, ff, _, pid = t._phantom(t.CPLX_FFS, t.R2S, t.SNRS, t.TE_CPLX_MS, seed=7)
    m = wf.fit_magnitude(np.abs(s), t.TE_CPLX_MS, t.FIELD_T, sigma=100.0 / 60, mask=np.ones(ff.shape, bool))
    row("6-echo magnitude fit, FF 0-100 %", t._patch_errors_pp(m.ff, ff, pid))
    for te, name, hz in ((t.TE_CPLX_MS, "6-echo complex fit", 200.0), (t.TE_MAG_MS, "3-echo complex fit", 150.0)):
        s, ff, _, pid = t._phantom(t.CPLX_FFS, t.R2S, t.SNRS, te, seed=4, field_map_hz=hz)
        m = wf.fit_complex(s, te, t.FIELD_T, mask=np.ones(ff.shape, bool))
        row(f"{name}, FF 0-100 %, B0 offsets up to {hz:g} Hz", t._patch_errors_pp(m.ff, ff, pid))
        if te == t.TE_MAG_MS:
            row("2-point IP/OP on the same signals, FF 0-100 %", t._patch_errors_pp(t._two_point(np.abs(s), te),
                                                                                     ff, pid))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--study", type=Path, help="folder of NIfTI magnitude echoes (sorted by name = by echo time)")
    ap.add_argument("--te", type=float, nargs="+", default=[3.45, 4.60, 5.75])
    ap.add_argument("--field", type=float, default=3.0)
    ap.add_argument("--errors", action="store_true", help="print the phantom error tables instead")
    ap.add_argument("--complex", action="store_true", help="time the complex fit (synthetic legs with a B0 field)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.errors:
        _errors()
        return 0
    import numpy as np

    from pipeline.calf.waterfat import fit_complex, fit_magnitude

    if args.complex:
        signal = _legs((448, 210, 96), args.te, args.field, complex_field_hz=150.0)
        t0, c0 = time.perf_counter(), time.process_time()
        maps = fit_complex(signal, args.te, args.field)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"complex fit of {signal.shape}: {dt:.1f} s wall, {cpu:.1f} s CPU on {args.threads} thread(s), "
              f"{int(maps.mask.sum())} voxels fitted; load average {os.getloadavg()[0]:.1f}")
        return 0

    if args.study:
        import nibabel as nib

        files = sorted(args.study.glob("*.nii*"))
        echoes = np.stack([np.asarray(nib.load(str(f)).dataobj, np.float32) for f in files], axis=-1)
    else:
        echoes = _legs((448, 210, 96), args.te, args.field)
    t0, c0 = time.perf_counter(), time.process_time()
    maps = fit_magnitude(echoes, args.te, args.field)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"magnitude fit of {echoes.shape}: {dt:.1f} s wall, {cpu:.1f} s CPU on {args.threads} thread(s), "
          f"{int(maps.mask.sum())} voxels fitted; load average {os.getloadavg()[0]:.1f} (on a shared machine the CPU "
          "time is the better guide)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
