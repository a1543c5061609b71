"""Level labelling of a sagittal lumbar class map: count from the sacrum upwards.

The lowest disc above the sacrum is L5-S1, the next L4-L5, and so on up to L1-L2; the vertebral body above disc
L5-S1 is L5, and so on. Discs and bodies are the 3-D connected components of the network's ``disc`` and
``vertebral_body`` classes above the sacrum (its largest component), ordered by height. Components smaller than
``spine.min_disc_ml`` / ``spine.min_vertebral_body_ml`` (the sacrum: ``spine.min_sacrum_ml``), or than
``spine.min_component_fraction_of_largest`` of the largest component of their class (configs/default.yaml), are
segmentation debris and never count as a level. Without a sacrum in the field of view no level is named (flagged,
not guessed); a count other than five lumbar discs above the sacrum is flagged as a possible transitional vertebra
and lowers the confidence.
"""

from __future__ import annotations

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


def _components(mask: np.ndarray, min_voxels: float, min_fraction: float = 0.0) -> list[np.ndarray]:
    """3-D connected components of ``mask`` with at least ``min_voxels`` voxels and at least ``min_fraction`` of the
    largest component's size.

    >>> m = np.zeros((1, 12, 1), bool); m[0, :6] = True; m[0, 8:9] = True
    >>> [int(c.sum()) for c in _components(m, 1)], [int(c.sum()) for c in _components(m, 1, 0.25)]
    ([6, 1], [6])
    """
    lab, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    floor = max(float(min_voxels), min_fraction * float(sizes.max()))
    return [lab == i + 1 for i, s in enumerate(sizes) if s >= floor]


def disc_plane(volume: Volume, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and unit normal (smallest principal axis, oriented superiorly) of a disc mask, in world RAS."""
    pts = volume.voxel_to_world(np.argwhere(mask))
    c = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
    n = vt[-1]
    return c, (n if n[2] >= 0 else -n)


def label_levels(classes: Volume, reg: Registry, cfg: Mapping[str, Any] | None = None) -> LevelResult:
    """Name discs and vertebral bodies of a sagittal class map and return the level-labelled map.

    ``cfg`` is the ``spine`` section of the configuration (default: configs/default.yaml).
    """
    cfg = load_config("default")["spine"] if cfg is None else cfg
    arr = np.asarray(classes.array)
    res = LevelResult()
    vv = classes.voxel_volume_mm3
    min_disc, min_body = 1000.0 * cfg["min_disc_ml"] / vv, 1000.0 * cfg["min_vertebral_body_ml"] / vv
    frac = float(cfg["min_component_fraction_of_largest"])
    sacrum = arr == reg.class_id("sacrum")
    out = np.zeros(arr.shape, np.int16)
    for name in ("dural_sac", "posterior_elements", "ligamentum_flavum", "epidural_fat", "nerve_root"):
        out[arr == reg.class_id(name)] = reg.label_id(name)
    sacrum_parts = _components(sacrum, 1000.0 * cfg["min_sacrum_ml"] / vv)
    if not sacrum_parts:
        res.flags.append("no sacrum in the field of view: levels cannot be counted from the sacrum and are not named")
        res.labels = classes.with_array(out)
        return res
    sacrum = max(sacrum_parts, key=lambda m: int(m.sum()))  # the sacrum; scattered flecks elsewhere are not it
    sacrum_pts = classes.voxel_to_world(np.argwhere(sacrum))
    sac_z = float(sacrum_pts[:, 2].mean())
    out[sacrum] = reg.label_id("sacrum_S1")
    discs = _components(arr == reg.class_id("disc"), min_disc, frac)
    bodies = _components(arr == reg.class_id("vertebral_body"), min_body, frac)
    # order along the spine by height (world S): the lumbar spine rises monotonically from the sacrum, lordosis or not
    disc_info = sorted((t for t in ((*disc_plane(classes, m), m) for m in discs) if t[0][2] > sac_z),
                       key=lambda t: t[0][2])
    for (c, n, m), level in zip(disc_info, DISC_LEVELS):
        res.discs[level] = Disc(level, m, c, n)
        out[m] = reg.label_id(f"disc_{level.replace('-', '_')}")
    floor_z = disc_info[0][0][2] if disc_info else sac_z  # vertebral bodies lie above the L5-S1 disc
    body_info = sorted((t for t in ((classes.voxel_to_world(np.argwhere(m)).mean(0), m) for m in bodies)
                        if t[0][2] > floor_z), key=lambda t: t[0][2])
    for (_, m), level in zip(body_info, BODY_LEVELS):
        out[m] = reg.label_id(f"vertebral_body_{level}")
    n_discs = len(disc_info)
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
                       flags: list[str] | None = None) -> LevelResult:
    """A :class:`LevelResult` from a sagittal map whose discs are already named (``disc_L4_L5`` ...)."""
    arr = np.asarray(labels.array)
    res = LevelResult(labels=labels, confidence=confidence, flags=list(flags or []))
    if method:
        res.method = method
    for level in DISC_LEVELS:
        m = arr == reg.label_id(f"disc_{level.replace('-', '_')}")
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
                lid = reg.label_id(f"disc_{n.replace('-', '_')}")
            else:  # a body slice near a disc: the body above (upper vertebra of the level) or below; keep the upper
                upper = n.split("-")[0]
                lid = reg.label_id(f"vertebral_body_{upper}") if upper.startswith("L") else 0
            out[tuple(sel.T)] = lid
    out[arr == reg.class_id("sacrum")] = reg.label_id("sacrum_S1")
    return classes.with_array(out)
