"""An independent lumbar phantom for evaluation only: never train on it.

This generator exists so that a spine segmentation trained on :mod:`pipeline.synth.lumbar` can be tried on anatomy
and images that it has not seen. It shares nothing with that generator but the output types (:class:`SynthSeries`,
the label registry's classes) and the noise model; its shape model and its rendering are written separately.

Shape model
    The spine's centre line is integrated from its tangent angle in the sagittal plane, which turns with a power of
    the distance down the lumbar spine (lordosis concentrated caudally, as in vivo; Roussouly P et al., Spine
    2005;30:346-353) and turns again at the lumbosacral junction (sacral slope); a lateral sine bend adds a mild
    scoliosis. A point is expressed in spine coordinates (``s`` down the line, ``a`` anterior, ``x`` towards the
    patient's right) by projection on the centre line. Vertebral bodies are superellipse prisms with a concave
    posterior wall and concave endplates; T9-T12 lie above L1 (in view or not, as the field of view falls). Discs
    fill the gaps, bulge posteriorly and may carry a focal paramedian protrusion on one side; their nucleus is bright
    or, degenerated, dark. The dural sac (CSF inside a dark dura) is a superellipse whose size changes over a
    raised-cosine profile around each disc, with posterolateral indentations where the ligamentum flavum buckles in;
    the epidural space, the traversing roots, facets (their anterior margin ``recess_mm`` behind the posterior disc
    margin, the lateral recess depth of Ciric I et al., J Neurosurg 1980;53:433-443), pedicles, laminae, the spinous
    process, the foramina with their exiting roots, psoas, paraspinal muscles, the aorta and the abdominal wall
    surround them.

Rendering
    A series is rendered on a grid twice as fine in-plane and three sub-slices across each slice; the sub-slices are
    averaged (slice profile) and the fine image is brought to the acquired matrix by cropping its k-space, which gives
    the truncation (Gibbs) ringing of a real acquisition. A smooth bias field and Rician noise are added last. Tissue
    signals are drawn per phantom around T2-weighted values (marrow with a smooth texture). The label map holds the
    network classes of :func:`pipeline.core.labels.registry` ("spine") at each voxel centre (no level names).

Truth
    Per lumbar disc level: the dural sac cross-sectional area ``dsca_mm2`` and its antero-posterior diameter
    ``ap_diameter_mm`` in the disc's mid-plane, computed numerically from the sac's shape on a 0.05 mm grid; the
    lateral recess depth per side (the design value); the disc centre and normal (world RAS).

Deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.geometry import SIDES
from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.synth.common import SynthSeries, smooth_noise_2d
from pipeline.synth.physics import bias_field, rician

LUMBAR = ("L1", "L2", "L3", "L4", "L5")
LEVELS = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
DURA_MM = 0.6  # thickness of the dura around the sac: dark on T2, the wall between the CSF and the epidural fat


@dataclass
class AtlasLevel:
    """The canal and disc at one lumbar disc level (design values; the truth areas are measured from the shape)."""

    ap_mm: float
    width_mm: float
    shape_exponent: float
    flavum_mm: float  # radius of each posterolateral indentation of the sac by the ligamentum flavum
    recess_mm: dict[str, float]
    disc_height_mm: float
    bulge_mm: float
    protrusion: tuple[str, float]  # side and height (mm) of a focal paramedian protrusion
    nucleus_signal: float


@dataclass
class AtlasLumbarSpec:
    levels: dict[str, AtlasLevel]
    body_heights_mm: tuple[float, ...]  # L1..L5
    body_scale: float
    lordosis_deg: float
    lordosis_power: float
    top_angle_deg: float
    sacral_turn_deg: float
    scoliosis_mm: float
    sag_slices: int
    sag_slice_mm: float
    sag_in_plane_mm: float
    sag_fov_mm: float
    sag_sacrum_mm: float  # the lower edge of the sagittal field of view this far below the top of S1
    ax_levels: tuple[str, ...]
    ax_slices: int
    ax_slice_mm: float
    ax_in_plane_mm: float
    ax_fov_mm: float
    ax_tilt_deg: float
    snr: float
    bias: float
    signals: dict[str, float] = field(default_factory=dict)

    @classmethod
    def random(cls, rng: np.random.Generator) -> AtlasLumbarSpec:
        levels = {}
        for lv in LEVELS:
            stenotic = rng.uniform() < 0.35
            ap = rng.uniform(6.0, 10.5) if stenotic else rng.uniform(11.0, 16.0)
            width = rng.uniform(11.0, 17.0) if stenotic else rng.uniform(15.0, 22.0)
            narrow = rng.uniform() < 0.25
            recess = {s: float(rng.uniform(1.5, 3.2) if narrow and s == side else rng.uniform(3.8, 7.5))
                      for side in [str(rng.choice(SIDES))] for s in SIDES}
            levels[lv] = AtlasLevel(
                ap_mm=float(ap), width_mm=float(width), shape_exponent=float(rng.uniform(1.9, 2.8)),
                flavum_mm=float(rng.uniform(0.0, 0.45) * width / 2 if rng.uniform() < 0.5 else 0.0),
                recess_mm=recess, disc_height_mm=float(rng.uniform(6.5, 13.0)),
                bulge_mm=float(rng.uniform(0.0, 3.0)),
                protrusion=(str(rng.choice(SIDES)), float(rng.uniform(1.0, 4.0)) if rng.uniform() < 0.3 else 0.0),
                nucleus_signal=float(rng.uniform(0.25, 0.45) if rng.uniform() < 0.35 else rng.uniform(0.65, 0.95)))
        in_plane = float(rng.uniform(0.6, 1.2))
        return cls(
            levels=levels, body_heights_mm=tuple(float(h) for h in np.sort(rng.uniform(23.0, 31.0, 5))),
            body_scale=float(rng.uniform(0.85, 1.15)), lordosis_deg=float(rng.uniform(25.0, 65.0)),
            lordosis_power=float(rng.uniform(1.2, 2.2)), top_angle_deg=float(rng.uniform(5.0, 20.0)),
            sacral_turn_deg=float(rng.uniform(10.0, 30.0)), scoliosis_mm=float(rng.uniform(-8.0, 8.0)),
            sag_slices=int(rng.integers(11, 20)),
            sag_slice_mm=float(rng.choice([3.0, 3.5, 4.0, 4.5])), sag_in_plane_mm=in_plane,
            sag_fov_mm=float(rng.uniform(270, 330)), sag_sacrum_mm=float(rng.uniform(20, 70)),
            ax_levels=tuple(str(v) for v in rng.choice(LEVELS, size=int(rng.integers(2, 4)), replace=False)),
            ax_slices=int(rng.integers(4, 9)), ax_slice_mm=float(rng.choice([3.0, 3.5, 4.0])),
            ax_in_plane_mm=float(rng.uniform(0.55, 0.9)), ax_fov_mm=float(rng.uniform(150, 200)),
            ax_tilt_deg=float(rng.uniform(0.0, 6.0)), snr=float(rng.uniform(15, 60)),
            bias=float(rng.uniform(0.0, 0.4)),
            signals={"csf": 1.0, "marrow": float(rng.uniform(0.35, 0.6)), "cortex": float(rng.uniform(0.03, 0.1)),
                     "annulus": float(rng.uniform(0.12, 0.25)), "fat": float(rng.uniform(0.6, 0.85)),
                     "muscle": float(rng.uniform(0.18, 0.32)), "flavum": float(rng.uniform(0.08, 0.18)),
                     "bone_posterior": float(rng.uniform(0.3, 0.5)), "root": float(rng.uniform(0.2, 0.35)),
                     "soft": float(rng.uniform(0.15, 0.3)), "vessel": float(rng.uniform(0.0, 0.08)),
                     "dura": float(rng.uniform(0.05, 0.2))})


@dataclass
class AtlasLumbarPhantom:
    spec: AtlasLumbarSpec
    series: list[SynthSeries]
    truth: dict[str, Any]


class AtlasSpine:
    """The continuous spine of one phantom: centre line, segments and the class and signal of any world point."""

    def __init__(self, spec: AtlasLumbarSpec, rng: np.random.Generator):
        self.spec = spec
        self.reg = registry("spine")
        self.cls = {name: self.reg.class_id(name) for name in self.reg.classes if name != "background"}
        segs: list[tuple[str, str, float, float]] = []
        thoracic = ("T9", "T10", "T11", "T12")  # above L1: how many are in view is the field of view's matter
        s = -sum(spec.body_heights_mm[0] * (0.8 + 0.03 * i) + 5.0 for i in range(len(thoracic)))
        for i, name in enumerate(thoracic):
            segs.append(("body", name, s, s + spec.body_heights_mm[0] * (0.8 + 0.03 * i)))
            s = segs[-1][3]
            segs.append(("disc", f"{name}-{(*thoracic[1:], 'L1')[i]}", s, s + 5.0))
            s = segs[-1][3]
        self.s_l1 = s
        for i, body in enumerate(LUMBAR):
            segs.append(("body", body, s, s + spec.body_heights_mm[i]))
            s = segs[-1][3]
            segs.append(("disc", LEVELS[i], s, s + spec.levels[LEVELS[i]].disc_height_mm))
            s = segs[-1][3]
        segs.append(("sacrum", "S1", s, s + 75.0))
        self.segments = segs
        self.s_sacrum = s
        self.length = s + 75.0
        self.disc_s = {name: (a + b) / 2 for kind, name, a, b in segs if kind == "disc"}
        # centre line: tangent angle theta(s) (0 = straight down, > 0 heading anteriorly going down)
        self.ds = 0.25
        self.s_grid = np.arange(segs[0][2] - 40.0, self.length + 40.0, self.ds)
        t = np.clip((self.s_grid - self.s_l1) / (s - self.s_l1), 0.0, 1.0)
        theta = np.radians(spec.top_angle_deg) - np.radians(spec.lordosis_deg) * t ** spec.lordosis_power
        theta -= np.radians(spec.sacral_turn_deg) * np.clip((self.s_grid - s) / 25.0, 0.0, 1.0)
        self.theta = theta
        d_yz = np.stack([np.sin(theta), -np.cos(theta)], axis=1)
        yz = np.cumsum(d_yz, axis=0) * self.ds
        yz -= yz[np.searchsorted(self.s_grid, s / 2)]  # the middle of the lumbar spine at the origin
        self.yz = yz
        self.xline = spec.scoliosis_mm * np.sin(np.pi * np.clip((self.s_grid - self.s_l1) / (self.length - self.s_l1),
                                                                0, 1))
        self.marrow_texture = smooth_noise_2d(rng, 8, 0.08)
        self.roots = rng.uniform(-1, 1, size=(14, 2))  # cauda equina roots: positions in the sac's dorsal half

    # coordinates --------------------------------------------------------------------------------------------------
    def local(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spine coordinates (s, a, x) of world RAS points ``p`` (..., 3): the foot of the perpendicular on the centre
        line, from the sample at the point's height refined by six Newton steps s <- s + (p - C(s)) . T(s)."""
        q = p[..., 1:].reshape(-1, 2)
        z = self.yz[:, 1]  # falls monotonically down the line (the tangent stays within 90 degrees of vertical)
        s = np.interp(-q[:, 1], -z, self.s_grid)
        for _ in range(6):
            i = np.clip(np.rint((s - self.s_grid[0]) / self.ds).astype(np.int64), 0, len(self.s_grid) - 1)
            th = self.theta[i]
            d = q - self.yz[i]
            s = self.s_grid[i] + d[:, 0] * np.sin(th) - d[:, 1] * np.cos(th)
        i = np.clip(np.rint((s - self.s_grid[0]) / self.ds).astype(np.int64), 0, len(self.s_grid) - 1)
        th = self.theta[i]
        d = q - self.yz[i]
        s = self.s_grid[i] + d[:, 0] * np.sin(th) - d[:, 1] * np.cos(th)
        a = d[:, 0] * np.cos(th) + d[:, 1] * np.sin(th)
        x = p[..., 0].reshape(-1) - self.xline[i]
        shape = p.shape[:-1]
        return s.reshape(shape), a.reshape(shape), x.reshape(shape)

    def _index(self, s: float) -> int:
        """The centre-line sample nearest ``s``."""
        return int(np.clip(np.rint((s - self.s_grid[0]) / self.ds), 0, len(self.s_grid) - 1))

    def world(self, s: float, a: float = 0.0, x: float = 0.0) -> np.ndarray:
        """World RAS point of spine coordinates (s, a, x)."""
        i = self._index(s)
        th = self.theta[i]
        y, z = self.yz[i] + (s - self.s_grid[i]) * np.array([np.sin(th), -np.cos(th)])
        return np.array([self.xline[i] + x, y + a * np.cos(th), z + a * np.sin(th)])

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """(anterior, downward tangent) unit vectors at ``s`` (RAS)."""
        th = self.theta[self._index(s)]
        return np.array([0.0, np.cos(th), np.sin(th)]), np.array([0.0, np.sin(th), -np.cos(th)])

    # anatomy ------------------------------------------------------------------------------------------------------
    def footprint(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-width (x) and half-depth (a) of the vertebral footprint, growing caudally."""
        f = np.clip(s / 220.0, 0.0, 1.1) * self.spec.body_scale
        return 19.0 * self.spec.body_scale + 7.0 * f, 13.5 * self.spec.body_scale + 4.5 * f

    def nearest_level(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index into LEVELS of the nearest lumbar disc and the signed distance to it."""
        centres = np.array([self.disc_s[lv] for lv in LEVELS])
        d = s[..., None] - centres
        k = np.argmin(np.abs(d), axis=-1)
        return k, np.take_along_axis(d, k[..., None], -1)[..., 0]

    def canal(self, s: np.ndarray) -> dict[str, np.ndarray]:
        """Sac half-AP, half-width, exponent and flavum indentation at ``s`` (raised-cosine profile about a disc)."""
        k, d = self.nearest_level(s)
        lv = [self.spec.levels[v] for v in LEVELS]
        half = np.array([v.disc_height_mm / 2 + 8.0 for v in lv])[k]
        w = np.where(np.abs(d) < half, 0.5 * (1 + np.cos(np.pi * np.clip(d / half, -1, 1))), 0.0)
        ra0, rx0 = 7.0 * self.spec.body_scale, 10.5 * self.spec.body_scale
        return {"w": w, "k": k, "d": d,
                "ra": (1 - w) * ra0 + w * np.array([v.ap_mm / 2 for v in lv])[k],
                "rx": (1 - w) * rx0 + w * np.array([v.width_mm / 2 for v in lv])[k],
                "q": (1 - w) * 2.2 + w * np.array([v.shape_exponent for v in lv])[k],
                "fl": w * np.array([v.flavum_mm for v in lv])[k]}

    def posterior_margin(self, s: np.ndarray, x: np.ndarray, disc: np.ndarray) -> np.ndarray:
        """a of the posterior margin of the body or disc at (s, x): a concave posterior wall; discs bulge."""
        wx, wa = self.footprint(s)
        k, _ = self.nearest_level(s)
        lv = [self.spec.levels[v] for v in LEVELS]
        bulge = np.where(disc, np.array([v.bulge_mm for v in lv])[k], 0.0)
        prot_side = np.array([1.0 if v.protrusion[0] == "right" else -1.0 for v in lv])[k]
        prot = np.where(disc, np.array([v.protrusion[1] for v in lv])[k], 0.0)
        bump = prot * np.exp(-(((x - prot_side * 7.0) / 4.0) ** 2))
        u = np.clip(np.abs(x) / wx, 0, 1)
        conc = 2.0 * np.clip(1 - (x / (0.45 * wx)) ** 2, 0, 1)
        return -wa * (1 - u ** 2.6) ** (1 / 2.6) + conc - bulge - bump

    def sac_front(self, s: np.ndarray) -> np.ndarray:
        """a of the sac's anterior wall: 1.2 mm behind the posterior margin of the body or disc at the midline."""
        return self.posterior_margin(s, np.zeros(s.shape), self._in_disc_band(s)) - 1.2

    def sac(self, s: np.ndarray, a: np.ndarray, x: np.ndarray, grow_mm: float = 0.0) -> np.ndarray:
        """Inside the dural sac: a superellipse behind its anterior wall, less two flavum indentations and whatever
        a paramedian protrusion of the disc takes; ``grow_mm`` widens every wall by that much (the dura)."""
        c = self.canal(s)
        ac = self.sac_front(s) - c["ra"]
        rx, ra = c["rx"] + grow_mm, c["ra"] + grow_mm
        inside = np.abs(x / rx) ** c["q"] + np.abs((a - ac) / ra) ** c["q"] <= 1.0
        inside &= a < self.posterior_margin(s, x, self._in_disc_band(s)) - 0.5 + grow_mm
        for sign in (-1.0, 1.0):
            inside &= np.hypot(x - sign * 0.62 * c["rx"], a - (ac - c["ra"])) >= c["fl"] - grow_mm
        return inside

    def classify(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network class ids and T2 signal at world points ``p`` (..., 3)."""
        sig_of = self.spec.signals
        s, a, x = self.local(p)
        cls = np.zeros(s.shape, np.int16)
        sig = np.zeros(s.shape)

        def put(mask: np.ndarray, name: str | None, signal: float | np.ndarray) -> None:
            cls[mask] = 0 if name is None else self.cls[name]
            sig[mask] = signal if np.isscalar(signal) else signal[mask]

        # trunk: subcutaneous fat, soft tissue, paraspinal muscles, psoas, aorta
        trunk = np.hypot(x / 165.0, (a + 25.0) / 125.0)
        put(trunk < 1.0, None, sig_of["fat"])
        put(trunk < 0.93, None, sig_of["soft"])
        wx, wa = self.footprint(s)
        para = np.hypot((np.abs(x) - 27) / 20.0, (a + 58) / 24.0) < 1.0
        psoas = (np.hypot((np.abs(x) - (wx + 14)) / 13.0, (a - 4) / 15.0) < 1.0) & (s > self.s_l1 + 40)
        put((para | psoas) & (trunk < 0.93), None, sig_of["muscle"])
        put(np.hypot(x + 12.0, a - wa - 22.0) < 11.0, None, sig_of["vessel"])  # aorta, a flow void
        # the segment of each point: a body's endplates are concave (its end rims reach ``cave`` further than its
        # centre), the disc fills the rest of the gap
        starts = np.array([t[2] for t in self.segments])
        seg = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(starts) - 1)
        kinds = np.array([t[0] for t in self.segments])[seg]
        s0, s1 = starts[seg], np.array([t[3] for t in self.segments])[seg]
        r2 = (x / wx) ** 2 + (a / wa) ** 2
        cave = 1.5 * np.clip(1 - r2, 0, 1)
        band = (kinds == "disc") | ((kinds == "body") & ((s - s0 < cave) | (s1 - s < cave))) | (
            (kinds == "sacrum") & (s - s0 < cave))
        back = self.posterior_margin(s, x, band)
        near_spine = (s > starts[0]) & (s < self.length)
        disc = near_spine & band & (r2 <= 1.08) & (a >= back)
        put(disc, "disc", sig_of["annulus"])
        nucleus = {t[1]: (self.spec.levels[t[1]].nucleus_signal if t[1] in self.spec.levels else 0.6)
                   for t in self.segments}
        nuc_sig = np.array([nucleus[t[1]] for t in self.segments])[seg]
        mid = np.where(kinds == "disc", (s0 + s1) / 2, s)
        put(disc & (kinds == "disc") & ((x / (0.6 * wx)) ** 2 + ((a - 1.0) / (0.55 * wa)) ** 2 <= 1.0)
            & (np.abs(s - mid) < 0.3 * (s1 - s0)), "disc", nuc_sig)
        taper = np.where(kinds == "sacrum", np.clip(1 - (s - s0) / 90.0, 0.3, 1.0), 1.0)
        bone = near_spine & ~band & (kinds != "disc") & ((x / (wx * taper)) ** 2 + (a / (wa * taper)) ** 2 <= 1.0) & (
            (kinds == "sacrum") | (a >= back))
        sacrum = bone & (kinds == "sacrum")
        put(bone & ~sacrum, "vertebral_body", sig_of["cortex"])
        put(sacrum, "sacrum", sig_of["cortex"])
        inner = bone & (r2 <= 0.86 * taper ** 2) & (s > s0 + cave + 1.2) & ((kinds == "sacrum") | (s < s1 - cave - 1.2))
        texture = self.marrow_texture(x[inner] + 0.6 * s[inner], a[inner] - 0.4 * s[inner])
        marrow = sig_of["marrow"] * (1 + 0.18 * texture)
        cls[inner] = np.where(sacrum[inner], self.cls["sacrum"], self.cls["vertebral_body"])
        sig[inner] = marrow
        # canal: the sac's anterior wall 1.2 mm behind the posterior margin at the midline
        c = self.canal(s)
        front = self.posterior_margin(s, np.zeros(s.shape), band) - 1.2
        sac_back = front - 2 * c["ra"]
        flavum_t = 2.5 + 2.5 * c["w"]
        alive = (s > starts[0] + 10) & (s < self.s_sacrum + 30)
        put(alive & (np.abs(x) < c["rx"] + 6.0) & (a < back) & (a > sac_back - flavum_t - 1.0), "epidural_fat",
            sig_of["fat"])
        rec = {sd: np.array([self.spec.levels[v].recess_mm[sd] for v in LEVELS])[c["k"]] for sd in SIDES}
        recess = np.where(x >= 0, rec["right"], rec["left"])
        root_r = np.minimum(1.6, recess / 2 - 0.2)
        put(alive & (np.hypot(np.abs(x) - (c["rx"] + 2.5), a - (back - root_r - 0.3)) < root_r), "nerve_root",
            sig_of["root"])
        # posterior elements: facets (anterior margin ``recess`` behind the posterior margin), pedicles at the upper
        # part of each body, lamina, spinous process; the ligamentum flavum between lamina and sac
        facet_front = back - recess
        fx = np.abs(x) - (c["rx"] + 1.5)
        facet = alive & (fx > 0) & (a < facet_front) & ((fx / 15.0) ** 4 + ((facet_front - a) / 14.0) ** 4 <= 1.0)
        body_top = (kinds == "body") & (s > s0 + 4) & (s < s0 + 0.6 * (s1 - s0))
        pedicle = alive & body_top & (fx > 0) & (fx < 9.0) & (a < back + 4) & (a > back - 14)
        lamina = alive & (np.abs(x) < c["rx"] + 3.0) & (a <= sac_back - flavum_t) & (a > sac_back - flavum_t - 6.0)
        spinous = alive & (np.abs(x) < 3.0) & (a <= sac_back - flavum_t - 6.0) & (a > sac_back - 40.0) & (
            np.abs(c["d"]) > 5.0)
        put(facet | pedicle | lamina | spinous, "posterior_elements", sig_of["bone_posterior"])
        put(alive & (np.abs(x) < c["rx"] + 2.0) & (a <= sac_back) & (a > sac_back - flavum_t), "ligamentum_flavum",
            sig_of["flavum"])
        # foramina beside the disc, lateral of the facets, with the exiting root
        fora = alive & (np.abs(c["d"]) < 9.0) & (fx > 16.0) & (fx < 24.0) & (a < back) & (a > back - 12)
        put(fora, "epidural_fat", sig_of["fat"])
        put(fora & (np.hypot(c["d"] + 3.0, a - (back - 5.0)) < 2.3), "nerve_root", sig_of["root"])
        # the dural sac, with the cauda equina roots in its dorsal half (signal only; the class stays sac)
        sac = alive & self.sac(s, a, x)
        sig[alive & ~sac & self.sac(s, a, x, DURA_MM)] = sig_of["dura"]  # the dura: signal only, class unchanged
        put(sac, "dural_sac", sig_of["csf"])
        xs, as_, rx, ra = x[sac], a[sac], c["rx"][sac], c["ra"][sac]
        ac = front[sac] - ra
        root = np.zeros(xs.shape, bool)
        for u, v in self.roots:
            root |= np.hypot(xs - 0.7 * u * rx, as_ - (ac - 0.5 * (1 + abs(v)) * ra * 0.8)) < 0.7
        inside = sig[sac]
        inside[root] = sig_of["root"]
        sig[sac] = inside
        return cls, sig

    def _in_disc_band(self, s: np.ndarray) -> np.ndarray:
        """Along the disc heights (where the sac's anterior wall follows the disc, not the body)."""
        starts = np.array([t[2] for t in self.segments])
        seg = np.clip(np.searchsorted(starts, s, side="right") - 1, 0, len(starts) - 1)
        return np.array([t[0] == "disc" for t in self.segments])[seg] & (s >= starts[0])


def _render(spine: AtlasSpine, affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Class map (voxel centres) and signal (twice as fine in-plane, three sub-slices, k-space cropped)."""
    n0, n1, nk = shape
    cls = np.zeros(shape, np.int16)
    img = np.zeros(shape)
    ii, jj = np.meshgrid(np.arange(n0), np.arange(n1), indexing="ij")
    fi, fj = np.meshgrid(np.arange(2 * n0) / 2, np.arange(2 * n1) / 2, indexing="ij")  # even samples: centres
    for k in range(nk):
        centre = np.stack([ii, jj, np.full(ii.shape, float(k))], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
        cls[:, :, k] = spine.classify(centre)[0]
        fine = np.zeros(fi.shape)
        for dk in (-1 / 3, 0.0, 1 / 3):
            p = np.stack([fi, fj, np.full(fi.shape, k + dk)], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
            fine += spine.classify(p)[1] / 3
        spectrum = np.fft.fftshift(np.fft.fft2(fine))
        lo0, lo1 = n0 // 2, n1 // 2
        cropped = spectrum[n0 - lo0:n0 - lo0 + n0, n1 - lo1:n1 - lo1 + n1]
        img[:, :, k] = np.abs(np.fft.ifft2(np.fft.ifftshift(cropped))) / 4.0
    return cls, img


def _sagittal_grid(spine: AtlasSpine, spec: AtlasLumbarSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    d = spec.sag_in_plane_mm
    n = int(round(spec.sag_fov_mm / d))
    bottom = spine.world(spine.s_sacrum + spec.sag_sacrum_mm, a=-15.0)
    mid = bottom + np.array([0.0, 0.0, d * (n - 1) / 2])
    mid[0] = spine.world(spine.s_sacrum / 2)[0]
    aff = np.eye(4)
    aff[:3, 0] = [0.0, -d, 0.0]
    aff[:3, 1] = [0.0, 0.0, -d]
    aff[:3, 2] = [spec.sag_slice_mm, 0.0, 0.0]
    aff[:3, 3] = mid - aff[:3, 0] * (n - 1) / 2 - aff[:3, 1] * (n - 1) / 2 - aff[:3, 2] * (spec.sag_slices - 1) / 2
    return aff, (n, n, spec.sag_slices)


def _axial_grid(spine: AtlasSpine, spec: AtlasLumbarSpec, level: str, rng: np.random.Generator
                ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A stack parallel to the disc plane, tilted by up to ``ax_tilt_deg`` about the left-right axis, one slice
    within 1 mm of the disc's mid-plane."""
    d = spec.ax_in_plane_mm
    n = int(round(spec.ax_fov_mm / d))
    s = spine.disc_s[level]
    ant, down = spine.frame(s)
    tilt = np.radians(spec.ax_tilt_deg) * rng.choice([-1.0, 1.0])
    up = -down * np.cos(tilt) + ant * np.sin(tilt)
    post = -(ant * np.cos(tilt) + down * np.sin(tilt))
    centre = spine.world(s, a=-25.0) + up * rng.uniform(-1.0, 1.0)
    aff = np.eye(4)
    aff[:3, 0] = np.array([-d, 0.0, 0.0])
    aff[:3, 1] = post * d
    aff[:3, 2] = up * spec.ax_slice_mm
    if np.linalg.det(aff[:3, :3]) < 0:
        aff[:3, 0] *= -1
    mid_slice = (spec.ax_slices - 1) // 2
    aff[:3, 3] = centre - aff[:3, 0] * (n - 1) / 2 - aff[:3, 1] * (n - 1) / 2 - aff[:3, 2] * mid_slice
    return aff, (n, n, spec.ax_slices)


def sac_truth(spine: AtlasSpine, level: str, step_mm: float = 0.05) -> tuple[float, float]:
    """(area mm2, AP diameter mm) of the dural sac in the mid-plane of ``level``'s disc, measured on a ``step_mm``
    grid of that plane: the area is the count of inside points times step^2, the AP diameter the length of the
    sac's chord along the antero-posterior line through its centroid."""
    s0 = spine.disc_s[level]
    c = spine.canal(np.array([s0]))
    span = float(c["rx"][0]) + 2.0
    a_front = float(spine.sac_front(np.array([s0]))[0])
    xs = np.arange(-span, span, step_mm)
    as_ = np.arange(a_front - 2 * float(c["ra"][0]) - 2.0, a_front + 2.0, step_mm)
    xx, aa = np.meshgrid(xs, as_, indexing="ij")
    inside = spine.sac(np.full(xx.shape, s0), aa, xx)
    area = float(inside.sum()) * step_mm ** 2
    cx = float(xx[inside].mean())
    column = inside[int(np.argmin(np.abs(xs - cx)))]
    ap = float(column.sum()) * step_mm
    return area, ap


def generate_atlas_lumbar(seed: int) -> AtlasLumbarPhantom:
    """The independent lumbar phantom of ``seed``: a sagittal T2 and two or three axial T2 stacks angled to discs."""
    rng = np.random.default_rng([seed, 17])
    spec = AtlasLumbarSpec.random(rng)
    spine = AtlasSpine(spec, rng)
    grids = [("lumbar_sag_t2", "sagittal", *_sagittal_grid(spine, spec))]
    for n, lv in enumerate(spec.ax_levels):
        grids.append(("lumbar_ax_t2" if n == 0 else f"lumbar_ax_t2_{n + 1}", "axial", *_axial_grid(spine, spec, lv,
                                                                                                   rng)))
    series = []
    for role, plane, aff, shape in grids:
        cls, img = _render(spine, aff, shape)
        img = rician(img * bias_field(shape, spec.bias, rng), 0.5 / spec.snr, rng)
        series.append(SynthSeries(role, Volume(np.round(img * 1000).astype(np.uint16), aff),
                                  Volume(cls, aff, {"anatomy": "spine", "map": "classes"}), role, plane, "t2"))
    levels = {}
    for lv in LEVELS:
        area, ap = sac_truth(spine, lv)
        ant, down = spine.frame(spine.disc_s[lv])
        levels[lv] = {"dsca_mm2": round(area, 3), "ap_diameter_mm": round(ap, 3),
                      "lateral_recess_depth_mm": {sd: round(spec.levels[lv].recess_mm[sd], 3) for sd in SIDES},
                      "disc_center_ras": [round(float(v), 3) for v in spine.world(spine.disc_s[lv])],
                      "disc_normal_ras": [round(float(v), 5) for v in -down]}
    truth = {"levels": levels, "method": "independent atlas generator (sac areas measured on a 0.05 mm grid)",
             "axial_levels": {s.role: lv for s, lv in zip(series[1:], spec.ax_levels)}}
    return AtlasLumbarPhantom(spec, series, truth)
