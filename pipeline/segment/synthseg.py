"""Random-contrast images from tissue maps, for segmentation networks that must not depend on one MR contrast.

The SynthSeg idea (Billot et al., Med Image Anal 2023;86:102789): a network trained on images whose every tissue has
a random intensity, at random resolution, with random bias, noise and artefacts, learns shape rather than contrast
and segments real scans of any contrast. Here a sample is drawn from a 2-D tissue map (tissue ids, class ids and a
voxel fat fraction, at a fine in-plane spacing, with sub-slices across the slice thickness):

1. intensities: each tissue gets a random mean (either uniform in [0, 1], or from an MR-like prior in which fat is
   bright or dark, muscle intermediate and cortex dark), muscles optionally a per-class offset, and each tissue a
   random smooth texture; voxels of the ``mixed`` tissue (muscle) take ``(1 - ff) I_muscle + ff I_fat`` so fatty
   replacement, marbling and hypertrophy look as they do at that contrast;
2. partial volume: sub-slices averaged (slice thickness), a random anisotropic Gaussian point-spread and block
   averaging to the network's grid (in-plane resolution); classes by majority over the block;
3. geometry and artefacts, batched in torch: affine and elastic deformation, flips, bias field, gamma, Gibbs
   ringing, Rician noise; per item phase-encode ghosting, wrap-around and field-of-view cuts. (MONAI's per-item
   transforms took about 0.3 s per 192 x 192 item on a CPU, more than the network's step; the same formulas over
   a batch take milliseconds.)
4. the bundle's normalisation (divide by the 99.5th percentile).

Pure numpy/torch: no anatomy is known here, only tissue and class ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ContrastPrior:
    """Ranges of the random contrast; intensities are relative to the brightest tissue (1.0)."""

    p_uniform: float = 0.5  # share of samples with every tissue's mean uniform in [0, 1] (else the MR-like prior)
    p_muscle_offsets: float = 0.3  # share of samples in which muscles differ from each other
    muscle_offset_sd: float = 0.12
    texture_sd: tuple[float, float] = (0.0, 0.08)
    background_max: float = 0.06
    # Tissues that give signal in every MR contrast (skin and muscle: water-rich, T2 tens of ms) are at least this
    # bright, so that the leg's outline is always visible against air, as it is in any real scan; fat (nulled by
    # STIR or fat saturation), cortex and the other tissues keep their full random range.
    signal_floor: float = 0.15
    # Intermuscular septa and fascia hold fat, so in a real image they have about the signal of fat (bright lines on
    # T1w or in-phase, dark ones with fat suppression) and outline the muscles, which share one intensity. Share of
    # samples in which the ``septa`` tissue takes the fat's mean (plus a little), and in which it is dark (fibrous
    # fascia); in the rest it is as random as every other tissue.
    p_fatty_septa: float = 0.6
    p_dark_septa: float = 0.15
    # Fluid (CSF, role ``fluid``) in the MR-like prior: bright as on T2w or STIR in this share of samples, else dark
    # as on T1w or FLAIR.
    p_fluid_bright: float = 0.5
    # Share of samples in which each tied tissue (``SynthSampler(tied=...)``: e.g. a second fat compartment, a
    # second muscle) takes the mean of the tissue it follows (plus a little); otherwise it is drawn on its own.
    p_tied: float = 0.7
    # Share of samples in which the tissues of the background class (all but air) are overlaid with random clutter
    # (:func:`clutter`): blobs of random intensity like bowel, vessels or fatty streaks, which the tissue maps do not
    # draw, so that no intensity pattern outside the labelled structures can pass for one of them.
    p_clutter: float = 0.0
    resolution_mm: tuple[float, float] = (0.6, 2.6)  # in-plane acquisition resolution range (FWHM of the PSF)
    noise_sd: tuple[float, float] = (0.0, 0.07)
    p_ghost: float = 0.2
    p_wrap: float = 0.12
    p_fov_cut: float = 0.15
    # Share of samples in which the border between two neighbouring muscles is moved (:func:`shift_borders`): one
    # muscle grows into its neighbour by a random distance in ``border_shift_mm`` (1-3 times per sample), the septum
    # moving with it, so that where one muscle ends must be read from the septa of the image, not from where the
    # tissue maps usually put the border. 0 leaves the random stream of earlier trainings unchanged.
    p_border_shift: float = 0.0
    border_shift_mm: tuple[float, float] = (1.0, 8.0)


def sample_intensities(n_tissues: int, tissue_roles: dict[str, int], rng: np.random.Generator,
                       prior: ContrastPrior, tied: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """Mean intensity per tissue id. ``tissue_roles`` names the ids of ``background``, ``muscle``, ``fat``,
    ``cortex`` and ``marrow`` for the MR-like prior (fat bright or dark, marrow like fat, cortex dark, muscle
    intermediate), and optionally ``skin``, ``septa`` and ``fluid`` (bright or dark); skin and muscle never fall
    below ``prior.signal_floor``; septa mostly follow fat (``prior.p_fatty_septa``) or are dark
    (``prior.p_dark_septa``). Each ``(tissue, leader)`` pair of ``tied`` takes ``leader``'s mean plus N(0, 0.05)
    in a share ``prior.p_tied`` of the samples (pairs applied in order, so a leader may itself be tied)."""
    mean = rng.uniform(0.0, 1.0, n_tissues)
    if rng.uniform() >= prior.p_uniform:
        fat = rng.uniform(0.7, 1.0) if rng.uniform() < 0.6 else rng.uniform(0.0, 0.25)
        mean[tissue_roles["fat"]] = fat
        mean[tissue_roles["marrow"]] = np.clip(fat + rng.normal(0, 0.08), 0, 1)
        mean[tissue_roles["muscle"]] = rng.uniform(0.2, 0.6)
        mean[tissue_roles["cortex"]] = rng.uniform(0.0, 0.08)
        if "fluid" in tissue_roles:
            bright = rng.uniform() < prior.p_fluid_bright
            mean[tissue_roles["fluid"]] = rng.uniform(0.7, 1.0) if bright else rng.uniform(0.0, 0.2)
    mean[tissue_roles["background"]] = rng.uniform(0.0, prior.background_max)
    for role in ("skin", "muscle"):
        if role in tissue_roles and mean[tissue_roles[role]] < prior.signal_floor:
            mean[tissue_roles[role]] = rng.uniform(prior.signal_floor, 1.0)
    if "septa" in tissue_roles:
        u = rng.uniform()
        if u < prior.p_fatty_septa:
            mean[tissue_roles["septa"]] = np.clip(mean[tissue_roles["fat"]] + rng.normal(0, 0.06), 0, 1)
        elif u < prior.p_fatty_septa + prior.p_dark_septa:
            mean[tissue_roles["septa"]] = rng.uniform(0.0, 0.1)
    for tissue, leader in tied:
        if rng.uniform() < prior.p_tied:
            mean[tissue] = np.clip(mean[leader] + rng.normal(0, 0.05), 0, 1)
    return mean


def shift_borders(classes: np.ndarray, tissue: np.ndarray, muscle_classes: list[int], septa: int | None,
                  muscle: int, rng: np.random.Generator, shift_px: tuple[float, float], moves: int) -> None:
    """Move the border between two neighbouring muscles, in place, on every sub-slice of ``classes`` and ``tissue``
    (arrays (S, X, Y)): ``moves`` times, a muscle class a present on the middle sub-slice grows into a neighbour b
    (a muscle class within 2 pixels of it) by a distance drawn from ``shift_px``; the septum (tissue ``septa``)
    that lay on the old border and is now inside a becomes muscle, and when the old border had a septum the new one
    gets one of a random half width (1-2.5 pixels). Voxels keep their fat fraction (a moved border carries the
    grown-over muscle's fat pattern), which is what a real muscle of that shape would show."""
    from scipy import ndimage

    mid = classes[classes.shape[0] // 2]
    for _ in range(moves):
        present = [c for c in muscle_classes if np.count_nonzero(mid == c) > 50]
        if not present:
            return
        a = int(rng.choice(present))
        ring = ndimage.binary_dilation(mid == a, iterations=2) & (mid != a)
        neighbours = [c for c in present if c != a and np.any(ring & (mid == c))]
        if not neighbours:
            continue
        b = int(rng.choice(neighbours))
        r = rng.uniform(*shift_px)
        half = rng.uniform(0.5, 2.0)
        for k in range(classes.shape[0]):
            cls, tis = classes[k], tissue[k]
            in_a, in_b = cls == a, cls == b
            if not in_a.any() or not in_b.any():
                continue
            old_band = (ndimage.distance_transform_edt(~in_a) <= 2.5) & (ndimage.distance_transform_edt(~in_b) <= 2.5)
            had_septum = septa is not None and bool(np.any(old_band & (tis == septa)))
            grow = in_b & (ndimage.distance_transform_edt(~in_a) <= r)
            cls[grow] = a
            new_a, new_b = cls == a, cls == b
            to_b = ndimage.distance_transform_edt(~new_b)
            if septa is not None:
                deep = ndimage.distance_transform_edt(new_a) > half + 0.5  # away from every border of a
                tis[(grow | old_band) & deep & (tis == septa)] = muscle
            if had_septum:
                to_a = ndimage.distance_transform_edt(~new_a)
                border = ((new_a & (to_b <= half + 0.5)) | (new_b & (to_a <= half + 0.5))) & (
                    (tis == muscle) | (tis == septa))
                tis[border] = septa


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-SD random field smooth over about ``scale_px`` pixels (upsampled coarse Gaussian noise)."""
    coarse = (max(2, int(shape[0] / scale_px)), max(2, int(shape[1] / scale_px)))
    g = torch.from_numpy(rng.normal(size=coarse).astype(np.float32))[None, None]
    f = F.interpolate(g, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    return (f - f.mean()) / (f.std() + 1e-6)


def paint(tissue: np.ndarray, classes: np.ndarray, ff: np.ndarray, mean: np.ndarray, roles: dict[str, int],
          muscle_classes: list[int], rng: np.random.Generator, prior: ContrastPrior) -> np.ndarray:
    """Intensity of every voxel of one (sub-)slice: tissue means, muscle/fat mixing by ``ff`` (0-1), per-class
    muscle offsets and smooth per-tissue texture."""
    lut = mean.astype(np.float32)
    img = lut[tissue]
    texture = smooth_field(tissue.shape, rng, rng.uniform(2, 12))
    sd = rng.uniform(*prior.texture_sd, size=len(lut)).astype(np.float32)
    sd[roles["background"]] = 0.0  # air: noise only (added with the acquisition)
    img += texture * sd[tissue]
    muscle = tissue == roles["muscle"]
    if muscle.any():
        m = np.full(tissue.shape, mean[roles["muscle"]], np.float32)
        if rng.uniform() < prior.p_muscle_offsets:
            for c in muscle_classes:
                m[classes == c] += rng.normal(0, prior.muscle_offset_sd)
        img[muscle] = ((1 - ff) * m + ff * mean[roles["fat"]])[muscle] + (img - lut[tissue])[muscle]
    return img


def clutter(img: np.ndarray, classes: np.ndarray, tissue: np.ndarray, air: int, rng: np.random.Generator
            ) -> np.ndarray:
    """Overlay the background class (``classes`` 0, tissue other than ``air``) with k = 2-6 random intensities on
    the cells of a quantised smooth random field (scale 4-24 pixels), mixed in with a random weight w in
    [0.5, 1]: I' = (1 - w) I + w c_{q(f)}."""
    region = (classes == 0) & (tissue != air)
    if not region.any():
        return img
    field = smooth_field(img.shape, rng, rng.uniform(4, 24))
    k = int(rng.integers(2, 7))
    cells = np.digitize(field, np.sort(rng.uniform(-1.5, 1.5, k - 1)))
    values = rng.uniform(0.0, 1.0, k).astype(np.float32)
    w = np.float32(rng.uniform(0.5, 1.0))
    out = img.copy()
    out[region] = (1 - w) * img[region] + w * values[cells[region]]
    return out


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return k / k.sum()


def blur_and_resample(img: np.ndarray, classes: np.ndarray, factor: int, psf_px: tuple[float, float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic Gaussian point-spread (``psf_px`` sigmas, fine pixels), then ``factor`` x ``factor`` block means
    (image) and block majority (classes)."""
    x = torch.from_numpy(img)[None, None]
    for axis, s in enumerate(psf_px):
        if s > 0.3:
            k = _gaussian_kernel(s)
            shape = (1, 1, -1, 1) if axis == 0 else (1, 1, 1, -1)
            pad = (0, 0, len(k) // 2, len(k) // 2) if axis == 0 else (len(k) // 2, len(k) // 2, 0, 0)
            x = F.conv2d(F.pad(x, pad, mode="replicate"), k.view(shape))
    out = F.avg_pool2d(x, factor)[0, 0].numpy()
    return out, block_majority(classes, factor)


def block_majority(classes: np.ndarray, factor: int) -> np.ndarray:
    """The most frequent class of every ``factor`` x ``factor`` block (ties: the first of the block in raster
    order).

    >>> block_majority(np.array([[1, 2, 0, 0], [2, 2, 0, 3]]), 2).tolist()
    [[2, 0]]
    """
    h, w = classes.shape[0] // factor * factor, classes.shape[1] // factor * factor
    subs = np.stack([classes[i:h:factor, j:w:factor] for i in range(factor) for j in range(factor)])
    counts = np.stack([(subs == s).sum(axis=0) for s in subs])
    return np.take_along_axis(subs, counts.argmax(axis=0)[None], axis=0)[0].astype(np.uint8)


def ghost(img: np.ndarray, rng: np.random.Generator, axis: int) -> np.ndarray:
    """Phase-encode ghosting: every n-th k-space line along ``axis`` scaled, which repeats the object at 1/n of the
    field of view (periodic motion, e.g. pulsation)."""
    k = np.fft.fft2(img)
    n = int(rng.integers(2, 6))
    sl = [slice(None), slice(None)]
    sl[axis] = slice(0, None, n)
    k[tuple(sl)] *= rng.uniform(0.5, 1.6)
    return np.abs(np.fft.ifft2(k)).astype(np.float32)


def wrap(img: np.ndarray, rng: np.random.Generator, axis: int) -> np.ndarray:
    """Wrap-around: a field of view narrower than the body along ``axis`` folds the part outside onto the other
    side (added)."""
    n = img.shape[axis]
    cut = int(rng.uniform(0.05, 0.25) * n)
    out = img.copy()
    edge = np.take(img, np.arange(n - cut, n), axis=axis)
    idx = [slice(None), slice(None)]
    idx[axis] = slice(0, cut)
    out[tuple(idx)] += edge
    return out


def fov_cut(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A field-of-view edge crossing the object: image and classes zero beyond a random row or column."""
    axis = int(rng.integers(2))
    n = img.shape[axis]
    k = int(rng.uniform(0.1, 0.35) * n)
    idx = [slice(None), slice(None)]
    idx[axis] = slice(n - k, n) if rng.uniform() < 0.5 else slice(0, k)
    img, lab = img.copy(), lab.copy()
    img[tuple(idx)] = 0
    lab[tuple(idx)] = 0
    return img, lab


def random_geometry(image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator, rotate_deg: float = 25.0,
                    scale: float = 0.25, shear: float = 0.1, shift: float = 0.08, elastic_px: float = 3.0,
                    mirror_rows: bool = True, mirror_columns: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (rotation, anisotropic scale, shear, shift, mirroring) and smooth elastic deformation of a
    batch (B, 1, H, W), one draw per item; bilinear for the image, nearest for the classes (``torch.grid_sample``).

    Mirroring is drawn only where the anatomy allows it. Slices reach the network in canonical RAS order (rows run
    right-left, columns posterior-anterior; :func:`pipeline.segment.infer.to_canonical`), so mirroring the rows
    turns a left leg into a right one (classes carry no side: safe), while mirroring the columns would put the
    gastrocnemius in front of the tibia, which no scan shows; it is off by default so that the network may learn
    where anterior is."""
    b, _, h, w = image.shape
    theta = np.zeros((b, 2, 3), np.float32)
    for i in range(b):
        a = np.radians(rng.uniform(-rotate_deg, rotate_deg))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        # theta acts on (x, y) = (column, row) coordinates of the output grid
        signs = np.where([mirror_columns, mirror_rows], rng.choice([-1.0, 1.0], 2), 1.0)
        sc = np.diag(rng.uniform(1 - scale, 1 + scale, 2) * signs)
        sh = np.array([[1.0, rng.uniform(-shear, shear)], [rng.uniform(-shear, shear), 1.0]])
        theta[i, :, :2] = rot @ sh @ sc
        theta[i, :, 2] = rng.uniform(-shift, shift, 2) * 2
    grid = F.affine_grid(torch.from_numpy(theta), [b, 1, h, w], align_corners=False)
    if elastic_px > 0:
        coarse = torch.from_numpy(rng.normal(size=(b, 2, 6, 6)).astype(np.float32))
        disp = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        amp = torch.from_numpy(rng.uniform(0, elastic_px, (b, 1, 1, 1)).astype(np.float32))
        grid = grid + disp * amp * 2.0 / max(h, w)
    img = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = F.grid_sample(label, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return img, lab


def random_acquisition(image: torch.Tensor, rng: np.random.Generator, bias: float = 0.6,
                       gamma: tuple[float, float] = (0.6, 1.7), gibbs_p: float = 0.2,
                       noise_sd: tuple[float, float] = (0.0, 0.07)) -> torch.Tensor:
    """Receive bias (``exp`` of a smooth field, up to ``bias`` log-units), gamma, Gibbs ringing (k-space truncated
    to a random 40-90 % along one axis) and Rician noise (magnitude of complex Gaussian noise added to the signal;
    Gudbjartsson and Patz, Magn Reson Med 1995;34:910-914), one draw per item of a batch (B, 1, H, W)."""
    b, _, h, w = image.shape
    out = []
    for i in range(b):
        x = image[i, 0] / max(float(torch.quantile(image[i, 0].flatten()[::7], 0.995)), 1e-6)
        field = smooth_field((h, w), rng, rng.uniform(40, 120))
        x = x * torch.from_numpy(np.exp(rng.uniform(0, bias) * field).astype(np.float32))
        if rng.uniform() < 0.5:
            x = x.clamp(min=0) ** float(rng.uniform(*gamma))
        if rng.uniform() < gibbs_p:
            k = torch.fft.fftshift(torch.fft.fft2(x))
            axis = int(rng.integers(2))
            n = x.shape[axis]
            keep = int(n * rng.uniform(0.4, 0.9)) // 2
            mask = torch.zeros(n)
            mask[n // 2 - keep:n // 2 + keep] = 1
            k = k * (mask[:, None] if axis == 0 else mask[None, :])
            x = torch.fft.ifft2(torch.fft.ifftshift(k)).abs()
        sd = float(rng.uniform(*noise_sd))
        n1 = torch.from_numpy(rng.normal(0, sd, (h, w)).astype(np.float32))
        n2 = torch.from_numpy(rng.normal(0, sd, (h, w)).astype(np.float32))
        out.append(torch.sqrt((x + n1) ** 2 + n2**2))
    return torch.stack(out)[:, None]


def normalise_batch(image: torch.Tensor, percentile: float = 99.5) -> torch.Tensor:
    """Each item divided by its own ``percentile`` (the bundle's normalisation of one channel)."""
    q = torch.stack([torch.quantile(x.flatten()[::3], percentile / 100) for x in image]).clamp(min=1e-6)
    return image / q.view(-1, 1, 1, 1)


class SynthSampler:
    """Random-contrast training batches (images (B, 1, H, W) float32, classes (B, 1, H, W) int64) from a bank of
    tissue maps.

    ``bank`` holds arrays (levels, 3 sub-slices, X, Y) per subject: ``classes``, ``tissue`` and ``ff`` (uint8,
    fat fraction x 250) at ``fine_mm``; items are cut at ``target_mm`` (a whole multiple of ``fine_mm``).
    ``tied`` pairs tissues whose means go together (:func:`sample_intensities`); a share ``focus_fraction`` of
    the items is centred on a pixel of class ``focus_class`` where the level shows it (foreground oversampling);
    ``mirror`` (rows, columns) allows mirroring along each axis of the slice (:func:`random_geometry`);
    ``weights`` (one per subject, normalised to sum 1) draws the subjects with those probabilities instead of
    uniformly (without it the random stream is that of the uniform draw, unchanged); ``real`` holds annotated real
    slices (image, classes) on the target grid, a share ``real_share`` of the items is cut from them with their own
    signal (geometry and acquisition effects still drawn as for every item).
    """

    def __init__(self, bank: list[dict[str, np.ndarray]], roles: dict[str, int], muscle_classes: list[int],
                 n_classes: int, patch: tuple[int, int], fine_mm: float, target_mm: float, seed: int | list[int],
                 prior: ContrastPrior | None = None, tied: tuple[tuple[int, int], ...] = (),
                 focus_class: int | None = None, focus_fraction: float = 0.0,
                 mirror: tuple[bool, bool] = (True, False), weights: np.ndarray | None = None,
                 real: list[tuple[np.ndarray, np.ndarray]] | None = None, real_share: float = 0.0):
        self.bank = bank
        self.roles = roles
        self.muscle_classes = muscle_classes
        self.n_classes = n_classes
        self.patch = patch
        self.factor = int(round(target_mm / fine_mm))
        if abs(self.factor * fine_mm - target_mm) > 1e-6:
            raise ValueError(f"target spacing {target_mm} mm is not a whole multiple of the bank's {fine_mm} mm")
        self.fine_mm = fine_mm
        self.prior = prior or ContrastPrior()
        self.rng = np.random.default_rng(seed)
        self.n_tissues = int(max(int(b["tissue"].max()) for b in bank)) + 1
        self.tied = tied
        self.focus_class = focus_class
        self.focus_fraction = focus_fraction
        self.mirror = mirror
        self.real = list(real or [])
        self.real_share = real_share if self.real else 0.0
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, np.float64)
            if w.shape != (len(bank),) or (w < 0).any() or not w.sum() > 0:
                raise ValueError(f"weights must be {len(bank)} non-negative numbers, not all zero")
            self.weights = w / w.sum()

    @staticmethod
    def _crop(a: np.ndarray, centre: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        r0, c0 = centre[0] - size[0] // 2, centre[1] - size[1] // 2
        out = np.zeros(a.shape[:-2] + size, a.dtype)
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + size[0], a.shape[-2]), min(c0 + size[1], a.shape[-1])
        if re > rs and ce > cs:
            out[..., rs - r0:re - r0, cs - c0:ce - c0] = a[..., rs:re, cs:ce]
        return out

    def item(self) -> tuple[np.ndarray, np.ndarray]:
        """One image and its classes on the target grid, before geometry and acquisition effects."""
        rng, prior = self.rng, self.prior
        if self.real_share and rng.uniform() < self.real_share:
            return self.real_item()
        if self.weights is None:
            subj = self.bank[int(rng.integers(len(self.bank)))]
        else:
            subj = self.bank[int(rng.choice(len(self.bank), p=self.weights))]
        lv = int(rng.integers(subj["classes"].shape[0]))
        classes, tissue, ff = subj["classes"][lv], subj["tissue"][lv], subj["ff"][lv]
        size = (self.patch[0] * self.factor, self.patch[1] * self.factor)
        fg = np.argwhere(classes[1] > 0)
        focus = np.argwhere(classes[1] == self.focus_class) if self.focus_class is not None else fg[:0]
        if len(focus) and rng.uniform() < self.focus_fraction:
            centre = tuple(int(c) for c in focus[int(rng.integers(len(focus)))])
        elif len(fg) and rng.uniform() < 0.85:
            centre = tuple(int(c) for c in fg[int(rng.integers(len(fg)))])
        else:
            centre = (int(rng.integers(classes.shape[1])), int(rng.integers(classes.shape[2])))
        classes, tissue, ff = (self._crop(a, centre, size) for a in (classes, tissue, ff))
        if prior.p_border_shift > 0 and rng.uniform() < prior.p_border_shift:
            shift_borders(classes, tissue, self.muscle_classes, self.roles.get("septa"), self.roles["muscle"], rng,
                          tuple(mm / self.fine_mm for mm in prior.border_shift_mm), int(rng.integers(1, 4)))
        mean = sample_intensities(self.n_tissues, self.roles, rng, prior, self.tied)
        thin = bool((tissue[0] == tissue[2]).all())
        subs = [1] if thin else [0, 1, 2]
        img = np.mean([paint(tissue[k], classes[k], ff[k].astype(np.float32) / 250.0, mean, self.roles,
                             self.muscle_classes, rng, prior) for k in subs], axis=0).astype(np.float32)
        if prior.p_clutter > 0 and rng.uniform() < prior.p_clutter:
            img = clutter(img, classes[1], tissue[1], self.roles["background"], rng)
        res = rng.uniform(*prior.resolution_mm, size=2)
        target = self.fine_mm * self.factor
        psf = tuple(float(np.sqrt(max(r**2 - target**2 * 0.25, 0.0)) / 2.355 / self.fine_mm) for r in res)
        img, lab = blur_and_resample(img, classes[1], self.factor, psf)
        img = np.clip(img, 0, None)
        if rng.uniform() < prior.p_ghost:
            img = ghost(img, rng, int(rng.integers(2)))
        if rng.uniform() < prior.p_wrap:
            img = wrap(img, rng, int(rng.integers(2)))
        if rng.uniform() < prior.p_fov_cut:
            img, lab = fov_cut(img, lab, rng)
        return img, lab

    def real_item(self) -> tuple[np.ndarray, np.ndarray]:
        """A patch of one of the real annotated slices, centred on a random foreground pixel."""
        img, lab = self.real[int(self.rng.integers(len(self.real)))]
        fg = np.argwhere(lab > 0)
        centre = tuple(int(c) for c in fg[int(self.rng.integers(len(fg)))]) if len(fg) else (
            lab.shape[0] // 2, lab.shape[1] // 2)
        return (self._crop(img.astype(np.float32), centre, self.patch),
                self._crop(lab.astype(np.int64), centre, self.patch))

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` items with random geometry and acquisition, normalised like the bundle's inputs."""
        items = [self.item() for _ in range(n)]
        img = torch.from_numpy(np.stack([i for i, _ in items])[:, None])
        lab = torch.from_numpy(np.stack([lb for _, lb in items])[:, None].astype(np.float32))
        img, lab = random_geometry(img, lab, self.rng, mirror_rows=self.mirror[0], mirror_columns=self.mirror[1])
        img = random_acquisition(img, self.rng, noise_sd=self.prior.noise_sd)
        return normalise_batch(img), lab.round().long()


class SynthStream(torch.utils.data.IterableDataset):
    """Endless random-contrast batches for a :class:`torch.utils.data.DataLoader` with worker processes (use
    ``batch_size=None``): each worker builds its own sampler with ``make_sampler(seed)`` and draws
    ``batch_size`` items at a time. Worker w gets the seed ``[seed, w + 1]``, so no two workers draw the same
    stream, and a run with the same number of workers draws the same batches in the same order (the loader takes
    the workers' batches in turn)."""

    def __init__(self, make_sampler: Callable[[list[int]], SynthSampler], batch_size: int, seed: int):
        super().__init__()
        self.make_sampler = make_sampler
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        sampler = self.make_sampler([self.seed, (0 if info is None else info.id) + 1])
        while True:
            yield sampler.batch(self.batch_size)
