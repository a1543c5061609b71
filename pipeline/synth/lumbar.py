"""Lumbar spine phantom: sagittal T2 and axial T2 stacks angled to the lower discs, with exact canal truth.

Geometry. The spine follows a lordotic circular arc in the patient's sagittal plane. Every point is expressed in
spine coordinates: ``s`` (mm along the arc, downwards from the top of L1), ``a`` (mm anterior of the arc, which runs
through the vertebral-body centres) and ``x`` (mm towards the patient's right, RAS). Vertebral bodies L1-L5 and the
sacrum (S1) alternate with discs L1-L2 .. L5-S1; behind them lie the epidural space, the dural sac (CSF with cauda
equina roots), the traversing roots in the lateral recesses, the ligamentum flavum, the posterior elements (pedicles,
facets, laminae, spinous processes) and the foramina with the exiting roots.

Canal knobs per disc level (:class:`LevelSpec`): the dural sac cross-section at the disc mid-plane is an ellipse of
area ``dsca_mm2`` and AP diameter ``ap_mm`` (narrowing focally around the disc with a flat-topped profile exp(-(d/10 mm)^4)), the
superior articular facet's anterior margin lies ``recess_mm`` behind the posterior disc margin on each side (lateral
recess depth, Ciric et al., J Neurosurg 1980;53:433-443), and each foramen is an ellipse of area ``foramen_mm2`` in
the parasagittal plane through it. These are the analytic truth written to ground_truth.json.

Behind the sac (knobs of :class:`LumbarSpec`, drawn by :meth:`LumbarSpec.random`): the dorsal epidural fat between the
sac and the ligamentum flavum (``dorsal_fat_mm``, drawn 0.5-4 mm), a dura of low T2 signal round the sac
(``dura_signal``), and the cauda equina roots
sedimented into the dorsal part of the sac (``cauda_sediment``, the share of the sac's depth they fill), as they lie
in a supine patient without stenosis (the sedimentation sign, Barz et al., Spine 2010;35:892-897). On a sagittal
slice 3-4 mm thick the sedimented roots and the CSF between them average to a band of intermediate signal, like the
epidural fat behind the dura; the class there stays dural sac.

Above L1 (knobs of :class:`LumbarSpec`): the thoracolumbar junction as a lumbar field of view shows it. Up to three
thoracic bodies with their discs continue the column above L1 (``thoracic_bodies``; labelled with the positional
labels a body above L1 gets, numbered from L5 = ``vertebra_1`` upwards, so T12 is ``vertebra_6`` and the T12-L1 disc
``disc_6``), and the spinal cord runs in the sac down to the conus medullaris (tip ``conus_s_mm`` below the top of L1,
tapering over its lowest 25 mm; the adult tip lies between the middle of T12 and the top of L3, on average at
the lower third of L1, Saifuddin et al., Br J Radiol 1998;71:475-478), at ``cord_shift`` of the sac's free AP half-depth ventral
(+) or dorsal (-) of its centre line. The cord is labelled dural sac: the dural sac cross-sectional area counts
everything inside the dura. On a T2 image it is an intermediate band in the bright CSF, which a network trained
without it may read as the dura between the sac and bright epidural fat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.geometry import SIDES
from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.synth.common import SynthSeries
from pipeline.synth.physics import bias_field, rician

LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
BODIES = ("L1", "L2", "L3", "L4", "L5")
#: T2-weighted signal of each tissue (CSF = 1).
T2_SIGNAL = {"background": 0.0, "soft": 0.22, "subcutaneous_fat": 0.75, "paraspinal": 0.28, "marrow": 0.45,
             "cortex": 0.06, "nucleus": 0.85, "annulus": 0.2, "csf": 1.0, "root": 0.3, "epidural_fat": 0.72,
             "flavum": 0.12, "posterior": 0.4}
#: Tissue ids of :meth:`SpineAnatomy.classify_tissue`: the tissues of :data:`T2_SIGNAL` in order, then the cauda equina
#: roots inside the dural sac (``cauda``, labelled dural sac, with the T2 signal of ``root``), the dura round it
#: (``dura``, drawn where ``LumbarSpec.dura_signal`` is set, with that signal; it keeps the class of what it covers)
#: and the spinal cord (``cord``, labelled dural sac, :data:`CORD_SIGNAL`).
TISSUES = (*T2_SIGNAL, "cauda", "dura", "cord")
CORD_SIGNAL = 0.32  # T2 signal of the spinal cord (CSF = 1): intermediate, close to muscle
CORD_RADII_MM = (4.5, 3.5)  # half-width (x) and half-depth (a) of the cord above its conus
CONUS_TAPER_MM = 25.0  # the conus medullaris narrows to its tip over this length
TISSUE_IDS = {name: i for i, name in enumerate(TISSUES)}
SAC_PROFILE_MM = 10.0  # half-width (1/e) of the focal narrowing of the sac around a disc
FORAMEN_X_MM = 24.0  # |x| of the foraminal mid-plane
FORAMEN_SLAB_MM = 5.0  # half-thickness (x) of the foramen
DURA_MM = 0.4  # thickness of the dura drawn round the sac (LumbarSpec.dura_signal)


@dataclass
class LevelSpec:
    """Canal geometry at one disc level (truth values)."""

    dsca_mm2: float = 210.0
    ap_mm: float = 14.0
    recess_mm: dict[str, float] = field(default_factory=lambda: {"left": 5.5, "right": 5.5})
    foramen_mm2: dict[str, float] = field(default_factory=lambda: {"left": 110.0, "right": 110.0})
    disc_height_mm: float = 10.0


@dataclass
class LumbarSpec:
    levels: dict[str, LevelSpec] = field(default_factory=lambda: {lv: LevelSpec() for lv in LEVELS})
    body_height_mm: float = 27.0
    lordosis_radius_mm: float = 300.0
    offset_mm: tuple[float, float, float] = (0.0, -10.0, 0.0)
    sag_slices: int = 15
    sag_slice_mm: float = 3.5
    sag_in_plane_mm: float = 1.0
    sag_matrix: int = 256
    # sacrum (mm below the S1 endplate) the sagittal field of view includes, as a radiographer plans it; None centres
    # the field of view on the lumbar spine (the committed sample studies)
    sag_sacrum_mm: float | None = None
    ax_levels: tuple[str, ...] = ("L3-L4", "L4-L5", "L5-S1")
    ax_slices: int = 5
    ax_slice_mm: float = 4.0
    ax_in_plane_mm: float = 0.8
    ax_matrix: int = 160
    snr: float = 30.0
    bias: float = 0.2
    vendor: str = "siemens"
    # behind the sac (module docstring): epidural fat depth (mm), dura T2 signal (None: no dura drawn), dorsal share
    # of the sac's depth holding sedimented roots (0: the roots are sparse strands only) and their layout's seed
    dorsal_fat_mm: float = 0.5
    dura_signal: float | None = None
    cauda_sediment: float = 0.0
    cauda_seed: int = 0
    # above L1 (module docstring): thoracic bodies drawn above L1 (0: the column starts at L1, as in the committed
    # sample studies), the conus medullaris tip (mm below the top of L1; None: no cord) and the cord's AP position
    thoracic_bodies: int = 0
    conus_s_mm: float | None = None
    cord_shift: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> LumbarSpec:
        in_plane = float(rng.uniform(0.8, 1.1))
        spec = cls(body_height_mm=float(rng.uniform(24, 30)), lordosis_radius_mm=float(rng.uniform(220, 420)),
                   offset_mm=(float(rng.uniform(-10, 10)), float(rng.uniform(-30, 10)), float(rng.uniform(-20, 20))),
                   sag_slice_mm=float(rng.choice([3.0, 3.5, 4.0])), sag_in_plane_mm=in_plane,
                   sag_matrix=int(np.ceil(rng.uniform(250, 300) / in_plane)), sag_sacrum_mm=float(rng.uniform(25, 60)),
                   ax_slice_mm=float(rng.choice([3.0, 4.0])), ax_in_plane_mm=float(rng.uniform(0.6, 0.9)),
                   snr=float(rng.uniform(18, 45)), bias=float(rng.uniform(0, 0.35)),
                   vendor=str(rng.choice(["siemens", "philips", "ge"])))
        for lv in LEVELS:
            spec.levels[lv] = _random_level(rng)
        # drawn after everything else, so that every earlier draw of a seed keeps its value
        spec.dorsal_fat_mm = float(rng.uniform(0.5, 4.0))
        spec.dura_signal = float(rng.uniform(0.05, 0.25)) if rng.uniform() < 0.6 else None
        spec.cauda_sediment = float(rng.uniform(0.15, 0.5)) if rng.uniform() < 0.75 else 0.0
        spec.cauda_seed = int(rng.integers(2**31))
        spec.thoracic_bodies = int(rng.choice([0, 2, 3], p=[0.2, 0.3, 0.5]))
        spec.conus_s_mm = float(rng.uniform(-15.0, 55.0)) if rng.uniform() < 0.85 else None
        spec.cord_shift = float(rng.uniform(-0.6, 0.6))
        return spec


def sedimented_roots(share: float, seed: int) -> np.ndarray:
    """The sedimented cauda equina roots of a sac: rows (u, v, r_mm), the centre in the sac's normalised
    cross-section (u = x / rx, v = (a - a_sac) / ra; v = -1 is the dorsal wall) and the radius. The roots fill the
    dorsal ``share`` of the sac's depth (none for 0): about 8 to 26 roots of 0.45-0.8 mm radius, placed at random
    within the sac's dorsal band.

    >>> sedimented_roots(0.0, 1).shape, sedimented_roots(0.4, 1).shape[1]
    ((0, 3), 3)
    >>> bool(np.all(sedimented_roots(0.4, 1)[:, 1] <= -1 + 2 * 0.4))
    True
    """
    if share <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng([seed, 11])
    n = int(round(8 + 45 * share))
    v = rng.uniform(-0.95, -1 + 2 * share, n)
    half_width = np.sqrt(np.clip(1 - v**2, 0, 1)) * 0.85  # stay inside the ellipse
    u = rng.uniform(-1, 1, n) * half_width
    return np.column_stack([u, v, rng.uniform(0.45, 0.8, n)])


def _random_level(rng: np.random.Generator) -> LevelSpec:
    stenotic = rng.uniform() < 0.3
    ap = float(rng.uniform(6.5, 10)) if stenotic else float(rng.uniform(11, 16))
    dsca = float(rng.uniform(55, 110)) if stenotic else float(rng.uniform(150, 260))
    dsca = min(dsca, np.pi * ap / 2 * 12.5)  # keep the sac width plausible (<= 25 mm)
    return LevelSpec(dsca_mm2=dsca, ap_mm=ap,
                     recess_mm={s: float(rng.uniform(1.5, 3.0) if rng.uniform() < 0.25 else rng.uniform(4, 7))
                                for s in SIDES},
                     foramen_mm2={s: float(rng.uniform(40, 75) if rng.uniform() < 0.2 else rng.uniform(90, 140))
                                  for s in SIDES},
                     disc_height_mm=float(rng.uniform(8, 12)))


def lumbar_spec_for_case(case: str, rng: np.random.Generator) -> LumbarSpec:
    """Lumbar spec of a named case: ``nmh`` (L4-L5 central stenosis ~70 mm2, right lateral recess narrowing),
    ``control`` / ``myopathic`` (normal canal), ``random``."""
    if case == "random":
        return LumbarSpec.random(rng)
    spec = LumbarSpec(body_height_mm=float(rng.uniform(25.5, 28.5)), lordosis_radius_mm=float(rng.uniform(260, 340)))
    for lv in LEVELS:
        spec.levels[lv] = LevelSpec(dsca_mm2=float(rng.uniform(190, 240)), ap_mm=float(rng.uniform(13, 15.5)),
                                    recess_mm={s: float(rng.uniform(5.0, 6.5)) for s in SIDES},
                                    foramen_mm2={s: float(rng.uniform(100, 130)) for s in SIDES},
                                    disc_height_mm=float(rng.uniform(9, 11)))
    if case == "nmh":
        spec.levels["L4-L5"] = LevelSpec(dsca_mm2=70.0, ap_mm=7.5, recess_mm={"left": 4.5, "right": 2.0},
                                         foramen_mm2={"left": 105.0, "right": 80.0}, disc_height_mm=8.5)
    return spec


@dataclass
class LumbarPhantom:
    spec: LumbarSpec
    series: list[SynthSeries]
    truth: dict[str, Any]


class SpineAnatomy:
    """The continuous spine model: coordinates, level layout and tissue/label of any world point."""

    def __init__(self, spec: LumbarSpec):
        self.spec = spec
        self.reg = registry("spine")
        ox, oy, oz = spec.offset_mm
        self.R = spec.lordosis_radius_mm
        self.x0 = ox
        # arc centre posterior of the spine; the top of L1 sits at angle phi_top
        self.center = np.array([oy - self.R, oz - 60.0])
        # segments from the top of the highest thoracic body downwards: (kind, name, s_start, s_end); s = 0 is the
        # top of L1
        segs, s = [], 0.0
        for k in range(spec.thoracic_bodies):  # T12 first, upwards
            disc_top = s - 0.8 * spec.levels["L1-L2"].disc_height_mm
            segs[:0] = [("body", f"T{12 - k}", disc_top - 0.92 * spec.body_height_mm, disc_top),
                        ("disc", f"T{12 - k}-{'L1' if k == 0 else f'T{13 - k}'}", disc_top, s)]
            s = segs[0][2]
        self.s_top = min(-20.0, s)  # the canal, the sac and the posterior elements begin here
        s = 0.0
        for i, body in enumerate(BODIES):
            segs.append(("body", body, s, s + spec.body_height_mm * (1 + 0.03 * i)))
            s = segs[-1][3]
            lv = LEVELS[i]
            segs.append(("disc", lv, s, s + spec.levels[lv].disc_height_mm))
            s = segs[-1][3]
        segs.append(("body", "S1", s, s + 60.0))
        self.segments = segs
        self.length = s + 60.0
        self.phi_top = 110.0 / self.R  # top of L1 ~110 mm above the arc's anterior point
        self.disc_s = {name: (a + b) / 2 for kind, name, a, b in segs if kind == "disc" and name in LEVELS}
        self.roots = sedimented_roots(spec.cauda_sediment, spec.cauda_seed)

    # coordinates ----------------------------------------------------------------------------------------------
    def phi(self, s: np.ndarray | float) -> np.ndarray:
        return self.phi_top - np.asarray(s) / self.R

    def point(self, s: float, a: float = 0.0, x: float = 0.0) -> np.ndarray:
        """World RAS point of spine coordinates (s, a, x)."""
        ph = float(self.phi(s))
        r = self.R + a
        return np.array([self.x0 + x, self.center[0] + r * np.cos(ph), self.center[1] + r * np.sin(ph)])

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """(anterior unit vector, downward tangent unit vector) at ``s``, RAS."""
        ph = float(self.phi(s))
        return np.array([0.0, np.cos(ph), np.sin(ph)]), np.array([0.0, np.sin(ph), -np.cos(ph)])

    def local(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dy, dz = p[..., 1] - self.center[0], p[..., 2] - self.center[1]
        r = np.hypot(dy, dz)
        s = (self.phi_top - np.arctan2(dz, dy)) * self.R
        return s, r - self.R, p[..., 0] - self.x0

    # anatomy --------------------------------------------------------------------------------------------------
    def _level_params(self, s: np.ndarray) -> dict[str, np.ndarray]:
        """Per point: nearest disc's canal parameters and the narrowing weight g = exp(-(ds / w)^2)."""
        names = list(self.disc_s)
        ds = np.stack([s - self.disc_s[n] for n in names])
        near = np.argmin(np.abs(ds), axis=0)
        d = np.take_along_axis(ds, near[None], 0)[0]
        g = np.exp(-((d / SAC_PROFILE_MM) ** 4))  # flat-topped: the narrowing spans the disc height
        lv = [self.spec.levels[n] for n in names]
        ap = np.array([v.ap_mm for v in lv])[near]
        width = np.array([v.dsca_mm2 / (np.pi * v.ap_mm / 2) * 2 for v in lv])[near]
        rec = {sd: np.array([v.recess_mm[sd] for v in lv])[near] for sd in SIDES}
        foram = {sd: np.array([v.foramen_mm2[sd] for v in lv])[near] for sd in SIDES}
        return {"near": near, "d": d, "g": g, "ap": ap, "width": width, "recess": rec, "foramen": foram}

    def body_half(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-width (x) and half-depth (a) of the vertebral footprint, growing caudally."""
        f = np.clip(s / 200.0, 0, 1.2)
        return 21.0 + 5.0 * f, 15.0 + 3.0 * f

    def classify(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output label ids (spine registry) and T2 signal at world points ``p`` (..., 3)."""
        lab, sig, _ = self.classify_tissue(p)
        return lab, sig

    def classify_tissue(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Output label ids (spine registry), T2 signal and tissue ids (:data:`TISSUE_IDS`) at world points
        ``p`` (..., 3)."""
        reg = self.reg
        s, a, x = self.local(p)
        shape = s.shape
        lab = np.zeros(shape, np.int16)
        sig = np.zeros(shape)
        tissue = np.zeros(shape, np.uint8)
        # body outline: soft tissue with a subcutaneous fat ring
        body_r = np.hypot(x / 160.0, (a + 20.0) / 120.0)
        put = _painter(lab, sig, tissue)
        put(body_r < 1.0, 0, "subcutaneous_fat")
        put(body_r < 0.92, 0, "soft")
        para = (np.hypot((np.abs(x) - 25) / 22.0, (a + 52) / 26.0) < 1.0) | (np.hypot((np.abs(x) - 38) / 14.0,
                                                                                     (a - 5) / 16.0) < 1.0)
        put(para & (body_r < 0.92), 0, "paraspinal")
        wx, wa = self.body_half(s)
        inside_fp = (x / wx) ** 2 + (a / wa) ** 2 <= 1.0
        lp = self._level_params(s)
        g = lp["g"]
        # vertebral bodies and discs
        for kind, name, s0, s1 in self.segments:
            seg = (s >= s0) & (s < s1)
            if not seg.any():
                continue
            if kind == "body":
                lid = reg.label_id(_body_label(name))
                fp = inside_fp & seg
                if name == "S1":  # sacrum tapers caudally
                    taper = np.clip(1 - (s - s0) / 80.0, 0.35, 1)
                    fp = seg & ((x / (wx * taper)) ** 2 + (a / (wa * taper)) ** 2 <= 1.0)
                put(fp, lid, "cortex")
                inner = fp & ((x / (wx - 1.5)) ** 2 + (a / (wa - 1.5)) ** 2 <= 1.0) & (s > s0 + 1.2) & (s < s1 - 1.2)
                put(inner, lid, "marrow")
            else:
                lid = reg.label_id(_disc_label(name))
                fp = seg & inside_fp
                put(fp, lid, "annulus")
                put(fp & ((x / (wx * 0.6)) ** 2 + ((a - 1) / (wa * 0.55)) ** 2 <= 1.0), lid, "nucleus")
        # canal: the sac centre sits behind the posterior body margin; at a narrowed disc the sac is smaller
        post_margin = -wa  # posterior body/disc margin (a)
        ra0, rx0 = 7.5, 11.0
        ra = (1 - g) * ra0 + g * lp["ap"] / 2
        rx = (1 - g) * rx0 + g * lp["width"] / 2
        a_sac = post_margin - 1.0 - ra  # 1 mm of anterior epidural space
        canal_x = rx + 8.0
        # the posterior disc/body margin at this x: the footprint ellipse curves forward lateral of the midline, and
        # the epidural space (fat, veins, the traversing root; bright on T2) fills the canal up to it, so the disc
        # margin stays visible against it as on a real T2 image
        disc_back = -wa * np.sqrt(np.clip(1 - (x / wx) ** 2, 0, 1))
        back = a_sac - ra - self.spec.dorsal_fat_mm  # front of the ligamentum flavum
        in_canal = (np.abs(x) < canal_x) & (a < disc_back) & (a > back - 5.5) & (s > self.s_top)
        put(in_canal, reg.label_id("epidural_fat"), "epidural_fat")
        # traversing roots in the lateral recesses (drawn before the bone so that a narrow recess stays bony)
        trav = (np.hypot(np.abs(x) - (rx + 2.6), a - (post_margin - 2.4)) < 2.0) & (s > self.s_top) & (s < self.length - 60)
        put(trav, reg.label_id("nerve_root"), "root")
        # posterior elements: facets beside the canal (anterior margin = posterior disc margin - recess depth),
        # laminae and spinous process behind it, pedicles at body levels
        rec = np.where(x >= 0, lp["recess"]["right"], lp["recess"]["left"])
        # the facet's anterior margin follows the posterior disc margin at the same x, ``rec`` mm behind it
        facet_front = disc_back - rec
        facet = (np.abs(x) > rx + 1.0) & (np.abs(x) < rx + 18.0) & (a < facet_front) & (a > facet_front - 16.0)
        lamina = (np.abs(x) <= rx + 1.0) & (a < back - 2.5) & (a > back - 9.5)
        spinous = (np.abs(x) < 3.5) & (a <= back - 9.5) & (a > back - 37.5) & (np.abs(lp["d"]) > 4)
        is_body_level = np.zeros(shape, bool)
        for kind, name, s0, s1 in self.segments:
            if kind == "body" and name != "S1":
                is_body_level |= (s >= s0 + 3) & (s < s0 + (s1 - s0) * 0.6)
        pedicle = is_body_level & (np.abs(x) > rx + 1.0) & (np.abs(x) < rx + 9.0) & (a < post_margin + 3) & (
            a >= facet_front)
        pe = (facet | lamina | spinous | pedicle) & (s > self.s_top) & (s < self.length - 40)
        put(pe, reg.label_id("posterior_elements"), "posterior")
        # ligamentum flavum: 2.5 mm band behind the dorsal epidural fat between the facets
        flavum = (np.abs(x) <= rx + 1.0) & (a <= back) & (a > back - 2.5) & (s > self.s_top) & (
            s < self.length - 40)
        put(flavum, reg.label_id("ligamentum_flavum"), "flavum")
        # foramina: ellipse of the given area in the parasagittal plane at |x| = FORAMEN_X_MM
        fa = np.where(x >= 0, lp["foramen"]["right"], lp["foramen"]["left"])
        hs = np.sqrt(fa / np.pi * 2.0)  # vertical half-axis = 2 x AP half-axis
        ha = hs / 2.0
        a_f = post_margin - 0.5 - ha
        slab = np.abs(np.abs(x) - FORAMEN_X_MM) < FORAMEN_SLAB_MM
        near_disc = np.abs(lp["d"]) < 16.0
        put(slab & near_disc & (a < post_margin + 1) & (a > a_f - ha - 6) & ~((lp["d"] / hs) ** 2 + ((a - a_f) / ha) ** 2
                                                                               <= 1.0), reg.label_id(
            "posterior_elements"), "posterior")
        fora = slab & ((lp["d"] / hs) ** 2 + ((a - a_f) / ha) ** 2 <= 1.0)
        put(fora, reg.label_id("epidural_fat"), "epidural_fat")
        put(fora & (np.hypot(lp["d"] + hs * 0.35, a - a_f) < 2.2), reg.label_id("nerve_root"), "root")
        # dural sac (CSF with cauda equina roots) and the traversing roots in the lateral recesses
        along = (s > self.s_top) & (s < self.length - 35)  # the sac ends at S2
        sac = ((x / rx) ** 2 + ((a - a_sac) / ra) ** 2 <= 1.0) & along
        if self.spec.dura_signal is not None:  # the dura's voxels keep the class of what they cover
            dura = ((x / (rx + DURA_MM)) ** 2 + ((a - a_sac) / (ra + DURA_MM)) ** 2 <= 1.0) & along & ~sac
            sig[dura] = self.spec.dura_signal
            tissue[dura] = TISSUE_IDS["dura"]
        put(sac, reg.label_id("dural_sac"), "csf")
        cauda = sac & (np.abs(np.sin(x * 1.3) * np.sin((a - a_sac) * 1.3)) > 0.93) & (a < a_sac)
        if self.roots.size:
            idx = np.nonzero(sac)
            rxi, rai = np.broadcast_to(rx, shape)[idx], np.broadcast_to(ra, shape)[idx]
            u, v = x[idx] / rxi, (a[idx] - np.broadcast_to(a_sac, shape)[idx]) / rai
            # root k: a cylinder along s of radius r_k mm at (u_k rx, a_sac + v_k ra), following the sac's shape
            near = np.zeros(u.shape, bool)
            for uk, vk, rk in self.roots:
                near |= np.hypot((u - uk) * rxi, (v - vk) * rai) < rk
            cauda[tuple(i[near] for i in idx)] = True
        if self.spec.conus_s_mm is not None:  # the roots leave the cord at the conus
            cauda &= s > self.spec.conus_s_mm - 10.0
        sig[cauda] = T2_SIGNAL["root"]
        tissue[cauda] = TISSUE_IDS["cauda"]
        if self.spec.conus_s_mm is not None:
            cord = sac & self._cord(s, a, x, a_sac, ra)
            sig[cord] = CORD_SIGNAL
            tissue[cord] = TISSUE_IDS["cord"]
        return lab, sig, tissue

    def _cord(self, s: np.ndarray, a: np.ndarray, x: np.ndarray, a_sac: np.ndarray, ra: np.ndarray) -> np.ndarray:
        """Points inside the spinal cord (the caller keeps those inside the sac): an ellipse of :data:`CORD_RADII_MM` above the conus, narrowing as
        sqrt(distance to the tip / :data:`CONUS_TAPER_MM`) over the conus, centred ``cord_shift`` of the sac's free
        AP half-depth ventral of the sac's centre."""
        tip = self.spec.conus_s_mm
        scale = np.sqrt(np.clip((tip - s) / CONUS_TAPER_MM, 0.0, 1.0))
        rxc, rac = CORD_RADII_MM[0] * scale, CORD_RADII_MM[1] * scale
        centre = a_sac + self.spec.cord_shift * np.clip(ra - rac, 0.0, None)
        inside = (x / np.maximum(rxc, 1e-6)) ** 2 + ((a - centre) / np.maximum(rac, 1e-6)) ** 2 <= 1.0
        return inside & (s < tip)


def _body_label(name: str) -> str:
    """Label of a vertebral body segment: its level's label; a thoracic body the positional one it has counted
    from L5 = ``vertebra_1`` (T12 -> ``vertebra_6``).

    >>> _body_label("L3"), _body_label("S1"), _body_label("T12"), _body_label("T10")
    ('vertebral_body_L3', 'sacrum_S1', 'vertebra_6', 'vertebra_8')
    """
    if name == "S1":
        return "sacrum_S1"
    if name.startswith("T"):
        return f"vertebra_{6 + 12 - int(name[1:])}"
    return f"vertebral_body_{name}"


def _disc_label(name: str) -> str:
    """Label of a disc segment: its level's label; a disc above L1 the positional one counted from L5-S1 =
    ``disc_1`` (T12-L1 -> ``disc_6``).

    >>> _disc_label("L4-L5"), _disc_label("T12-L1"), _disc_label("T11-T12")
    ('disc_L4_L5', 'disc_6', 'disc_7')
    """
    if name.startswith("T"):
        return f"disc_{6 + 12 - int(name.split('-')[0][1:])}"
    return f"disc_{name.replace('-', '_')}"


def _painter(lab: np.ndarray, sig: np.ndarray, tissue_ids: np.ndarray):
    def put(mask: np.ndarray, label_id: int, tissue: str) -> None:
        lab[mask] = label_id
        sig[mask] = T2_SIGNAL[tissue]
        tissue_ids[mask] = TISSUE_IDS[tissue]
    return put


def _render(spine: SpineAnatomy, affine: np.ndarray, shape: tuple[int, int, int], sub: tuple[int, int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Labels (majority) and signal (mean) of a grid, rendered with ``sub`` samples per voxel along each axis."""
    n_lab = len(spine.reg.labels) + 1
    labels = np.zeros(shape, np.int16)
    signal = np.zeros(shape)
    offs = [(np.arange(n) + 0.5) / n - 0.5 for n in sub]
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    tie_rng = np.random.default_rng(0)
    for k in range(shape[2]):
        votes = np.zeros((n_lab,) + shape[:2], np.float32)
        acc = np.zeros(shape[:2])
        for oi in offs[0]:
            for oj in offs[1]:
                for ok in offs[2]:
                    ijk = np.stack([ii + oi, jj + oj, np.full(ii.shape, k + ok)], axis=-1)
                    p = ijk @ affine[:3, :3].T + affine[:3, 3]
                    lab, sig = spine.classify(p)
                    acc += sig
                    for lid in np.unique(lab):
                        votes[lid] += lab == lid
        # majority vote; a random fraction breaks exact ties without favouring any label
        labels[:, :, k] = np.argmax(votes + tie_rng.uniform(0, 0.5, votes.shape), axis=0)
        signal[:, :, k] = acc / (len(offs[0]) * len(offs[1]) * len(offs[2]))
    return labels, signal


def _sag_affine(spine: SpineAnatomy, spec: LumbarSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Sagittal stack: rows run posterior, columns inferior, slices left-to-right through the spine's midline."""
    d, n = spec.sag_in_plane_mm, spec.sag_matrix
    if spec.sag_sacrum_mm is None:
        mid = spine.point(spine.length / 2 - 40, a=-15.0)
    else:  # the lower edge of the field of view sag_sacrum_mm below the S1 endplate
        s1_top = spine.segments[-1][2]
        mid = spine.point(s1_top + spec.sag_sacrum_mm - d * (n - 1) / 2, a=-15.0)
    aff = np.eye(4)
    aff[:3, 0] = [0, -d, 0]  # posterior
    aff[:3, 1] = [0, 0, -d]  # inferior
    aff[:3, 2] = [spec.sag_slice_mm, 0, 0]  # towards the patient's right... as a right-handed DICOM stack
    corner = mid - aff[:3, 0] * (n - 1) / 2 - aff[:3, 1] * (n - 1) / 2 - aff[:3, 2] * (spec.sag_slices - 1) / 2
    aff[:3, 3] = corner
    return aff, (n, n, spec.sag_slices)


def _ax_affine(spine: SpineAnatomy, spec: LumbarSpec, level: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axial stack through the disc ``level``, parallel to the disc plane (angled as scanned)."""
    d, n = spec.ax_in_plane_mm, spec.ax_matrix
    s = spine.disc_s[level]
    ant, down = spine.frame(s)
    up = -down
    centre = spine.point(s, a=-20.0)
    aff = np.eye(4)
    aff[:3, 0] = np.array([-1.0, 0, 0]) * d  # towards the patient's left (DICOM row +x LPS... mirrored)
    aff[:3, 1] = -ant * d  # posterior within the disc plane
    aff[:3, 2] = up * spec.ax_slice_mm  # slices step superiorly along the spine
    if np.linalg.det(aff[:3, :3]) < 0:
        aff[:3, 0] *= -1
    corner = centre - aff[:3, 0] * (n - 1) / 2 - aff[:3, 1] * (n - 1) / 2 - aff[:3, 2] * (spec.ax_slices - 1) / 2
    aff[:3, 3] = corner
    return aff, (n, n, spec.ax_slices)


def random_lumbar(seed: int, *, fast: bool = False) -> LumbarPhantom:
    """The random lumbar phantom of ``seed`` (anatomy and acquisition from ``LumbarSpec.random``), as training and
    evaluation draw it."""
    return generate_lumbar(LumbarSpec.random(np.random.default_rng([seed, 2])), seed=seed, fast=fast)


def generate_lumbar(spec: LumbarSpec | None = None, seed: int = 0, *, fast: bool = False) -> LumbarPhantom:
    """Render the lumbar phantom: one sagittal T2 stack and one axial T2 stack per level in ``spec.ax_levels``."""
    spec = spec or LumbarSpec()
    rng = np.random.default_rng([seed, 5])
    spine = SpineAnatomy(spec)
    series: list[SynthSeries] = []
    grids = [("lumbar_sag_t2", "sagittal", *_sag_affine(spine, spec), (1, 1, 1) if fast else (2, 2, 2))]
    for n, lv in enumerate(spec.ax_levels):
        role = "lumbar_ax_t2" if n == 0 else f"lumbar_ax_t2_{n + 1}"
        grids.append((role, "axial", *_ax_affine(spine, spec, lv), (1, 1, 1) if fast else (2, 2, 2)))
    sigma = 1.0 / spec.snr * T2_SIGNAL["csf"] * 0.5
    for role, plane, aff, shape, sub in grids:
        labels, signal = _render(spine, aff, shape, sub)
        bias = bias_field(shape, spec.bias, rng)
        img = rician(signal * bias, sigma, rng)
        vol = Volume(np.round(img * 1000).astype(np.uint16), aff)
        series.append(SynthSeries(role, vol, Volume(labels, aff, {"anatomy": "spine"}), role, plane, "t2"))
    truth = _truth(spine, spec)
    truth["axial_levels"] = {s.role: lv for s, lv in zip(series[1:], spec.ax_levels)}
    return LumbarPhantom(spec, series, truth)


def _truth(spine: SpineAnatomy, spec: LumbarSpec) -> dict[str, Any]:
    levels = {}
    for lv in LEVELS:
        v = spec.levels[lv]
        s = spine.disc_s[lv]
        ant, down = spine.frame(s)
        levels[lv] = {"dsca_mm2": round(v.dsca_mm2, 3), "ap_diameter_mm": round(v.ap_mm, 3),
                      "lateral_recess_depth_mm": {sd: round(v.recess_mm[sd], 3) for sd in SIDES},
                      "foramen_area_mm2": {sd: round(v.foramen_mm2[sd], 3) for sd in SIDES},
                      "disc_center_ras": [round(c, 3) for c in spine.point(s)],
                      "disc_normal_ras": [round(c, 5) for c in (-down)]}
    return {"levels": levels, "method": "analytic (phantom design values)"}
