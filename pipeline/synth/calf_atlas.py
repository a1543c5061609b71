"""An independent calf phantom for evaluation only: never train on it.

This generator exists so that a calf segmentation trained on :mod:`pipeline.synth.calf` can be tried on anatomy and
images that it has not seen. It shares nothing with that generator but the output types (:class:`SynthSeries`,
the label registry) and the study writer; its shape model and its rendering are written separately.

Shape model
    Every structure of one leg (skin outline, tibia, fibula, the nine registry muscles, popliteus, Achilles tendon,
    neurovascular bundles) is a closed smooth contour, given at seven anatomical levels along the tibia
    (t = 0, 0.15, ..., 0.9 from just below the knee joint to just above the ankle) as a superellipse
    (centre, two semi-axes, rotation, exponent) in the cross-section of a reference right leg (u lateral,
    v anterior, mm). The numbers follow standard cross-sectional anatomy of the leg (atlases such as Gray's Anatomy
    and Moore's Clinically Oriented Anatomy): the gastrocnemius medial head larger than the
    lateral, both posterior-superficial and ending near mid-calf (lateral head first) where the Achilles tendon forms;
    soleus deep to them and largest at mid-calf; tibialis anterior anterolateral to the tibia; extensor digitorum
    longus lateral to it and anterior to the fibula; peroneus lateral to the fibula; tibialis posterior between tibia
    and fibula behind the interosseous membrane; flexor digitorum longus behind the tibia, medial; flexor hallucis
    longus posterolateral near the fibula, largest distally. Parameters are interpolated between levels with
    monotone cubic (PCHIP) interpolation, so structures appear and taper smoothly. A subject differs from the
    reference by: size and aspect, bone size, subcutaneous fat thickness varying around the leg and along it,
    per-structure jitter of centre and size, random low-order harmonics of every contour, a smooth random
    displacement field over the whole cross-section that varies along the leg, leg rotation, leg separation, one or
    two legs in the field of view, and per-muscle hypertrophy / atrophy and fat replacement (``diffuse``, ``patchy``,
    ``complete``, ``marbled``). Overlaps are resolved by a fixed priority (bones, vessels, the deep and anterior
    muscles, the gastrocnemii, soleus); muscles are clipped to the deep fascia (the skin outline less the
    subcutaneous fat); gaps narrower than a few millimetres are given to the nearest muscle and wider ones become
    intermuscular fat. Neighbouring muscles are separated by thin fascial septa (rendered as a fat/fascia mix,
    labelled with the muscle they bound).

Rendering
    Each fine pixel is a tissue (muscle with its own fat fraction, subcutaneous and intermuscular fat, cortical bone,
    yellow marrow, vessel, tendon, septum, skin) with a proton density and water / fat relaxation times at 1.5 or
    3 T. Dixon images come from a spoiled gradient-echo signal equation; in-phase and opposed-phase echoes use a
    six-peak fat spectrum and T2* decay (complex sum, so partial volume mixes signals before the magnitude). The
    anatomical image is a spin-echo (T1-, T2-, PD-weighted), STIR, or single-echo gradient-echo signal. Partial
    volume comes from rendering on a grid ``supersample`` times finer in-plane and averaging; a smooth multiplicative
    bias field (its own for the anatomical series) and Rician noise are added last.

Truth
    The label map holds sided registry ids (``<name>_left`` / ``<name>_right``), the side taken from world x (RAS+:
    the right leg has the larger x). ``truth["muscles"][side][name]`` carries ``volume_ml`` (exactly the label
    count times the voxel volume) and, for muscles, ``ff_pct``: the proton-density fat fraction of the muscle tissue
    of that label (septa excluded). ``truth["girth"]`` gives the skin outline length per slice.

Deterministic from the seed; a whole two-leg phantom takes a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from pipeline.core.atomic import atomic_dir, write_json, write_text
from pipeline.core.geometry import SIDES, side_of_world_x
from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.nifti import save_volume, to_closest_canonical
from pipeline.synth.common import SynthSeries, axial_grid_affine

GENERATOR_NAME = "calf_atlas"
ATLAS_VERSION = "1.0"

LEVELS_T = np.array([0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9])

MUSCLES = ("gastrocnemius_medial", "gastrocnemius_lateral", "soleus", "tibialis_anterior",
           "extensor_digitorum_longus", "peroneus", "tibialis_posterior", "flexor_digitorum_longus",
           "flexor_hallucis_longus")
PATTERNS = ("diffuse", "patchy", "complete", "marbled")
CONTRASTS = ("water", "fat", "inphase", "outphase", "anatomical")
ANATOMICAL_CONTRASTS = ("t1", "t2", "pd", "stir", "gre")

# -- tissues ------------------------------------------------------------------------------------------------------
AIR, SUBFAT, INTERFAT, MUSCLE, CORTEX, MARROW, VESSEL, TENDON, SEPTUM, SKIN = range(10)
N_TISSUES = 10
#                     rho   ff    T1w   T2w  T2*w  (water component at 3 T, ms)
_TISSUE = np.array([[0.00, 0.00, 1000, 50, 30],   # air
                    [0.95, 0.92, 1200, 40, 20],   # subcutaneous fat
                    [0.95, 0.90, 1200, 40, 20],   # intermuscular fat
                    [0.80, 0.00, 1420, 32, 22],   # muscle (ff per pixel)
                    [0.05, 0.20, 800, 1.0, 0.5],  # cortical bone
                    [0.90, 0.85, 1100, 40, 8],    # yellow marrow
                    [0.90, 0.00, 1930, 200, 60],  # vessel (blood)
                    [0.20, 0.05, 800, 4.0, 2.0],  # tendon / aponeurosis
                    [0.85, 0.60, 1000, 30, 15],   # septum (fascia + fat; ff set per subject)
                    [0.75, 0.15, 1000, 35, 18]])  # skin
_FAT_RELAX_3T = (380.0, 70.0, 12.0)  # T1, T2, T2* of fat (ms) at 3 T
_FAT_PPM = np.array([-3.80, -3.40, -2.60, -1.94, -0.39, 0.60])
_FAT_AMP = np.array([0.087, 0.693, 0.128, 0.004, 0.039, 0.048])

# -- the atlas: superellipses (u, v, a, b, rotation deg) of a reference right leg at LEVELS_T; None = absent ------
_ = None
SKIN_LEVELS = np.array([  # a_lateral, a_medial, b_anterior, b_posterior (mm)
    [54, 54, 44, 50], [57, 57, 44, 52], [59, 58, 43, 51], [55, 54, 40, 47], [48, 46, 35, 40], [40, 38, 30, 33],
    [35, 33, 27, 28]], float)

#: name -> (registry class or None, tissue, exponent, triangularity, levels); listed in priority order
ATLAS: dict[str, tuple[str | None, int, float, float, list]] = {
    "tibia": ("tibia", CORTEX, 2.0, 0.10, [
        (-10, 12, 30, 24, 0), (-15, 20, 17, 15.5, 0), (-17, 24, 13, 12, 0), (-16, 22, 11.5, 11, 0),
        (-14, 17, 11, 10.5, 0), (-11, 13, 12, 11, 0), (-7, 9, 15, 13, 0)]),
    "fibula": ("fibula", CORTEX, 2.0, 0.05, [
        (36, -4, 10, 9, 0), (33, -1, 7.5, 7, 0), (31, 2, 7, 6.5, 0), (29, 2, 6.5, 6, 0), (27, 0, 6.5, 6, 0),
        (25, -2, 6.5, 6, 0), (24, -4, 8, 7, 0)]),
    "tibialis_anterior": ("tibialis_anterior", MUSCLE, 2.2, 0.0, [
        (2, 22, 7, 8, 0), (4, 28, 10, 12, -10), (6, 30, 10.5, 13, -10), (5, 28, 9.5, 11, -10), (3, 25, 7.5, 8.5, 0),
        (1, 23, 5, 5, 0), (0, 24, 3.5, 3, 0)]),
    "extensor_digitorum_longus": ("extensor_digitorum_longus", MUSCLE, 2.0, 0.0, [
        (18, 14, 6, 7, 0), (21, 19, 7.5, 10, 10), (21, 22, 8.5, 11.5, 10), (19, 21, 8.5, 11, 10),
        (15, 19, 7.5, 9, 10), (11, 19, 6, 7, 0), (8, 21, 4, 3.5, 0)]),
    "peroneus": ("peroneus", MUSCLE, 2.0, 0.0, [
        (42, 0, 7, 10, 20), (44, 4, 10, 14, 20), (43, 4, 10.5, 15, 20), (40, 2, 10, 14, 20), (35, -2, 9, 12, 25),
        (30, -8, 7, 8, 30), (26, -13, 5, 5, 0)]),
    "tibialis_posterior": ("tibialis_posterior", MUSCLE, 2.0, 0.0, [
        (8, 0, 6, 4, -20), (9, 6, 12, 7, -25), (9, 8, 13, 8, -25), (7, 7, 12, 8, -25), (2, 5, 10, 7, -20),
        (-6, 4, 7, 5.5, -10), (-13, 1, 4, 3.5, 0)]),
    "flexor_digitorum_longus": ("flexor_digitorum_longus", MUSCLE, 2.0, 0.0, [
        _, (-14, 5, 5, 4, 0), (-15, 6, 8, 6, 10), (-14, 4, 9, 7, 10), (-12, 1, 9.5, 7.5, 10), (-8, -3, 8, 6, 0),
        (-8, -6, 4, 4, 0)]),
    "flexor_hallucis_longus": ("flexor_hallucis_longus", MUSCLE, 2.0, 0.0, [
        _, (22, -6, 4, 3, 0), (21, -7, 8, 6.5, 0), (18, -7, 11, 8, 0), (14, -8, 12, 9, 0), (10, -9, 11, 8, 0),
        (7, -10, 7, 5, 0)]),
    "popliteus": (None, MUSCLE, 2.0, 0.0, [
        (0, -4, 20, 6, -20), (-8, 4, 10, 3.5, -25), _, _, _, _, _]),
    "gastrocnemius_medial": ("gastrocnemius_medial", MUSCLE, 2.2, 0.0, [
        (-24, -24, 24, 19, 25), (-26, -27, 30, 20, 22), (-24, -30, 30, 17, 15), (-16, -35, 24, 11, 5),
        (-9, -35, 12, 5, 0), _, _]),
    "gastrocnemius_lateral": ("gastrocnemius_lateral", MUSCLE, 2.2, 0.0, [
        (22, -26, 18, 14, -15), (22, -28, 22, 15, -12), (22, -31, 21, 13, -8), (15, -35, 13, 7, 0), _, _, _]),
    "achilles": (None, TENDON, 2.0, 0.0, [
        _, _, _, (0, -41, 8, 1.5, 0), (0, -34, 10, 2.5, 0), (0, -28, 10, 4, 0), (0, -24, 9, 5, 0)]),
    "soleus": ("soleus", MUSCLE, 2.3, 0.0, [
        (14, -12, 14, 7, 0), (3, -14, 32, 11, 0), (0, -16, 40, 13, 0), (-1, -17, 42, 21, 0), (-2, -15, 36, 19, 0),
        (-2, -15, 26, 11, 0), (-1, -17, 11, 5, 0)]),
}
#: neurovascular bundles: (u, v, vessel radius mm) per level; each sits in a pad of intermuscular fat
BUNDLES: dict[str, list] = {
    "popliteal": [(2, -11, 4.5), (-1, -7, 3.0), _, _, _, _, _],
    "posterior_tibial": [_, (-4, -4, 2.5), (-8, -2, 2.5), (-10, -4, 2.5), (-11, -6, 2.5), (-12, -8, 2.5),
                         (-16, -8, 2.5)],
    "peroneal": [_, (16, -4, 2.0), (18, -2, 2.0), (19, -2, 2.0), (18, -4, 2.0), (16, -6, 2.0), _],
    "anterior_tibial": [_, (6, 14, 2.0), (6, 16, 2.0), (6, 15, 2.0), (4, 13, 2.0), (1, 12, 2.0), (0, 16, 1.8)],
}
#: superficial veins in the subcutaneous fat: polar angle of the reference leg (deg, 0 = lateral, 90 = anterior)
#: fascial compartments (soleus apart from the gastrocnemii: a fat plane lies between them)
COMPARTMENT = {"gastrocnemius_medial": 0, "gastrocnemius_lateral": 0, "soleus": 1, "tibialis_posterior": 2,
               "flexor_digitorum_longus": 2, "flexor_hallucis_longus": 2, "tibialis_anterior": 3,
               "extensor_digitorum_longus": 3, "peroneus": 4}
SUPERFICIAL_VEINS = {"great_saphenous": 200.0, "small_saphenous": 268.0}
CORTEX_MM = {"tibia": np.array([1.5, 3, 4.5, 5, 5, 4, 2]), "fibula": np.array([1.5, 2, 2.5, 2.5, 2.5, 2, 1.5])}


def _table(levels: list) -> np.ndarray:
    """Fill absent levels (size 0, centre of the nearest present level) so that interpolation tapers sizes."""
    present = [i for i, x in enumerate(levels) if x is not None]
    ncol = len(levels[present[0]])
    size_cols = [2, 3] if ncol == 5 else [2]
    out = np.zeros((len(levels), ncol))
    for i, x in enumerate(levels):
        if x is not None:
            out[i] = x
        else:
            out[i] = levels[min(present, key=lambda p: abs(p - i))]
            out[i, size_cols] = 0.0
    return out


_TABLES = {k: PchipInterpolator(LEVELS_T, _table(v[4]), axis=0) for k, v in ATLAS.items()}
_BUNDLE_TABLES = {k: PchipInterpolator(LEVELS_T, _table(v), axis=0) for k, v in BUNDLES.items()}
_SKIN_TABLE = PchipInterpolator(LEVELS_T, SKIN_LEVELS, axis=0)
_CORTEX_TABLES = {k: PchipInterpolator(LEVELS_T, v) for k, v in CORTEX_MM.items()}


# -- specification ---------------------------------------------------------------------------------------------
@dataclass
class AtlasPathology:
    """One muscle of one leg: size factor (atrophy < 1 < hypertrophy), mean fat fraction (0-1) and pattern."""

    scale: float = 1.0
    ff: float = 0.05
    pattern: str = "diffuse"

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern '{self.pattern}' unknown; use one of {', '.join(PATTERNS)}.")
        if not (0.0 <= self.ff <= 1.0):
            raise ValueError(f"ff={self.ff} outside 0-1; give a fraction, e.g. 0.3 for 30 %.")
        if not (0.2 <= self.scale <= 2.5):
            raise ValueError(f"scale={self.scale} outside 0.2-2.5.")


@dataclass
class AtlasSpec:
    """Everything that varies between atlas phantoms (a subject, a protocol). ``AtlasSpec.random(rng)`` draws one."""

    legs: tuple[str, ...] = ("left", "right")
    tibia_length_mm: float = 370.0
    t_start: float = 0.12
    t_end: float = 0.82
    slice_mm: float = 5.0
    in_plane_mm: float = 1.0
    supersample: int = 2
    n_slices: int | None = None  # default: cover t_start..t_end
    separation_mm: float = 200.0
    size_ml: float = 1.0
    size_ap: float = 1.0
    bone_scale: float = 1.0
    fat_mm: float = 5.0
    rotation_deg: dict[str, float] = field(default_factory=lambda: {"left": 8.0, "right": 8.0})  # + = external
    offset_y_mm: dict[str, float] = field(default_factory=lambda: {"left": 0.0, "right": 0.0})
    posterior_n: float = 2.6  # superellipse exponent of the posterior skin outline (lying on the table: > 2)
    deform_mm: float = 2.5
    jitter: float = 1.0  # scale of per-structure centre / size / contour jitter
    fill_mm: float = 15.0
    septum_ff: float = 0.6
    pathology: dict[str, dict[str, AtlasPathology]] = field(default_factory=dict)
    field_t: float = 3.0
    anatomical: str = "t1"
    noise_pct: float = 2.0
    bias: float = 0.2
    vessel_bright: bool = True
    vendor: str = "siemens"

    def __post_init__(self) -> None:
        if not self.legs or any(s not in SIDES for s in self.legs) or len(set(self.legs)) != len(self.legs):
            raise ValueError(f"legs={self.legs!r}: give ('left',), ('right',) or ('left', 'right').")
        if not (0.0 <= self.t_start < self.t_end <= 1.0):
            raise ValueError(f"t_start={self.t_start}, t_end={self.t_end}: need 0 <= t_start < t_end <= 1.")
        if self.anatomical not in ANATOMICAL_CONTRASTS:
            raise ValueError(f"anatomical='{self.anatomical}'; use one of {', '.join(ANATOMICAL_CONTRASTS)}.")
        if self.supersample < 1 or self.in_plane_mm <= 0 or self.slice_mm <= 0:
            raise ValueError("supersample >= 1, in_plane_mm > 0 and slice_mm > 0 are required.")
        if self.field_t not in (1.5, 3.0):
            raise ValueError(f"field_t={self.field_t}; use 1.5 or 3.0.")

    def muscle(self, side: str, name: str) -> AtlasPathology:
        return self.pathology.get(side, {}).get(name, AtlasPathology())

    @classmethod
    def random(cls, rng: np.random.Generator) -> AtlasSpec:
        legs: tuple[str, ...] = ("left", "right") if rng.random() < 0.85 else (str(rng.choice(SIDES)),)
        pathology: dict[str, dict[str, AtlasPathology]] = {}
        for side in SIDES:
            pathology[side] = {m: AtlasPathology(scale=float(np.clip(rng.normal(1.0, 0.07), 0.8, 1.2)),
                                                 ff=float(rng.uniform(0.02, 0.08)), pattern="diffuse")
                               for m in MUSCLES}
            if rng.random() < 0.4:
                for m in rng.choice(MUSCLES, size=int(rng.integers(1, 5)), replace=False):
                    pattern = str(rng.choice(PATTERNS))
                    ff = rng.uniform(0.7, 0.92) if pattern == "complete" else rng.uniform(0.12, 0.6)
                    scale = rng.uniform(0.55, 0.9) if rng.random() < 0.6 else rng.uniform(1.1, 1.35)
                    pathology[side][str(m)] = AtlasPathology(scale=float(scale), ff=float(ff), pattern=pattern)
        size_ml, size_ap, deform = (float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.85, 1.15)),
                                    float(rng.uniform(1.5, 4.0)))
        reach = SKIN_LEVELS.max() * max(size_ml, size_ap) * 1.12 + 3 * deform + 4  # as _Leg.extent_mm
        separation = max(float(rng.uniform(160, 250)), 2 * reach - 12)
        t_start = float(rng.uniform(0.06, 0.2))
        anatomical = str(rng.choice(ANATOMICAL_CONTRASTS, p=[0.5, 0.2, 0.1, 0.1, 0.1]))
        return cls(legs=legs, tibia_length_mm=float(rng.uniform(320, 420)), t_start=t_start,
                   t_end=float(rng.uniform(max(t_start + 0.35, 0.65), 0.88)),
                   slice_mm=float(rng.choice([4.0, 5.0, 6.0])), in_plane_mm=float(rng.uniform(0.9, 1.3)),
                   separation_mm=separation, size_ml=size_ml,
                   size_ap=size_ap, bone_scale=float(rng.uniform(0.9, 1.1)),
                   fat_mm=float(rng.uniform(2.0, 12.0)),
                   rotation_deg={s: float(rng.uniform(-10, 22)) for s in SIDES},
                   offset_y_mm={s: float(rng.uniform(-10, 10)) for s in SIDES},
                   posterior_n=float(rng.uniform(2.1, 3.4)), deform_mm=deform, jitter=float(rng.uniform(0.5, 1.3)),
                   fill_mm=float(rng.uniform(8.0, 20.0)), septum_ff=float(rng.uniform(0.35, 0.8)),
                   pathology=pathology, field_t=float(rng.choice([1.5, 3.0])), anatomical=anatomical,
                   noise_pct=float(rng.uniform(1.0, 4.0)), bias=float(rng.uniform(0.05, 0.35)),
                   vessel_bright=bool(rng.random() < 0.5), vendor=str(rng.choice(["siemens", "philips", "ge"])))


@dataclass
class AtlasPhantom:
    """The series (Dixon water / fat / in-phase / opposed-phase and one anatomical image), the label map, the truth
    and the noiseless water / fat proton-density maps on the output grid."""

    spec: AtlasSpec
    series: list[SynthSeries]
    labels: Volume
    truth: dict[str, Any]
    water_fat: dict[str, Volume]

    def volume(self, role: str) -> Volume:
        for s in self.series:
            if s.role == role:
                return s.volume
        raise KeyError(f"no series with role '{role}'; have {', '.join(s.role for s in self.series)}")


# -- random smooth fields ----------------------------------------------------------------------------------------
class _Field:
    """A smooth random scalar field in mm coordinates: a normalised sum of plane waves, values in [-1, 1]."""

    def __init__(self, rng: np.random.Generator, wavelength_mm: tuple[float, float], n: int = 5, dims: int = 3):
        lam = rng.uniform(*wavelength_mm, size=n)
        direction = rng.normal(size=(n, dims))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.k = 2 * np.pi * direction / lam[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, n)
        amp = rng.uniform(0.5, 1.0, n)
        self.amp = amp / amp.sum()

    def __call__(self, *coords: Any) -> np.ndarray:
        out = 0.0
        for k, p, a in zip(self.k, self.phase, self.amp):
            arg = p
            for kk, c in zip(k, coords):
                arg = arg + kk * c
            out = out + a * np.cos(arg)
        return np.asarray(out)

    def grid(self, a: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
        """The field on the grid a (axis 0) x b (axis 1) at third coordinate c, as outer products (fast)."""
        out = np.zeros((a.size, b.size))
        for k, p, amp in zip(self.k, self.phase, self.amp):
            ea = amp * np.exp(1j * (k[0] * a + k[2] * c + p))
            eb = np.exp(1j * k[1] * b)
            out += np.outer(ea.real, eb.real) - np.outer(ea.imag, eb.imag)
        return out


class _MuscleFat:
    """Fat-fraction pattern of one muscle: returns ff (0-1) at reference-frame points (u, v, z)."""

    def __init__(self, p: AtlasPathology, rng: np.random.Generator):
        self.p = p
        self.low = min(0.03, p.ff)
        self.field = _Field(rng, (12.0, 35.0), n=5)
        self.warp = _Field(rng, (15.0, 45.0), n=4)
        self.angle = rng.uniform(0, np.pi)
        self.lam = rng.uniform(4.0, 7.0)

    def __call__(self, u: np.ndarray, v: np.ndarray, z: float) -> np.ndarray:
        p, low = self.p, self.low
        g = self.field(u, v, z)
        if p.pattern == "diffuse":
            ff = p.ff * (1.0 + 0.15 * g)
        elif p.pattern == "complete":
            ff = p.ff + 0.03 * g
        elif p.pattern == "patchy":
            high = max(p.ff, min(0.92, p.ff * 2.2 + 0.2))
            frac = (p.ff - low) / max(high - low, 1e-6)
            thr = np.clip(1.0 - 2.0 * frac, -0.95, 0.95) * 0.6
            ff = low + (high - low) / (1.0 + np.exp(-(g - thr) / 0.06))
        else:  # marbled: thin streaks of fat
            s = 0.5 + 0.5 * np.cos(2 * np.pi * (u * np.cos(self.angle) + v * np.sin(self.angle)) / self.lam
                                   + 7.0 * self.warp(u, v, z))
            amp = min((p.ff - low) / 0.2256, 0.95 - low)
            ff = low + amp * s ** 6
        return np.clip(ff, 0.0, 1.0)


# -- one leg -----------------------------------------------------------------------------------------------------
class _Leg:
    def __init__(self, side: str, spec: AtlasSpec, center: tuple[float, float], rng: np.random.Generator):
        self.side = side
        self.spec = spec
        self.cx, self.cy = center
        self.mirror = 1.0 if side == "right" else -1.0  # lateral is +x for the right leg, -x for the left
        psi = np.deg2rad(spec.rotation_deg.get(side, 0.0))
        self.cos, self.sin = np.cos(psi), np.sin(psi)
        self.sml, self.sap = spec.size_ml, spec.size_ap
        self.du = _Field(rng, (70.0, 160.0), n=5)
        self.dv = _Field(rng, (70.0, 160.0), n=5)
        j = spec.jitter
        self.skin_harm = rng.normal(0, 0.02 * j, 3), rng.uniform(0, 2 * np.pi, 3)
        self.fat_field = _Field(rng, (80.0, 200.0), n=4)
        self.fat_medial = rng.uniform(0.0, 0.5)
        self.shape_mod: dict[str, tuple[np.ndarray, float, np.ndarray, np.ndarray]] = {}
        for name, (cls_name, tissue, *_rest) in ATLAS.items():
            size = spec.bone_scale / np.sqrt(self.sml * self.sap) if tissue == CORTEX else 1.0
            if cls_name in MUSCLES:
                size *= spec.muscle(side, cls_name).scale
            size *= float(np.exp(rng.normal(0, 0.06 * j)))
            shift = rng.normal(0, 1.5 * j, 2) if tissue != CORTEX else rng.normal(0, 0.7 * j, 2)
            harm = rng.normal(0, 0.04 * j, 3) if tissue != CORTEX else rng.normal(0, 0.015 * j, 3)
            self.shape_mod[name] = (shift, size, harm, rng.uniform(0, 2 * np.pi, 3))
        self.fat = {m: _MuscleFat(spec.muscle(side, m), rng) for m in MUSCLES}
        self.vein_r = {k: rng.uniform(1.5, 3.0) for k in SUPERFICIAL_VEINS}
        self.septum_mm = rng.uniform(0.4, 1.6)  # fat planes between compartments
        n = 14  # small intramuscular vessels running along the leg: (u, v) at t = 0.4, radius, drift per unit t
        self.tracks = np.column_stack([rng.uniform(-40, 40, n), rng.uniform(-42, 12, n), rng.uniform(0.6, 1.3, n),
                                       rng.normal(0, 10, n), rng.normal(0, 10, n)])

    # coordinates
    def to_ref(self, xs: np.ndarray, ys: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
        """World grid xs (axis 0) x ys (axis 1), mm -> deformed reference-leg coordinates (u lateral, v anterior).
        The displacement field lives in world millimetres relative to the leg centre."""
        xr, yr = xs - self.cx, ys - self.cy
        xm = self.mirror * xr[:, None]  # towards lateral
        u = (self.cos * xm - self.sin * yr[None, :]) / self.sml
        v = (self.sin * xm + self.cos * yr[None, :]) / self.sap
        d = self.spec.deform_mm
        return u + d * self.du.grid(xr, yr, z), v + d * self.dv.grid(xr, yr, z)

    def from_ref(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undeformed reference coordinates -> world (x, y). A positive rotation is external (anterior turns
        lateral) on both legs."""
        ur, vr = u * self.sml, v * self.sap
        return self.cx + self.mirror * (self.cos * ur + self.sin * vr), self.cy - self.sin * ur + self.cos * vr

    def skin_radius(self, theta: np.ndarray, t: float) -> np.ndarray:
        al, am, ba, bp = _SKIN_TABLE(t)
        c, s = np.cos(theta), np.sin(theta)
        a = np.where(c >= 0, al, am)
        b = np.where(s >= 0, ba, bp)
        # flat anteromedial face over the tibia; the posterior side flattened by the table (exponent > 2)
        n = np.where(s >= 0, np.where(c >= 0, 2.0, 1.35), self.spec.posterior_n)
        r = (np.abs(c / a) ** n + np.abs(s / b) ** n) ** (-1.0 / n)
        amp, ph = self.skin_harm
        return r * (1.0 + sum(amp[k] * np.cos((k + 2) * theta + ph[k]) for k in range(3)))

    def fat_thickness_ref(self, theta: np.ndarray, t: float, z: float) -> np.ndarray:
        """Subcutaneous fat thickness (reference mm): thicker posteromedially, thinner over the tibia."""
        f = self.spec.fat_mm * (1.0 + self.fat_medial * np.cos(theta - np.deg2rad(225))) \
            * (1.0 + 0.25 * self.fat_field(np.cos(theta) * 50, np.sin(theta) * 50, z))
        return np.maximum(f, 1.8) / np.sqrt(self.sml * self.sap)

    def shape(self, name: str, t: float) -> tuple[float, float, float, float, float] | None:
        cu, cv, a, b, rot = _TABLES[name](t)
        shift, size, _, _ = self.shape_mod[name]
        a, b = a * size, b * size
        if a < 0.6 or b < 0.6:
            return None
        return cu + shift[0], cv + shift[1], a, b, rot

    def girth_mm(self, t: float, z: float) -> float:
        theta = np.linspace(0, 2 * np.pi, 721)
        r = self.skin_radius(theta, t)
        U, V = r * np.cos(theta), r * np.sin(theta)
        wx, wy = self.from_ref(U, V)
        d = self.spec.deform_mm
        xr, yr = wx - self.cx, wy - self.cy
        zz = np.full_like(xr, z)
        u, v = U - d * self.du(xr, yr, zz), V - d * self.dv(xr, yr, zz)  # first-order inverse of the deformation
        return float(np.sum(np.hypot(np.diff(u * self.sml), np.diff(v * self.sap))))

    def extent_mm(self, t: float | None = None) -> float:
        """Largest distance of the skin from the leg centre in world mm, at level t or anywhere."""
        skin = SKIN_LEVELS.max() if t is None else float(np.max(_SKIN_TABLE(np.clip(t, 0.0, 1.0))))
        return float(skin * max(self.sml, self.sap) * 1.12 + 3 * self.spec.deform_mm + 4)

    # rendering of one slice on a crop of the fine grid
    def render(self, xs: np.ndarray, ys: np.ndarray, z: float, t: float, fine_mm: float,
               class_id: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class, tissue, ff) on the fine grid xs x ys; class ids are registry class ids (0 = background)."""
        U, V = self.to_ref(xs, ys, z)
        theta = np.arctan2(V, U)
        rho = np.hypot(U, V)
        th_tab = np.linspace(-np.pi, np.pi, 1441)
        r_tab = self.skin_radius(th_tab, t)
        r_skin = np.interp(theta, th_tab, r_tab)
        inside = rho < r_skin
        fat_ref = np.interp(theta, th_tab, self.fat_thickness_ref(th_tab, t, z))
        env = rho < r_skin - fat_ref
        skin_band = inside & (rho > r_skin - 1.5 / np.sqrt(self.sml * self.sap))
        cls = np.zeros(U.shape, np.int8)
        tissue = np.full(U.shape, AIR, np.int8)
        ff = np.zeros(U.shape, np.float32)
        scf = class_id["subcutaneous_fat"]
        cls[inside] = scf
        tissue[inside] = SUBFAT
        tissue[skin_band] = SKIN
        tissue[env] = INTERFAT
        cls[env] = 0
        claimed = ~env
        # superficial veins in the subcutaneous fat
        for vname, ang in SUPERFICIAL_VEINS.items():
            th = np.deg2rad(ang)
            rr = float(self.skin_radius(np.array(th), t)) - 0.5 * float(self.fat_thickness_ref(np.array(th), t, z))
            vr = self.vein_r[vname] / np.sqrt(self.sml * self.sap)
            if vname == "small_saphenous" and t < 0.35:
                continue
            m = ((U - rr * np.cos(th)) ** 2 + (V - rr * np.sin(th)) ** 2 < vr ** 2) & inside & ~env & ~skin_band
            tissue[m] = VESSEL
        box_of = _box_finder(self, xs, ys)
        # bones first (clipped to the skin outline, not the fascia)
        for name in ("tibia", "fibula"):
            sh = self.shape(name, t)
            if sh is None:
                continue
            sl = box_of(sh)
            m, rn = _superellipse(U[sl], V[sl], sh, ATLAS[name][2], ATLAS[name][3], self.shape_mod[name], True)
            m &= inside[sl] & ~skin_band[sl]
            cortex_ref = float(_CORTEX_TABLES[name](t)) * self.spec.bone_scale / np.sqrt(self.sml * self.sap)
            marrow = m & (rn < 1.0 - cortex_ref / (0.5 * (sh[2] + sh[3])))
            c, ti, cl = cls[sl], tissue[sl], claimed[sl]
            c[m] = class_id[name]
            ti[m] = CORTEX
            ti[marrow] = MARROW
            cl[m] = True
        # neurovascular bundles: a vessel in a pad of fat
        for name in BUNDLES:
            u0, v0, r = _BUNDLE_TABLES[name](t)
            if r < 0.8:
                continue
            shift = self.shape_mod["tibialis_posterior"][0] * 0.5
            sh = (u0 + shift[0], v0 + shift[1], r + 1.0, r + 1.0, 0.0)
            sl = box_of(sh)
            d2 = (U[sl] - sh[0]) ** 2 + (V[sl] - sh[1]) ** 2
            pad = (d2 < sh[2] ** 2) & ~claimed[sl]
            vessel = pad & (d2 < r ** 2)
            ti, cl = tissue[sl], claimed[sl]
            ti[pad] = INTERFAT
            ti[vessel] = VESSEL
            cl[pad] = True
        # muscles and tendons in priority order, clipped to the deep fascia
        for name, (cls_name, tis, n_exp, tri, _lv) in ATLAS.items():
            if tis == CORTEX:
                continue
            sh = self.shape(name, t)
            if sh is None:
                continue
            sl = box_of(sh)
            m, _rn = _superellipse(U[sl], V[sl], sh, n_exp, tri, self.shape_mod[name], False)
            m &= ~claimed[sl]
            c, ti, cl = cls[sl], tissue[sl], claimed[sl]
            ti[m] = tis
            c[m] = class_id[cls_name] if cls_name is not None else 0
            cl[m] = True
        # popliteus and tendons keep class 0; fill narrow gaps with the nearest registry muscle
        muscle_cls = np.isin(cls, [class_id[m] for m in MUSCLES]) & (tissue == MUSCLE)
        gap = env & ~claimed
        if gap.any() and muscle_cls.any():
            # the nearest muscle or bone: a gap next to a bone stays fat (periosteal fat over the bare tibia)
            # (a gap next to a bone and near the skin is subcutaneous fat: the bare anteromedial tibia)
            bone = (tissue == CORTEX) | (tissue == MARROW)
            _, (bi, bj) = ndimage.distance_transform_edt(~(muscle_cls | bone), sampling=fine_mm,
                                                         return_indices=True)
            dist, (ii, jj) = ndimage.distance_transform_edt(~muscle_cls, sampling=fine_mm, return_indices=True)
            bone_first = gap & ~muscle_cls[bi, bj]
            depth = r_skin - fat_ref - rho  # below the deep fascia (reference mm)
            subcut = bone_first & (depth < 12.0)
            fill = gap & (dist <= self.spec.fill_mm) & ~subcut
            cls[subcut] = scf
            tissue[subcut] = SUBFAT
            cls[fill] = cls[ii[fill], jj[fill]]
            tissue[fill] = MUSCLE
            muscle_cls |= fill
        # fascial septa between neighbouring muscles (both sides of the boundary)
        cm = np.where(muscle_cls, cls, -1)
        edge = np.zeros(cls.shape, bool)
        for ax in (0, 1):
            a0 = [slice(None)] * 2
            a1 = [slice(None)] * 2
            a0[ax], a1[ax] = slice(None, -1), slice(1, None)
            diff = (cm[tuple(a0)] != cm[tuple(a1)]) & (cm[tuple(a0)] >= 0) & (cm[tuple(a1)] >= 0)
            edge[tuple(a0)] |= diff
            edge[tuple(a1)] |= diff
        tissue[edge] = SEPTUM
        # wider fat planes between compartments (and between the gastrocnemii and soleus)
        comp_lut = np.full(int(max(class_id.values())) + 1, -1, np.int8)
        for mname, comp in COMPARTMENT.items():
            comp_lut[class_id[mname]] = comp
        cc = np.where(muscle_cls, comp_lut[cls], -1)
        plane = np.zeros(cls.shape, bool)
        for ax in (0, 1):
            a0 = [slice(None)] * 2
            a1 = [slice(None)] * 2
            a0[ax], a1[ax] = slice(None, -1), slice(1, None)
            diff = (cc[tuple(a0)] != cc[tuple(a1)]) & (cc[tuple(a0)] >= 0) & (cc[tuple(a1)] >= 0)
            plane[tuple(a0)] |= diff
            plane[tuple(a1)] |= diff
        grow = int(round(self.septum_mm / fine_mm / 2))
        if grow > 0 and plane.any():
            plane = ndimage.binary_dilation(plane, iterations=grow) & muscle_cls
        tissue[plane] = INTERFAT
        # small intramuscular vessels (kept in the muscle's label, left out of its fat fraction)
        for u0, v0, r, du, dv in self.tracks:
            sh = (u0 + du * (t - 0.4), v0 + dv * (t - 0.4), r, r, 0.0)
            sl = box_of(sh)
            ti = tissue[sl]
            ti[((U[sl] - sh[0]) ** 2 + (V[sl] - sh[1]) ** 2 < r * r) & (ti == MUSCLE)] = VESSEL
        # fat fraction of muscle tissue
        idx = np.nonzero(tissue == MUSCLE)
        cm = cls[idx]
        vals = np.zeros(cm.shape, np.float32)
        for mname in MUSCLES:
            m = cm == class_id[mname]
            if m.any():
                vals[m] = self.fat[mname](U[idx][m], V[idx][m], z)
        ff[idx] = vals
        return cls, tissue, ff


def _box_finder(leg: _Leg, x: np.ndarray, y: np.ndarray):
    """A function giving the index box of the grid x (axis 0) x y (axis 1) that holds a reference-frame
    superellipse (with a margin for the displacement field)."""
    x0, y0 = float(x[0]), float(y[0])
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    dy = float(y[1] - y[0]) if y.size > 1 else 1.0
    margin = 3 * leg.spec.deform_mm + 2.0

    def box(sh: tuple[float, ...]) -> tuple[slice, slice]:
        cu, cv, a, b = sh[:4]
        wx, wy = leg.from_ref(np.array(cu), np.array(cv))
        rad = max(a, b) * 1.25 * max(leg.sml, leg.sap) + margin
        i0 = max(int((wx - rad - x0) / dx), 0)
        i1 = min(int((wx + rad - x0) / dx) + 2, x.size)
        j0 = max(int((wy - rad - y0) / dy), 0)
        j1 = min(int((wy + rad - y0) / dy) + 2, y.size)
        return slice(i0, max(i1, i0)), slice(j0, max(j1, j0))

    return box


def superellipse_inside(U: np.ndarray, V: np.ndarray, sh: tuple[float, ...], n: float, tri: float,
                        harm: np.ndarray, ph: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inside test of the superellipse ``sh`` = (centre u, centre v, semi-axis a, semi-axis b, rotation deg) with
    exponent ``n``, a third harmonic ``tri`` (apex anterior) and contour harmonics 2, 3, 4 of relative amplitudes
    ``harm`` and phases ``ph``. Returns (inside, normalised radius: 1 on the contour)."""
    cu, cv, a, b, rot = sh
    r = np.deg2rad(rot)
    du, dv = U - cu, V - cv
    p = np.cos(r) * du + np.sin(r) * dv
    q = -np.sin(r) * du + np.cos(r) * dv
    if n == 2.0:
        rn = np.sqrt((p / a) ** 2 + (q / b) ** 2)
    else:
        rn = (np.abs(p / a) ** n + np.abs(q / b) ** n) ** (1.0 / n)
    w = p + 1j * q
    w = w / np.maximum(np.abs(w), 1e-9)  # e^(i theta)
    w2 = w * w
    w3 = w2 * w
    h = 1.0 + (harm[0] * np.exp(1j * ph[0]) * w2 + harm[1] * np.exp(1j * ph[1]) * w3
               + harm[2] * np.exp(1j * ph[2]) * w2 * w2).real
    if tri:  # apex anterior, corners posteromedial and posterolateral
        h = h + tri * (np.exp(3j * (r - np.pi / 2)) * w3).real
    rn = rn / h
    return rn < 1.0, rn


def _superellipse(U: np.ndarray, V: np.ndarray, sh: tuple[float, ...], n: float, tri: float,
                  mod: tuple[np.ndarray, float, np.ndarray, np.ndarray], want_rn: bool
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    _, _, harm, ph = mod
    m, rn = superellipse_inside(U, V, sh, n, tri, harm, ph)
    return m, (rn if want_rn else None)


# -- signal model ------------------------------------------------------------------------------------------------
def _relax(field_t: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Per-tissue water (T1, T2, T2*) and fat (T1, T2, T2*) at the field strength."""
    water = _TISSUE[:, 2:5].copy()
    fat = _FAT_RELAX_3T
    if field_t == 1.5:
        water[:, 0] *= 0.72
        water[:, 2] *= 1.6
        fat = (290.0, 75.0, 18.0)
    return water, fat


def _gre(rho_t1: np.ndarray, tr: float, flip_deg: float) -> np.ndarray:
    e1 = np.exp(-tr / rho_t1)
    a = np.deg2rad(flip_deg)
    return np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


@dataclass
class _Protocol:
    tr_gre: float
    flip: float
    te_op: float
    te_ip: float
    anatomical: str
    tr: float
    te: float
    ti: float
    flip_anat: float


def _protocol(spec: AtlasSpec, rng: np.random.Generator) -> _Protocol:
    df = 3.4 * 42.577 * spec.field_t  # main fat peak offset (Hz)
    k = int(rng.integers(0, 2))
    te_op, te_ip = (2 * k + 1) / (2 * df) * 1000, (k + 1) / df * 1000
    a = spec.anatomical
    tr, te, ti, fl = {"t1": (rng.uniform(450, 700), rng.uniform(8, 15), 0.0, 90.0),
                      "t2": (rng.uniform(3000, 5000), rng.uniform(70, 100), 0.0, 90.0),
                      "pd": (rng.uniform(2500, 3500), rng.uniform(15, 30), 0.0, 90.0),
                      "stir": (rng.uniform(3500, 5000), rng.uniform(30, 50), 0.0, 90.0),
                      "gre": (rng.uniform(200, 400), te_ip, 0.0, rng.uniform(20, 35))}[a]
    if a == "stir":
        ti = _relax(spec.field_t)[1][0] * np.log(2)
    return _Protocol(tr_gre=float(rng.uniform(6, 25)), flip=float(rng.uniform(4, 12)), te_op=te_op, te_ip=te_ip,
                     anatomical=a, tr=float(tr), te=float(te), ti=float(ti), flip_anat=float(fl))


def _luts(spec: AtlasSpec, pr: _Protocol) -> dict[str, np.ndarray]:
    """Per-tissue signal per unit proton density of the water and the fat component, for every image."""
    water, (f1, f2, f2s) = _relax(spec.field_t)
    t1w, t2w, t2sw = water[:, 0], water[:, 1], water[:, 2]
    rho = _TISSUE[:, 0].copy()
    rho_gre, rho_se = rho.copy(), rho.copy()
    rho_gre[VESSEL] *= 1.4 if spec.vessel_bright else 0.3
    rho_se[VESSEL] *= 0.6 if spec.vessel_bright else 0.08
    out: dict[str, np.ndarray] = {}
    gw = _gre(t1w, pr.tr_gre, pr.flip)
    gf = float(_gre(np.array(f1), pr.tr_gre, pr.flip))
    out["water_w"], out["fat_f"] = rho_gre * gw, rho_gre * gf
    df = _FAT_PPM * 42.577 * spec.field_t
    for name, te in (("ip", pr.te_ip), ("op", pr.te_op)):
        phasor = np.sum(_FAT_AMP * np.exp(2j * np.pi * df * te / 1000.0))
        out[f"{name}_w"] = rho_gre * gw * np.exp(-te / t2sw)
        out[f"{name}_f"] = rho_gre * gf * np.exp(-te / f2s) * phasor
    if pr.anatomical == "gre":
        ga_w, ga_f = _gre(t1w, pr.tr, pr.flip_anat), float(_gre(np.array(f1), pr.tr, pr.flip_anat))
        phasor = np.sum(_FAT_AMP * np.exp(2j * np.pi * df * pr.te / 1000.0))
        out["anat_w"] = rho_gre * ga_w * np.exp(-pr.te / t2sw)
        out["anat_f"] = rho_gre * ga_f * np.exp(-pr.te / f2s) * phasor
    elif pr.anatomical == "stir":
        def ir(t1: Any, t2: Any) -> Any:
            return (1 - 2 * np.exp(-pr.ti / t1) + np.exp(-pr.tr / t1)) * np.exp(-pr.te / t2)
        out["anat_w"], out["anat_f"] = rho_se * ir(t1w, t2w) + 0j, rho_se * ir(f1, f2) + 0j
    else:
        def se(t1: Any, t2: Any) -> Any:
            return (1 - np.exp(-pr.tr / t1)) * np.exp(-pr.te / t2)
        out["anat_w"], out["anat_f"] = rho_se * se(t1w, t2w) + 0j, rho_se * se(f1, f2) + 0j
    return out


def _block(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks (fine rendering -> output voxels)."""
    if f == 1:
        return a
    return a.reshape(a.shape[0] // f, f, a.shape[1] // f, f).sum(axis=(1, 3)) * (1.0 / (f * f))


def block_mode(lab: np.ndarray, f: int, n_labels: int) -> np.ndarray:
    """Majority label of every f x f block (ties: the lower id)."""
    if f == 1:
        return lab
    nx, ny = lab.shape[0] // f, lab.shape[1] // f
    blk = np.arange(nx * ny).reshape(nx, ny).repeat(f, 0).repeat(f, 1)
    counts = np.bincount((blk * n_labels + lab).ravel(), minlength=nx * ny * n_labels).reshape(nx * ny, n_labels)
    return counts.argmax(axis=1).reshape(nx, ny)


def _bias_field(rng: np.random.Generator, strength: float):
    c = rng.normal(0, strength / 2, 6)

    def f(xn: np.ndarray, yn: np.ndarray, zn: float) -> np.ndarray:
        return np.exp(c[0] * xn + c[1] * yn + c[2] * zn + c[3] * xn * yn + c[4] * (xn ** 2 - 0.3)
                      + c[5] * (yn ** 2 - 0.3))

    return f


# -- the phantom -------------------------------------------------------------------------------------------------
class TissueRenderer:
    """Turns fine tissue maps into the five output images: Dixon water, fat, in-phase, opposed-phase (spoiled
    gradient echo, six-peak fat) and one anatomical image (``params.anatomical``). ``add`` takes one crop of one
    slice on the fine grid (``supersample`` times finer in-plane) and accumulates its block means; ``series``
    adds the bias fields and Rician noise and scales to unsigned 16-bit. ``params`` needs ``field_t``,
    ``anatomical``, ``vessel_bright``, ``septum_ff``, ``noise_pct``, ``bias`` (an :class:`AtlasSpec` has them)."""

    def __init__(self, params: Any, shape: tuple[int, int, int], supersample: int, rng: np.random.Generator):
        self.params, self.shape, self.f, self.rng = params, shape, supersample, rng
        self.protocol = _protocol(params, rng)
        lut = _luts(params, self.protocol)
        self.lut = lut
        self.lut_c = {k: (lut[f"{k}_w"].astype(np.complex64), lut[f"{k}_f"].astype(np.complex64))
                      for k in ("ip", "op", "anat")}
        self.lut_ww, self.lut_ff = lut["water_w"].astype(np.float32), lut["fat_f"].astype(np.float32)
        self.tissue_ff = _TISSUE[:, 1].astype(np.float32).copy()
        self.tissue_ff[SEPTUM] = params.septum_ff
        self.rho = _TISSUE[:, 0].astype(np.float32)
        self.imgs = {k: np.zeros(shape, np.complex64 if k in ("ip", "op", "anat") else np.float32)
                     for k in ("water", "fat", "ip", "op", "anat")}
        self.pdw = np.zeros(shape, np.float32)
        self.pdf = np.zeros(shape, np.float32)

    def add(self, sl: tuple, tis: np.ndarray, ffm: np.ndarray) -> None:
        """Accumulate the crop ``sl`` (output-voxel slices (i, j, k)) from fine tissue codes and muscle ff."""
        f = self.f
        ffp = np.where(tis == MUSCLE, ffm, self.tissue_ff[tis])
        r = self.rho[tis]
        rf = r * ffp
        rw = r - rf
        self.pdw[sl] += _block(rw, f)
        self.pdf[sl] += _block(rf, f)
        self.imgs["water"][sl] += _block(rw * self.lut_ww[tis], f)
        self.imgs["fat"][sl] += _block(rf * self.lut_ff[tis], f)
        for key, (lw, lf) in self.lut_c.items():
            self.imgs[key][sl] += _block(rw * lw[tis] + rf * lf[tis], f)

    def series(self, affine: np.ndarray, naming: dict[str, str], anatomy: str = "calf") -> list[SynthSeries]:
        rng, p, lut = self.rng, self.params, self.lut
        nx, ny, nz = self.shape
        xn = ((np.arange(nx) - nx / 2) / (nx / 2))[:, None]
        yn = ((np.arange(ny) - ny / 2) / (ny / 2))[None, :]
        bias_d, bias_a = _bias_field(rng, p.bias), _bias_field(rng, p.bias)
        ref = {"dixon": float(_TISSUE[MUSCLE, 0] * lut["water_w"][MUSCLE]),
               "anat": float(abs(_TISSUE[MUSCLE, 0] * lut["anat_w"][MUSCLE]))}
        ref["anat"] = max(ref["anat"], 0.05 * float(np.abs(lut["anat_f"][SUBFAT]) * _TISSUE[SUBFAT, 0]))
        scale = {"dixon": rng.uniform(300, 700) / ref["dixon"], "anat": rng.uniform(300, 700) / ref["anat"]}
        out: list[SynthSeries] = []
        for key, role in (("water", "water"), ("fat", "fat"), ("ip", "inphase"), ("op", "outphase"),
                          ("anat", "anatomical")):
            grp = "anat" if key == "anat" else "dixon"
            bf = bias_a if grp == "anat" else bias_d
            bias = np.stack([bf(xn, yn, 2 * k / max(nz - 1, 1) - 1) for k in range(nz)], axis=-1)
            sigma = p.noise_pct / 100 * ref[grp]
            sig = self.imgs[key] * bias
            noisy = np.abs(sig + sigma * rng.standard_normal(sig.shape, dtype=np.float32)
                           + 1j * sigma * rng.standard_normal(sig.shape, dtype=np.float32))
            arr = np.round(np.clip(noisy * scale[grp], 0, 65535)).astype(np.uint16)
            contrast = p.anatomical if key == "anat" else role
            out.append(SynthSeries(f"{anatomy}_{role}", Volume(arr, affine, {"generator": GENERATOR_NAME}), None,
                                   naming[role], "axial", contrast))
        return out


def generate_atlas_calf(spec: AtlasSpec | None = None, seed: int = 0) -> AtlasPhantom:
    """One atlas calf phantom (evaluation only). ``spec`` None draws a random subject and protocol from ``seed``;
    the same (spec, seed) always gives the same arrays."""
    if spec is None:
        spec = AtlasSpec.random(np.random.default_rng([seed, 2718]))
    reg = registry("calf")
    class_id = {name: reg.class_id(name) for name in reg.classes[1:]}
    n_labels = len(reg.labels) + 1
    sided = np.zeros((len(SIDES), len(reg.classes)), np.int16)
    for si, side in enumerate(SIDES):
        for name in reg.classes[1:]:
            sided[si, class_id[name]] = reg.sided_id(name, side)
    rng = np.random.default_rng([seed, 31415])
    # geometry: the right leg at +x (RAS+: patient right), the left leg at -x
    centers = {"right": (spec.separation_mm / 2, spec.offset_y_mm.get("right", 0.0)),
               "left": (-spec.separation_mm / 2, spec.offset_y_mm.get("left", 0.0))}
    if len(spec.legs) == 1:
        centers = {spec.legs[0]: (0.0, spec.offset_y_mm.get(spec.legs[0], 0.0))}
    legs = {s: _Leg(s, spec, centers[s], np.random.default_rng([seed, 7, SIDES.index(s)])) for s in spec.legs}
    ext = max(leg.extent_mm() for leg in legs.values())
    if len(spec.legs) == 2 and spec.separation_mm < 2 * ext - 20:
        raise ValueError(f"separation_mm={spec.separation_mm} lets the legs overlap; use at least {2 * ext - 20:.0f}.")
    d, f = spec.in_plane_mm, spec.supersample
    xs = [c[0] for c in centers.values()]
    ys = [c[1] for c in centers.values()]
    nx = int(np.ceil((max(xs) - min(xs) + 2 * ext + 20) / d))
    ny = int(np.ceil((max(ys) - min(ys) + 2 * ext + 20) / d))
    x0 = (max(xs) + min(xs)) / 2 - (nx - 1) / 2 * d
    y0 = (max(ys) + min(ys)) / 2 - (ny - 1) / 2 * d
    L = spec.tibia_length_mm
    nz = spec.n_slices or max(1, int(round((spec.t_end - spec.t_start) * L / spec.slice_mm)) + 1)
    z_knee = float(rng.uniform(-50, 50))
    z_top = z_knee - spec.t_start * L
    z0 = z_top - (nz - 1) * spec.slice_mm
    affine = axial_grid_affine(x0, y0, z0, d, d, spec.slice_mm)
    fine = d / f
    fx = x0 - d / 2 + fine * (np.arange(nx * f) + 0.5)  # fine pixel centres
    fy = y0 - d / 2 + fine * (np.arange(ny * f) + 0.5)
    renderer = TissueRenderer(spec, (nx, ny, nz), f, rng)
    # one crop per leg and slice, aligned to output voxels; signals are rendered and averaged on the crop only
    def crop(leg: _Leg, t: float) -> tuple[int, int, int, int]:
        e = leg.extent_mm(t)
        i0, i1 = (int(np.clip(np.floor((c - x0) / d), 0, nx)) for c in (leg.cx - e, leg.cx + e + d))
        j0, j1 = (int(np.clip(np.floor((c - y0) / d), 0, ny)) for c in (leg.cy - e, leg.cy + e + d))
        return i0, i1, j0, j1

    labels = np.zeros((nx, ny, nz), np.int16)
    ff_sum = {s: {m: 0.0 for m in MUSCLES} for s in spec.legs}
    ff_w = {s: {m: 0.0 for m in MUSCLES} for s in spec.legs}
    girth: dict[str, list[float]] = {s: [] for s in spec.legs}
    for k in range(nz):
        z = z0 + k * spec.slice_mm
        t = (z_knee - z) / L
        for s, leg in legs.items():
            girth[s].append(leg.girth_mm(t, z))
            i0, i1, j0, j1 = crop(leg, t)
            cls, tis, ffm = leg.render(fx[i0 * f:i1 * f], fy[j0 * f:j1 * f], z, t, fine, class_id)
            mus = tis == MUSCLE
            sums = np.bincount(cls[mus], weights=ffm[mus], minlength=len(reg.classes))
            cnts = np.bincount(cls[mus], minlength=len(reg.classes))
            for mname in MUSCLES:
                ff_sum[s][mname] += float(sums[class_id[mname]])
                ff_w[s][mname] += float(cnts[class_id[mname]])
            sl = (slice(i0, i1), slice(j0, j1), k)
            labels[sl] = np.maximum(labels[sl], block_mode(sided[SIDES.index(s)][cls], f, n_labels))
            renderer.add(sl, tis, ffm)
    series = renderer.series(affine, series_naming(spec.vendor, spec.anatomical), "calf")
    lab_vol = Volume(labels, affine, {"generator": GENERATOR_NAME})
    for ser in series:
        ser.labels = lab_vol
    water_fat = {"water": Volume(renderer.pdw, affine), "fat": Volume(renderer.pdf, affine)}
    truth = _truth(spec, reg, lab_vol, ff_sum, ff_w, girth, z0, nz)
    return AtlasPhantom(spec, series, lab_vol, truth, water_fat)


def _truth(spec: AtlasSpec, reg: Any, lab: Volume, ff_sum: dict, ff_w: dict, girth: dict, z0: float,
           nz: int) -> dict[str, Any]:
    arr = lab.array
    vox = lab.voxel_volume_mm3
    area = vox / lab.spacing_mm[2]
    counts = np.bincount(arr.ravel(), minlength=len(reg.labels) + 1)
    levels = [int(round(q * (nz - 1))) for q in (0.25, 0.5, 0.75)]
    dz = lab.spacing_mm[2]
    muscles: dict[str, dict[str, Any]] = {}
    for s in spec.legs:
        muscles[s] = {}
        for name in reg.classes[1:]:
            lid = reg.sided_id(name, s)
            entry: dict[str, Any] = {"volume_ml": round(float(counts[lid]) * vox / 1000.0, 4)}
            if name in MUSCLES:
                w = ff_w[s][name]
                entry["ff_pct"] = round(100.0 * ff_sum[s][name] / w, 4) if w else None
            entry["csa_mm2_at_levels"] = {f"{z0 + k * dz:.1f}": round(float(np.count_nonzero(arr[:, :, k] == lid))
                                                                       * area, 2) for k in levels}
            muscles[s][name] = entry
    g: dict[str, Any] = {}
    for s in spec.legs:
        k = int(np.argmax(girth[s]))
        g[s] = {"max_girth_mm": round(girth[s][k], 2), "max_girth_z_mm": round(z0 + k * dz, 2)}
    g["per_slice_mm"] = {s: [round(v, 2) for v in girth[s]] for s in spec.legs}
    cx: dict[str, float] = {}
    for s in spec.legs:
        ids = [reg.sided_id(n, s) for n in reg.classes[1:]]
        pts = np.argwhere(np.isin(arr, ids))
        cx[s] = float(lab.voxel_to_world(pts.mean(axis=0, keepdims=True))[0, 0])
    if len(spec.legs) == 2:
        mid = (cx["left"] + cx["right"]) / 2
        for s in spec.legs:
            if side_of_world_x(cx[s], mid) != s:
                raise AssertionError(f"atlas phantom: the {s} leg rendered on the wrong side (x={cx[s]:.1f} mm)")
    patho = {s: {m: {"scale": round(p.scale, 3), "ff": round(p.ff, 3), "pattern": p.pattern}
                 for m, p in spec.pathology.get(s, {}).items()} for s in spec.legs}
    return {"generator": GENERATOR_NAME, "generator_version": ATLAS_VERSION, "legs_in_fov": list(spec.legs),
            "anatomical_contrast": spec.anatomical, "field_t": spec.field_t, "muscles": muscles, "girth": g,
            "leg_centroid_x_mm": {s: round(v, 2) for s, v in cx.items()}, "pathology": patho}


def series_naming(vendor: str, anatomical: str) -> dict[str, str]:
    """Series descriptions of the five calf series in the style of ``vendor`` (the anatomical one by contrast)."""
    anat = {"t1": "t1_tse_tra_calf", "t2": "t2_tse_tra_calf", "pd": "pd_tse_tra_calf", "stir": "tirm_tra_calf",
            "gre": "t2_fl2d_tra_calf"}[anatomical]
    if vendor == "philips":
        d = {"water": "mDIXON calf W", "fat": "mDIXON calf F", "inphase": "mDIXON calf IP",
             "outphase": "mDIXON calf OP"}
    elif vendor == "ge":
        d = {"water": "Ax LAVA-Flex calf WATER", "fat": "Ax LAVA-Flex calf FAT",
             "inphase": "Ax LAVA-Flex calf InPhase", "outphase": "Ax LAVA-Flex calf OutPhase"}
    else:
        d = {"water": "vibe_dixon_calf_W", "fat": "vibe_dixon_calf_F", "inphase": "vibe_dixon_calf_in",
             "outphase": "vibe_dixon_calf_opp"}
    d["anatomical"] = anat
    return d


# -- writing a study ---------------------------------------------------------------------------------------------
_DIXON_TYPE = {"water": "W", "fat": "F", "inphase": "IN_PHASE", "outphase": "OPP_PHASE"}


def _series_info(s: SynthSeries, number: int, uid: str) -> SeriesInfo:
    contrast = s.role.removeprefix("calf_")
    if contrast in _DIXON_TYPE:
        return SeriesInfo(s.description, series_number=number, body_part="LEG", manufacturer="SIEMENS",
                          image_type=("ORIGINAL", "PRIMARY", "M", "DIXON", _DIXON_TYPE[contrast]),
                          scanning_sequence="GR", sequence_variant="SP", echo_time_ms=2.3,
                          repetition_time_ms=12.0, flip_angle_deg=8, series_instance_uid=uid)
    se = {"t1": ("SE", 12, 600, 90), "t2": ("SE", 85, 4000, 90), "pd": ("SE", 20, 3000, 90),
          "stir": ("IR", 40, 4500, 90), "gre": ("GR", 4.6, 300, 25)}.get(s.contrast, ("SE", 12, 600, 90))
    return SeriesInfo(s.description, series_number=number, body_part="LEG", manufacturer="SIEMENS",
                      image_type=("ORIGINAL", "PRIMARY", "M", "NORM"), scanning_sequence=se[0],
                      sequence_variant="SK", echo_time_ms=se[1], repetition_time_ms=se[2], flip_angle_deg=se[3],
                      series_instance_uid=uid)


def write_series_study(series: Sequence[SynthSeries], truth: dict[str, Any], out_dir: str | Path, fmt: str = "nifti",
                       seed: int = 0, study_description: str = "MRI BOTH LOWER LEGS",
                       labels: Volume | None = None) -> Path:
    """Write phantom series as a study folder at ``out_dir`` (replaced if it exists): NIfTI files + ``study.yaml``
    (``fmt="nifti"``, roles as given, e.g. ``calf_anatomical``) or DICOM series (``fmt="dicom"``), plus
    ``ground_truth.json`` and, when ``labels`` is given, ``ground_truth/calf_labels.nii.gz`` on the grid that
    ingestion gives the images. Deterministic: UIDs derive from ``seed``."""
    if fmt not in ("nifti", "dicom"):
        raise ValueError(f"fmt='{fmt}'; use 'nifti' or 'dicom'.")
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 4242])
    uid_root = f"2.25.{int.from_bytes(rng.bytes(12), 'big')}"
    study = StudyInfo(patient_name="PHANTOM^ATLAS", patient_id=f"ATL{seed:06d}", study_instance_uid=f"{uid_root}.1",
                      frame_of_reference_uid=f"{uid_root}.2", accession_number=f"ATL{seed:06d}",
                      study_description=study_description)
    with atomic_dir(out) as tmp:
        entries = []
        for n, s in enumerate(series, start=1):
            if fmt == "dicom":
                info = _series_info(s, n, f"{uid_root}.3.{n}")
                uids = [f"{uid_root}.4.{n}.{k + 1}" for k in range(s.volume.shape[2])]
                write_series(s.volume, tmp / "DICOM" / f"S{n:03d}", study, info, rng=rng, sop_instance_uids=uids)
            else:
                save_volume(s.volume, tmp / f"{s.role}.nii.gz")
                entries.append({"file": f"{s.role}.nii.gz", "role": s.role, "description": s.description})
        if fmt == "nifti":
            write_text(tmp / "study.yaml", yaml.safe_dump({"series": entries}, sort_keys=False))
        if labels is not None:
            save_volume(to_closest_canonical(labels)[0], tmp / "ground_truth" / "calf_labels.nii.gz", dtype=np.int16)
        write_json(tmp / "ground_truth.json", {"seed": seed, **truth})
    return out


def write_atlas_study(seed: int, out_dir: str | Path, fmt: str = "nifti", spec: AtlasSpec | None = None,
                      contrasts: Iterable[str] = CONTRASTS) -> Path:
    """Generate the atlas phantom of ``seed`` (or of ``spec``) and write it as a study folder with the chosen
    series (``water``, ``fat``, ``inphase``, ``outphase``, ``anatomical``; e.g. ``("inphase", "outphase")`` or
    ``("anatomical",)`` for a single-contrast study). Evaluation only."""
    contrasts = tuple(contrasts)
    bad = [c for c in contrasts if c not in CONTRASTS]
    if bad or not contrasts:
        raise ValueError(f"contrasts={contrasts!r}: choose from {', '.join(CONTRASTS)}.")
    ph = generate_atlas_calf(spec, seed=seed)
    series = [s for s in ph.series if s.role.removeprefix("calf_") in contrasts]
    truth = {"case": "calf_atlas", "generator_version": ATLAS_VERSION, "vendor": ph.spec.vendor,
             "intended_diagnosis": None, "calf": ph.truth, "spine": None}
    return write_series_study(series, truth, out_dir, fmt, seed, labels=ph.labels)
