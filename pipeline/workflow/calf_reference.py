"""Bank subjects for contrast-randomised calf training (:mod:`pipeline.workflow.calf_synthseg`) from a reference
annotation of a real calf MRI, so that the network also learns from real muscle shapes and real septa.

The annotation is a label map on the grid of the source images (side-less class ids of the calf registry, RAS
array axes, nonzero only on annotated axial slices; both legs of a slice may be annotated). Each annotated
(leg, slice) becomes one bank subject of one level: the leg's labelled voxels on that slice, cropped with a margin,
resampled to the bank's square grid (classes nearest, images linear) and given tissue ids
(:data:`pipeline.synth.calf.TISSUE_IDS`) and a fat fraction from the classes and the images:

* muscle: tissue ``muscle`` with a small constant fat fraction (the images' fat fraction in muscle is not reliable
  enough), except intramuscular fat and septa (voxels markedly brighter than their muscle's median in-phase, or
  much darker in opposed phase relative to in phase than their muscle is) and a one-voxel line on every border
  between two muscles: tissue ``fascia`` (the septa that the sampler paints with its own random intensity);
* subcutaneous fat: tissue ``subcutaneous_fat``, the outermost ~1 mm of the leg ``skin`` (class unchanged);
* tibia and fibula: ``cortex`` where darker than a share of the slice's 99.5th in-phase percentile, else ``marrow``;
* background inside the leg's outline (not annotated): ``vessel`` for small bright blobs, else
  ``subcutaneous_fat``; outside it, and anywhere on the other side, ``background``.

The patient's orientation is kept (a leg is not mirrored): the sampler mirrors left-right itself. A voxel's side
is the patient side of its world x relative to the midline between the annotated legs (RAS+: +x is the patient's
right; :func:`pipeline.core.geometry.side_of_world_x`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from pipeline.core.geometry import SIDES, Side
from pipeline.core.volume import Volume

MARGIN_MM = 15.0  # crop margin around the leg's labelled voxels
SKIN_MM = 1.0  # outermost subcutaneous fat that becomes skin
MUSCLE_FF = 0.03  # fat fraction of muscle tissue (constant: the images' muscle fat fraction is not reliable)
SEPTUM_FF = 0.9  # of intramuscular fat, septa and muscle borders (the sampler randomises their intensity itself)
FAT_FF = 0.95  # of subcutaneous fat (and unannotated fat inside the leg)
MARROW_FF = 0.9
SKIN_FF = 0.25  # as the phantom's skin (pipeline.synth.physics.TISSUES)
BRIGHT_FACTOR = 1.3  # in-phase above this multiple of the muscle's median: intramuscular fat or a vessel
# Opposed phase over in phase below this share of the muscle's median ratio: a voxel holding both water and fat
# (septum). Relative to the muscle's own ratio because the opposed-phase image of a scan may be darker overall
# (earlier or later echo, T2* decay): in the reference study muscle has OP/IP 0.65-0.85 and an absolute 0.6 marks
# a third of every muscle.
OP_IP_RATIO = 0.6
CORTEX_FACTOR = 0.35  # bone voxels darker than this share of the slice's 99.5th percentile in-phase: cortex
VESSEL_MAX_MM2 = 30.0  # largest unannotated blob inside the leg still taken for a vessel


@dataclass(frozen=True)
class LegSlice:
    """One annotated leg on one slice, resampled to a square grid: its side, the slice
    index, the classes (of this leg only), the in-phase and (optionally) opposed-phase images, and the 99.5th
    percentile of the whole in-phase source slice."""

    side: Side
    z: int
    classes: np.ndarray
    inphase: np.ndarray
    opposed: np.ndarray | None
    p995: float


def _class_ids() -> dict[str, int]:
    from pipeline.core.labels import registry

    reg = registry("calf")
    return {name: reg.class_id(name) for name in reg.classes}


def _muscle_ids() -> list[int]:
    from pipeline.synth.calf import MUSCLES

    ids = _class_ids()
    return [ids[m] for m in MUSCLES]


def world_x(volume: Volume, z: int) -> np.ndarray:
    """World x (mm, RAS) of every voxel of axial slice ``z`` of ``volume`` (shape X, Y)."""
    i, j = np.meshgrid(np.arange(volume.shape[0]), np.arange(volume.shape[1]), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), np.full(i.size, z)], axis=1)
    return volume.voxel_to_world(ijk)[:, 0].reshape(i.shape)


def midline_x(labels: Volume) -> float:
    """World x (mm) halfway between the outermost labelled voxels of ``labels`` (the annotation holds both legs)."""
    arr = np.asarray(labels.array)
    xs = [world_x(labels, int(z))[arr[:, :, z] > 0] for z in np.flatnonzero(arr.any(axis=(0, 1)))]
    x = np.concatenate(xs) if xs else np.zeros(0)
    if x.size == 0:
        raise ValueError("the annotation holds no labelled voxel")
    return 0.5 * (float(x.min()) + float(x.max()))


def side_mask(volume: Volume, z: int, side: Side, midline: float) -> np.ndarray:
    """Voxels of slice ``z`` on the patient's ``side`` of the world-x ``midline`` (RAS+: the right has the larger x,
    as :func:`pipeline.core.geometry.side_of_world_x`)."""
    x = world_x(volume, z)
    return x > midline if side == "right" else x < midline


def annotated_legs(labels: Volume, sides: tuple[Side, ...] = SIDES) -> list[tuple[Side, int]]:
    """(side, slice index) of every axial slice of ``labels`` with labelled voxels on that side
    (:func:`side_mask`), for ``sides``, sorted by side then slice."""
    arr = np.asarray(labels.array)
    midline = midline_x(labels)
    found = []
    for side in sides:
        for z in np.flatnonzero(arr.any(axis=(0, 1))):
            if (arr[:, :, z][side_mask(labels, int(z), side, midline)] > 0).any():
                found.append((side, int(z)))
    return found


def level_positions(zs: list[int]) -> dict[int, float]:
    """The level ``t`` of each slice index: its position within the annotated range, 0 at the most proximal slice
    (highest z in RAS, towards the knee, as the phantom's t) and 1 at the most distal; 0.5 for a single slice.

    >>> level_positions([35, 45, 65])
    {35: 1.0, 45: 0.6666666666666666, 65: 0.0}
    """
    lo, hi = min(zs), max(zs)
    return {z: (hi - z) / (hi - lo) if hi > lo else 0.5 for z in zs}


def crop_grid(mask: np.ndarray, voxel_mm: tuple[float, float], spacing_mm: float, margin_mm: float = MARGIN_MM
              ) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates (two 1-D arrays, along each array axis of the source) of a square grid of ``spacing_mm``
    covering the box of ``mask`` widened by ``margin_mm``.

    >>> gi, gj = crop_grid(np.pad(np.ones((2, 1), bool), 3), (1.0, 1.0), 0.5, margin_mm=1.0)
    >>> gi.tolist(), gj.tolist()
    ([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0], [2.0, 2.5, 3.0, 3.5, 4.0])
    """
    idx = np.argwhere(mask)
    axes = []
    for a in range(2):
        lo = idx[:, a].min() - margin_mm / voxel_mm[a]
        hi = idx[:, a].max() + margin_mm / voxel_mm[a]
        step = spacing_mm / voxel_mm[a]
        axes.append(lo + step * np.arange(int(np.floor((hi - lo) / step + 1e-6)) + 1))
    return axes[0], axes[1]


def resample(slice2d: np.ndarray, grid: tuple[np.ndarray, np.ndarray], order: int) -> np.ndarray:
    """``slice2d`` at the voxel coordinates of ``grid`` (outer product of the two axes); ``order`` 0 nearest
    (labels), 1 linear (images); zero outside."""
    gi, gj = np.meshgrid(grid[0], grid[1], indexing="ij")
    return ndi.map_coordinates(np.asarray(slice2d, np.float32 if order else slice2d.dtype), [gi, gj],
                               order=order, mode="constant", cval=0)


def leg_slice(labels: Volume, images: list[Volume], side: Side, z: int, spacing_mm: float, midline: float
              ) -> LegSlice:
    """The leg on ``side`` of slice ``z``: its labelled voxels (the other side's dropped), cropped and resampled."""
    lab = np.asarray(labels.array[:, :, z])
    lab = np.where(side_mask(labels, z, side, midline), lab, 0).astype(np.uint8)
    voxel_mm = (float(labels.spacing_mm[0]), float(labels.spacing_mm[1]))
    grid = crop_grid(lab > 0, voxel_mm, spacing_mm)
    ip = np.asarray(images[0].array[:, :, z], np.float32)
    opposed = resample(np.asarray(images[1].array[:, :, z]), grid, 1) if len(images) > 1 else None
    return LegSlice(side, z, resample(lab, grid, 0).astype(np.uint8), resample(ip, grid, 1), opposed,
                    float(np.percentile(ip, 99.5)))


def leg_outline(classes: np.ndarray) -> np.ndarray:
    """The leg: its labelled voxels with every enclosed hole filled."""
    return ndi.binary_fill_holes(classes > 0)


def muscle_borders(classes: np.ndarray, muscle_ids: list[int]) -> np.ndarray:
    """A one-voxel line on every border between two different muscles: of each pair of neighbours (along either
    axis) in different muscles, the first one.

    >>> c = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    >>> muscle_borders(c, [1, 2]).astype(int).tolist()
    [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    """
    muscle = np.isin(classes, muscle_ids)
    out = np.zeros(classes.shape, bool)
    for axis in range(2):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a_, b_ = tuple(a), tuple(b)
        out[a_] |= muscle[a_] & muscle[b_] & (classes[a_] != classes[b_])
    return out


def intramuscular_fat(classes: np.ndarray, inphase: np.ndarray, opposed: np.ndarray | None,
                      muscle_ids: list[int]) -> np.ndarray:
    """Voxels of each muscle markedly brighter than its median in phase (``BRIGHT_FACTOR``), or, with an
    opposed-phase image, whose OP/IP ratio is below ``OP_IP_RATIO`` times the muscle's median ratio (water and
    fat in one voxel cancel in opposed phase): intramuscular fat and septa."""
    out = np.zeros(classes.shape, bool)
    floor = max(float(np.percentile(inphase, 99.5)) * 1e-3, 1e-6)
    ratio = opposed / np.maximum(inphase, floor) if opposed is not None else None
    for c in muscle_ids:
        m = classes == c
        if not m.any():
            continue
        fat = inphase > BRIGHT_FACTOR * np.median(inphase[m])
        if ratio is not None:
            fat |= ratio < OP_IP_RATIO * np.median(ratio[m])
        out |= m & fat
    return out


def inner_background(classes: np.ndarray, inphase: np.ndarray, leg: np.ndarray, spacing_mm: float,
                     muscle_level: float, tissue_ids: dict[str, int]) -> np.ndarray:
    """Tissue ids of the unannotated voxels inside the leg (0 elsewhere): each connected blob of at most
    ``VESSEL_MAX_MM2`` brighter on average than ``muscle_level`` a ``vessel``, every other one fat."""
    out = np.zeros(classes.shape, np.uint8)
    blobs, n = ndi.label(leg & (classes == 0))
    for k in range(1, n + 1):
        b = blobs == k
        small = b.sum() * spacing_mm**2 <= VESSEL_MAX_MM2
        out[b] = tissue_ids["vessel" if small and inphase[b].mean() > muscle_level else "subcutaneous_fat"]
    return out


def tissue_maps(classes: np.ndarray, inphase: np.ndarray, opposed: np.ndarray | None, spacing_mm: float,
                p995: float) -> tuple[np.ndarray, np.ndarray]:
    """Tissue ids (:data:`pipeline.synth.calf.TISSUE_IDS`) and fat fraction (0-1) of one leg's classes (side-less
    class ids of the calf registry) and images on a square grid of ``spacing_mm``; ``p995`` is the 99.5th
    percentile of the in-phase source slice (the cortex threshold's reference)."""
    from pipeline.synth.calf import TISSUE_IDS as T

    ids = _class_ids()
    muscles = _muscle_ids()
    tissue = np.zeros(classes.shape, np.uint8)
    ff = np.zeros(classes.shape, np.float32)
    muscle = np.isin(classes, muscles)
    tissue[muscle], ff[muscle] = T["muscle"], MUSCLE_FF
    septa = muscle & (intramuscular_fat(classes, inphase, opposed, muscles) | muscle_borders(classes, muscles))
    tissue[septa], ff[septa] = T["fascia"], SEPTUM_FF
    leg = leg_outline(classes)
    fat = classes == ids["subcutaneous_fat"]
    tissue[fat], ff[fat] = T["subcutaneous_fat"], FAT_FF
    skin = fat & (ndi.distance_transform_edt(leg) * spacing_mm <= SKIN_MM)
    tissue[skin], ff[skin] = T["skin"], SKIN_FF
    bone = np.isin(classes, [ids["tibia"], ids["fibula"]])
    cortex = bone & (inphase < CORTEX_FACTOR * p995)
    tissue[bone & ~cortex], ff[bone & ~cortex] = T["marrow"], MARROW_FF
    tissue[cortex], ff[cortex] = T["cortex"], 0.0
    level = float(np.median(inphase[muscle])) if muscle.any() else 0.0
    inner = inner_background(classes, inphase, leg, spacing_mm, level, T)
    tissue[inner > 0] = inner[inner > 0]
    ff[inner == T["subcutaneous_fat"]] = FAT_FF
    return tissue, ff


def bank_subject_of(leg: LegSlice, t: float, spacing_mm: float) -> dict[str, np.ndarray]:
    """The bank subject (one level, three equal sub-slices; :func:`pipeline.workflow.calf_synthseg.bank_subject`)
    of one leg slice at level ``t``, with its ``side`` and source ``slice_index``."""
    tissue, ff = tissue_maps(leg.classes, leg.inphase, leg.opposed, spacing_mm, leg.p995)
    ff8 = np.round(np.clip(ff, 0, 1) * 250).astype(np.uint8)
    return {"classes": np.repeat(leg.classes[None, None], 3, axis=1),
            "tissue": np.repeat(tissue[None, None], 3, axis=1),
            "ff": np.repeat(ff8[None, None], 3, axis=1),
            "t": np.array([t], np.float32), "spacing_mm": np.float32(spacing_mm),
            "side": np.array(leg.side), "slice_index": np.int32(leg.z)}


def reference_bank_subjects(labels: Path, images: list[Path], spacing_mm: float = 0.625,
                            sides: tuple[Side, ...] = SIDES) -> list[dict[str, np.ndarray]]:
    """One bank subject per annotated (leg, slice) of the reference annotation ``labels`` on ``sides``, in the order of :func:`annotated_legs`. ``images``: the in-phase image, then optionally the
    opposed-phase one, on the annotation's grid (RAS). A subject's ``t`` is the slice's position within the
    range of annotated slices of both sides (:func:`level_positions`; the same whatever ``sides``); ``side`` and
    ``slice_index`` name its source."""
    from pipeline.io.nifti import load_volume

    if not 1 <= len(images) <= 2:
        raise ValueError(f"give the in-phase image and optionally the opposed-phase one, not {len(images)} images")
    lab = load_volume(labels)
    if lab.axcodes != ("R", "A", "S"):
        raise ValueError(f"{labels}: the annotation must have RAS array axes, not {''.join(lab.axcodes)}")
    vols = [load_volume(p) for p in images]
    for p, v in zip(images, vols):
        if not v.same_grid(lab):
            raise ValueError(f"{p} is not on the grid of the annotation {labels}")
    legs = annotated_legs(lab)
    t = level_positions([z for _, z in legs])
    midline = midline_x(lab)
    return [bank_subject_of(leg_slice(lab, vols, side, z, spacing_mm, midline), t[z], spacing_mm)
            for side, z in legs if side in sides]


def reference_images(labels: Path, images: list[Path], target_mm: float, sides: tuple[Side, ...] = SIDES
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The annotated legs as training or validation pairs with their real signal: for every annotated (leg, slice)
    on ``sides`` and every image of ``images`` (each alone, e.g. each echo of a multi-echo series), the image and
    the classes cropped around the leg (:data:`MARGIN_MM`) on a square grid of ``target_mm`` (the bundle's
    in-plane spacing): (image float32 (H, W), classes int64 (H, W)); the image divided by its 99.5th percentile."""
    from pipeline.io.nifti import load_volume

    lab = load_volume(labels)
    vols = [load_volume(p) for p in images]
    for p, v in zip(images, vols):
        if not v.same_grid(lab):
            raise ValueError(f"{p} is not on the grid of the annotation {labels}")
    midline = midline_x(lab)
    out = []
    for side, z in annotated_legs(lab, sides):
        for vol in vols:
            leg = leg_slice(lab, [vol], side, z, target_mm, midline)
            img = leg.inphase / max(float(np.percentile(leg.inphase, 99.5)), 1e-6)
            out.append((img.astype(np.float32), leg.classes.astype(np.int64)))
    return out
