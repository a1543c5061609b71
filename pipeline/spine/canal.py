"""Canal measurements at a disc level from label maps, with world geometry throughout.

* Disc plane -> axial slice: the slice of an axial stack whose plane lies closest to the disc centre; the stack's
  obliquity to the disc plane (angle theta between the normals) is corrected by cos(theta) for areas.
* Dural sac cross-sectional area (DSCA, mm2) = pixels enclosed by the sac outline (holes filled) x pixel area x
  cos(theta) (Schonstrom et al., Spine 1985).
* AP diameter (mm): length of the sac along the line through its centroid in the posterior direction of the disc
  plane, between the 0.5 crossings of the linearly interpolated sac probability map of the segmentation (or of the
  binary mask where no probability map exists); a dip inside the sac shorter than ``bridge_mm`` (dark intrathecal
  roots) does not end it. Sagittal stacks give it without an axial stack.
* Lateral recess depth (mm, per side): along antero-posterior lines just lateral of the sac, the distance from the
  posterior margin of the disc to the anterior margin of the posterior elements (superior articular facet); the
  narrowest value (Ciric et al., J Neurosurg 1980;53:433-443).
* Foraminal area (mm2, per side): in the parasagittal slices lateral of the canal, the largest region of foraminal
  contents (fat and exiting root) next to the disc, as on parasagittal foraminal grading (Lee et al., AJR 2010).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.core.geometry import Side, side_of_world_x
from pipeline.core.volume import Volume

STEP_MM = 0.1


@dataclass(frozen=True)
class Reach:
    """How far (mm) the canal measurements look from where they start: ``spine.canal_reach_mm`` of
    configs/default.yaml (units and reasons there)."""

    ap_axial: float  # the AP line through an axial sac centroid, each way
    ap_sagittal: float  # behind a sagittal disc centre, for the first stretch of sac
    sac_lateral: float  # the lateral profile through the sac centroid (the sac's edge, where recess lines start)
    recess_ap: float  # each antero-posterior recess line, from its start
    foramen_lateral: float  # parasagittal slices at most this far left or right of the disc centre
    foramen_along_normal: float  # a foraminal region's centre at most this far above or below the disc plane
    foramen_behind: float  # ... and at most this far behind the disc centre
    foramen_extent: float  # every pixel of a foraminal region at most this far above or below the disc plane

    @classmethod
    def from_config(cls, spine_cfg: dict) -> Reach:
        """The reach of the ``spine`` section of the configuration."""
        return cls(**{k: float(v) for k, v in spine_cfg["canal_reach_mm"].items()})


@dataclass
class SlicePick:
    k: int
    distance_mm: float
    cos_theta: float


def acquisition_axis(volume: Volume) -> int:
    """The array axis with the largest spacing (the slice axis of a 2-D acquisition)."""
    return int(np.argmax(volume.spacing_mm))


def slice_normal(volume: Volume, axis: int) -> np.ndarray:
    i, j = [a for a in range(3) if a != axis]
    n = np.cross(volume.affine[:3, i], volume.affine[:3, j])
    return n / np.linalg.norm(n)


def nearest_slice(volume: Volume, axis: int, center: np.ndarray, disc_normal: np.ndarray,
                  max_distance_mm: float) -> SlicePick | None:
    """The slice whose plane is closest to ``center`` (None if farther than ``max_distance_mm`` or outside)."""
    ijk = volume.world_to_voxel(center[None])[0]
    inplane = [a for a in range(3) if a != axis]
    if any(not (-0.5 <= ijk[a] <= volume.shape[a] - 0.5) for a in inplane):
        return None
    n = slice_normal(volume, axis)
    step = abs(float(volume.affine[:3, axis] @ n))
    k = int(np.clip(np.rint(ijk[axis]), 0, volume.shape[axis] - 1))
    dist = abs(ijk[axis] - k) * step
    if dist > max_distance_mm:
        return None
    return SlicePick(k, float(dist), float(abs(n @ disc_normal)))


def pixel_area_mm2(volume: Volume, axis: int) -> float:
    i, j = [a for a in range(3) if a != axis]
    return float(np.linalg.norm(np.cross(volume.affine[:3, i], volume.affine[:3, j])))


def dsca_mm2(sac: np.ndarray, volume: Volume, axis: int, pick: SlicePick) -> float:
    """Dural sac area on the picked slice, corrected to the disc plane: count x pixel area x cos(theta). The count
    is of the pixels the sac's outline encloses: a hole (intrathecal roots given another class) is part of the sac."""
    enclosed = ndimage.binary_fill_holes(np.take(sac, pick.k, axis=axis))
    return float(np.count_nonzero(enclosed)) * pixel_area_mm2(volume, axis) * pick.cos_theta


def profile(mask: np.ndarray, volume: Volume, start: np.ndarray, direction: np.ndarray, length_mm: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Positions t (mm) and linearly interpolated mask values along ``start + t * direction``, t in [-L, L]."""
    t = np.arange(-length_mm, length_mm + STEP_MM / 2, STEP_MM)
    pts = start[None] + t[:, None] * (direction / np.linalg.norm(direction))[None]
    ijk = volume.world_to_voxel(pts)
    vals = ndimage.map_coordinates(mask.astype(np.float32), ijk.T, order=1, mode="constant", cval=0.0)
    return t, vals


def run_through(t: np.ndarray, vals: np.ndarray, t0: float = 0.0, bridge_mm: float = 0.0, level: float = 0.5
                ) -> tuple[float, float] | None:
    """The interval (t_start, t_end) where ``vals >= level`` around ``t0`` (the nearest such run if ``t0`` is
    outside; None if there is none), joined across gaps of at most ``bridge_mm`` to the runs beyond them.

    >>> t = np.arange(0.0, 10.0, 1.0)
    >>> v = np.array([0, 1, 1, 1, 0, 1, 1, 0, 0, 0], float)
    >>> run_through(t, v, 2.0), run_through(t, v, 2.0, bridge_mm=1.0)
    ((1.0, 3.0), (1.0, 6.0))
    """
    inside = vals >= level
    if bridge_mm > 0:
        inside = _bridge(inside, int(round(bridge_mm / float(np.median(np.diff(t))))))
    i0 = int(np.argmin(np.abs(t - t0)))
    if not inside[i0]:
        cand = np.nonzero(inside)[0]
        if cand.size == 0:
            return None
        i0 = int(cand[np.argmin(np.abs(cand - i0))])
    lo = i0
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = i0
    while hi < len(t) - 1 and inside[hi + 1]:
        hi += 1
    return float(t[lo]), float(t[hi])


def _bridge(inside: np.ndarray, max_gap: int) -> np.ndarray:
    """``inside`` with every run of False of at most ``max_gap`` samples between two True samples set to True."""
    out = inside.copy()
    idx = np.nonzero(inside)[0]
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= max_gap + 1:
            out[a + 1:b] = True
    return out


def posterior_direction(disc_normal: np.ndarray) -> np.ndarray:
    """Unit posterior direction within the disc plane: x_hat x n (RAS; for n = +z this is -y)."""
    p = np.cross(np.array([1.0, 0.0, 0.0]), disc_normal)
    return p / np.linalg.norm(p)


def lateral_direction(disc_normal: np.ndarray, side: Side) -> np.ndarray:
    """Unit direction towards the patient's ``side`` within the disc plane."""
    x = np.array([1.0, 0.0, 0.0]) - disc_normal * disc_normal[0]
    x /= np.linalg.norm(x)
    return x if side == "right" else -x


def canal_sac(sac: np.ndarray, volume: Volume, axis: int, k: int, disc_center: np.ndarray,
              disc_normal: np.ndarray, reach_mm: float) -> np.ndarray:
    """``sac`` with its slice ``k`` reduced to the connected piece that lies in the canal: the first piece met on the
    posterior ray (:func:`posterior_direction`) from the disc centre, projected onto the slice, within ``reach_mm``.
    The dural sac lies behind the disc on the midline; pieces of "sac" off that ray (fluid lateral of the canal, a
    cyst, bowel) are not the sac and would otherwise be counted in its area and pull its centroid. Unchanged when the
    slice holds one piece or the ray meets none.

    >>> from pipeline.core.volume import Volume
    >>> m = np.zeros((40, 40, 1), bool); m[18:22, 5:10] = True; m[30:36, 5:10] = True  # canal piece, lateral piece
    >>> out = canal_sac(m, Volume(m.astype(np.uint8), np.eye(4)), 2, 0, np.array([20.0, 20.0, 0.0]),
    ...                 np.array([0.0, 0.0, 1.0]), 30.0)
    >>> int(out.sum()), bool(out[20, 7, 0]), bool(out[33, 7, 0])
    (20, True, False)
    """
    pieces, n = ndimage.label(np.take(sac, k, axis=axis))
    if n <= 1:
        return sac
    normal = slice_normal(volume, axis)
    on_slice = volume.voxel_to_world(np.insert(np.zeros(2), axis, k)[None])[0]
    start = disc_center - ((disc_center - on_slice) @ normal) * normal
    post = posterior_direction(disc_normal)
    post = post - (post @ normal) * normal
    t = np.arange(0.0, reach_mm, STEP_MM)
    ijk = np.rint(volume.world_to_voxel(start[None] + t[:, None] * (post / np.linalg.norm(post))[None])).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(sac.shape)), axis=1)
    hit = pieces[tuple(np.delete(ijk[inside], axis, axis=1).T)]
    if not hit.any():
        return sac
    out = sac.copy()
    out[tuple(k if d == axis else slice(None) for d in range(sac.ndim))] = pieces == hit[np.nonzero(hit)[0][0]]
    return out


def sac_centroid(sac: np.ndarray, volume: Volume, axis: int, k: int) -> np.ndarray | None:
    sl = np.take(sac, k, axis=axis)
    if not sl.any():
        return None
    ij = np.argwhere(sl).mean(axis=0)
    return volume.voxel_to_world(np.insert(ij, axis, k)[None])[0]


def ap_line(sac: np.ndarray, volume: Volume, through: np.ndarray, disc_normal: np.ndarray, reach: Reach,
            bridge_mm: float = 0.0, behind: bool = False, level: float = 0.5
            ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Length (mm) of the sac along the posterior direction through the point ``through``, with the world (RAS)
    end points of that chord (anterior, posterior). ``sac`` is a binary mask or a probability map whose walls are
    read where it crosses ``level``; dips of at most ``bridge_mm`` inside the sac are bridged (see
    :func:`run_through`). ``through`` lies in the sac (an axial sac centroid), or with ``behind`` in front of it (a
    disc centre on a sagittal image): the chord is then the first stretch of sac behind it, up to
    ``reach.ap_sagittal`` away (else the profile runs ``reach.ap_axial`` each way)."""
    post = posterior_direction(disc_normal)
    t, v = profile(sac, volume, through, post, reach.ap_sagittal if behind else reach.ap_axial)
    t0 = 0.0
    if behind:
        ahead = np.nonzero((v >= level) & (t > 0))[0]
        if ahead.size == 0:
            return None
        t0 = float(t[ahead[0]])
    run = run_through(t, v, t0, bridge_mm=bridge_mm, level=level)
    if run is None:
        return None
    return run[1] - run[0] + STEP_MM, through + run[0] * post, through + (run[1] + STEP_MM) * post


def lateral_recess(disc: np.ndarray, posterior: np.ndarray, sac: np.ndarray, volume: Volume, sac_center: np.ndarray,
                   disc_normal: np.ndarray, side: Side, reach: Reach, offsets_mm: np.ndarray | None = None,
                   min_extent_mm: float = 0.0) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Depth (mm) of the lateral recess of ``side`` with the world (RAS) end points of the line it was measured on
    (the back of the disc, the front of the posterior elements); None where no line meets both.

    Depth as in Ciric I et al., J Neurosurg 1980;53:433-443: the antero-posterior distance between the posterior
    border of the disc / vertebral body and the anterior border of the superior articular facet. It is measured on
    antero-posterior lines 1.5-5 mm lateral of the sac's lateral edge (``offsets_mm``, the recess proper, medial of
    the pedicle and the foramen) and is the narrowest depth that persists over ``min_extent_mm`` of the recess
    width: min over windows of adjacent lines spanning ``min_extent_mm`` of the max depth in the window. With 0 it
    is the plain minimum; a width keeps a one-line dip of the label map from passing for a narrowing.

    ``disc`` and ``posterior`` are binary masks or probability maps (walls where they cross 0.5, sub-voxel with
    probabilities).
    """
    lat = lateral_direction(disc_normal, side)
    post = posterior_direction(disc_normal)
    t, v = profile(sac, volume, sac_center, lat, reach.sac_lateral)
    run = run_through(t, v)
    if run is None:
        return None
    edge = run[1]
    offsets = np.arange(1.5, 5.01, 0.5) if offsets_mm is None else np.asarray(offsets_mm, float)
    lines: list[tuple[float, np.ndarray, np.ndarray] | None] = []
    for d in offsets:
        q = sac_center + (edge + d) * lat
        tt, dv = profile(disc, volume, q, post, reach.recess_ap)
        _, pv = profile(posterior, volume, q, post, reach.recess_ap)
        disc_idx = np.nonzero(dv >= 0.5)[0]
        pe_idx = np.nonzero(pv[disc_idx[-1]:] >= 0.5)[0] if disc_idx.size else np.array([], int)
        if pe_idx.size == 0:
            lines.append(None)
            continue
        # each wall lies between its last sample on one side of the 0.5 level and its first on the other
        back = float(tt[disc_idx[-1]]) + STEP_MM / 2
        front = float(tt[disc_idx[-1] + pe_idx[0]]) - STEP_MM / 2
        lines.append((front - back, q + back * post, q + front * post))
    step = float(np.median(np.diff(offsets))) if len(offsets) > 1 else 1.0
    n = max(1, min(len(lines), int(round(min_extent_mm / step)) + 1))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for i in range(len(lines) - n + 1):
        window = lines[i:i + n]
        if any(w is None for w in window):
            continue
        widest = max(window, key=lambda w: w[0])  # type: ignore[index]
        if best is None or widest[0] < best[0]:
            best = widest
    return best


def foramen_out_of_view(volume: Volume, axis: int, disc_center: np.ndarray, side: Side, min_lateral_mm: float
                        ) -> str | None:
    """Why the ``side`` foramen of a disc is not in these parasagittal slices, or None when some slice lies where
    the foramen search starts (``min_lateral_mm`` from the disc centre) or beyond: a narrow sagittal slab off the
    midline shows one foramen or neither, and the missing one is not in the field of view rather than unmeasurable.
    Reach = the largest distance |x_k - x_disc| of the centre of a slice k on that side.

    >>> from pipeline.core.volume import Volume
    >>> v = Volume(np.zeros((30, 4, 4)), np.diag([1.0, 1, 1, 1]))   # slices x = 0 .. 29 mm
    >>> foramen_out_of_view(v, 0, np.array([15.0, 0, 0]), "right", 18.0)
    'not in the field of view: the sagittal slices reach 14 mm to the right of the disc centre, the foramen search starts at 18 mm'
    >>> foramen_out_of_view(v, 0, np.array([5.0, 0, 0]), "right", 18.0) is None
    True
    """
    reach = 0.0
    centre = (np.array(volume.shape, float) - 1) / 2
    for k in range(volume.shape[axis]):
        point = centre.copy()
        point[axis] = k
        x = float(volume.voxel_to_world(point[None])[0][0])
        if x != float(disc_center[0]) and side_of_world_x(x, float(disc_center[0])) == side:
            reach = max(reach, abs(x - float(disc_center[0])))
    if reach >= min_lateral_mm:
        return None
    return (f"not in the field of view: the sagittal slices reach {reach:.0f} mm to the {side} of the disc centre, "
            f"the foramen search starts at {min_lateral_mm:.0f} mm")


def foramen_area_mm2(contents: np.ndarray, volume: Volume, axis: int, disc_center: np.ndarray,
                     disc_normal: np.ndarray, side: Side, min_lateral_mm: float, reach: Reach) -> float | None:
    """Largest foraminal-contents region beside the disc in the parasagittal slices of ``side`` between
    ``min_lateral_mm`` and ``reach.foramen_lateral`` from the disc centre, within the window of ``reach``: its
    centre within ``reach.foramen_along_normal`` of the disc plane and up to ``reach.foramen_behind`` behind the
    disc centre, and all of it within ``reach.foramen_extent`` of the disc plane (a foramen is closed by the
    pedicles above and below; a region running farther is the epidural space of the canal, not a foramen)."""
    post = posterior_direction(disc_normal)
    best = None
    area_px = pixel_area_mm2(volume, axis)
    for k in range(volume.shape[axis]):
        centre_k = volume.voxel_to_world(np.insert((np.array(volume.shape, float)[[a for a in range(3) if a != axis]]
                                                    - 1) / 2, axis, k)[None])[0]
        dx = centre_k[0] - disc_center[0]
        if abs(dx) < min_lateral_mm or abs(dx) > reach.foramen_lateral or side_of_world_x(centre_k[0], disc_center[0]) != side:
            continue
        sl = np.take(contents, k, axis=axis)
        lab, n = ndimage.label(sl)
        for c in range(1, n + 1):
            ij = np.argwhere(lab == c)
            w = volume.voxel_to_world(np.insert(ij, axis, k, axis=1)) - disc_center
            along = w @ disc_normal
            behind = float((w @ post).mean())
            if abs(float(along.mean())) <= reach.foramen_along_normal and 0.0 < behind <= reach.foramen_behind \
                    and float(np.abs(along).max()) <= reach.foramen_extent:
                area = float(len(ij)) * area_px
                best = area if best is None else max(best, area)
    return best
