"""Inputs that are not calves, given as calf images, for the quality-control tests ("is this a calf at all?").

Four kinds, each returned as the same five series a calf phantom has (``calf_water``, ``calf_fat``,
``calf_inphase``, ``calf_outphase``, ``calf_anatomical``) so that the pipeline can be pointed at them:

``thigh``
    Both thighs, axial: one central femur (thick cortex), quadriceps (rectus femoris, vastus lateralis, medialis,
    intermedius) anteriorly, hamstrings (biceps femoris, semitendinosus, semimembranosus) posteriorly, adductors
    (longus, magnus), gracilis and sartorius medially; a larger cross-section than a calf (girth 45-60 cm).
``foot``
    Both feet cut across their long axis from the heel to the toes (the slices a calf protocol gives of a foot
    placed in the coil): calcaneus and talus, then the tarsal bones, then five metatarsals in an arch; small
    intrinsic muscles, tendons, a thick plantar fat pad.
``empty``
    An all-zero volume of calf-protocol size.
``noise``
    Rician noise only, no anatomy.

Thigh and foot use the cross-section model and the tissue signal model of :mod:`pipeline.synth.calf_atlas`
(superellipse contours at a few levels, priority, nearest-muscle fill, septa; spoiled gradient-echo Dixon and a
spin-echo anatomical image). Their label maps use their own ids (``NotCalfPhantom.label_names``), not the calf
registry: nothing here is a calf structure. For evaluation and tests only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from pipeline.core.volume import Volume
from pipeline.synth.calf_atlas import (
    AIR,
    CORTEX,
    INTERFAT,
    MARROW,
    MUSCLE,
    SEPTUM,
    SKIN,
    SUBFAT,
    TENDON,
    VESSEL,
    AtlasSpec,
    TissueRenderer,
    block_mode,
    series_naming,
    superellipse_inside,
    write_series_study,
)
from pipeline.synth.common import SynthSeries, axial_grid_affine

KINDS = ("thigh", "foot", "empty", "noise")
_ = None


@dataclass(frozen=True)
class _Part:
    """One body part: levels along its axis, skin semi-axes (lateral, medial, anterior/dorsal, posterior/plantar)
    and fat thickness (anterior, posterior) per level, and structures (name -> tissue, levels) in priority order."""

    levels: tuple[float, ...]
    skin: tuple[tuple[float, float, float, float], ...]
    fat: tuple[tuple[float, float], ...]
    structures: dict[str, tuple[int, list]]
    cortex_mm: float
    length_mm: float


THIGH = _Part(
    levels=(0.0, 0.5, 1.0),
    skin=((86, 84, 78, 80), (78, 76, 70, 72), (62, 60, 55, 56)),
    fat=((10, 12), (9, 11), (7, 8)),
    structures={
        "femur": (CORTEX, [(6, -2, 15, 15, 0), (4, 0, 14, 14, 0), (2, 4, 26, 20, 0)]),
        "femoral_vessels": (VESSEL, [(-30, 16, 4.5, 4.5, 0), (-30, -6, 4.0, 4.0, 0), (0, -26, 4.0, 4.0, 0)]),
        "sartorius": (MUSCLE, [(-28, 52, 10, 7, -20), (-50, 20, 9, 8, 0), (-48, -8, 8, 8, 0)]),
        "gracilis": (MUSCLE, [(-62, -10, 8, 12, 0), (-60, -18, 7, 10, 0), (-46, -26, 6, 8, 0)]),
        "rectus_femoris": (MUSCLE, [(4, 54, 18, 13, 0), (4, 50, 15, 11, 0), (4, 40, 8, 5, 0)]),
        "vastus_intermedius": (MUSCLE, [(6, 26, 28, 14, 0), (4, 24, 26, 14, 0), (2, 26, 20, 9, 0)]),
        "vastus_lateralis": (MUSCLE, [(44, 20, 24, 32, 30), (42, 14, 24, 32, 30), (34, 16, 18, 20, 30)]),
        "vastus_medialis": (MUSCLE, [(-22, 32, 14, 16, -30), (-30, 26, 20, 22, -30), (-30, 20, 24, 22, -30)]),
        "adductor_longus": (MUSCLE, [(-34, 12, 20, 16, -20), (-38, 2, 13, 11, 0), _]),
        "adductor_magnus": (MUSCLE, [(-30, -28, 30, 26, 20), (-30, -24, 26, 24, 20), (-20, -24, 12, 10, 0)]),
        "semimembranosus": (MUSCLE, [(-22, -52, 15, 13, 0), (-20, -50, 17, 15, 0), (-20, -40, 17, 13, 0)]),
        "semitendinosus": (MUSCLE, [(-6, -64, 13, 11, 0), (-8, -62, 13, 11, 0), (-12, -50, 9, 7, 0)]),
        "biceps_femoris": (MUSCLE, [(22, -52, 18, 20, 0), (26, -46, 20, 20, 0), (28, -36, 17, 15, 0)]),
    },
    cortex_mm=6.0, length_mm=260.0)

FOOT = _Part(
    levels=(0.0, 0.3, 0.6, 0.85, 1.0),
    skin=((30, 30, 30, 32), (40, 36, 34, 26), (46, 42, 26, 18), (48, 44, 18, 14), (44, 40, 12, 10)),
    fat=((3, 14), (3, 9), (2.5, 7), (2, 6), (2, 4)),
    structures={
        "calcaneus": (CORTEX, [(0, -4, 22, 22, 0), (8, -6, 15, 12, 0), _, _, _]),
        "talus": (CORTEX, [(0, 18, 11, 8, 0), (-6, 16, 14, 10, 0), _, _, _]),
        "navicular_cuneiforms": (CORTEX, [_, (-16, 12, 13, 10, 0), (-18, 10, 10, 8, 0), _, _]),
        "cuboid": (CORTEX, [_, (20, 2, 12, 10, 0), (22, 0, 7, 6, 0), _, _]),
        "metatarsal_1": (CORTEX, [_, _, (-28, 6, 9, 8, 0), (-30, 2, 8, 7, 0), (-30, 0, 6, 5, 0)]),
        "metatarsal_2": (CORTEX, [_, _, (-14, 10, 5, 5, 0), (-14, 5, 4.5, 4.5, 0), (-15, 2, 3.5, 3.5, 0)]),
        "metatarsal_3": (CORTEX, [_, _, (-2, 10, 5, 5, 0), (-2, 5, 4.5, 4.5, 0), (-3, 2, 3.5, 3.5, 0)]),
        "metatarsal_4": (CORTEX, [_, _, (10, 8, 5, 5, 0), (10, 4, 4.5, 4.5, 0), (9, 1, 3.5, 3.5, 0)]),
        "metatarsal_5": (CORTEX, [_, _, (22, 4, 6, 5, 0), (22, 1, 4.5, 4.5, 0), (20, 0, 3.5, 3.5, 0)]),
        "dorsal_tendons": (TENDON, [(0, 26, 14, 2.5, 0), (-4, 26, 20, 2.5, 0), (-4, 18, 24, 2.0, 0),
                                    (-4, 12, 26, 1.5, 0), (-4, 8, 24, 1.2, 0)]),
        "plantar_tendons": (TENDON, [(-14, 0, 6, 3, 0), (-10, -6, 8, 3, 0), (-12, -4, 16, 2.5, 0),
                                     (-10, -5, 20, 2, 0), (-8, -6, 18, 1.5, 0)]),
        "abductor_hallucis": (MUSCLE, [(-24, -10, 8, 10, 0), (-28, -10, 10, 10, 0), (-32, -6, 8, 7, 0),
                                       (-32, -6, 6, 5, 0), _]),
        "flexor_digitorum_brevis": (MUSCLE, [(0, -20, 14, 6, 0), (2, -14, 16, 7, 0), (0, -9, 18, 6, 0),
                                             (0, -7, 16, 4, 0), _]),
        "abductor_digiti_minimi": (MUSCLE, [(20, -14, 8, 8, 0), (24, -10, 8, 8, 0), (30, -6, 7, 6, 0),
                                            (28, -4, 5, 4, 0), _]),
        "quadratus_plantae": (MUSCLE, [(2, -8, 10, 5, 0), (4, -6, 12, 5, 0), _, _, _]),
        "interossei": (MUSCLE, [_, _, (-2, 4, 26, 6, 0), (-2, 2, 26, 5, 0), _]),
        "extensor_digitorum_brevis": (MUSCLE, [_, (14, 22, 10, 4, 0), (12, 16, 12, 3, 0), _, _]),
    },
    cortex_mm=1.5, length_mm=200.0)

PARTS = {"thigh": THIGH, "foot": FOOT}


@dataclass
class NotCalfPhantom:
    """Five calf-role series of something that is not a calf, with its own label map (ids of ``label_names``;
    None for ``empty`` and ``noise``) and a small truth record."""

    kind: str
    series: list[SynthSeries]
    labels: Volume | None
    label_names: dict[int, str] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)

    def volume(self, role: str) -> Volume:
        for s in self.series:
            if s.role == role:
                return s.volume
        raise KeyError(f"no series with role '{role}'; have {', '.join(s.role for s in self.series)}")


def _table(levels: list) -> np.ndarray:
    present = [i for i, x in enumerate(levels) if x is not None]
    out = np.zeros((len(levels), 5))
    for i, x in enumerate(levels):
        if x is not None:
            out[i] = x
        else:
            out[i] = levels[min(present, key=lambda p: abs(p - i))]
            out[i, 2:4] = 0.0
    return out


class _Section:
    """One limb of a body part in the field of view (reference coordinates: u lateral, v anterior or dorsal)."""

    def __init__(self, part: _Part, side: str, center: tuple[float, float], scale: float, rotation_deg: float,
                 fat_scale: float, rng: np.random.Generator):
        self.part = part
        self.cx, self.cy = center
        self.mirror = 1.0 if side == "right" else -1.0
        psi = np.deg2rad(rotation_deg)
        self.cos, self.sin = np.cos(psi), np.sin(psi)
        self.scale = scale
        self.fat_scale = fat_scale
        lv = np.array(part.levels)
        self.skin = PchipInterpolator(lv, np.array(part.skin, float), axis=0)
        self.fat = PchipInterpolator(lv, np.array(part.fat, float), axis=0)
        self.tables = {k: PchipInterpolator(lv, _table(v[1]), axis=0) for k, v in part.structures.items()}
        self.mods = {k: (rng.normal(0, 1.0, 2), float(np.exp(rng.normal(0, 0.06))), rng.normal(0, 0.03, 3),
                         rng.uniform(0, 2 * np.pi, 3)) for k in part.structures}
        self.ff = {k: float(rng.uniform(0.02, 0.1)) for k in part.structures}

    def extent_mm(self) -> float:
        return float(np.max(self.part.skin) * self.scale * 1.1 + 6)

    def render(self, xs: np.ndarray, ys: np.ndarray, t: float, fine_mm: float, ids: dict[str, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xr, yr = xs[:, None] - self.cx, ys[None, :] - self.cy
        U = self.mirror * (self.cos * xr + self.sin * yr) / self.scale
        V = (-self.sin * xr + self.cos * yr) / self.scale
        theta, rho = np.arctan2(V, U), np.hypot(U, V)
        al, am, ba, bp = self.skin(t)
        c, s = np.cos(theta), np.sin(theta)
        a, b = np.where(c >= 0, al, am), np.where(s >= 0, ba, bp)
        r_skin = (np.abs(c / a) ** 2.2 + np.abs(s / b) ** 2.2) ** (-1 / 2.2)
        fa, fp = self.fat(t) * self.fat_scale
        fat = np.where(s >= 0, fa, fa + (fp - fa) * np.abs(s)) / self.scale  # thicker posteriorly / plantar
        inside = rho < r_skin
        env = rho < r_skin - np.maximum(fat, 1.5)
        lab = np.zeros(U.shape, np.int16)
        tis = np.full(U.shape, AIR, np.int8)
        ffm = np.zeros(U.shape, np.float32)
        tis[inside] = SUBFAT
        tis[inside & (rho > r_skin - 1.5 / self.scale)] = SKIN
        lab[inside] = ids["subcutaneous_fat"]
        tis[env] = INTERFAT
        lab[env] = 0
        claimed = ~env
        for name, (tissue, _lv) in self.part.structures.items():
            cu, cv, sa, sb, rot = self.tables[name](t)
            shift, size, harm, ph = self.mods[name]
            sa, sb = sa * size, sb * size
            if sa < 0.6 or sb < 0.6:
                continue
            sh = (cu + shift[0], cv + shift[1], sa, sb, rot)
            # index box of the structure (reference -> world -> fine grid), with a margin for the contour harmonics
            ur, vr = self.mirror * sh[0] * self.scale, sh[1] * self.scale
            wx, wy = self.cx + self.cos * ur - self.sin * vr, self.cy + self.sin * ur + self.cos * vr
            rad = max(sa, sb) * 1.2 * self.scale + 2.0
            bi = slice(max(int((wx - rad - xs[0]) / fine_mm), 0), max(int((wx + rad - xs[0]) / fine_mm) + 2, 0))
            bj = slice(max(int((wy - rad - ys[0]) / fine_mm), 0), max(int((wy + rad - ys[0]) / fine_mm) + 2, 0))
            m, rn = superellipse_inside(U[bi, bj], V[bi, bj], sh, 2.0, 0.0, harm, ph)
            m &= ~claimed[bi, bj] if tissue != CORTEX else inside[bi, bj]
            t_, l_, f_, c_ = tis[bi, bj], lab[bi, bj], ffm[bi, bj], claimed[bi, bj]
            t_[m] = tissue
            l_[m] = ids[name] if tissue in (MUSCLE, CORTEX) else 0
            if tissue == CORTEX:
                t_[m & (rn < 1.0 - self.part.cortex_mm / self.scale / (0.5 * (sa + sb)))] = MARROW
            elif tissue == MUSCLE:
                f_[m] = self.ff[name]
            c_[m] = True
        muscle = tis == MUSCLE
        gap = env & ~claimed
        if gap.any() and muscle.any():
            dist, (ii, jj) = ndimage.distance_transform_edt(~muscle, sampling=fine_mm, return_indices=True)
            fill = gap & (dist <= 10.0)
            lab[fill], tis[fill], ffm[fill] = lab[ii[fill], jj[fill]], MUSCLE, ffm[ii[fill], jj[fill]]
        lm = np.where(tis == MUSCLE, lab, -1)
        for ax in (0, 1):
            d = np.diff(lm, axis=ax) != 0
            both = d & (np.delete(lm, -1, axis=ax) >= 0) & (np.delete(lm, 0, axis=ax) >= 0)
            pad = [(0, 0), (0, 0)]
            pad[ax] = (0, 1)
            tis[np.pad(both, pad)] = SEPTUM
        return lab, tis, ffm


def generate_not_calf(kind: str, seed: int = 0, *, n_slices: int | None = None, in_plane_mm: float = 1.0,
                      slice_mm: float | None = None, legs: int = 2) -> NotCalfPhantom:
    """A ``thigh``, ``foot``, ``empty`` or ``noise`` volume as five calf-role series on a calf-protocol grid.
    Deterministic from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"kind='{kind}'; use one of {', '.join(KINDS)}.")
    if legs not in (1, 2):
        raise ValueError(f"legs={legs}; use 1 or 2.")
    rng = np.random.default_rng([seed, 8080, KINDS.index(kind)])
    params = AtlasSpec(anatomical=str(rng.choice(["t1", "t2", "pd", "stir"], p=[0.55, 0.2, 0.1, 0.15])),
                       field_t=float(rng.choice([1.5, 3.0])), noise_pct=float(rng.uniform(1.0, 3.0)),
                       bias=float(rng.uniform(0.05, 0.3)), septum_ff=float(rng.uniform(0.4, 0.8)))
    naming = series_naming("siemens", params.anatomical)
    if kind in ("empty", "noise"):
        return _featureless(kind, rng, params, naming, n_slices or 24, in_plane_mm, slice_mm or 5.0)
    part = PARTS[kind]
    names = ["subcutaneous_fat"] + [k for k, (tis, _lv) in part.structures.items() if tis in (MUSCLE, CORTEX)]
    ids = {n: i + 1 for i, n in enumerate(names)}
    sides = ("left", "right") if legs == 2 else (str(rng.choice(["left", "right"])),)
    scale = float(rng.uniform(0.9, 1.12))
    probe = _Section(part, "right", (0.0, 0.0), scale, 0.0, 1.0, rng)
    ext = probe.extent_mm()
    sep = 2 * ext + float(rng.uniform(5, 40)) if legs == 2 else 0.0
    centers = {"right": (sep / 2, 0.0), "left": (-sep / 2, 0.0)} if legs == 2 else {sides[0]: (0.0, 0.0)}
    sections = {s: _Section(part, s, centers[s], scale * float(rng.uniform(0.97, 1.03)),
                            float(rng.uniform(-15, 20)), float(rng.uniform(0.6, 1.6)),
                            np.random.default_rng([seed, 8081, i])) for i, s in enumerate(sides)}
    d, f = in_plane_mm, 2
    nx = int(np.ceil((sep + 2 * ext + 16) / d))
    ny = int(np.ceil((2 * ext + 16) / d))
    x0, y0 = -(nx - 1) / 2 * d, -(ny - 1) / 2 * d
    dz = slice_mm or (8.0 if kind == "thigh" else 5.0)
    nz = n_slices or max(8, int(part.length_mm * 0.8 / dz))
    t0, t1 = (0.05, 0.95)
    ts = np.linspace(t1, t0, nz) if nz > 1 else np.array([0.5])  # slice 0 inferior (distal thigh / toes)
    z0 = float(rng.uniform(-400, -200))
    affine = axial_grid_affine(x0, y0, z0, d, d, dz)
    fine = d / f
    fx = x0 - d / 2 + fine * (np.arange(nx * f) + 0.5)
    fy = y0 - d / 2 + fine * (np.arange(ny * f) + 0.5)
    renderer = TissueRenderer(params, (nx, ny, nz), f, rng)
    labels = np.zeros((nx, ny, nz), np.int16)
    for k in range(nz):
        for sec in sections.values():
            i0, i1 = (int(np.clip(np.floor((c - x0) / d), 0, nx)) for c in (sec.cx - ext, sec.cx + ext + d))
            j0, j1 = (int(np.clip(np.floor((c - y0) / d), 0, ny)) for c in (sec.cy - ext, sec.cy + ext + d))
            lab, tis, ffm = sec.render(fx[i0 * f:i1 * f], fy[j0 * f:j1 * f], float(ts[k]), fine, ids)
            sl = (slice(i0, i1), slice(j0, j1), k)
            labels[sl] = np.maximum(labels[sl], block_mode(lab, f, len(ids) + 1))
            renderer.add(sl, tis, ffm)
    series = renderer.series(affine, naming, "calf")
    lab_vol = Volume(labels, affine, {"generator": "not_calf"})
    truth = {"kind": kind, "is_calf": False, "legs_in_fov": list(sides), "anatomical_contrast": params.anatomical,
             "structures": names}
    return NotCalfPhantom(kind, series, lab_vol, {i: n for n, i in ids.items()}, truth)


def _featureless(kind: str, rng: np.random.Generator, params: AtlasSpec, naming: dict[str, str], nz: int,
                 in_plane_mm: float, slice_mm: float) -> NotCalfPhantom:
    nx, ny = int(round(400 / in_plane_mm)), int(round(200 / in_plane_mm))
    affine = axial_grid_affine(-(nx - 1) / 2 * in_plane_mm, -(ny - 1) / 2 * in_plane_mm, -300.0, in_plane_mm,
                               in_plane_mm, slice_mm)
    series = []
    for role in ("water", "fat", "inphase", "outphase", "anatomical"):
        if kind == "empty":
            arr = np.zeros((nx, ny, nz), np.uint16)
        else:
            sigma = float(rng.uniform(20, 200))
            n = rng.standard_normal((2, nx, ny, nz), dtype=np.float32) * sigma
            arr = np.round(np.hypot(n[0], n[1])).astype(np.uint16)
        contrast = params.anatomical if role == "anatomical" else role
        series.append(SynthSeries(f"calf_{role}", Volume(arr, affine, {"generator": "not_calf"}), None,
                                  naming[role], "axial", contrast))
    return NotCalfPhantom(kind, series, None, {}, {"kind": kind, "is_calf": False, "legs_in_fov": []})


def write_not_calf_study(kind: str, seed: int, out_dir: str | Path, fmt: str = "nifti", **options: Any) -> Path:
    """Write a ``thigh``, ``foot``, ``empty`` or ``noise`` input as a calf study folder (NIfTI + study.yaml with
    roles calf_water, calf_fat, calf_inphase, calf_outphase, calf_anatomical; or DICOM with calf series
    descriptions) with ``ground_truth.json`` saying what it is (``is_calf: false``). ``options`` go to
    :func:`generate_not_calf` (e.g. ``n_slices``)."""
    ph = generate_not_calf(kind, seed, **options)
    # presented as a calf study: nothing but the pixels tells that it is not one
    return write_series_study(ph.series, {"case": f"not_calf_{kind}", "calf": None, "not_calf": ph.truth}, out_dir,
                              fmt, seed, study_description="MRI BOTH LOWER LEGS")
