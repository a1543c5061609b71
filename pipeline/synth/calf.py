"""Calf phantom: both legs (or one) in an axial Dixon stack, with exact ground truth.

Anatomy. Each leg is described in its own cross-sectional frame (u: lateral +, v: anterior +, mm) as a function of
``t``, the fraction of tibial length below the tibial plateau (0 = knee, 1 = ankle):

* skin outline: an ellipse with random smooth harmonics, sized from the tissue it holds;
* subcutaneous fat: a ring of per-leg thickness (thicker posteromedially); the outer 1.5 mm is skin;
* tibia (anteromedial, rounded triangle, thin-cortex metaphysis proximally) and fibula (posterolateral), each with a
  dark cortex and fat-bright marrow; the interosseous membrane between them;
* nine muscles packed in their compartments by a power diagram whose cell areas are fitted, slice by slice, to
  cross-sectional-area profiles along ``t`` (gastrocnemius heads large proximally and ending mid-calf, soleus largest
  mid-calf, flexor hallucis longus appearing distally), with wavy borders and thin fascia between muscles.

Physics. Per-voxel water and fat proton densities are rendered at 2x in-plane and 2 sub-slices per slice, averaged
to the output grid (partial volume), multiplied by a smooth bias field and given Rician noise per Dixon magnitude.

Ground truth. Label maps hold the majority label of the fine rendering; ``truth`` gives per-muscle volumes and
proton-density fat fractions (fat protons / all protons of the muscle tissue, fascia excluded) from the fine
rendering, CSA at named levels and the analytic skin-outline girth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.geometry import SIDES, Side, side_of_world_x
from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.synth.common import SynthSeries, axial_grid_affine, smooth_noise_2d
from pipeline.synth.physics import TISSUES, bias_field, dixon_magnitudes, rician

MUSCLES = ("gastrocnemius_medial", "gastrocnemius_lateral", "soleus", "tibialis_anterior",
           "extensor_digitorum_longus", "peroneus", "tibialis_posterior", "flexor_digitorum_longus",
           "flexor_hallucis_longus")

#: Fractions of tibial length at which the CSA profiles are given.
T_KNOTS = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
#: Healthy adult CSA profiles (mm2) along the calf, shaped after published calf MRI anatomy (gastrocnemius heads
#: ending in the aponeurosis mid-calf, soleus largest mid-calf, FHL appearing distally).
CSA_PROFILE_MM2 = {
    "gastrocnemius_medial": [300, 1300, 1700, 1550, 1050, 450, 60, 0, 0, 0],
    "gastrocnemius_lateral": [250, 800, 950, 720, 320, 40, 0, 0, 0, 0],
    "soleus": [0, 250, 850, 1450, 1850, 1850, 1550, 1100, 600, 200],
    "tibialis_anterior": [200, 560, 660, 650, 600, 500, 400, 260, 130, 60],
    "extensor_digitorum_longus": [100, 250, 320, 350, 380, 380, 350, 300, 220, 120],
    "peroneus": [150, 350, 500, 600, 620, 580, 480, 350, 200, 100],
    "tibialis_posterior": [100, 300, 420, 450, 420, 350, 260, 180, 100, 60],
    "flexor_digitorum_longus": [0, 40, 110, 190, 250, 300, 300, 260, 200, 120],
    "flexor_hallucis_longus": [0, 0, 30, 110, 250, 400, 480, 450, 350, 200],
}
#: Seed positions of the muscles in the leg frame, in units of the muscle region's half-axes (u lateral, v anterior).
SEEDS = {
    "gastrocnemius_medial": (-0.42, -0.62),
    "gastrocnemius_lateral": (0.40, -0.62),
    "soleus": (0.0, -0.30),
    "tibialis_anterior": (0.06, 0.58),
    "extensor_digitorum_longus": (0.42, 0.40),
    "peroneus": (0.74, 0.0),
    "tibialis_posterior": (0.12, 0.10),
    "flexor_digitorum_longus": (-0.34, 0.02),
    "flexor_hallucis_longus": (0.36, -0.16),
}
TIBIA_CENTER = (-0.30, 0.42)  # in region half-axes
FIBULA_CENTER = (0.56, 0.05)
TIBIA_RADIUS_MM = np.array([33, 22, 17, 15, 14, 13, 13, 13.5, 15, 18])
TIBIA_CORTEX_MM = np.array([1.2, 2.5, 4.0, 4.8, 5.0, 5.0, 4.8, 4.2, 3.0, 2.0])
FIBULA_RADIUS_MM = np.array([11, 8, 7, 6.5, 6.2, 6.0, 6.0, 6.2, 7.0, 8.0])
FASCIA_HALF_WIDTH_MM = 0.35
BORDER_WAVE_MM2 = 150.0  # amplitude of the random field added to the power distances: wavy muscle borders
SKIN_MM = 1.5
FF_PATTERNS = ("diffuse", "patchy", "complete")
VENDORS = ("siemens", "philips", "ge")


@dataclass
class MusclePathology:
    """Fat fraction (0-1) and its pattern, size scale (1 = normal) and oedema of one muscle of one leg."""

    ff: float = 0.03
    pattern: str = "diffuse"
    scale: float = 1.0
    oedema: bool = False


@dataclass
class CalfSpec:
    """Everything that varies between calf phantoms: anatomy, pathology, acquisition, vendor."""

    legs: tuple[Side, ...] = ("left", "right")
    leg_scale: dict[str, float] = field(default_factory=lambda: {"left": 1.0, "right": 1.0})
    fat_mm: dict[str, float] = field(default_factory=lambda: {"left": 9.0, "right": 9.0})
    gap_mm: float = 45.0  # skin-to-skin distance between the legs at the widest level
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # patient position shift (RAS)
    rotation_deg: dict[str, float] = field(default_factory=lambda: {"left": -8.0, "right": 8.0})  # external rotation
    tibial_length_mm: float = 360.0
    t_start: float = 0.08  # first (most proximal) slice, fraction of tibial length
    n_slices: int = 36
    slice_mm: float = 6.0
    in_plane_mm: float = 1.0
    pathology: dict[str, dict[str, MusclePathology]] = field(default_factory=dict)
    snr: float = 40.0  # healthy muscle water signal / noise sigma
    bias: float = 0.25
    vendor: str = "siemens"
    with_ffmap: bool = False
    with_stir: bool = False
    anatomy_jitter: float = 1.0  # scales the random anatomical variation (0 = the template)
    intensity_scale: float = 500.0  # stored value of proton density 1.0 at unit bias
    leg_asymmetry: float = 0.02  # sd of the independent left/right log-CSA differences of healthy muscles
    fascia_half_width_mm: float = FASCIA_HALF_WIDTH_MM  # intermuscular fascia / fat septum half width
    # Extra anatomical variety of label maps for training (0 = none): scales a per-person log-normal factor on each
    # muscle's CSA (sd 0.35), a shift of each muscle's CSA profile along the tibia (sd 0.06 of its length, so
    # the gastrocnemius ends higher or lower), extra seed jitter (sd 0.03 half-axes) and wavier borders.
    shape_variety: float = 0.0
    # Shifts of the template positions (half-axes of the muscle region; u lateral, v anterior) of muscle seeds
    # (SEEDS) and bones (TIBIA_CENTER, FIBULA_CENTER), by name: label maps for training whose anatomy departs from
    # the template's (none for the project's phantoms).
    seed_shift: dict[str, tuple[float, float]] = field(default_factory=dict)

    def muscle(self, side: str, name: str) -> MusclePathology:
        return self.pathology.get(side, {}).get(name, MusclePathology())

    @classmethod
    def random(cls, rng: np.random.Generator) -> CalfSpec:
        """A random spec spanning the training/evaluation variety: size, separation, rotation, resolution, slice
        thickness, one-leg studies, pathology patterns, SNR, bias and vendor."""
        legs: tuple[Side, ...] = ("left", "right")
        u = rng.uniform()
        if u < 0.1:
            legs = ("left",)
        elif u < 0.2:
            legs = ("right",)
        slice_mm = float(rng.choice([3.0, 4.0, 5.0, 6.0, 7.0, 8.0]))
        coverage = rng.uniform(0.55, 0.7) * 360.0
        n = int(np.clip(round(coverage / slice_mm), 24, 60))
        spec = cls(
            legs=legs,
            leg_scale={s: float(rng.uniform(0.85, 1.15)) for s in SIDES},
            fat_mm={s: float(rng.uniform(4.0, 18.0)) for s in SIDES},
            gap_mm=float(rng.uniform(15.0, 90.0)),
            offset_mm=(float(rng.uniform(-40, 40)), float(rng.uniform(-30, 30)), float(rng.uniform(-60, 60))),
            rotation_deg={"left": float(rng.uniform(-20, 5)), "right": float(rng.uniform(-5, 20))},
            tibial_length_mm=float(rng.uniform(320, 400)),
            t_start=float(rng.uniform(0.04, 0.15)),
            n_slices=n, slice_mm=slice_mm, in_plane_mm=float(rng.uniform(0.6, 1.5)),
            snr=float(rng.uniform(15, 60)), bias=float(rng.uniform(0.0, 0.45)),
            vendor=str(rng.choice(VENDORS)), with_ffmap=bool(rng.uniform() < 0.3),
            leg_asymmetry=float(rng.uniform(0.0, 0.08)),
        )
        kind = rng.choice(["healthy", "myopathic", "neurogenic", "focal", "mixed"], p=[0.25, 0.2, 0.25, 0.15, 0.15])
        path: dict[str, dict[str, MusclePathology]] = {s: {} for s in SIDES}
        if kind == "myopathic":
            ff = rng.uniform(0.15, 0.5)
            for m in rng.choice(MUSCLES, size=int(rng.integers(3, 9)), replace=False):
                for s in SIDES:
                    path[s][m] = MusclePathology(ff=float(ff * rng.uniform(0.85, 1.15)),
                                                 pattern=str(rng.choice(["diffuse", "patchy"])),
                                                 scale=float(rng.uniform(0.8, 1.3)))
        elif kind in ("neurogenic", "mixed"):
            side = str(rng.choice(SIDES))
            group = ["gastrocnemius_medial", "gastrocnemius_lateral", "soleus"] if rng.uniform() < 0.6 else \
                ["tibialis_anterior", "extensor_digitorum_longus", "peroneus", "tibialis_posterior"]
            for m in group:
                if rng.uniform() < 0.5:
                    path[side][m] = MusclePathology(ff=float(rng.uniform(0.5, 0.9)), pattern="complete",
                                                    scale=float(rng.uniform(0.7, 1.2)))
                else:
                    path[side][m] = MusclePathology(ff=float(rng.uniform(0.02, 0.2)),
                                                    pattern=str(rng.choice(FF_PATTERNS[:2])),
                                                    scale=float(rng.uniform(1.0, 1.45)))
        elif kind == "focal":
            side, m = str(rng.choice(SIDES)), str(rng.choice(MUSCLES))
            path[side][m] = MusclePathology(ff=float(rng.uniform(0.03, 0.3)), pattern="patchy",
                                            scale=float(rng.uniform(1.0, 1.4)), oedema=True)
        spec.pathology = path
        return spec


@dataclass
class CalfPhantom:
    spec: CalfSpec
    series: list[SynthSeries]
    labels: Volume
    truth: dict[str, Any]
    water_fat: dict[str, Volume]  # noiseless water and fat proton-density maps on the output grid

    def volume(self, role: str) -> Volume:
        return next(s.volume for s in self.series if s.role == role)


# -- anatomy of one leg ---------------------------------------------------------------------------------------
def _interp(profile: Any, t: float) -> float:
    return float(np.interp(t, T_KNOTS, np.asarray(profile, dtype=float)))


class _Leg:
    """The cross-sectional model of one leg; all randomness drawn once at construction."""

    def __init__(self, side: Side, spec: CalfSpec, center_xy: tuple[float, float], rng: np.random.Generator,
                 rng_side: np.random.Generator):
        """``rng`` draws the anatomy shared by both legs of a person (mirror images); ``rng_side`` the left/right
        differences (``spec.leg_asymmetry``)."""
        self.side = side
        self.spec = spec
        self.cx, self.cy = center_xy
        self.lateral_sign = 1.0 if side == "right" else -1.0  # RAS: the right leg's lateral side is at larger x
        rot = np.radians(spec.rotation_deg[side])
        self.cos, self.sin = np.cos(rot), np.sin(rot)
        j = spec.anatomy_jitter
        self.harm = [(rng.uniform(0, 0.05) * j, rng.uniform(0, 2 * np.pi)) for _ in range(4)]  # outline harmonics
        self.aspect = 1.0 + 0.12 * rng.uniform(-1, 1) * j + 0.08
        self.seed_jit = {m: rng.normal(0, 0.04 * j, 2) for m in MUSCLES}
        self.seed_drift = {m: rng.normal(0, 0.03 * j, 2) for m in MUSCLES}
        self.csa_jit = {m: float(np.exp(rng.normal(0, 0.10 * j) + rng_side.normal(0, spec.leg_asymmetry)))
                        for m in MUSCLES}
        self.noise = {m: smooth_noise_2d(rng, 6, 0.05) for m in MUSCLES}
        self.patch = {m: smooth_noise_2d(rng, 8, 0.08) for m in MUSCLES}
        self.fat_field = smooth_noise_2d(rng, 4, 0.03)
        self.bone_jit = rng.normal(0, 0.03 * j, 4)
        self.bone_scale = float(np.exp(rng.normal(0, 0.06 * j)))
        self.scale = spec.leg_scale[side]
        self.fat_mm = spec.fat_mm[side]
        self.wave_mm2 = BORDER_WAVE_MM2
        self.t_shift = dict.fromkeys(MUSCLES, 0.0)
        if spec.shape_variety > 0:  # drawn last, so that phantoms without it are unchanged
            sv = spec.shape_variety
            for m in MUSCLES:
                self.csa_jit[m] *= float(np.exp(rng.normal(0, 0.35 * sv)))
                self.t_shift[m] = float(rng.normal(0, 0.06 * sv))
                self.seed_jit[m] = self.seed_jit[m] + rng.normal(0, 0.03 * sv, 2)
            self.wave_mm2 = BORDER_WAVE_MM2 * (1.0 + 1.5 * sv)
        self._weights: dict[int, dict[str, float]] = {}
        self._grid_key: tuple | None = None
        self._grid_cache: dict[str, Any] = {}

    # geometry ------------------------------------------------------------------------------------------------
    def to_local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - self.cx, y - self.cy
        xr = self.cos * dx + self.sin * dy
        yr = -self.sin * dx + self.cos * dy
        return self.lateral_sign * xr, yr

    def targets(self, t: float) -> dict[str, float]:
        out = {}
        for m in MUSCLES:
            a = _interp(CSA_PROFILE_MM2[m], t - self.t_shift[m]) * self.csa_jit[m] * self.scale**2 * self.spec.muscle(self.side, m).scale
            if a >= 25.0:
                out[m] = a
        return out

    def bones(self, t: float, a: float, b: float) -> dict[str, tuple[float, float, float, float]]:
        """(u, v, radius, cortex) of tibia and fibula at ``t``."""
        s = self.bone_scale * self.scale
        st, sf = (self.spec.seed_shift.get(k, (0.0, 0.0)) for k in ("tibia", "fibula"))
        tib = (TIBIA_CENTER[0] + st[0] + self.bone_jit[0]) * a, (TIBIA_CENTER[1] + st[1] + self.bone_jit[1]) * b
        fib = (FIBULA_CENTER[0] + sf[0] + self.bone_jit[2]) * a, (FIBULA_CENTER[1] + sf[1] + self.bone_jit[3]) * b
        return {"tibia": (*tib, _interp(TIBIA_RADIUS_MM, t) * s, _interp(TIBIA_CORTEX_MM, t)),
                "fibula": (*fib, _interp(FIBULA_RADIUS_MM, t) * s, 1.6)}

    def region_axes(self, t: float) -> tuple[float, float]:
        """Half-axes (a: mediolateral, b: AP) of the muscle region from the area it must hold."""
        muscle = sum(self.targets(t).values())
        bone = np.pi * (_interp(TIBIA_RADIUS_MM, t) ** 2 * 0.95 + _interp(FIBULA_RADIUS_MM, t) ** 2) * (
            self.bone_scale * self.scale) ** 2
        area = (muscle + bone) * 1.06  # fascia and membrane
        b = np.sqrt(area / (np.pi * self.aspect))
        return float(self.aspect * b), float(b)

    def outline_radius(self, theta: np.ndarray, t: float, a: float, b: float, extra: float = 0.0) -> np.ndarray:
        """Polar radius of the muscle-region boundary (extra = outward offset, mm) in the leg frame."""
        r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
        for n, (amp, ph) in enumerate(self.harm, start=2):
            r = r * (1 + amp * np.cos(n * theta + ph + 3.0 * t))
        return r + extra

    def fat_thickness(self, theta: np.ndarray, t: float) -> np.ndarray:
        # thicker posteromedially (theta around -135 deg in the leg frame), thinner over the tibia
        return self.fat_mm * (1.0 + 0.35 * np.cos(theta + 0.75 * np.pi)) * (1.0 - 0.25 * t)

    def girth_mm(self, t: float) -> float:
        """Analytic skin-outline circumference at ``t`` (polygon of 2048 vertices)."""
        a, b = self.region_axes(t)
        th = np.linspace(-np.pi, np.pi, 2048, endpoint=False)
        r = self.outline_radius(th, t, a, b) + self.fat_thickness(th, t)
        x, y = r * np.cos(th), r * np.sin(th)
        return float(np.sum(np.hypot(np.diff(x, append=x[0]), np.diff(y, append=y[0]))))

    def seeds(self, t: float, a: float, b: float) -> dict[str, tuple[float, float]]:
        sh = {m: self.spec.seed_shift.get(m, (0.0, 0.0)) for m in MUSCLES}
        return {m: ((SEEDS[m][0] + sh[m][0] + self.seed_jit[m][0] + self.seed_drift[m][0] * (t - 0.4)) * a,
                    (SEEDS[m][1] + sh[m][1] + self.seed_jit[m][1] + self.seed_drift[m][1] * (t - 0.4)) * b)
                for m in MUSCLES}

    # rendering ------------------------------------------------------------------------------------------------
    def fit_weights(self, key: int, t: float, step_mm: float = 1.5, iters: int = 40) -> dict[str, float]:
        """Power-diagram weights whose cells have the target areas at ``t`` (cached per slice key)."""
        if key in self._weights:
            return self._weights[key]
        a, b = self.region_axes(t)
        R = max(a, b) * 1.05
        g = np.arange(-R, R + step_mm, step_mm)
        u, v = np.meshgrid(g, g, indexing="ij")
        region, bone = self._region_and_bone(u, v, t, a, b)
        avail = region & ~bone
        targets = self.targets(t)
        names = list(targets)
        total = avail.sum() * step_mm**2 * 0.97
        tgt = np.array([targets[m] for m in names])
        tgt = tgt * total / tgt.sum()
        seeds = self.seeds(t, a, b)
        uu, vv = u[avail], v[avail]
        d0 = np.stack([(uu - seeds[m][0]) ** 2 + (vv - seeds[m][1]) ** 2 + self.wave_mm2 * self.noise[m](uu, vv)
                       for m in names])
        w = np.zeros(len(names))
        best_err, best_w = np.inf, w.copy()
        for i in range(iters):
            lab = np.argmin(d0 - w[:, None], axis=0)
            area = np.bincount(lab, minlength=len(names)) * step_mm**2
            err = float(np.abs(area - tgt).max())
            if err < best_err:
                best_err, best_w = err, w.copy()
            w += (0.6 * (1 - i / iters) + 0.1) * (tgt - area)  # damped fixed-point update of the cell areas
        self._weights[key] = dict(zip(names, best_w.tolist()))
        return self._weights[key]

    def _grid(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Leg-frame coordinates and random fields at the world points (x, y), computed once per rendering grid."""
        key = (x.shape, float(x.flat[0]), float(y.flat[0]), float(x.flat[-1]), float(y.flat[-1]))
        if self._grid_key != key:
            u, v = self.to_local(x, y)
            self._grid_cache = {"u": u, "v": v, "r": np.hypot(u, v), "th": np.arctan2(v, u),
                                "fat": self.fat_field(u, v),
                                "noise": {m: self.noise[m](u, v) for m in MUSCLES},
                                "patch": {m: self.patch[m](u, v) for m in MUSCLES}}
            self._grid_key = key
        return self._grid_cache

    def _region_and_bone(self, u, v, t, a, b):
        r, th = np.hypot(u, v), np.arctan2(v, u)
        region = r <= self.outline_radius(th, t, a, b)
        bone = np.zeros(u.shape, bool)
        for bu, bv, br, _ in self.bones(t, a, b).values():
            bone |= self._bone_r(u - bu, v - bv, br) <= 0
        return region, bone

    @staticmethod
    def _bone_r(du, dv, radius, tri: float = 0.0):
        th = np.arctan2(dv, du)
        return np.hypot(du, dv) - radius * (1 + tri * np.cos(3 * (th - 1.9)))

    def render(self, x: np.ndarray, y: np.ndarray, t: float, weights: dict[str, float], class_of: dict[str, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Class ids, fat fraction, proton density, STIR weighting and a muscle-tissue mask (muscle voxels that are
        not fascia or membrane) at world points (x, y) for level ``t``."""
        g = self._grid(x, y)
        u, v, r, th = g["u"], g["v"], g["r"], g["th"]
        a, b = self.region_axes(t)
        r_region = self.outline_radius(th, t, a, b)
        r_skin = r_region + self.fat_thickness(th, t) * (1 + 0.15 * g["fat"])
        cls = np.zeros(u.shape, np.int16)
        ff = np.zeros(u.shape)
        rho = np.zeros(u.shape)
        t2w = np.zeros(u.shape)
        muscle_tissue = np.zeros(u.shape, bool)

        def put(mask, c, tissue, ff_val=None, rho_val=None, t2=None):
            cls[mask] = c
            ti = TISSUES[tissue]
            ff[mask] = ti.ff if ff_val is None else (ff_val[mask] if np.ndim(ff_val) else ff_val)
            rho[mask] = ti.rho if rho_val is None else (rho_val[mask] if np.ndim(rho_val) else rho_val)
            t2w[mask] = ti.t2w if t2 is None else t2

        body = r <= r_skin
        put(body, class_of["subcutaneous_fat"], "subcutaneous_fat")
        put(body & (r > r_skin - SKIN_MM), class_of["subcutaneous_fat"], "skin")
        region = r <= r_region
        # muscles: power diagram with fitted weights
        seeds = self.seeds(t, a, b)
        names = list(weights)
        if names and region.any():
            uu, vv = u[region], v[region]
            d = np.stack([(uu - seeds[m][0]) ** 2 + (vv - seeds[m][1]) ** 2 + self.wave_mm2 * g["noise"][m][region]
                          - weights[m] for m in names])
            order = np.argsort(d, axis=0)[:2] if len(names) > 1 else np.zeros((2, d.shape[1]), int)
            best = order[0]
            lab_cls = np.array([class_of[m] for m in names])[best]
            idx = np.nonzero(region)
            mus_ff = np.full(uu.shape, TISSUES["muscle"].ff)
            mus_t2 = np.ones(uu.shape)
            for k, m in enumerate(names):
                sel = best == k
                if not sel.any():
                    continue
                p = self.spec.muscle(self.side, m)
                mus_ff[sel] = _muscle_ff(p, g["patch"][m][region][sel])
                mus_t2[sel] = 3.0 if p.oedema else 1.0
            cls[idx] = lab_cls
            ff[idx] = mus_ff
            rho[idx] = TISSUES["muscle"].rho * (1 - mus_ff) + TISSUES["subcutaneous_fat"].rho * mus_ff
            t2w[idx] = mus_t2
            muscle_tissue[idx] = True
            if len(names) > 1:
                second = order[1]
                c1 = np.array([seeds[m] for m in names])
                d1 = np.take_along_axis(d, best[None], 0)[0]
                d2 = np.take_along_axis(d, second[None], 0)[0]
                sep = np.linalg.norm(c1[best] - c1[second], axis=1)
                fascia = (d2 - d1) / (2 * np.maximum(sep, 1e-6)) < self.spec.fascia_half_width_mm
                fidx = tuple(ix[fascia] for ix in idx)  # fascia: its own signal, labelled with the nearer muscle
                muscle_tissue[fidx] = False
                ff[fidx] = TISSUES["fascia"].ff
                rho[fidx] = TISSUES["fascia"].rho
                t2w[fidx] = TISSUES["fascia"].t2w
        bones = self.bones(t, a, b)
        # interosseous membrane between tibia and fibula
        (tu, tv, _, _), (fu, fv, _, _) = bones["tibia"], bones["fibula"]
        seg = np.array([fu - tu, fv - tv])
        s = np.clip(((u - tu) * seg[0] + (v - tv) * seg[1]) / (seg @ seg), 0, 1)
        mem = region & (np.hypot(u - (tu + s * seg[0]), v - (tv + s * seg[1])) < 0.5)
        ff[mem], rho[mem], t2w[mem] = TISSUES["fascia"].ff, TISSUES["fascia"].rho, TISSUES["fascia"].t2w
        muscle_tissue[mem] = False
        for name, (bu, bv, br, cortex) in bones.items():
            tri = 0.16 if name == "tibia" else 0.05
            dist = self._bone_r(u - bu, v - bv, br, tri)
            put(dist <= 0, class_of[name], "cortex")
            put(dist <= -cortex, class_of[name], "marrow")
            muscle_tissue[dist <= 0] = False
        return cls, ff, rho, t2w, muscle_tissue


def _muscle_ff(p: MusclePathology, field_vals: np.ndarray) -> np.ndarray:
    """Voxel fat fraction of a muscle: diffuse (uniform with fine texture), patchy (smooth random patches around the
    mean) or complete fatty change (high FF with streaks)."""
    if p.pattern == "patchy":
        return np.clip(p.ff + 0.8 * p.ff * field_vals, 0.01, 0.97)
    if p.pattern == "complete":
        return np.clip(p.ff + 0.06 * field_vals, 0.01, 0.97)
    return np.clip(p.ff + 0.005 * field_vals, 0.0, 0.97)


# -- the phantom --------------------------------------------------------------------------------------------------
def _leg_centers(spec: CalfSpec, legs: dict[str, _Leg]) -> None:
    widest = {s: max(lg.region_axes(t)[0] + lg.fat_mm * 1.35 for t in np.linspace(spec.t_start, spec.t_start + 0.4, 5))
              for s, lg in legs.items()}
    ox, oy, _ = spec.offset_mm
    if len(legs) == 2:
        legs["right"].cx = ox + spec.gap_mm / 2 + widest["right"]
        legs["left"].cx = ox - spec.gap_mm / 2 - widest["left"]
    else:
        (side, leg), = legs.items()
        leg.cx = ox + (1 if side == "right" else -1) * (spec.gap_mm / 2 + widest[side])
    for leg in legs.values():
        leg.cy = oy


def _legs(spec: CalfSpec, seed: int) -> dict[str, _Leg]:
    """The legs of ``spec`` in the field of view, their anatomy drawn from ``seed`` and placed (:func:`_leg_centers`);
    both sides are drawn in a fixed order so that a one-leg study has the same leg as a two-leg one."""
    legs = {s: _Leg(s, spec, (0.0, 0.0), np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1 + i]))
            for i, s in enumerate(SIDES)}
    legs = {s: legs[s] for s in spec.legs}
    _leg_centers(spec, legs)
    return legs


def generate_calf(spec: CalfSpec | None = None, seed: int = 0, *, fast: bool = False) -> CalfPhantom:
    """Render a calf Dixon phantom for ``spec`` (default: a healthy adult) with anatomy randomised by ``seed``.

    ``fast`` renders without in-plane supersampling (training data); labels and images stay consistent.
    """
    spec = spec or CalfSpec()
    rng = np.random.default_rng(seed)
    reg = registry("calf")
    class_of = {name: reg.class_id(name) for name in reg.classes[1:]}
    legs = _legs(spec, seed)

    dx = spec.in_plane_mm
    dz = spec.slice_mm
    fine = 1 if fast else 2
    sub = 1 if fast else 2
    # output grid: axial, canonical RAS, covering the legs with a margin
    extents = []
    for leg in legs.values():
        rmax = max(leg.region_axes(t)[0] + leg.fat_mm * 1.5 for t in np.linspace(spec.t_start, spec.t_start + 0.3, 4))
        extents.append((leg.cx - rmax * 1.25, leg.cx + rmax * 1.25, leg.cy - rmax * 1.25, leg.cy + rmax * 1.25))
    x0 = min(e[0] for e in extents) - 10
    x1 = max(e[1] for e in extents) + 10
    y0 = min(e[2] for e in extents) - 10
    y1 = max(e[3] for e in extents) + 10
    nx, ny, nz = int(np.ceil((x1 - x0) / dx)), int(np.ceil((y1 - y0) / dx)), spec.n_slices
    z_top = spec.offset_mm[2] + 120.0  # world z of the first (most proximal) slice centre
    z0 = z_top - (nz - 1) * dz  # slice 0 (array) is the most inferior: canonical RAS
    affine = axial_grid_affine(x0, y0, z0, dx, dx, dz)

    def t_of(z: float) -> float:
        return spec.t_start + (z_top - z) / spec.tibial_length_mm

    n_classes = len(reg.classes)
    sided = np.zeros((n_classes, 2), np.int16)
    for c, name in enumerate(reg.classes[1:], start=1):
        for si, s in enumerate(SIDES):
            sided[c, si] = reg.sided_id(name, s)

    labels = np.zeros((nx, ny, nz), np.int16)
    water = np.zeros((nx, ny, nz), np.float32)
    fat = np.zeros((nx, ny, nz), np.float32)
    stir = np.zeros((nx, ny, nz), np.float32)
    vox_fine = (dx / fine) ** 2 * (dz / sub)
    counts = {s: {m: 0 for m in reg.classes[1:]} for s in spec.legs}
    ff_sums = {s: {m: 0.0 for m in MUSCLES} for s in spec.legs}
    ff_counts = {s: {m: 0.0 for m in MUSCLES} for s in spec.legs}
    slice_area = {s: {m: np.zeros(nz) for m in reg.classes[1:]} for s in spec.legs}
    offs = (np.arange(fine) + 0.5) / fine - 0.5
    tie_rng = np.random.default_rng([seed, 3])
    for k in range(nz):
        zc = z0 + k * dz
        for s, leg in legs.items():
            xs_ = extents[list(legs).index(s)]
            i0, i1 = max(0, int((xs_[0] - x0) / dx)), min(nx, int(np.ceil((xs_[1] - x0) / dx)) + 1)
            j0, j1 = max(0, int((xs_[2] - y0) / dx)), min(ny, int(np.ceil((xs_[3] - y0) / dx)) + 1)
            gi = (np.arange(i0, i1)[:, None] + offs[None, :]).ravel()
            gj = (np.arange(j0, j1)[:, None] + offs[None, :]).ravel()
            X, Y = np.meshgrid(x0 + gi * dx, y0 + gj * dx, indexing="ij")
            weights = leg.fit_weights(k, t_of(zc))
            acc_w = np.zeros(X.shape)
            acc_f = np.zeros(X.shape)
            acc_s = np.zeros(X.shape)
            lab_count = np.zeros((n_classes,) + X.shape, np.int16)
            for q in range(sub):
                z = zc + ((q + 0.5) / sub - 0.5) * dz
                cls, ffv, rho, t2w, tissue = leg.render(X, Y, t_of(z), weights, class_of)
                acc_w += rho * (1 - ffv)
                acc_f += rho * ffv
                acc_s += rho * (1 - ffv) * t2w
                for c in np.unique(cls):
                    if c == 0:
                        continue
                    msk = cls == c
                    lab_count[c] += msk
                    name = reg.classes[c]
                    n_c = int(msk.sum())
                    counts[s][name] += n_c
                    slice_area[s][name][k] += n_c * (dx / fine) ** 2 / sub
                    if name in ff_sums[s]:  # proton-density fat fraction: fat protons / all protons
                        mt = msk & tissue
                        ff_sums[s][name] += float((rho * ffv)[mt].sum())
                        ff_counts[s][name] += float(rho[mt].sum())
            # downsample fine -> output (block mean / block majority)
            bi, bj = i1 - i0, j1 - j0
            w_out, f_out, s_out = (_block_mean(acc / sub, fine) for acc in (acc_w, acc_f, acc_s))
            votes = lab_count.reshape(n_classes, bi, fine, bj, fine).sum(axis=(2, 4)).astype(np.float32)
            votes[0] = fine * fine * sub - votes[1:].sum(axis=0)  # background
            # majority vote; a deterministic random fraction breaks exact ties without favouring any class
            votes += tie_rng.uniform(0.0, 0.5, votes.shape).astype(np.float32)
            best = np.argmax(votes, axis=0)
            lab_out = np.where(best > 0, sided[best, SIDES.index(s)], 0)
            sl = (slice(i0, i1), slice(j0, j1), k)
            inside = lab_out > 0
            labels[sl] = np.where(inside | (labels[sl] == 0), lab_out, labels[sl])
            water[sl] += w_out.astype(np.float32)
            fat[sl] += f_out.astype(np.float32)
            stir[sl] += s_out.astype(np.float32)

    # --- images ---
    sigma = TISSUES["muscle"].rho * (1 - TISSUES["muscle"].ff) / spec.snr
    bias = bias_field((nx, ny, nz), spec.bias, rng)
    mags = dixon_magnitudes(water, fat, sigma, bias, rng)
    scale = spec.intensity_scale
    naming = _vendor_naming(spec.vendor)
    series = []
    lab_vol = Volume(labels, affine, {"anatomy": "calf"})
    for contrast in ("water", "fat", "inphase", "outphase"):
        arr = np.round(mags[contrast] * scale).astype(np.uint16)
        series.append(SynthSeries(f"calf_{contrast}", Volume(arr, affine), lab_vol, naming[contrast], "axial",
                                  contrast))
    if spec.with_ffmap:
        ffmap = np.where(mags["water"] + mags["fat"] > 3 * sigma,
                         100.0 * mags["fat"] / np.maximum(mags["water"] + mags["fat"], 1e-9), 0.0)
        series.append(SynthSeries("calf_ffmap", Volume(np.round(ffmap * 10).astype(np.uint16), affine,
                                                       {"unit": "0.1 %"}), lab_vol, naming["ffmap"], "axial", "ffmap"))
    if spec.with_stir:
        st = rician(stir * bias, sigma, rng)
        series.append(SynthSeries("calf_stir", Volume(np.round(st * scale).astype(np.uint16), affine), lab_vol,
                                  naming["stir"], "axial", "stir"))

    truth = _truth(spec, legs, reg, counts, ff_sums, ff_counts, slice_area, vox_fine, z0, dz, nz, t_of, lab_vol)
    return CalfPhantom(spec, series, lab_vol, truth, {"water": Volume(water, affine), "fat": Volume(fat, affine)})


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f in-plane blocks (fine rendering -> output voxels)."""
    return a.reshape(a.shape[0] // f, f, a.shape[1] // f, f).mean(axis=(1, 3))


def _truth(spec, legs, reg, counts, ff_sums, ff_counts, slice_area, vox_fine, z0, dz, nz, t_of, lab_vol) -> dict[str, Any]:
    muscles: dict[str, dict[str, Any]] = {}
    levels = [int(round(f * (nz - 1))) for f in (0.25, 0.5, 0.75)]
    for s in spec.legs:
        muscles[s] = {}
        for name in reg.classes[1:]:
            n = counts[s][name]
            entry = {"volume_ml": round(n * vox_fine / 1000.0, 4)}
            if name in MUSCLES:
                nt = ff_counts[s][name]
                entry["ff_pct"] = round(100.0 * ff_sums[s][name] / nt, 4) if nt else None
            entry["csa_mm2_at_levels"] = {f"{z0 + k * dz:.1f}": round(float(slice_area[s][name][k]), 2) for k in levels}
            muscles[s][name] = entry
    girth: dict[str, Any] = {}
    per_slice = {s: [legs[s].girth_mm(t_of(z0 + k * dz)) for k in range(nz)] for s in spec.legs}
    for s in spec.legs:
        k = int(np.argmax(per_slice[s]))
        girth[s] = {"max_girth_mm": round(per_slice[s][k], 2), "max_girth_z_mm": round(z0 + k * dz, 2)}
    mean = np.mean([per_slice[s] for s in spec.legs], axis=0)
    km = int(np.argmax(mean))
    girth["matched_z_mm"] = round(z0 + km * dz, 2)
    girth["matched_girth_mm"] = {s: round(per_slice[s][km], 2) for s in spec.legs}
    girth["per_slice_mm"] = {s: [round(g, 2) for g in per_slice[s]] for s in spec.legs}
    # sides as the label map shows them in world coordinates (a check of the rendering, through the side function)
    centroid_side = {}
    for s in spec.legs:
        ids = [reg.sided_id(n, s) for n in reg.classes[1:]]
        pts = np.argwhere(np.isin(lab_vol.array, ids))
        cx = float(lab_vol.voxel_to_world(pts.mean(axis=0, keepdims=True))[0, 0])
        centroid_side[s] = cx
    if len(spec.legs) == 2:
        mid = (centroid_side["left"] + centroid_side["right"]) / 2
        assert all(side_of_world_x(centroid_side[s], mid) == s for s in spec.legs)
    return {"legs_in_fov": list(spec.legs), "muscles": muscles, "girth": girth,
            "leg_centroid_x_mm": {s: round(v, 2) for s, v in centroid_side.items()}}


def _vendor_naming(vendor: str) -> dict[str, str]:
    if vendor == "philips":
        return {"water": "sWIP mDIXON_TSE W", "fat": "sWIP mDIXON_TSE F", "inphase": "sWIP mDIXON_TSE IP",
                "outphase": "sWIP mDIXON_TSE OP", "ffmap": "sWIP mDIXON_TSE FF", "stir": "STIR TRA"}
    if vendor == "ge":
        return {"water": "Ax IDEAL WATER", "fat": "Ax IDEAL FAT", "inphase": "Ax IDEAL InPhase",
                "outphase": "Ax IDEAL OutPhase", "ffmap": "Ax IDEAL FAT FRACTION", "stir": "Ax STIR"}
    return {"water": "t1_vibe_dixon_tra_W", "fat": "t1_vibe_dixon_tra_F", "inphase": "t1_vibe_dixon_tra_in",
            "outphase": "t1_vibe_dixon_tra_opp", "ffmap": "t1_vibe_dixon_tra_FF", "stir": "tirm_tra"}


# -- tissue maps for contrast-randomised training -----------------------------------------------------------------
#: Tissue ids of :func:`tissue_slice`; a contrast-randomised generator (SynthSeg, Billot et al., Med Image Anal
#: 2023;86:102789) gives each its own random intensity, and muscle voxels mix the muscle and fat intensities by
#: their fat fraction.
TISSUE_IDS = {"background": 0, "muscle": 1, "fascia": 2, "subcutaneous_fat": 3, "skin": 4, "cortex": 5,
              "marrow": 6, "vessel": 7}
#: Neurovascular bundles (posterior tibial, peroneal, anterior tibial) in units of the muscle region's half-axes
#: (u lateral, v anterior), and the superficial veins (great and small saphenous) as polar angles in the leg frame.
DEEP_VESSELS = ((0.0, -0.08), (0.42, -0.12), (0.2, 0.22))
SUPERFICIAL_VEIN_ANGLES_RAD = (2.4, -1.7)


@dataclass
class TissueSlice:
    """One axial slice of a calf phantom as maps: side-less class ids, tissue ids (:data:`TISSUE_IDS`) and the
    voxel fat fraction (0-1), on a square grid of ``spacing_mm`` (array axes: RAS x, y)."""

    classes: np.ndarray
    tissue: np.ndarray
    ff: np.ndarray
    spacing_mm: float


#: The largest shifts (half-axes) of :func:`random_anatomy_spec`'s ``max_posterior_tibia``: the tibia towards the
#: medial fascia (its medial surface under the subcutaneous fat) and the flexor digitorum longus behind it.
POSTERIOR_TIBIA_SHIFT = {"tibia": (-0.28, 0.0), "flexor_digitorum_longus": (0.06, -0.10)}


def random_anatomy_spec(rng: np.random.Generator, max_shape_variety: float = 0.0,
                        max_posterior_tibia: float = 0.0) -> CalfSpec:
    """A calf spec for label maps of contrast-randomised training: :meth:`CalfSpec.random` widened to thin and
    thick subcutaneous fat (1.5-30 mm, log-uniform, so that thin fat is as common as thick), small and large legs
    (0.75-1.3), legs touching or far apart, rotations up to 30 degrees, fascia / fat septa 0.15-1.2 mm half width,
    and the whole tibial length (knee to ankle). With ``max_shape_variety`` > 0, ``shape_variety`` is drawn from
    U(0, max): muscles whose relative sizes and levels vary so much that only their septa tell where one ends. With
    ``max_posterior_tibia`` > 0, a fraction s ~ U(0, max) of :data:`POSTERIOR_TIBIA_SHIFT` moves the tibia to the
    medial fascia and the flexor digitorum longus behind it (s = 1: the tibia's medial surface under the
    subcutaneous fat, as in cross-sectional anatomy and MRI of the mid-calf; s = 0: the template, whose FDL covers the
    tibia's medial surface)."""
    spec = CalfSpec.random(rng)
    spec.leg_scale = {s: float(rng.uniform(0.75, 1.3)) for s in SIDES}
    spec.fat_mm = {s: float(np.exp(rng.uniform(np.log(1.5), np.log(30.0)))) for s in SIDES}
    spec.gap_mm = float(rng.uniform(2.0, 120.0))
    spec.rotation_deg = {"left": float(rng.uniform(-30, 10)), "right": float(rng.uniform(-10, 30))}
    spec.fascia_half_width_mm = float(rng.uniform(0.15, 1.2))
    spec.anatomy_jitter = float(rng.uniform(0.8, 1.8))
    spec.leg_asymmetry = float(rng.uniform(0.0, 0.12))
    if max_shape_variety > 0:
        spec.shape_variety = float(rng.uniform(0.0, max_shape_variety))
    if max_posterior_tibia > 0:  # drawn last, so that specs without it are unchanged
        f = float(rng.uniform(0.0, max_posterior_tibia))
        spec.seed_shift = {k: (f * du, f * dv) for k, (du, dv) in POSTERIOR_TIBIA_SHIFT.items()}
    return spec


def tissue_slice(spec: CalfSpec, seed: int, t: float, spacing_mm: float = 0.625, vessels: bool = True,
                 thickness_mm: float = 0.0) -> list[TissueSlice]:
    """Render the legs of ``spec`` (anatomy from ``seed``) at level ``t`` (fraction of tibial length below the knee)
    as tissue maps; with ``thickness_mm`` > 0 three sub-slices across that thickness (for partial volume along the
    slice), else one. Vessels (deep neurovascular bundles, class background; saphenous veins, class subcutaneous
    fat) are drawn when ``vessels``."""
    reg = registry("calf")
    class_of = {name: reg.class_id(name) for name in reg.classes[1:]}
    legs = _legs(spec, seed)
    reach = {s: max(lg.region_axes(t)[0], lg.region_axes(t)[1]) + lg.fat_mm * 1.4 + 6 for s, lg in legs.items()}
    x0 = min(lg.cx - reach[s] for s, lg in legs.items())
    x1 = max(lg.cx + reach[s] for s, lg in legs.items())
    y0 = min(lg.cy - reach[s] for s, lg in legs.items())
    y1 = max(lg.cy + reach[s] for s, lg in legs.items())
    xs = x0 + spacing_mm * np.arange(int(np.ceil((x1 - x0) / spacing_mm)))
    ys = y0 + spacing_mm * np.arange(int(np.ceil((y1 - y0) / spacing_mm)))
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    offsets = (-thickness_mm / 3, 0.0, thickness_mm / 3) if thickness_mm > 0 else (0.0,)
    out = []
    for dz in offsets:
        tz = t + dz / spec.tibial_length_mm
        cls = np.zeros(X.shape, np.uint8)
        tis = np.zeros(X.shape, np.uint8)
        ff = np.zeros(X.shape, np.float32)
        for leg in legs.values():
            sel = np.hypot(X - leg.cx, Y - leg.cy) <= reach[leg.side]
            c, f, rho, _, tissue = leg.render(X[sel], Y[sel], tz, leg.fit_weights(int(round(t * 1000)), t), class_of)
            ti = _tissue_ids(c, f, rho, tissue, class_of)
            if vessels:
                _draw_vessels(leg, X[sel], Y[sel], tz, c, ti, f, class_of)
            inside = c > 0
            idx = tuple(ix[inside] for ix in np.nonzero(sel))
            cls[idx], tis[idx], ff[idx] = c[inside], ti[inside], f[inside]
        out.append(TissueSlice(cls, tis, ff, spacing_mm))
    return out


def _tissue_ids(cls: np.ndarray, ff: np.ndarray, rho: np.ndarray, muscle_tissue: np.ndarray,
                class_of: dict[str, int]) -> np.ndarray:
    """Tissue ids of rendered voxels from their class and the tissue constants :meth:`_Leg.render` gave them."""
    t = np.zeros(cls.shape, np.uint8)
    subcut = cls == class_of["subcutaneous_fat"]
    t[subcut] = TISSUE_IDS["subcutaneous_fat"]
    t[subcut & (ff == TISSUES["skin"].ff) & (rho == TISSUES["skin"].rho)] = TISSUE_IDS["skin"]
    muscle = np.isin(cls, [class_of[m] for m in MUSCLES])
    t[muscle] = TISSUE_IDS["fascia"]
    t[muscle & muscle_tissue] = TISSUE_IDS["muscle"]
    bone = np.isin(cls, [class_of["tibia"], class_of["fibula"]])
    t[bone] = TISSUE_IDS["marrow"]
    t[bone & (rho == TISSUES["cortex"].rho)] = TISSUE_IDS["cortex"]
    return t


def _draw_vessels(leg: _Leg, x: np.ndarray, y: np.ndarray, t: float, cls: np.ndarray, tissue: np.ndarray,
                  ff: np.ndarray, class_of: dict[str, int]) -> None:
    """Deep neurovascular bundles (two veins beside an artery, outside every muscle and bone) and the saphenous
    veins (in the subcutaneous fat), drawn in place."""
    u, v = leg.to_local(x, y)
    a, b = leg.region_axes(t)
    rng = np.random.default_rng([int(abs(leg.cx) * 10) % 9973, int(round((t + 1.0) * 1000))])
    bone = np.isin(cls, [class_of["tibia"], class_of["fibula"]])
    for cu, cv in DEEP_VESSELS:
        for k in range(3):
            pu = cu * a + rng.normal(0, 2.0) + (k - 1) * 2.5
            pv = cv * b + rng.normal(0, 2.0)
            hit = (np.hypot(u - pu, v - pv) <= rng.uniform(0.8, 2.2)) & ~bone
            cls[hit], tissue[hit], ff[hit] = 0, TISSUE_IDS["vessel"], 0.0
    th = np.arctan2(v, u)
    for ang in SUPERFICIAL_VEIN_ANGLES_RAD:
        depth = leg.fat_thickness(np.array([ang]), t)[0]
        if depth < 4.0:
            continue
        r0 = leg.outline_radius(np.array([ang]), t, a, b)[0] + depth * 0.5
        pu, pv = r0 * np.cos(ang), r0 * np.sin(ang)
        hit = (np.hypot(u - pu, v - pv) <= min(2.5, depth * 0.3)) & (cls == class_of["subcutaneous_fat"])
        tissue[hit], ff[hit] = TISSUE_IDS["vessel"], 0.0
    del th
