"""Water-fat separation from multi-echo gradient echoes with a multi-peak fat spectrum and R2* (pure numpy).

Signal model of echo ``n`` at echo time ``t_n`` (Yu et al., Magn Reson Med 2008;60:1122-1134; Hernando et al.,
Magn Reson Med 2010;63:79-90)::

    S_n = (W + F * c_n) * exp(-R2* t_n) * exp(i 2 pi psi t_n),      c_n = sum_p a_p exp(i 2 pi f_p t_n)

with water and fat amplitudes ``W``, ``F``, the fat spectrum's relative amplitudes ``a_p`` (sum 1) at frequencies
``f_p = gamma * B0 * delta_p`` (``delta_p`` in ppm relative to water; Hamilton et al., NMR Biomed 2011;24:784-790),
one R2* for both species and the off-resonance ``psi`` (Hz). The fat fraction is ``FF = F / (W + F)``.

Two fits are provided, both vectorised over voxels:

* :func:`fit_magnitude` (magnitude images only, at least 3 echoes): ``|S_n| = rho * |1 - f + f c_n| * exp(-R2* t_n)``
  fitted on a coarse grid of (f, R2*) and refined by Levenberg-Marquardt, once with ``f <= 0.5`` (water-dominant)
  and once with ``f >= 0.5`` (fat-dominant). A magnitude fit has two minima (Bydder et al., Magn Reson Imaging
  2008;26:347-359; Triay Bagur et al., Magn Reson Med 2018;79:1687-1700); which one is right is decided from the
  voxels that only one branch can explain and, for the others, from their in-plane neighbourhood (see
  :func:`resolve_dominance`).
* :func:`fit_complex` (magnitude and phase, at least 3 echoes): IDEAL-type variable projection (Reeder et al.,
  Magn Reson Med 2004;51:35-45) over a grid of field-map values; the two lowest minima of each voxel are its
  candidates, and the spatially smooth one is chosen from a regional estimate (residual curves summed over blocks
  of voxels) followed by iterated smoothing of the field map (in the spirit of the region-growing field map of
  Yu et al., Magn Reson Med 2005;54:1032-1039); then Newton steps on field map and R2* with real W and F sharing
  one phase (Bydder et al., Magn Reson Imaging 2011;29:216-221), so that the fat fraction has no noise floor.

Known limits (written into provenance by the caller): a 3-echo magnitude fit cannot tell FF of about 80-95 % from
its alias at about 5-35 % voxel by voxel (the two branches fit three echoes exactly); a neighbourhood without voxels
that only one branch explains is taken as water-dominant, so fat-rich tissue without nearly pure fat nearby (a thin
subcutaneous layer, a muscle replaced by fat to 80-95 %) reads as its low alias. Field maps with more than half an echo-spacing period of
change between neighbouring voxels (phase wraps the smoothing cannot follow) can swap water and fat in the complex
fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.core.units import PROTON_GAMMA_MHZ_PER_T


@dataclass(frozen=True)
class FatSpectrum:
    """A multi-peak fat spectrum: peak offsets from water (ppm) and relative amplitudes (sum 1)."""

    ppm_rel_water: tuple[float, ...]
    rel_amplitudes: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.ppm_rel_water) != len(self.rel_amplitudes) or not self.ppm_rel_water:
            raise ValueError(f"fat spectrum needs as many amplitudes as peaks, got {len(self.ppm_rel_water)} peaks "
                             f"and {len(self.rel_amplitudes)} amplitudes.")
        if abs(sum(self.rel_amplitudes) - 1.0) > 0.01:
            raise ValueError(f"fat spectrum amplitudes must sum to 1, got {sum(self.rel_amplitudes):.4f}.")

    @property
    def main_peak_ppm(self) -> float:
        """Offset of the largest peak (methylene, -3.4 ppm in the Hamilton model)."""
        return float(self.ppm_rel_water[int(np.argmax(self.rel_amplitudes))])


#: Hamilton et al., NMR Biomed 2011;24:784-790 (6 peaks, the ISMRM Fat-Water Toolbox default).
HAMILTON_2011 = FatSpectrum((-3.80, -3.40, -2.60, -1.94, -0.39, 0.60), (0.087, 0.693, 0.128, 0.004, 0.039, 0.048),
                            "Hamilton et al., NMR Biomed 2011;24:784-790")


def spectrum_from_config(cfg: dict[str, Any] | None) -> FatSpectrum:
    """The fat spectrum of ``calf.water_fat`` in configs/default.yaml (Hamilton 2011 when not configured)."""
    if not cfg or "fat_ppm_rel_water" not in cfg:
        return HAMILTON_2011
    return FatSpectrum(tuple(float(v) for v in cfg["fat_ppm_rel_water"]),
                       tuple(float(v) for v in cfg["fat_rel_amplitudes"]), str(cfg.get("fat_spectrum_source", "")))


def fat_phasors(te_s: Sequence[float] | np.ndarray, field_t: float,
                spectrum: FatSpectrum = HAMILTON_2011) -> np.ndarray:
    """Complex fat signal relative to water at each echo time: ``c_n = sum_p a_p exp(i 2 pi gamma B0 delta_p t_n)``.

    >>> c = fat_phasors([0.0], 3.0)
    >>> round(float(abs(c[0])), 6)
    1.0
    >>> round(float(abs(fat_phasors([4.6e-3], 3.0)[0])), 2)  # the 'in-phase' echo at 3 T: the peaks dephase
    0.56
    """
    te = np.asarray(te_s, np.float64)
    f_hz = PROTON_GAMMA_MHZ_PER_T * field_t * np.asarray(spectrum.ppm_rel_water)
    amps = np.asarray(spectrum.rel_amplitudes) / float(np.sum(spectrum.rel_amplitudes))
    return np.sum(amps[None, :] * np.exp(2j * np.pi * f_hz[None, :] * te[:, None]), axis=1)


def main_peak_phase_deg(te_ms: float, field_t: float, spectrum: FatSpectrum = HAMILTON_2011) -> float:
    """Phase (degrees, wrapped to (-180, 180]) of the main fat peak relative to water at ``te_ms``:
    ``360 * gamma * B0 * delta_main * TE``.

    >>> round(main_peak_phase_deg(4.60, 3.0), 1)  # 3 T: 4.6 ms is (close to) in phase
    0.8
    >>> round(abs(main_peak_phase_deg(2.3, 1.5)), 1)
    179.8
    """
    ph = 360.0 * PROTON_GAMMA_MHZ_PER_T * field_t * spectrum.main_peak_ppm * 1e-3 * te_ms
    return float(-((-ph + 180.0) % 360.0 - 180.0))


def spoiled_gre_weight(tr_ms: float, flip_deg: float, t1_ms: float) -> float:
    """Steady-state signal of a spoiled gradient echo per unit proton density (Ernst):
    ``sin(a) (1 - E1) / (1 - cos(a) E1)`` with ``E1 = exp(-TR / T1)``.

    >>> round(spoiled_gre_weight(23.0, 5.0, 382.0) / spoiled_gre_weight(23.0, 5.0, 1412.0), 2)
    1.16
    """
    e1 = math.exp(-tr_ms / t1_ms)
    a = math.radians(flip_deg)
    return math.sin(a) * (1.0 - e1) / (1.0 - math.cos(a) * e1)


def t1_weighted_ff(pdff: float, fat_to_water_weight: float) -> float:
    """The fat fraction a T1-weighted acquisition reads for a proton-density fat fraction ``pdff`` (0-1) when fat
    signal is weighted ``fat_to_water_weight`` times water signal: ``r p / (r p + 1 - p)`` (Liu et al., Magn Reson Med
    2007;58:354-364).

    >>> round(t1_weighted_ff(0.2, 1.16), 3)
    0.225
    """
    r = fat_to_water_weight
    return r * pdff / (r * pdff + 1.0 - pdff)


def t1_bias_statement(tr_ms: float | None, flip_deg: float | None, field_t: float,
                      t1_ms: dict[str, dict[str, float]]) -> dict[str, Any] | None:
    """How much the T1 weighting of the acquisition raises the fitted fat fraction above the proton-density fat
    fraction, for provenance; None without TR, flip angle or T1 values. ``t1_ms`` maps a field strength (T, as text)
    to ``{"water": T1, "fat": T1}`` of muscle water and fat; the nearest field is taken. The fit does not correct
    it: the T1 of a muscle's water changes with disease, and a low flip angle keeps the bias small.
    """
    if not tr_ms or not flip_deg or not t1_ms:
        return None
    key = min(t1_ms, key=lambda k: abs(float(k) - field_t))
    t1 = t1_ms[key]
    ratio = spoiled_gre_weight(tr_ms, flip_deg, t1["fat"]) / spoiled_gre_weight(tr_ms, flip_deg, t1["water"])
    reads = {f"{p:g}": round(100.0 * t1_weighted_ff(p / 100.0, ratio), 1) for p in (5, 20, 50, 80)}
    return {"repetition_time_ms": tr_ms, "flip_angle_deg": flip_deg, "t1_ms": dict(t1), "t1_field_t": float(key),
            "fat_to_water_signal_weight": round(ratio, 3), "ff_pct_read_at_pdff_pct": reads}


def t1_bias_limit(statement: dict[str, Any]) -> str:
    """The known limit that a :func:`t1_bias_statement` puts in provenance, in words."""
    reads = statement["ff_pct_read_at_pdff_pct"]
    return (f"T1 weighting (TR {statement['repetition_time_ms']:g} ms, flip angle {statement['flip_angle_deg']:g} deg) "
            f"is not corrected: with literature T1 of muscle water and fat the fitted FF reads {reads['5']:g} / "
            f"{reads['20']:g} / {reads['50']:g} % where the proton-density FF is 5 / 20 / 50 %")


def echo_phase_label(te_ms: float, field_t: float, tolerance_deg: float,
                     spectrum: FatSpectrum = HAMILTON_2011) -> str:
    """``in``, ``opposed`` or ``other``: where the main fat peak stands relative to water at this echo.

    >>> [echo_phase_label(t, 3.0, 30.0) for t in (3.45, 4.60, 5.75)]
    ['opposed', 'in', 'opposed']
    >>> echo_phase_label(2.0, 3.0, 30.0)
    'other'
    """
    ph = abs(main_peak_phase_deg(te_ms, field_t, spectrum))
    if ph <= tolerance_deg:
        return "in"
    if ph >= 180.0 - tolerance_deg:
        return "opposed"
    return "other"


def rician_sigma_from_background(values: np.ndarray) -> float | None:
    """Noise standard deviation from background magnitudes (signal-free, Rayleigh distributed): the median of a
    Rayleigh variable is ``sigma * sqrt(2 ln 2)`` (Gudbjartsson & Patz, Magn Reson Med 1995;34:910-914).
    None when the background is empty or zero-filled.

    >>> rng = np.random.default_rng(0)
    >>> bg = np.abs(rng.normal(0, 3, 100000) + 1j * rng.normal(0, 3, 100000))
    >>> round(rician_sigma_from_background(bg), 1)
    3.0
    """
    v = np.asarray(values, np.float64).ravel()
    v = v[v > 0]
    if v.size < 100:
        return None
    med = float(np.median(v))
    return med / math.sqrt(2.0 * math.log(2.0)) if med > 0 else None


def background_sigma(echoes: np.ndarray, mask: np.ndarray, margin_px: int = 3) -> float | None:
    """Noise sigma from the non-zero magnitudes farther than ``margin_px`` pixels from the foreground ``mask``
    (:func:`rician_sigma_from_background`; exact zeros are zero-filled k-space or masking, not noise)."""
    step = (slice(None, None, 2), slice(None, None, 2), slice(None))  # every 4th voxel of each slice suffices
    outside = ~ndimage.binary_dilation(mask[step], iterations=max(1, margin_px // 2))
    return rician_sigma_from_background(np.asarray(echoes)[step][outside])


# -- magnitude fit ---------------------------------------------------------------------------------------------
@dataclass
class BranchFit:
    """Per-voxel least-squares fit of one branch: fat fraction, R2* (1/s), amplitude and residual sum of squares."""

    ff: np.ndarray
    r2star: np.ndarray
    rho: np.ndarray
    rss: np.ndarray


def _magnitude_model(f: np.ndarray, r: np.ndarray, c: np.ndarray, te: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g E, dg/df E, E) for voxels (V,) and echoes (N,): ``g = |1 - f + f c|``, ``E = exp(-R2* t)``."""
    a, b = c.real[None, :], c.imag[None, :]
    fv = f[:, None]
    re = 1.0 - fv + fv * a
    im = fv * b
    g = np.sqrt(re * re + im * im)
    dg = (re * (a - 1.0) + im * b) / np.maximum(g, 1e-12)
    e = np.exp(-r[:, None] * te[None, :])
    return g * e, dg * e, e


def _solve3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve the symmetric 3x3 systems ``a x = b`` for stacked ``a`` (V, 3, 3) and ``b`` (V, 3) by Cramer's rule."""
    a00, a01, a02, a11, a12, a22 = a[:, 0, 0], a[:, 0, 1], a[:, 0, 2], a[:, 1, 1], a[:, 1, 2], a[:, 2, 2]
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    det = np.where(np.abs(det) > 1e-30, det, 1e-30)
    b0, b1, b2 = b[:, 0], b[:, 1], b[:, 2]
    return np.stack([(c00 * b0 + c01 * b1 + c02 * b2) / det, (c01 * b0 + c11 * b1 + c12 * b2) / det,
                     (c02 * b0 + c12 * b1 + c22 * b2) / det], axis=1)


def _refine_magnitude(y32: np.ndarray, f: np.ndarray, r: np.ndarray, rho: np.ndarray, c32: np.ndarray,
                      te32: np.ndarray, ff_range: tuple[float, float], r2_range: tuple[float, float],
                      iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt steps on (rho, f, R2*) of the magnitude model, the bounds enforced by clipping."""
    lam = 1e-3
    for _ in range(iterations):
        m, dm, _ = _magnitude_model(f, r, c32, te32)
        res = y32 - rho[:, None] * m
        cols = (m, rho[:, None] * dm, -te32[None, :] * rho[:, None] * m)
        jtj = np.empty((y32.shape[0], 3, 3))
        for i in range(3):
            for j in range(i, 3):
                jtj[:, i, j] = jtj[:, j, i] = np.einsum("vn,vn->v", cols[i], cols[j])
        for i in range(3):
            jtj[:, i, i] *= 1.0 + lam
            jtj[:, i, i] += 1e-12
        jtr = np.stack([np.einsum("vn,vn->v", col, res) for col in cols], axis=1).astype(np.float64)
        step = _solve3(jtj, jtr).astype(np.float32)
        rho = np.maximum(rho + step[:, 0], 0.0)
        f = np.clip(f + step[:, 1], *ff_range).astype(np.float32)
        r = np.clip(r + step[:, 2], *r2_range).astype(np.float32)
    return f, r, rho


def fit_magnitude_branch(y: np.ndarray, te_s: np.ndarray, c: np.ndarray, ff_range: tuple[float, float],
                         r2_range: tuple[float, float], iterations: int = 3, grid: int = 101) -> BranchFit:
    """Least-squares fit of ``y_n = rho |1 - f + f c_n| exp(-R2* t_n)`` with ``f`` in ``ff_range``.

    Start: for each ``f`` of a grid over ``ff_range``, ``log y_n - log g_n(f) = log rho - R2* t_n`` is linear in
    (log rho, R2*), so its residual is ``|U^T (log y - log g(f))|^2`` with ``U`` an orthonormal basis of the
    complement of ``[1, t]``: one matrix product over all voxels and grid points picks the best ``f`` (for three
    echoes ``U`` is one vector and a binary search over the sorted grid does it). Then Levenberg-Marquardt
    on (rho, f, R2*) in the magnitude domain, the bounds enforced by clipping.

    >>> te = np.array([3.45, 4.60, 5.75]) * 1e-3; c = fat_phasors(te, 3.0)
    >>> y = 100 * np.abs(0.8 + 0.2 * c) * np.exp(-40 * te)
    >>> fit = fit_magnitude_branch(y[None, :], te, c, (0.0, 0.5), (0.0, 400.0))
    >>> round(float(fit.ff[0]), 4), round(float(fit.r2star[0]), 2), round(float(fit.rho[0]), 2)
    (0.2, 40.0, 100.0)
    """
    y64 = np.asarray(y, np.float64)
    te = np.asarray(te_s, np.float64)
    n = te.size
    design = np.stack([np.ones(n), -te], axis=1)
    pinv = np.linalg.pinv(design)
    # orthonormal basis of the complement of [1, -t]: the residual of the linear fit lives there
    basis = np.linalg.svd(np.eye(n) - design @ pinv)[0][:, : n - 2]
    f_grid = np.linspace(ff_range[0], ff_range[1], grid)
    log_g = np.log(np.maximum(np.abs((1.0 - f_grid)[:, None] + f_grid[:, None] * c[None, :]), 1e-6))  # (K, N)
    pg = log_g @ basis  # (K, N - 2)
    ly = np.log(np.maximum(y64, 1e-3))
    py = ly @ basis  # (V, N - 2)
    if n == 3:  # one residual coordinate: nearest grid value by binary search
        order = np.argsort(pg[:, 0])
        table = pg[order, 0]
        pos = np.clip(np.searchsorted(table, py[:, 0]), 1, table.size - 1)
        left = np.abs(py[:, 0] - table[pos - 1]) <= np.abs(py[:, 0] - table[pos])
        k = order[np.where(left, pos - 1, pos)]
    else:
        pg32, py32 = pg.astype(np.float32), py.astype(np.float32)
        k = np.argmin(np.sum(pg32 * pg32, axis=1)[None, :] - 2.0 * (py32 @ pg32.T), axis=1)
    f64 = f_grid[k]
    if n == 3:  # exact inversion: linear interpolation of the residual coordinate between neighbouring grid points
        h, sv = pg[:, 0], py[:, 0]
        for lo in (np.clip(k - 1, 0, grid - 2), np.clip(k, 0, grid - 2)):
            a, b = h[lo] - sv, h[lo + 1] - sv
            bracket = (a * b <= 0) & (a != b)
            t = np.where(bracket, a / np.where(a != b, a - b, 1.0), 0.0)
            f64 = np.where(bracket, f_grid[lo] + t * (f_grid[lo + 1] - f_grid[lo]), f64)
        log_gf = np.log(np.maximum(np.abs((1.0 - f64)[:, None] + f64[:, None] * c[None, :]), 1e-6))
    else:
        log_gf = log_g[k]
    coef = (ly - log_gf) @ pinv.T  # (V, 2): log rho, R2*
    f = f64.astype(np.float32)
    r = np.clip(coef[:, 1], *r2_range).astype(np.float32)
    y32 = y64.astype(np.float32)
    te32 = te.astype(np.float32)
    c32 = c.astype(np.complex64)
    m, _, _ = _magnitude_model(f, r, c32, te32)
    rho = np.maximum(np.sum(y32 * m, axis=1) / np.maximum(np.sum(m * m, axis=1), 1e-12), 0.0)
    # refine only where the start does not fit already (no exact solution inside the bounds, or more than 3 echoes)
    rel = np.sum((y32 - rho[:, None] * m) ** 2, axis=1) / np.maximum(np.sum(y32 * y32, axis=1), 1e-12)
    todo = np.nonzero(rel > 1e-8)[0]
    if todo.size:
        f[todo], r[todo], rho[todo] = _refine_magnitude(y32[todo], f[todo], r[todo], rho[todo], c32, te32,
                                                         ff_range, r2_range, iterations)
    m, _, _ = _magnitude_model(f, r, c32, te32)
    rho = np.maximum(np.sum(y32 * m, axis=1) / np.maximum(np.sum(m * m, axis=1), 1e-12), 0.0)
    rss = np.sum((y32 - rho[:, None] * m) ** 2, axis=1)
    return BranchFit(f.astype(np.float64), r.astype(np.float64), rho.astype(np.float64), rss.astype(np.float64))


@dataclass
class WaterFatMaps:
    """Result of a multi-echo fit on the image grid: FF (fraction, not clipped), R2* (1/s), the fitted amplitude,
    the fit mask, the chosen branch (True = fat-dominant; magnitude fit only), and notes for provenance.
    ``other_branch`` (magnitude fit only): FF, R2* and amplitude of the branch that was not chosen, per voxel, so
    that dominance known from elsewhere (:func:`with_fat_dominant`) can be applied without refitting."""

    ff: np.ndarray
    r2star: np.ndarray
    rho: np.ndarray
    mask: np.ndarray
    fat_dominant: np.ndarray | None = None
    field_map_hz: np.ndarray | None = None
    method: str = ""
    notes: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    other_branch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def with_fat_dominant(maps: WaterFatMaps, region: np.ndarray) -> tuple[WaterFatMaps, int]:
    """``maps`` with the fat-dominant branch in every fitted voxel of ``region`` (a boolean array on the maps'
    grid), and the number of voxels that changed branch.

    A magnitude-only fit of three echoes cannot tell an FF of about 80-95 % from its alias at 5-35 % voxel by voxel
    (:func:`fit_magnitude`), nor in-phase and opposed-phase magnitudes FF from 1 - FF, so where the tissue is known
    to be fat (the subcutaneous fat and bone marrow that a
    segmentation labels, say) the branch is taken from that knowledge; FF, R2* and amplitude there are the fat-dominant
    branch's own fit, nothing is refitted. Maps without ``other_branch`` (complex fit) are returned unchanged.

    >>> m = WaterFatMaps(np.array([0.2, 0.3]), np.zeros(2), np.ones(2), np.ones(2, bool), np.zeros(2, bool),
    ...                  other_branch=(np.array([0.8, 0.7]), np.zeros(2), np.ones(2)))
    >>> out, n = with_fat_dominant(m, np.array([True, False]))
    >>> out.ff.tolist(), out.fat_dominant.tolist(), n
    ([0.8, 0.3], [True, False], 1)
    """
    if maps.other_branch is None or maps.fat_dominant is None:
        return maps, 0
    region = np.asarray(region, bool)
    if region.shape != maps.ff.shape:
        raise ValueError(f"region of shape {region.shape} for maps of shape {maps.ff.shape}")
    switch = region & maps.mask & ~maps.fat_dominant
    at = np.flatnonzero(switch)  # the few voxels that change: copy the maps, exchange the values there only
    new, other = [], []
    for c, o in zip((maps.ff, maps.r2star, maps.rho), maps.other_branch):
        n, m = c.copy(), o.copy()
        n.flat[at], m.flat[at] = o.flat[at], c.flat[at]
        new.append(n)
        other.append(m)
    return replace(maps, ff=new[0], r2star=new[1], rho=new[2], fat_dominant=maps.fat_dominant | switch,
                   other_branch=tuple(other)), int(at.size)


def foreground_mask(echoes: np.ndarray, sigma: float | None, relative_threshold: float) -> np.ndarray:
    """Voxels worth fitting: the echo-summed magnitude above ``max(5 sigma, relative_threshold * p99)``, holes in
    each slice filled (dark cortical bone and fascia stay in)."""
    total = np.sqrt(np.sum(np.asarray(echoes, np.float64) ** 2, axis=-1))
    thr = relative_threshold * float(np.percentile(total, 99))
    if sigma is not None:
        thr = max(thr, 5.0 * sigma * math.sqrt(echoes.shape[-1]))
    return total > thr


def resolve_dominance(evidence: np.ndarray, mask: np.ndarray, *, voxel_evidence: float, pool_sigma_px: float,
                      pool_fraction: float) -> np.ndarray:
    """Choose the fat-dominant branch per voxel (True) from the per-voxel evidence and its neighbourhood.

    ``evidence = (RSS_water - RSS_fat) / sigma^2`` is large and positive where only the fat-dominant branch explains
    the echoes (nearly pure fat; FF 55-75 %), large and negative where only the water-dominant branch does, and near
    0 where both fit (a three-echo magnitude fit has an exact alias for most FF). A voxel is fat-dominant when

    * its own evidence exceeds ``voxel_evidence``, or
    * its own evidence is not below ``-voxel_evidence`` and, in a Gaussian neighbourhood of ``pool_sigma_px``
      pixels within its slice, the weighted share of fat-evidence voxels minus that of water-evidence voxels
      exceeds ``pool_fraction``.

    Everything else is water-dominant: the prior of muscle, the tissue this pipeline measures.

    >>> ev = np.zeros((7, 7, 1)); ev[2:5, 2:5, 0] = 50.0; ev[3, 3, 0] = 0.0
    >>> m = np.ones_like(ev, bool)
    >>> out = resolve_dominance(ev, m, voxel_evidence=4.0, pool_sigma_px=1.0, pool_fraction=0.3)
    >>> bool(out[3, 3, 0]), bool(out[0, 0, 0])
    (True, False)
    """
    conf_fat = mask & (evidence > voxel_evidence)
    conf_water = mask & (evidence < -voxel_evidence)
    sig = (pool_sigma_px, pool_sigma_px, 0.0)
    den = ndimage.gaussian_filter(mask.astype(np.float32), sig)
    score = ndimage.gaussian_filter(conf_fat.astype(np.float32) - conf_water.astype(np.float32), sig)
    score /= np.maximum(den, 1e-6)
    return conf_fat | (mask & ~conf_water & (score > pool_fraction))


def fit_magnitude(echoes: np.ndarray, te_ms: Sequence[float], field_t: float, *,
                  spectrum: FatSpectrum = HAMILTON_2011, sigma: float | None = None,
                  r2star_max: float = 400.0, mask: np.ndarray | None = None, mask_threshold: float = 0.05,
                  voxel_evidence: float = 4.0, pool_sigma_px: float = 1.5, pool_fraction: float = 0.3,
                  chunk: int = 100_000) -> WaterFatMaps:
    """Magnitude-only multi-echo fat fraction with R2* and a multi-peak fat spectrum.

    ``echoes``: array (X, Y, Z, N) of magnitudes at ``te_ms``; ``sigma``: the noise standard deviation (estimated
    from the background when None). Each voxel is fitted twice (:func:`fit_magnitude_branch`, FF <= 0.5 and
    FF >= 0.5); the branch is chosen by :func:`resolve_dominance`, and the other branch is kept
    (``other_branch``) for :func:`with_fat_dominant`.
    """
    echoes = np.asarray(echoes, np.float32)
    if echoes.ndim != 4 or echoes.shape[-1] < 3:
        raise ValueError(f"magnitude fit needs an (X, Y, Z, N >= 3) array, got shape {echoes.shape}.")
    te = np.asarray(te_ms, np.float64) * 1e-3
    c = fat_phasors(te, field_t, spectrum)
    notes: list[str] = []
    if mask is None:
        mask = foreground_mask(echoes, None, mask_threshold)
    if sigma is None:
        sigma = background_sigma(echoes, mask)
        notes.append("noise sigma from the background (Rayleigh median)" if sigma else
                     "noise sigma unknown (no background): 1 % of the 99th percentile used")
    if sigma is None or sigma <= 0:
        sigma = 0.01 * float(np.percentile(echoes, 99))
    y = echoes[mask].astype(np.float64)
    parts_w, parts_f = [], []
    for s in range(0, y.shape[0], chunk):
        yy = y[s:s + chunk]
        parts_w.append(fit_magnitude_branch(yy, te, c, (0.0, 0.5), (0.0, r2star_max)))
        parts_f.append(fit_magnitude_branch(yy, te, c, (0.5, 1.0), (0.0, r2star_max)))

    def cat(parts: list[BranchFit], name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)

    w = BranchFit(*(cat(parts_w, n) for n in ("ff", "r2star", "rho", "rss")))
    f = BranchFit(*(cat(parts_f, n) for n in ("ff", "r2star", "rho", "rss")))
    evidence = (w.rss - f.rss) / sigma ** 2
    ev_map = np.zeros(mask.shape, np.float64)
    ev_map[mask] = evidence
    fat_dom = resolve_dominance(ev_map, mask, voxel_evidence=voxel_evidence, pool_sigma_px=pool_sigma_px,
                                pool_fraction=pool_fraction)
    choose = fat_dom[mask]
    maps, others = {}, {}
    for name in ("ff", "r2star", "rho"):
        arr, alt = np.zeros(mask.shape, np.float32), np.zeros(mask.shape, np.float32)
        arr[mask] = np.where(choose, getattr(f, name), getattr(w, name))
        alt[mask] = np.where(choose, getattr(w, name), getattr(f, name))
        maps[name], others[name] = arr, alt
    return WaterFatMaps(maps["ff"], maps["r2star"], maps["rho"], mask, fat_dom, None,
                        f"magnitude fit of {echoes.shape[-1]} echoes, multi-peak fat, R2*, water/fat dominance "
                        "from unambiguous voxels and their neighbourhood", notes + [f"noise sigma {sigma:.4g}"],
                        [("magnitude-only fit of three echoes: FF of about 80-95 % cannot be told from its alias at "
                          "5-35 % voxel by voxel; tissue without nearly pure fat nearby is taken as water-dominant")
                         if echoes.shape[-1] == 3 else
                         ("magnitude-only fit: water/fat dominance rests on the multi-peak fat spectrum and can be "
                          "wrong near 50 % and at low SNR")],
                        (others["ff"], others["r2star"], others["rho"]))


# -- complex fit -----------------------------------------------------------------------------------------------
def _common_phase(y: np.ndarray, te: np.ndarray, c: np.ndarray, psi: np.ndarray | float, r2: np.ndarray | float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real water and fat amplitudes sharing one phase at given field map and R2*, and the residual sum of squares.

    Model ``y_n = e^(i phi) (W + F c_n) d_n`` with ``d_n = exp((i 2 pi psi - R2*) t_n)`` and W, F real (Bydder et
    al., Magn Reson Imaging 2011;29:216-221). With ``B = [d, c d]``, ``M = Re(B^H B)`` and ``u = B^H y``, the energy
    of the real least-squares solution at phase phi is ``E = (alpha + beta) / 2 + (alpha - beta) / 2 cos 2 phi +
    gamma sin 2 phi`` (alpha, beta, gamma: the quadratic forms of Re u and Im u in ``M^-1``), maximal at
    ``2 phi = angle(alpha - beta + 2 i gamma)``; of phi and phi + pi the one with ``W + F >= 0`` is taken.
    """
    psi = np.broadcast_to(np.asarray(psi, np.float64), y.shape[:1])
    r2 = np.broadcast_to(np.asarray(r2, np.float64), y.shape[:1])
    d = np.exp((2j * np.pi * psi[:, None] - r2[:, None]) * te[None, :])
    b0, b1 = d, c[None, :] * d
    m00 = np.sum(np.abs(b0) ** 2, axis=1)
    m11 = np.sum(np.abs(b1) ** 2, axis=1)
    m01 = np.real(np.sum(np.conj(b0) * b1, axis=1))
    det = np.maximum(m00 * m11 - m01 ** 2, 1e-30)
    i00, i11, i01 = m11 / det, m00 / det, -m01 / det
    u0, u1 = np.sum(np.conj(b0) * y, axis=1), np.sum(np.conj(b1) * y, axis=1)
    a0, a1, c0, c1 = u0.real, u1.real, u0.imag, u1.imag
    alpha = i00 * a0 * a0 + 2 * i01 * a0 * a1 + i11 * a1 * a1
    beta = i00 * c0 * c0 + 2 * i01 * c0 * c1 + i11 * c1 * c1
    gamma = i00 * a0 * c0 + i01 * (a0 * c1 + a1 * c0) + i11 * a1 * c1
    phi = 0.5 * np.angle(alpha - beta + 2j * gamma)
    cp, sp = np.cos(phi), np.sin(phi)
    p0, p1 = cp * a0 + sp * c0, cp * a1 + sp * c1
    w, f = i00 * p0 + i01 * p1, i01 * p0 + i11 * p1
    sign = np.where(w + f < 0, -1.0, 1.0)
    energy = 0.5 * (alpha + beta) + 0.5 * np.sqrt((alpha - beta) ** 2 + 4 * gamma ** 2)
    rss = np.maximum(np.sum(np.abs(y) ** 2, axis=1) - energy, 0.0)
    return w * sign, f * sign, rss


def common_phase_water_fat(y: np.ndarray, te_s: np.ndarray, c: np.ndarray, psi: np.ndarray | float,
                           r2: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Real water and fat amplitudes with one common phase (see :func:`_common_phase`).

    >>> te = np.array([1.2, 2.2, 3.2]) * 1e-3; c = fat_phasors(te, 3.0)
    >>> y = np.exp(0.7j) * (70 + 30 * c) * np.exp((2j * np.pi * 40 - 30) * te)
    >>> w, f = common_phase_water_fat(y[None, :], te, c, 40.0, 30.0)
    >>> round(float(w[0]), 6), round(float(f[0]), 6)
    (70.0, 30.0)
    """
    w, f, _ = _common_phase(np.asarray(y, np.complex128), np.asarray(te_s, np.float64), c, psi, r2)
    return w, f


def _smooth_phasor(psi: np.ndarray, weight: np.ndarray, period: float, sigma_px: float) -> np.ndarray:
    """Weighted Gaussian average of a field map that wraps with ``period`` (Hz), done on unit phasors."""
    z = weight * np.exp(2j * np.pi * psi / period)
    s = (sigma_px, sigma_px, max(sigma_px / 4.0, 0.5))
    zs = ndimage.gaussian_filter(z.real, s) + 1j * ndimage.gaussian_filter(z.imag, s)
    return np.angle(zs) * period / (2 * np.pi)


def _wrap(x: np.ndarray, period: float) -> np.ndarray:
    return (x + period / 2) % period - period / 2


def _search_residuals(y: np.ndarray, te: np.ndarray, c: np.ndarray, psi_grid: np.ndarray, r2: float,
                      chunk: int) -> np.ndarray:
    """Residual (V, P) of the complex model with free complex W and F at each field-map value of ``psi_grid`` and a
    fixed R2*: ``|y|^2 - |Q_p^H y|^2`` with ``Q_p`` an orthonormal basis of span{d, c d} (variable projection,
    Golub & Pereyra 1973), all grid points in one matrix product."""
    d = np.exp((2j * np.pi * psi_grid[:, None] - r2) * te[None, :])
    q, _ = np.linalg.qr(np.stack([d, c[None, :] * d], axis=2))  # (P, N, 2)
    qc = np.conj(q).transpose(1, 0, 2).reshape(te.size, -1).astype(np.complex64)  # (N, 2P)
    out = np.empty((y.shape[0], psi_grid.size), np.float32)
    for s in range(0, y.shape[0], chunk):
        yy = y[s:s + chunk].astype(np.complex64)
        proj = yy @ qc
        energy = (proj.real ** 2 + proj.imag ** 2).reshape(yy.shape[0], psi_grid.size, 2).sum(axis=2)
        out[s:s + chunk] = np.sum(np.abs(yy) ** 2, axis=1)[:, None] - energy
    return out


def _regional_field(res: np.ndarray, mask: np.ndarray, psi_grid: np.ndarray, block: int, sigma: float) -> np.ndarray:
    """A coarse field map (one value per masked voxel): residual curves summed over ``block`` x ``block`` in-plane
    blocks and smoothed over neighbouring blocks, then minimised. The true field lines up from voxel to voxel
    while noise does not, so the regional sum finds it where single voxels are ambiguous (in the spirit of the
    multi-resolution field-map estimates of Hernando et al., Magn Reson Med 2010;63:79-90)."""
    idx = np.nonzero(mask)
    shape = (-(-mask.shape[0] // block), -(-mask.shape[1] // block), mask.shape[2])
    lin = np.ravel_multi_index((idx[0] // block, idx[1] // block, idx[2]), shape)
    n = int(np.prod(shape))
    low = np.stack([np.bincount(lin, weights=res[:, p], minlength=n) for p in range(psi_grid.size)], axis=1)
    low = ndimage.gaussian_filter(low.reshape(*shape, psi_grid.size), (sigma, sigma, sigma / 4.0, 0.0),
                                  mode=("nearest", "nearest", "nearest", "wrap"))
    return psi_grid[np.argmin(low.reshape(n, psi_grid.size), axis=1)][lin]


def _newton_field_r2(y: np.ndarray, te: np.ndarray, c: np.ndarray, psi: np.ndarray, r2: np.ndarray, dpsi: float,
                     r2star_max: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Newton steps on field map (Hz) and R2* (1/s), one coordinate at a time, with central differences of the
    common-phase residual (steps ``dpsi`` Hz and 5 1/s; each step clipped to two differences and 50 1/s)."""
    dr = 5.0

    def cost(p: np.ndarray, r: np.ndarray) -> np.ndarray:
        return _common_phase(y, te, c, p, r)[2]

    for _ in range(iterations):
        f0 = cost(psi, r2)
        fpp, fpm = cost(psi + dpsi, r2), cost(psi - dpsi, r2)
        frp, frm = cost(psi, r2 + dr), cost(psi, r2 - dr)
        g_psi, g_r = (fpp - fpm) / (2 * dpsi), (frp - frm) / (2 * dr)
        h_psi = np.maximum((fpp - 2 * f0 + fpm) / dpsi ** 2, 1e-12)
        h_r = np.maximum((frp - 2 * f0 + frm) / dr ** 2, 1e-12)
        psi = psi - np.clip(g_psi / h_psi, -2 * dpsi, 2 * dpsi)
        r2 = np.clip(r2 - np.clip(g_r / h_r, -50.0, 50.0), 0.0, r2star_max)
    return psi, r2


def fit_complex(signal: np.ndarray, te_ms: Sequence[float], field_t: float, *,
                spectrum: FatSpectrum = HAMILTON_2011, r2star_max: float = 400.0, mask: np.ndarray | None = None,
                mask_threshold: float = 0.05, psi_steps: int = 64, search_r2: float = 40.0, block_px: int = 4,
                block_sigma: float = 2.0, smoothing_px: Sequence[float] = (8.0, 4.0), newton_iterations: int = 2,
                chunk: int = 100_000) -> WaterFatMaps:
    """Complex multi-echo water-fat separation with R2*, a multi-peak fat spectrum and a smooth field map.

    1. Residual of the model with free complex W and F (variable projection) over a grid of field map psi (one
       period ``1 / min(delta TE)``, ``psi_steps`` steps) at R2* ``search_r2``; per voxel the two deepest minima
       over psi are the candidates (the true field and, typically, the water/fat-swapped one about a fat-water
       shift away).
    2. Field map: a regional estimate (:func:`_regional_field`) picks the first candidate of each voxel; then, for
       each smoothing width in ``smoothing_px``, the map is averaged over its neighbourhood (magnitude-weighted, on
       phasors so that the period wraps) and each voxel takes the candidate nearest to that average.
    3. Newton steps on (psi, R2*) with numerical derivatives of the residual of the common-phase model
       (:func:`common_phase_water_fat`: real W and F with one phase), starting at the chosen candidate.
    4. FF = F / (W + F) from the real, common-phase W and F: not clipped, no noise floor at FF = 0.
    """
    signal = np.asarray(signal)
    if signal.ndim != 4 or signal.shape[-1] < 3 or not np.iscomplexobj(signal):
        raise ValueError(f"complex fit needs a complex (X, Y, Z, N >= 3) array, got {signal.dtype} {signal.shape}.")
    te = np.asarray(te_ms, np.float64) * 1e-3
    c = fat_phasors(te, field_t, spectrum)
    if mask is None:
        mask = foreground_mask(np.abs(signal), None, mask_threshold)
    y = signal[mask].astype(np.complex128)
    period = 1.0 / float(np.min(np.diff(np.sort(te))))
    psi_grid = -period / 2 + period * np.arange(psi_steps) / psi_steps
    res = _search_residuals(y, te, c, psi_grid, search_r2, chunk)
    local = (res <= np.roll(res, 1, axis=1)) & (res <= np.roll(res, -1, axis=1))
    ranked = np.argsort(np.where(local, res, np.inf), axis=1)[:, :2]
    second_ok = np.isfinite(np.take_along_axis(np.where(local, res, np.inf), ranked[:, 1:2], axis=1))[:, 0]
    ranked[:, 1] = np.where(second_ok, ranked[:, 1], ranked[:, 0])
    # sub-grid position of each candidate: the vertex of the parabola through the residuals around it
    step = period / psi_steps
    r0 = np.take_along_axis(res, ranked, axis=1)
    rm = np.take_along_axis(res, (ranked - 1) % psi_steps, axis=1)
    rp = np.take_along_axis(res, (ranked + 1) % psi_steps, axis=1)
    curv = rm - 2.0 * r0 + rp
    offset = np.where(curv > 0, 0.5 * (rm - rp) / np.where(curv > 0, curv, 1.0), 0.0)
    cand = psi_grid[ranked] + np.clip(offset, -0.5, 0.5) * step
    coarse = _regional_field(res, mask, psi_grid, block_px, block_sigma)
    del res
    choice = np.argmin(np.abs(_wrap(cand - coarse[:, None], period)), axis=1)
    weight = np.zeros(mask.shape)
    weight[mask] = np.sqrt(np.sum(np.abs(y) ** 2, axis=1))
    psi_map = np.zeros(mask.shape)
    idx = np.arange(y.shape[0])
    for sig in smoothing_px:
        psi_map[mask] = cand[idx, choice]
        smooth = _smooth_phasor(psi_map, weight, period, sig)[mask]
        choice = np.argmin(np.abs(_wrap(cand - smooth[:, None], period)), axis=1)
    psi = cand[idx, choice]
    del cand
    r2 = np.full(y.shape[0], search_r2)
    w, f = np.empty(y.shape[0]), np.empty(y.shape[0])
    for s in range(0, y.shape[0], chunk):
        part = slice(s, s + chunk)
        psi[part], r2[part] = _newton_field_r2(y[part], te, c, psi[part], r2[part], period / psi_steps / 4.0,
                                               r2star_max, newton_iterations)
        w[part], f[part], _ = _common_phase(y[part], te, c, psi[part], r2[part])
    total = w + f
    ff = np.where(np.abs(total) > 1e-9, f / np.where(np.abs(total) > 1e-9, total, 1.0), 0.0)
    out = {}
    for name, v in (("ff", ff), ("r2star", r2), ("rho", total), ("psi", psi)):
        arr = np.zeros(mask.shape, np.float32)
        arr[mask] = v
        out[name] = arr
    return WaterFatMaps(out["ff"], out["r2star"], out["rho"], mask, None, out["psi"],
                        f"complex fit of {te.size} echoes (variable projection), multi-peak fat, R2*, smoothed field "
                        "map, common-phase water and fat",
                        [f"field map period {period:.1f} Hz"],
                        ["complex fit: field-map changes of more than half a period between neighbouring regions "
                         "(phase wraps) can swap water and fat"])


def fit_echoes(magnitudes: np.ndarray, phases: np.ndarray | None, te_ms: Sequence[float], field_t: float,
               cfg: dict[str, Any] | None = None) -> WaterFatMaps:
    """The multi-echo fit the data allow: :func:`fit_complex` when phases (radians) are given for every echo,
    :func:`fit_magnitude` otherwise; ``cfg`` is ``calf.water_fat`` of configs/default.yaml.

    ``magnitudes`` and ``phases``: (X, Y, Z, N) arrays, echoes in the order of ``te_ms`` (at least 3).
    """
    cfg = cfg or {}
    spectrum = spectrum_from_config(cfg)
    r2max = float(cfg.get("r2star_max_per_s", 400.0))
    thr = float(cfg.get("mask_fraction_of_p99", 0.05))
    if len(te_ms) < 3:
        raise ValueError(f"a multi-echo fit needs at least 3 echoes, got {len(te_ms)}.")
    labels = [echo_phase_label(t, field_t, float(cfg.get("echo_phase_tolerance_deg", 30.0)), spectrum) for t in te_ms]
    if phases is not None:
        signal = np.asarray(magnitudes, np.float64) * np.exp(1j * np.asarray(phases, np.float64))
        maps = fit_complex(signal, te_ms, field_t, spectrum=spectrum, r2star_max=r2max, mask_threshold=thr)
    else:
        maps = fit_magnitude(magnitudes, te_ms, field_t, spectrum=spectrum, r2star_max=r2max, mask_threshold=thr,
                             voxel_evidence=float(cfg.get("dominance_evidence_sigma2", 4.0)),
                             pool_sigma_px=float(cfg.get("dominance_pool_sigma_px", 1.5)),
                             pool_fraction=float(cfg.get("dominance_pool_fraction", 0.3)))
    maps.notes.insert(0, f"echoes {', '.join(f'{t:g} ms ({lab})' for t, lab in zip(te_ms, labels))} at "
                         f"{field_t:g} T; fat spectrum: {spectrum.source or 'configured'}")
    return maps
