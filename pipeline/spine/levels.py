"""Level labelling of a sagittal lumbar class map: count from the sacrum upwards, or from a reader's anchor.

The lowest disc above the sacrum is L5-S1, the next L4-L5, and so on up to L1-L2; the vertebral body above disc
L5-S1 is L5, and so on. Discs are the 3-D connected components of the network's ``disc`` class; vertebral bodies
are the pieces of bone (``vertebral_body`` or ``sacrum`` class) cut apart at every disc's plane, of which only those
at the bottom of the stack, mostly of sacrum class and with no disc below them, are the sacrum (a network that has
not seen an image's contrast may call lumbar vertebrae 'sacrum'; the sacrum lies below every lumbar vertebra and
disc). Both are ordered by height. Components smaller than ``spine.min_disc_ml`` /
``spine.min_vertebral_body_ml`` (the sacrum: ``spine.min_sacrum_ml``), or than
``spine.min_component_fraction_of_largest`` of the largest component of their class (configs/default.yaml; for
discs, of the largest disc in the gaps of the vertebral column), are segmentation debris and never count as a level.
A count other than five lumbar discs above the sacrum is flagged as a possible transitional vertebra and lowers the
confidence.

Without a sacrum in the field of view no level is named (flagged, not guessed): discs and bodies are still found,
numbered from the bottom of the field of view (``disc_1``, ``vertebra_1``) and measured under those names. A reader
who knows one vertebra's level gives it as an :class:`Anchor` (``--anchor-level L3``: the lowest body found is L3;
``vertebra_2=L3``); the other bodies are then counted up and down from it, and each disc is named after the body
above it (the L4-L5 disc lies under L4), so a missed disc does not shift any name. A spacing between neighbouring
bodies much larger than the others (``spine.body_gap_ratio``) is flagged: a body may be missing there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.core.config import load_config
from pipeline.core.labels import Registry
from pipeline.core.volume import Volume

DISC_LEVELS = ("L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2")  # from the sacrum upwards
BODY_LEVELS = ("L5", "L4", "L3", "L2", "L1")


@dataclass
class Disc:
    level: str
    mask: np.ndarray
    center_ras: np.ndarray
    normal_ras: np.ndarray  # unit, pointing superiorly (cranially)


@dataclass
class LevelResult:
    discs: dict[str, Disc] = field(default_factory=dict)
    labels: Volume | None = None
    method: str = "count from the sacrum upwards (lowest disc above the sacrum = L5-S1)"
    confidence: float = 0.0
    flags: list[str] = field(default_factory=list)
    #: discs the network did not label, placed in the gap between two neighbouring vertebral bodies
    inferred: list[str] = field(default_factory=list)


def components(mask: np.ndarray, min_voxels: float, min_fraction: float = 0.0) -> list[np.ndarray]:
    """3-D connected components of ``mask`` with at least ``min_voxels`` voxels and at least ``min_fraction`` of the
    largest component's size.

    >>> m = np.zeros((1, 12, 1), bool); m[0, :6] = True; m[0, 8:9] = True
    >>> [int(c.sum()) for c in components(m, 1)], [int(c.sum()) for c in components(m, 1, 0.25)]
    ([6, 1], [6])
    """
    lab, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    floor = max(float(min_voxels), min_fraction * float(sizes.max()))
    return [lab == i + 1 for i, s in enumerate(sizes) if s >= floor]


def _ball(radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Ellipsoidal structuring element of ``radius_mm`` on a grid of ``spacing`` (mm per axis)."""
    r = [max(0, int(np.floor(radius_mm / sp))) for sp in spacing]
    grid = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    return sum((g * sp / radius_mm) ** 2 for g, sp in zip(grid, spacing)) <= 1.0


def split_touching(mask: np.ndarray, spacing: tuple[float, ...], erode_mm: float) -> np.ndarray:
    """Label image of ``mask`` in which objects joined by bridges thinner than ``2 erode_mm`` are apart.

    The cores left by an erosion of ``erode_mm`` are the seeds; every voxel of ``mask`` within ``1.5 erode_mm`` of
    a seed of its own connected component goes to the nearest one (a marker-based split as in watershed
    segmentation, with the Euclidean distance in mm): thin bridges and strands farther out are dropped. A component
    with no core keeps its own label. Objects that do not touch come out as their components.

    >>> m = np.zeros((1, 30, 9), bool); m[0, 1:12, 1:8] = m[0, 18:29, 1:8] = True; m[0, 12:18, 4] = True
    >>> sorted(np.bincount(split_touching(m, (10.0, 1.0, 1.0), 2.0).ravel())[1:].tolist())
    [79, 79]
    """
    lab, n = ndimage.label(mask)
    if n == 0 or erode_mm <= 0:
        return lab
    seeds, n_seeds = ndimage.label(ndimage.binary_erosion(mask, structure=_ball(erode_mm, spacing)))
    if n_seeds == 0:
        return lab
    dist, idx = ndimage.distance_transform_edt(seeds == 0, sampling=spacing, return_indices=True)
    nearest, nearest_comp = seeds[tuple(idx)], lab[tuple(idx)]
    out = np.where(mask & (nearest_comp == lab) & (dist <= 1.5 * erode_mm), nearest, 0)
    # components without a core of their own keep their label, numbered after the seeds
    cored = np.zeros(n + 1, bool)
    cored[np.unique(lab[seeds > 0])] = True
    orphan = mask & ~cored[lab]
    out[orphan] = n_seeds + lab[orphan]
    return out


def _split_components(mask: np.ndarray, spacing: tuple[float, ...], erode_mm: float, min_voxels: float,
                      min_fraction: float) -> list[np.ndarray]:
    """The objects of :func:`split_touching` with at least ``min_voxels`` voxels and ``min_fraction`` of the
    largest object's size."""
    lab = split_touching(mask, spacing, erode_mm)
    n = int(lab.max())
    if n == 0:
        return []
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    floor = max(float(min_voxels), min_fraction * float(sizes.max()))
    return [lab == i + 1 for i, s in enumerate(sizes) if s >= floor]


def _merge_close(discs: list[np.ndarray], centres: list[np.ndarray], merge_mm: float) -> list[np.ndarray]:
    """Disc pieces whose centres lie closer than ``merge_mm`` joined into one disc (a disc cut in two by a band of
    another class is still one level); pieces are taken largest first."""
    order = sorted(range(len(discs)), key=lambda i: -int(discs[i].sum()))
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    for i in order:
        for g, (m, c) in enumerate(groups):
            if np.linalg.norm(centres[i] - c) < merge_mm:
                groups[g] = (m | discs[i], c)
                break
        else:
            groups.append((discs[i].copy(), centres[i]))
    return [m for m, _ in groups]


def disc_plane(volume: Volume, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and unit normal (smallest principal axis, oriented superiorly) of a disc mask, in world RAS."""
    pts = volume.voxel_to_world(np.argwhere(mask))
    c = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
    n = vt[-1]
    return c, (n if n[2] >= 0 else -n)


@dataclass(frozen=True)
class Anchor:
    """A reader's naming of one vertebral body: the ``vertebra``-th body from the bottom of the field of view (1 =
    the lowest body found, as numbered ``vertebra_1`` on the sagittal picture) is lumbar body ``level``."""

    level: str
    vertebra: int = 1

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``L3`` (the lowest vertebral body found is L3) or ``vertebra_2=L3``.

        >>> Anchor.parse("L3"), Anchor.parse("vertebra_2=L4")
        (Anchor(level='L3', vertebra=1), Anchor(level='L4', vertebra=2))
        """
        m = ANCHOR_PATTERN.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"'{text}' is not a vertebral level anchor: give L1 .. L5 (the lowest vertebral body "
                             "found) or vertebra_N=L1 .. L5 (the N-th body from the bottom, as numbered on the "
                             "sagittal QA picture)")
        return cls(m.group("level"), int(m.group("n") or 1))

    def __str__(self) -> str:
        return f"vertebra_{self.vertebra}={self.level}"


ANCHOR_PATTERN = re.compile(r"(?:vertebra_(?P<n>[1-9][0-9]?)=)?(?P<level>L[1-5])")


def disc_label_name(level: str) -> str:
    """Registry label of a disc level: ``L4-L5`` -> ``disc_L4_L5``; a positional ``disc_3`` is its own label."""
    return level if level.startswith("disc_") else f"disc_{level.replace('-', '_')}"


def disc_levels(reg: Registry) -> list[str]:
    """Every disc level a label map may hold, caudal first: L5-S1 .. L1-L2, then disc_1 .. disc_N."""
    positional = [lab.level for lab in reg.labels if lab.structure == "disc" and lab.level
                  and lab.level.startswith("disc_")]
    return [*DISC_LEVELS, *sorted(positional, key=lambda lv: int(lv.split("_")[1]))]


@dataclass
class _Found:
    """Discs (centre, normal, mask) and vertebral bodies (centre, mask) of a class map, each ordered upwards."""

    discs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    bodies: list[tuple[np.ndarray, np.ndarray]]
    volume: Volume
    inferred: list[bool] = field(default_factory=list)  # per disc: placed in a gap, not labelled by the network


#: the classes the level counter reads (:func:`_find`): the bones and the discs
LEVEL_CLASSES = ("vertebral_body", "sacrum", "disc")


def with_level_classes(canal: Volume, level: Volume, reg: Registry) -> Volume:
    """The class map the levels are counted on when a second network (``segment.spine_level_bundle``) finds the
    bones and discs: the vertebral body, sacrum and disc voxels of ``level`` wherever ``canal`` has background, bone
    or disc, and every other class of ``canal`` (dural sac, epidural fat, ligamentum flavum, posterior elements,
    nerve roots) where ``canal`` has it. Bone and disc voxels of ``canal`` that ``level`` does not confirm become
    background. Both maps lie on one grid.

    >>> from pipeline.core.labels import registry
    >>> reg = registry("spine")
    >>> body, disc, sac = (reg.class_id(n) for n in ("vertebral_body", "disc", "dural_sac"))
    >>> canal = Volume(np.array([[[body, body, sac, 0]]], np.uint8), np.eye(4))
    >>> level = Volume(np.array([[[disc, 0, disc, body]]], np.uint8), np.eye(4))
    >>> np.asarray(with_level_classes(canal, level, reg).array).ravel().tolist() == [disc, 0, sac, body]
    True
    """
    a, b = np.asarray(canal.array), np.asarray(level.array)
    if a.shape != b.shape:
        raise ValueError(f"the level network's class map {b.shape} is not on the canal network's grid {a.shape}")
    ids = [reg.class_id(n) for n in LEVEL_CLASSES]
    out = np.where(np.isin(a, ids), 0, a).astype(a.dtype)
    take = np.isin(b, ids) & (out == 0)
    out[take] = b[take]
    return canal.with_array(out)


def _find(classes: Volume, reg: Registry, cfg: Mapping[str, Any]) -> _Found:
    arr = np.asarray(classes.array)
    vv = classes.voxel_volume_mm3
    frac = float(cfg["min_component_fraction_of_largest"])
    spacing = tuple(float(x) for x in classes.spacing_mm)
    # discs: the fraction-of-largest rule is applied among the discs of the column (:func:`_discs_between_bodies`),
    # so that a large false disc in the abdomen does not raise the bar for the real ones
    discs = components(arr == reg.class_id("disc"), 1000.0 * cfg["min_disc_ml"] / vv)
    discs = _merge_close(discs, [classes.voxel_to_world(np.argwhere(m)).mean(0) for m in discs], cfg["disc_merge_mm"])
    # order along the spine by height (world S): the lumbar spine rises monotonically, lordosis or not
    disc_info = sorted(((*disc_plane(classes, m), m) for m in discs), key=lambda t: t[0][2])
    min_body = 1000.0 * cfg["min_vertebral_body_ml"] / vv
    bone = _split_components((arr == reg.class_id("vertebral_body")) | (arr == reg.class_id("sacrum")), spacing,
                             cfg["vertebral_body_split_mm"], min_body, 0.0)
    bone = cut_at_discs(classes, bone, disc_info, min_body, float(cfg["disc_axis_max_mm"]),
                        float(cfg["body_cut_reach_mm"]), float(cfg["body_cut_min_disc_extent"]))
    bodies = _above_sacrum(classes, bone, arr == reg.class_id("sacrum"), _major_disc_centres(disc_info, frac),
                           float(cfg["disc_axis_max_mm"]))
    floor = frac * max((int(m.sum()) for m in bodies), default=0)
    bodies = [m for m in bodies if int(m.sum()) >= floor]
    body_info = sorted(((classes.voxel_to_world(np.argwhere(m)).mean(0), m) for m in bodies), key=lambda t: t[0][2])
    return _Found(disc_info, _column(body_info, float(cfg["body_column_max_mm"])), classes)


def cut_at_discs(volume: Volume, pieces: list[np.ndarray], discs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 min_voxels: float, axis_mm: float, reach_mm: float, min_extent: float = 0.5) -> list[np.ndarray]:
    """Bone pieces cut at the plane of every disc that runs through them: a disc separates two vertebrae, so a piece
    whose centre line (through its centroid along the disc's normal) passes within ``axis_mm`` of the disc's centre
    and that has at least ``min_voxels`` on each side of the disc's plane, counted within ``axis_mm`` of the disc's
    centre across the spine and ``reach_mm`` along it, is two vertebral bodies that the network joined (through
    bridges of bone class round the disc, thicker than :func:`split_touching` parts). A disc cuts only where it spans
    at least ``min_extent`` of the piece's width at its plane (the 90th percentile of the disc voxels' distances from
    its centre within its plane against the 80th of the piece's voxels counted): a fleck of disc class inside a body
    cuts nothing. Each disc is a (centre, unit normal, mask) in world RAS.

    >>> from pipeline.core.volume import Volume
    >>> vol = Volume(np.zeros((1, 1, 90)), np.eye(4))
    >>> stack = np.zeros((1, 1, 90), bool); stack[0, 0, 5:85] = True
    >>> disc, up = np.zeros_like(stack), np.array([0.0, 0.0, 1.0]); disc[0, 0, 45] = True
    >>> [int(m.sum()) for m in cut_at_discs(vol, [stack], [(np.array([0.0, 0.0, 45.0]), up, disc)], 10, 20.0, 40.0)]
    [40, 40]
    >>> [int(m.sum()) for m in cut_at_discs(vol, [stack], [(np.array([0.0, 0.0, 80.0]), up, disc)], 10, 20.0, 40.0)]
    [80]
    """
    out = list(pieces)
    for c, n, disc in discs:
        rel_d = volume.voxel_to_world(np.argwhere(disc)) - c
        disc_r = float(np.percentile(np.linalg.norm(rel_d - np.outer(rel_d @ n, n), axis=1), 90))
        nxt: list[np.ndarray] = []
        for m in out:
            idx = np.argwhere(m)
            rel = volume.voxel_to_world(idx) - c
            s = rel @ n
            r = np.linalg.norm(rel - np.outer(s, n), axis=1)
            off_axis = float(np.linalg.norm(rel.mean(0) - (rel.mean(0) @ n) * n))  # disc centre from the piece's axis
            near = (r <= axis_mm) & (np.abs(s) <= reach_mm)
            if off_axis > axis_mm or min(int((near & (s > 0)).sum()), int((near & (s < 0)).sum())) < min_voxels or \
                    disc_r < min_extent * float(np.percentile(r[near], 80)):
                nxt.append(m)
                continue
            for side in (s >= 0, s < 0):
                part = np.zeros(m.shape, bool)
                part[tuple(idx[side].T)] = True
                nxt.append(part)
        out = nxt
    return out


def _major_disc_centres(discs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], frac: float) -> list[np.ndarray]:
    """Centres of the discs of at least ``frac`` of the largest disc's size: whether a disc lies under a piece of
    bone is judged among these, so that a fleck of disc class in or under the sacrum (a network's debris, or a
    rudimentary S1-S2 disc) does not make the sacrum a vertebra."""
    largest = max((int(m.sum()) for *_, m in discs), default=0)
    return [c for c, _, m in discs if int(m.sum()) >= frac * largest]


def _disc_below(centre: np.ndarray, disc_centres: list[np.ndarray], axis_mm: float) -> bool:
    """Whether a disc centre lies lower than ``centre`` (world RAS) and within ``axis_mm`` of it across the spine."""
    return any(d[2] < centre[2] and float(np.linalg.norm(d[:2] - centre[:2])) <= axis_mm for d in disc_centres)


def _above_sacrum(volume: Volume, pieces: list[np.ndarray], sacrum_class: np.ndarray,
                  disc_centres: list[np.ndarray], axis_mm: float) -> list[np.ndarray]:
    """The vertebral bodies among pieces of bone (vertebral body or sacrum class): all but the pieces at the bottom
    of the stack whose voxels are mostly of sacrum class and under which no disc lies (no disc centre lower than the
    piece's centre within ``axis_mm`` of it across the spine). A piece of sacrum class above a piece of body class,
    or above a disc, is a vertebral body whatever the network called it: the sacrum lies below every lumbar
    vertebra and disc.

    >>> from pipeline.core.volume import Volume
    >>> vol, sac = Volume(np.zeros((1, 1, 90)), np.eye(4)), np.zeros((1, 1, 90), bool)
    >>> low, high = np.zeros_like(sac), np.zeros_like(sac); low[0, 0, 5:30] = True; high[0, 0, 40:70] = True
    >>> sac[0, 0, 5:30] = sac[0, 0, 40:70] = True  # both pieces of sacrum class
    >>> [int(m.sum()) for m in _above_sacrum(vol, [high, low], sac, [np.array([0.0, 0.0, 35.0])], 20.0)]
    [30]
    >>> [int(m.sum()) for m in _above_sacrum(vol, [high, low], sac, [np.array([0.0, 0.0, 2.0])], 20.0)]
    [25, 30]
    """
    order = sorted(((volume.voxel_to_world(np.argwhere(m)).mean(0), m) for m in pieces), key=lambda t: t[0][2])
    k = 0
    while k < len(order) and float(sacrum_class[order[k][1]].mean()) >= 0.5 and \
            not _disc_below(order[k][0], disc_centres, axis_mm):
        k += 1
    return [m for _, m in order[k:]]


def _under_column(classes: Volume, parts: list[np.ndarray], centres: list[np.ndarray], max_mm: float,
                  lowest: int = 3) -> list[np.ndarray]:
    """The sacrum pieces whose centre lies below the lowest vertebral body and within ``max_mm`` of the line through
    the centres of the ``lowest`` bodies carried down (``centres``: the vertebral bodies' centres, world RAS, ordered
    upwards; with two or more bodies, else every piece).

    The line follows the lower lumbar spine, not the whole column: in a lordotic spine the lowest bodies turn
    backwards and the sacrum continues that turn, so a straight line through every body in view (thoracolumbar
    ones included) passes 30-45 mm in front of the sacrum, while a false sacrum in the abdomen or the back muscles
    stays far from either line."""
    if len(centres) < 2:
        return parts
    c = np.array(centres[:max(lowest, 2)])
    kept = []
    for m in parts:
        p = classes.voxel_to_world(np.argwhere(m)).mean(0)
        line = _column_fit(c[:, 2], c[:, :2], at=np.array([p[2]]))[0]
        if p[2] < c[0, 2] and float(np.linalg.norm(p[:2] - line)) <= max_mm:
            kept.append(m)
    return kept


def _column_fit(z: np.ndarray, xy: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
    """Horizontal (x, y) of the straight line through points (z, xy) by least squares, at each z (or at the
    heights ``at``)."""
    a = np.stack([z, np.ones_like(z)], axis=1)
    coef, *_ = np.linalg.lstsq(a, xy, rcond=None)
    return a @ coef if at is None else np.stack([at, np.ones_like(at)], axis=1) @ coef


def _column(bodies: list[tuple[np.ndarray, np.ndarray]], max_mm: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The vertebral bodies that form the spinal column: with three or more, a straight line x(z), y(z) is fitted
    to their centres and the body farthest from it is dropped while that distance exceeds ``max_mm`` (a lordotic
    lumbar spine bows by about 10-25 mm from its chord; pieces of body class in the abdomen or the back lie far
    off it)."""
    kept = list(bodies)
    while len(kept) >= 3:
        c = np.array([b[0] for b in kept])
        off = np.linalg.norm(c[:, :2] - _column_fit(c[:, 2], c[:, :2]), axis=1)
        worst = int(np.argmax(off))
        if off[worst] <= max_mm:
            break
        kept.pop(worst)
    return kept


def _gap_flags(found: _Found, cfg: Mapping[str, Any]) -> list[str]:
    """A flag for every spacing between neighbouring vertebral bodies over ``body_gap_ratio`` times the median
    spacing: a body may be missing there and every number or name above it be off by one."""
    z = [float(c[2]) for c, _ in found.bodies]
    steps = np.diff(z)
    if len(steps) < 2:
        return []
    med = float(np.median(steps))
    return [f"{steps[i]:.0f} mm between the vertebral bodies at {z[i]:.0f} and {z[i + 1]:.0f} mm (median spacing "
            f"{med:.0f} mm): a vertebral body may be missing and every level above it be off by one"
            for i in range(len(steps)) if steps[i] > float(cfg["body_gap_ratio"]) * med]


def _discs_between_bodies(found: _Found, cfg: Mapping[str, Any]) -> _Found:
    """Only the disc pieces that lie in the gap between two neighbouring vertebral bodies (or within one body
    spacing beyond the lowest or highest body), across the spine: centre within ``disc_axis_max_mm`` of the line
    through the two bodies' centres, plane normal within ``disc_max_tilt_deg`` of that line. The pieces of one gap
    are one disc, kept when it holds at least ``min_component_fraction_of_largest`` of the largest such disc.
    Sheets of disc class along the side of the spine (psoas, vessels) are left out."""
    if len(found.bodies) < 2:  # no column to place discs in: the fraction rule among all disc pieces
        sizes = [int(m.sum()) for *_, m in found.discs]
        floor = float(cfg["min_component_fraction_of_largest"]) * max(sizes, default=0)
        return _Found([d for d, n in zip(found.discs, sizes) if n >= floor], found.bodies, found.volume)
    centres = np.array([c for c, _ in found.bodies])
    step = float(np.median(np.diff(centres[:, 2])))
    # each gap: (lower centre, upper centre); one virtual gap below the lowest and above the highest body
    ends = [(centres[0] - (centres[1] - centres[0]), centres[0])] + list(zip(centres[:-1], centres[1:])) + [
        (centres[-1], centres[-1] + (centres[-1] - centres[-2]))]
    cos_max = np.cos(np.radians(float(cfg["disc_max_tilt_deg"])))
    groups: dict[int, list[np.ndarray]] = {}
    for c, n, m in found.discs:
        for g, (lo, hi) in enumerate(ends):
            axis = hi - lo
            t = float((c - lo) @ axis / (axis @ axis))
            off = float(np.linalg.norm(c - (lo + t * axis)))
            along = abs(float(n @ axis)) / float(np.linalg.norm(axis))
            if 0.0 < t < 1.0 and off <= float(cfg["disc_axis_max_mm"]) and along >= cos_max and \
                    abs(float(hi[2] - lo[2])) < 2.5 * abs(step):
                groups.setdefault(g, []).append(m)
                break
    merged = {g: np.logical_or.reduce(ms) for g, ms in groups.items()}
    if merged:  # debris: a gap's disc class much smaller than the largest disc of the column
        floor = float(cfg["min_component_fraction_of_largest"]) * max(int(m.sum()) for m in merged.values())
        merged = {g: m for g, m in merged.items() if int(m.sum()) >= floor}
    discs = {g: (_disc_info(found.volume, m), False) for g, m in merged.items()}
    for g in range(1, len(found.bodies)):  # gaps between two bodies found, at the usual spacing, with no disc
        if g not in discs and abs(float(centres[g, 2] - centres[g - 1, 2])) <= float(cfg["body_gap_ratio"]) * abs(step):
            gap = _gap_disc(found.volume, found.bodies[g - 1], found.bodies[g])
            if gap is not None:
                discs[g] = (gap, True)
    order = sorted(discs)
    return _Found([discs[g][0] for g in order], found.bodies, found.volume, [discs[g][1] for g in order])


def _inferred_flag(res: LevelResult) -> list[str]:
    if not res.inferred:
        return []
    return [f"disc(s) {', '.join(res.inferred)} not labelled by the network: placed in the gap between the "
            "neighbouring vertebral bodies"]


def _gap_disc(volume: Volume, lower: tuple[np.ndarray, np.ndarray], upper: tuple[np.ndarray, np.ndarray]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A disc the network did not label, placed where it must be: between the facing endplates of two neighbouring
    vertebral bodies (the 95th and 5th percentiles of their voxels along the line through their centres), within
    the bodies' radius around that line (80th percentile of their voxels' distances from it), outside both bodies.
    Its normal is that line. None when the bodies leave no gap."""
    (c_lo, m_lo), (c_hi, m_hi) = lower, upper
    u = (c_hi - c_lo) / np.linalg.norm(c_hi - c_lo)
    both = m_lo | m_hi
    idx = np.argwhere(both)
    lo_box, hi_box = idx.min(0), idx.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo_box, hi_box))
    grid = np.argwhere(np.ones(tuple(hi_box - lo_box), bool)) + lo_box
    rel = volume.voxel_to_world(grid) - c_lo
    t = rel @ u
    r = np.linalg.norm(rel - np.outer(t, u), axis=1)
    in_lo, in_hi = m_lo[box].ravel(), m_hi[box].ravel()
    top, bottom = np.percentile(t[in_lo], 95), np.percentile(t[in_hi], 5)
    radius = float(np.percentile(r[in_lo | in_hi], 80))
    sel = (t > top) & (t < bottom) & (r <= radius) & ~in_lo & ~in_hi
    if not sel.any():
        return None
    mask = np.zeros(both.shape, bool)
    mask[tuple(grid[sel].T)] = True
    return volume.voxel_to_world(np.argwhere(mask)).mean(0), u if u[2] >= 0 else -u, mask


def _disc_info(volume: Volume, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (*disc_plane(volume, mask), mask)


def _base_map(arr: np.ndarray, reg: Registry) -> np.ndarray:
    """Output label map holding the level-free structures of a class map."""
    out = np.zeros(arr.shape, np.int16)
    for name in ("dural_sac", "posterior_elements", "ligamentum_flavum", "epidural_fat", "nerve_root"):
        out[arr == reg.class_id(name)] = reg.label_id(name)
    return out


def _positional(found: _Found, reg: Registry, out: np.ndarray, res: LevelResult) -> None:
    """Number discs and bodies from the bottom of the field of view (``disc_1``, ``vertebra_1`` lowest); those
    beyond the registry's positions are left out, flagged."""
    n_disc = sum(1 for lab in reg.labels if lab.structure == "disc" and (lab.level or "").startswith("disc_"))
    n_body = sum(1 for lab in reg.labels if lab.structure == "vertebral_body" and (lab.level or "").startswith("vert"))
    for k, (c, n, m) in enumerate(found.discs[:n_disc], start=1):
        res.discs[f"disc_{k}"] = Disc(f"disc_{k}", m, c, n)
        out[m] = reg.label_id(f"disc_{k}")
        if found.inferred and found.inferred[k - 1]:
            res.inferred.append(f"disc_{k}")
    for k, (_, m) in enumerate(found.bodies[:n_body], start=1):
        out[m] = reg.label_id(f"vertebra_{k}")
    res.flags += _inferred_flag(res)
    if len(found.discs) > n_disc or len(found.bodies) > n_body:
        res.flags.append(f"{len(found.discs)} discs and {len(found.bodies)} vertebral bodies found; only the lowest "
                         f"{n_disc} and {n_body} are numbered")


def _from_anchor(found: _Found, anchor: Anchor, reg: Registry, out: np.ndarray, res: LevelResult) -> bool:
    """Name the bodies counted up and down from the reader's anchor and each disc after the body above it
    (``L4`` above -> ``L4-L5``; ``L5`` above -> ``L5-S1``); what falls outside L1-L5 keeps its position number.
    False (nothing named) when the anchor's vertebra is not among the bodies found."""
    if anchor.vertebra > len(found.bodies):
        return False
    lumbar = int(anchor.level[1])
    body_number: dict[int, int] = {}
    for i, (_, m) in enumerate(found.bodies):
        number = lumbar - (i - (anchor.vertebra - 1))  # upwards: L5, L4, ... L1, then thoracic (not named)
        if 1 <= number <= 5:
            body_number[i] = number
            out[m] = reg.label_id(f"vertebral_body_L{number}")
        elif i < 12:
            out[m] = reg.label_id(f"vertebra_{i + 1}")
    for j, (c, n, m) in enumerate(found.discs):
        above = next((i for i, (cb, _) in enumerate(found.bodies) if cb[2] > c[2]), None)
        number = body_number.get(above) if above is not None else None
        level = (f"L{number}-L{number + 1}" if number < 5 else "L5-S1") if number is not None else f"disc_{j + 1}"
        if level in res.discs or (level.startswith("disc_") and j >= 12):
            continue
        res.discs[level] = Disc(level, m, c, n)
        out[m] = reg.label_id(disc_label_name(level))
        if found.inferred and found.inferred[j]:
            res.inferred.append(level)
    return True


def label_levels(classes: Volume, reg: Registry, cfg: Mapping[str, Any] | None = None,
                 anchor: Anchor | None = None) -> LevelResult:
    """Name discs and vertebral bodies of a sagittal class map and return the level-labelled map.

    With ``anchor`` (the reader's naming of one vertebral body) the levels are named from it; else they are counted
    from the sacrum; without a sacrum in view they are numbered from the bottom of the field of view (``disc_1``,
    ``vertebra_1``), never given a guessed level name. ``cfg`` is the ``spine`` section of the configuration
    (default: configs/default.yaml).
    """
    cfg = load_config("default")["spine"] if cfg is None else cfg
    arr = np.asarray(classes.array)
    vv = classes.voxel_volume_mm3
    out = _base_map(arr, reg)
    found = _find(classes, reg, cfg)
    # sacrum-class voxels of a vertebral body with a disc below it (a vertebra the network called sacrum) are not the
    # sacrum; those of the lowest body with no disc below may be (a sacrum the network called mostly body)
    below = _major_disc_centres(found.discs, float(cfg["min_component_fraction_of_largest"]))
    vertebrae = [(c, m) for i, (c, m) in enumerate(found.bodies)
                 if i > 0 or _disc_below(c, below, float(cfg["disc_axis_max_mm"]))]
    in_bodies = np.logical_or.reduce([m for _, m in vertebrae]) if vertebrae else np.zeros(arr.shape, bool)
    # the sacrum lies below the vertebrae, on the line of the lowest ones; a lowest piece with no disc below it is
    # not one of them (it may be the sacrum itself, which the line must not be drawn through)
    sacrum_parts = _under_column(classes, components((arr == reg.class_id("sacrum")) & ~in_bodies,
                                                      1000.0 * cfg["min_sacrum_ml"] / vv),
                                 [c for c, _ in vertebrae], float(cfg["body_column_max_mm"]),
                                 int(cfg["sacrum_line_bodies"]))
    unused: list[str] = []
    between = _discs_between_bodies(found, cfg)
    if anchor is not None:
        res = _label_from_anchor(classes, reg, cfg, anchor, between, sacrum_parts, out)
        if res is not None:
            return res
        out = _base_map(arr, reg)
        unused = [f"the anchor {anchor} names vertebra_{anchor.vertebra} but {len(found.bodies)} vertebral bodies "
                  "were found: it was not used"]
    if sacrum_parts:
        res = _count_from_sacrum(classes, reg, cfg, between, sacrum_parts, out)
    else:
        res = LevelResult(method=POSITIONAL_METHOD, flags=[NO_SACRUM_FLAG])
        _positional(between, reg, out, res)
        res.flags += _gap_flags(found, cfg)
        res.labels = classes.with_array(out)
    res.flags = unused + res.flags
    return res


POSITIONAL_METHOD = "numbered from the bottom of the field of view (disc_1 and vertebra_1 the lowest); not named"
NO_SACRUM_FLAG = ("no sacrum in the field of view: levels cannot be counted from the sacrum and are not named; "
                  "discs and vertebral bodies are numbered from the bottom of the field of view (disc_1, vertebra_1); "
                  "give the level of one vertebra (--anchor-level, or spine_anchor_level in study.yaml) to name them")


def _label_from_anchor(classes: Volume, reg: Registry, cfg: Mapping[str, Any], anchor: Anchor, found: _Found,
                       sacrum_parts: list[np.ndarray], out: np.ndarray) -> LevelResult | None:
    """Levels named from the reader's anchor (None when its vertebra was not found); where the sacrum is in view,
    a flag when the count from it gives other names."""
    res = LevelResult(method=f"named from the reader's anchor ({anchor}): vertebral bodies counted up and down from "
                             "it, each disc named after the body above it", confidence=1.0)
    if not _from_anchor(found, anchor, reg, out, res):
        return None
    res.flags += _inferred_flag(res)
    if sacrum_parts:
        sacrum = max(sacrum_parts, key=lambda m: int(m.sum()))
        out[sacrum & (out == 0)] = reg.label_id("sacrum_S1")
        counted = _count_from_sacrum(classes, reg, cfg, found, sacrum_parts,
                                     _base_map(np.asarray(classes.array), reg))
        differ = sorted(lv for lv, d in res.discs.items() if lv in DISC_LEVELS and
                        (lv not in counted.discs or np.linalg.norm(counted.discs[lv].center_ras - d.center_ras) > 1.0))
        if differ:
            res.flags.append(f"counting from the sacrum names disc(s) {', '.join(differ)} differently from the "
                             f"anchor {anchor}; the anchor's names are used")
            res.confidence = min(res.confidence, cfg["level_confidence"]["anchor_disagrees_with_sacrum"])
    gaps = _gap_flags(found, cfg)
    if gaps:
        res.flags += gaps
        res.confidence = min(res.confidence, cfg["level_confidence"]["possible_missed_body"])
    res.labels = classes.with_array(out)
    return res


def _count_from_sacrum(classes: Volume, reg: Registry, cfg: Mapping[str, Any], found: _Found,
                       sacrum_parts: list[np.ndarray], out: np.ndarray) -> LevelResult:
    """Count discs and bodies upwards from the sacrum (its largest component): L5-S1 the lowest disc above it."""
    res = LevelResult()
    sacrum = max(sacrum_parts, key=lambda m: int(m.sum()))  # the sacrum; scattered flecks elsewhere are not it
    sacrum_pts = classes.voxel_to_world(np.argwhere(sacrum))
    sac_z = float(sacrum_pts[:, 2].mean())
    out[sacrum] = reg.label_id("sacrum_S1")
    above = [i for i, t in enumerate(found.discs) if t[0][2] > sac_z]
    disc_info = [found.discs[i] for i in above]
    for i, (c, n, m), level in zip(above, disc_info, DISC_LEVELS):
        res.discs[level] = Disc(level, m, c, n)
        out[m] = reg.label_id(disc_label_name(level))
        if found.inferred and found.inferred[i]:
            res.inferred.append(level)
    res.flags += _inferred_flag(res)
    floor_z = disc_info[0][0][2] if disc_info else sac_z  # vertebral bodies lie above the L5-S1 disc
    body_info = [t for t in found.bodies if t[0][2] > floor_z]
    n_discs = len(disc_info)
    # a body is named only above a named disc (L2 above L2-L3): above the highest disc found the next piece of
    # bone may be anything the network called bone (a strip in front of the spine, on an atlas phantom)
    for (_, m), level in zip(body_info[:n_discs], BODY_LEVELS):
        out[m] = reg.label_id(f"vertebral_body_{level}")
    conf = cfg["level_confidence"]
    res.confidence = 1.0
    if n_discs < 5:
        res.flags.append(f"only {n_discs} lumbar disc(s) above the sacrum in the field of view; levels above them "
                         "are not named")
        res.confidence = conf["fewer_than_five_discs"]
    if len(body_info) < min(n_discs, 5):
        res.flags.append(f"{len(body_info)} vertebral bodies for {n_discs} discs: check for a transitional vertebra")
        res.confidence = min(res.confidence, conf["fewer_bodies_than_discs"])
    if disc_info:
        gap = float(np.min(np.linalg.norm(sacrum_pts - disc_info[0][0], axis=1)))
        if gap > cfg["max_l5s1_to_sacrum_mm"]:
            res.flags.append(f"the lowest disc is {gap:.0f} mm from the sacrum: a disc may be missing and every level "
                             "name may be off by one")
            res.confidence = min(res.confidence, conf["lowest_disc_far_from_sacrum"])
    if n_discs > 5:
        res.flags.append(f"{n_discs} discs above the sacrum: the upper ones are thoracolumbar or a transitional "
                         "vertebra exists; only the lowest five are named")
        res.confidence = min(res.confidence, conf["more_than_five_discs"])
    res.labels = classes.with_array(out)
    return res


def levels_from_labels(labels: Volume, reg: Registry, method: str = "", confidence: float = 1.0,
                       flags: list[str] | None = None, inferred: list[str] | None = None) -> LevelResult:
    """A :class:`LevelResult` from a sagittal map whose discs are already named (``disc_L4_L5`` ...)."""
    arr = np.asarray(labels.array)
    res = LevelResult(labels=labels, confidence=confidence, flags=list(flags or []), inferred=list(inferred or []))
    if method:
        res.method = method
    for level in disc_levels(reg):
        m = arr == reg.label_id(disc_label_name(level))
        if m.any():
            c, n = disc_plane(labels, m)
            res.discs[level] = Disc(level, m, c, n)
    return res


def name_axial_discs(classes: Volume, levels: LevelResult, reg: Registry) -> Volume:
    """Label map of an axial stack: every class to its registry label; disc voxels to the level of the nearest
    sagittal disc plane (left 0 when no level is named)."""
    arr = np.asarray(classes.array)
    out = np.zeros(arr.shape, np.int16)
    for name in ("dural_sac", "posterior_elements", "ligamentum_flavum", "epidural_fat", "nerve_root"):
        out[arr == reg.class_id(name)] = reg.label_id(name)
    for cls_name, prefix in (("disc", "disc"), ("vertebral_body", "vertebral_body")):
        m = arr == reg.class_id(cls_name)
        if not m.any() or not levels.discs:
            continue
        idx = np.argwhere(m)
        pts = classes.voxel_to_world(idx)
        names = list(levels.discs)
        dist = np.stack([np.abs((pts - levels.discs[n].center_ras) @ levels.discs[n].normal_ras) for n in names])
        nearest = np.argmin(dist, axis=0)
        for i, n in enumerate(names):
            sel = idx[nearest == i]
            if prefix == "disc":
                lid = reg.label_id(disc_label_name(n))
            else:  # a body slice near a disc: the body above (upper vertebra of the level) or below; keep the upper
                upper = n.split("-")[0]
                lid = reg.label_id(f"vertebral_body_{upper}") if upper.startswith("L") else 0
            out[tuple(sel.T)] = lid
    out[arr == reg.class_id("sacrum")] = reg.label_id("sacrum_S1")
    return classes.with_array(out)
