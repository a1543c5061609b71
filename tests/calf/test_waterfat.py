"""Multi-echo water-fat separation against an analytic signal model (pipeline/calf/waterfat.py).

Phantom: a slab of square patches, each with one true fat fraction and R2*, under a smooth B0 field map, with the
6-peak fat spectrum of Hamilton et al. 2011 and complex Gaussian noise (Rician magnitudes) at SNR = (W + F) / sigma.
The error of a patch is its median voxel FF minus the truth (patches stand for muscles: FF is reported per region).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.calf import waterfat as wf
from pipeline.calf.fatfraction import ff_magnitude_discrimination

TE_MAG_MS = (3.45, 4.60, 5.75)  # opposed / in / opposed phase at 3 T (the shared real study)
TE_CPLX_MS = (1.20, 2.20, 3.20, 4.20, 5.20, 6.20)
FIELD_T = 3.0
PATCH = 8


def _phantom(ffs: list[float], r2s: list[float], snrs: list[float], te_ms: tuple[float, ...], seed: int,
             field_map_hz: float = 0.0, field_t: float = FIELD_T
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Complex echoes (X, Y, 2, N) of a grid of patches (FF x (R2*, SNR)); truth maps of FF, R2* and patch ids."""
    rng = np.random.default_rng(seed)
    rows = [(r, s) for r in r2s for s in snrs]
    nx, ny = len(ffs) * PATCH, len(rows) * PATCH
    ff = np.repeat(np.repeat(np.array(ffs)[:, None], len(rows), 1), PATCH, 0).repeat(PATCH, 1)
    r2 = np.repeat(np.repeat(np.array([r for r, _ in rows])[None, :], len(ffs), 0), PATCH, 0).repeat(PATCH, 1)
    snr = np.repeat(np.repeat(np.array([s for _, s in rows])[None, :], len(ffs), 0), PATCH, 0).repeat(PATCH, 1)
    pid = np.arange(len(ffs) * len(rows)).reshape(len(ffs), len(rows)).repeat(PATCH, 0).repeat(PATCH, 1)
    ff, r2, snr, pid = (np.repeat(a[:, :, None], 2, axis=2) for a in (ff, r2, snr, pid))
    xx, yy = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    psi = field_map_hz * (0.6 * xx + 0.4 * yy ** 2 - 0.2)  # smooth B0 offsets (Hz)
    psi = np.repeat(psi[:, :, None], 2, axis=2)
    te = np.asarray(te_ms) * 1e-3
    c = wf.fat_phasors(te, field_t)
    rho, phase0 = 100.0, 0.4
    s = rho * ((1 - ff)[..., None] + ff[..., None] * c) * np.exp((-r2[..., None] + 2j * np.pi * psi[..., None]) * te)
    s = s * np.exp(1j * phase0)
    sigma = rho / snr[..., None]
    s = s + sigma * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
    return s, ff, r2, pid


def _patch_errors_pp(ff_est: np.ndarray, ff_true: np.ndarray, pid: np.ndarray) -> np.ndarray:
    """Per patch: median voxel FF inside the patch (1-voxel border left out) minus the truth, in percentage points."""
    core = np.zeros(pid.shape, bool)
    for k in np.unique(pid):
        m = pid == k
        idx = np.argwhere(m)
        lo, hi = idx.min(0), idx.max(0)
        sub = np.zeros_like(m)
        sub[lo[0] + 1:hi[0], lo[1] + 1:hi[1], :] = True
        core |= m & sub
    return np.array([100 * (np.median(ff_est[(pid == k) & core]) - ff_true[pid == k][0]) for k in np.unique(pid)])


def _two_point(mag: np.ndarray, te_ms: tuple[float, ...]) -> np.ndarray:
    """Today's path on the same echoes: the echoes labelled in/opposed phase, W = (IP + OP) / 2, F = (IP - OP) / 2."""
    labels = [wf.echo_phase_label(t, FIELD_T, 30.0) for t in te_ms]
    ip, op = mag[..., labels.index("in")], mag[..., labels.index("opposed")]
    w, f = (ip + op) / 2, np.clip((ip - op) / 2, 0, None)
    return ff_magnitude_discrimination(w, f, ip)


MAG_FFS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45]
R2S = [20.0, 50.0, 80.0]
SNRS = [20.0, 50.0, 100.0]


def test_magnitude_three_echo_fit_below_50_percent() -> None:
    """Three magnitude echoes, FF < 50 %: median patch error <= 2 pp (the 2-point IP/OP path fails this)."""
    s, ff, _, pid = _phantom(MAG_FFS, R2S, SNRS, TE_MAG_MS, seed=1)
    mag = np.abs(s)
    maps = wf.fit_magnitude(mag, TE_MAG_MS, FIELD_T, sigma=100.0 / 60, mask=np.ones(ff.shape, bool))
    err = np.abs(_patch_errors_pp(maps.ff, ff, pid))
    assert np.median(err) <= 2.0, np.round(err, 2)
    two_point = np.abs(_patch_errors_pp(_two_point(mag, TE_MAG_MS), ff, pid))
    assert np.median(two_point) > 2.0  # the test can fail: today's path on the same signals


def test_magnitude_fit_recovers_r2star() -> None:
    s, ff, r2, pid = _phantom([0.0, 0.1, 0.3], R2S, [100.0], TE_MAG_MS, seed=2)
    maps = wf.fit_magnitude(np.abs(s), TE_MAG_MS, FIELD_T, sigma=1.0, mask=np.ones(ff.shape, bool))
    for k in np.unique(pid):
        assert abs(np.median(maps.r2star[pid == k]) - r2[pid == k][0]) < 8.0


def test_magnitude_fit_takes_nearly_pure_fat_as_fat() -> None:
    """Nearly pure fat (subcutaneous fat, marrow) is fat-dominant: only that branch explains the echo pattern."""
    s, ff, _, pid = _phantom([0.99, 1.0], R2S, [50.0, 100.0], TE_MAG_MS, seed=3)
    maps = wf.fit_magnitude(np.abs(s), TE_MAG_MS, FIELD_T, sigma=100.0 / 75, mask=np.ones(ff.shape, bool))
    err = _patch_errors_pp(maps.ff, ff, pid)
    assert np.all(np.abs(err) <= 3.0), np.round(err, 2)


CPLX_FFS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]


def test_magnitude_six_echo_fit_over_full_range() -> None:
    """With six magnitude echoes the multi-peak spectrum tells water- from fat-dominant voxels: FF 0-100 %, median
    <= 1 pp, 95th percentile <= 3 pp (Triay Bagur et al. 2018 make the same point)."""
    s, ff, _, pid = _phantom(CPLX_FFS, R2S, SNRS, TE_CPLX_MS, seed=7)
    maps = wf.fit_magnitude(np.abs(s), TE_CPLX_MS, FIELD_T, sigma=100.0 / 60, mask=np.ones(ff.shape, bool))
    err = np.abs(_patch_errors_pp(maps.ff, ff, pid))
    assert np.median(err) <= 1.0, np.round(err, 2)
    assert np.percentile(err, 95) <= 3.0, np.round(err, 2)


@pytest.mark.parametrize("field_map_hz", [0.0, 200.0])
def test_complex_fit_over_full_range(field_map_hz: float) -> None:
    """Six complex echoes, FF 0-100 %, B0 offsets up to about +-200 Hz: median <= 1 pp, 95th percentile <= 3 pp."""
    s, ff, _, pid = _phantom(CPLX_FFS, R2S, SNRS, TE_CPLX_MS, seed=4, field_map_hz=field_map_hz)
    maps = wf.fit_complex(s, TE_CPLX_MS, FIELD_T, mask=np.ones(ff.shape, bool))
    err = np.abs(_patch_errors_pp(maps.ff, ff, pid))
    assert np.median(err) <= 1.0, np.round(err, 2)
    assert np.percentile(err, 95) <= 3.0, np.round(err, 2)


def test_complex_fit_three_echoes() -> None:
    """Three complex echoes (OP/IP/OP at 3 T), FF 0-100 %: median <= 1 pp, 95th percentile <= 3 pp."""
    s, ff, _, pid = _phantom(CPLX_FFS, R2S, SNRS, TE_MAG_MS, seed=5, field_map_hz=150.0)
    maps = wf.fit_complex(s, TE_MAG_MS, FIELD_T, mask=np.ones(ff.shape, bool))
    err = np.abs(_patch_errors_pp(maps.ff, ff, pid))
    assert np.median(err) <= 1.0, np.round(err, 2)
    assert np.percentile(err, 95) <= 3.0, np.round(err, 2)
    two_point = np.abs(_patch_errors_pp(_two_point(np.abs(s), TE_MAG_MS), ff, pid))
    assert np.percentile(two_point, 95) > 3.0


def test_echo_phase_labels_from_field_strength() -> None:
    assert [wf.echo_phase_label(t, 3.0, 30.0) for t in TE_MAG_MS] == ["opposed", "in", "opposed"]
    assert [wf.echo_phase_label(t, 1.5, 30.0) for t in (2.3, 4.6)] == ["opposed", "in"]
    assert wf.echo_phase_label(3.45, 1.5, 30.0) == "other"


def test_the_field_of_the_imaging_frequency_beats_the_nominal_field() -> None:
    """A 'nominal 3 T' scanner at 123.25 MHz is a 2.895 T field for the fat-water shifts: fitted at that field the
    three-echo magnitude FF (< 50 %) is within 0.5 pp (median); fitted at the nominal 3 T it is off by more."""
    true_field = 123.25 / 42.577478
    s, ff, _, pid = _phantom(MAG_FFS, R2S, SNRS, TE_MAG_MS, seed=1, field_t=true_field)
    mask = np.ones(ff.shape, bool)
    errors = {field: np.median(np.abs(_patch_errors_pp(
        wf.fit_magnitude(np.abs(s), TE_MAG_MS, field, sigma=100.0 / 60, mask=mask).ff, ff, pid)))
        for field in (true_field, FIELD_T)}
    assert errors[true_field] <= 0.5 and errors[FIELD_T] > 0.8, errors
