"""Reference calf annotation from scribbles: a seeded watershed that follows the visible septa.

A person reads an axial slice of the in-phase and opposed-phase images and draws, per structure, one or more short
polylines inside it (``scribbles``, voxel indices i, j of the source grid) and one point inside the marrow of each
bone. This script turns them into a label map:

- the leg is the largest component of the in-phase signal above 18 % of the slice's 99.5th percentile;
- each bone is the dark cortical ring (in-phase below 30 % of that percentile) that encloses its point, holes filled;
  soft tissue its marker floods beyond the ring goes to the nearest other structure;
- the subcutaneous fat is seeded by the ring 2 voxels inside the leg's outline, and voxels it floods deeper than
  9 voxels (about 8 mm) go to the nearest other structure;
- the other structures grow from their scribbles over the landscape ``|grad IP| + 0.7 |grad OP|`` (Gaussian
  derivative, sigma 0.8 voxels, each term over its 99th percentile) plus the Sato dark-ridge response of IP and
  0.5 x that of OP (sigmas 0.8 and 1.5 voxels), so borders settle on fascia and the dark water-fat interface lines
  of the opposed-phase image (skimage.segmentation.watershed; Sato et al., Med Image Anal 1998;2:143-168).

The labels are the calf bundle's side-less class ids (``configs/labels.yaml``, calf section). Output: a label
NIfTI on the source grid (zero off the annotated slices), ``slices.json`` (side and slice of each annotation) and,
with ``--pictures``, one overlay PNG per annotated slice to check the borders against the image.

    python scripts/annotate_scribbles.py --scribbles references/calf_dixon3d_siemens/scribbles.yaml \\
        --inphase IP.nii.gz --opposed OP.nii.gz --out references/calf_dixon3d_siemens [--pictures DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml
from scipy import ndimage as ndi

from pipeline.core.atomic import atomic_path
from pipeline.core.labels import registry

LEG_FRACTION = 0.18
CORTEX_FRACTION = 0.30
FAT_RING_DEPTH_VOX = 2
FAT_MAX_DEPTH_VOX = 9


def landscape(ip: np.ndarray, op: np.ndarray) -> np.ndarray:
    """Watershed relief of one slice (both images divided by the in-phase 99.5th percentile)."""
    from skimage.filters import sato

    grad = ndi.gaussian_gradient_magnitude(ip, 0.8) + 0.7 * ndi.gaussian_gradient_magnitude(op, 0.8)
    ridge = sato(ip, sigmas=[0.8, 1.5], black_ridges=True) + 0.5 * sato(op, sigmas=[0.8, 1.5], black_ridges=True)
    return grad / max(np.percentile(grad, 99), 1e-6) + ridge / max(np.percentile(ridge, 99), 1e-6)


def leg_mask(ip: np.ndarray) -> np.ndarray:
    """Largest component of the in-phase signal above :data:`LEG_FRACTION`, holes filled."""
    fg = ndi.binary_fill_holes(ndi.binary_opening(ip > LEG_FRACTION, iterations=1))
    lab, n = ndi.label(fg)
    if n == 0:
        raise ValueError("no leg in this box")
    return lab == int(np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def bone_mask(ip: np.ndarray, leg: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """The dark cortical ring around ``point`` (box indices) with its marrow: of the dark components near the point,
    closed by the fewest voxels (0-3) that make them enclose it, the smallest filled region."""
    dark = (ip < CORTEX_FRACTION) & ndi.binary_erosion(leg, iterations=4)
    comps, _ = ndi.label(dark)
    x, y = point
    near = comps[max(x - 12, 0):x + 12, max(y - 12, 0):y + 12]
    best: np.ndarray | None = None
    for c in (int(c) for c in np.unique(near) if c):
        ring = comps == c
        for it in range(4):
            filled = ndi.binary_fill_holes(ndi.binary_closing(ring, iterations=it) if it else ring)
            if filled[x, y]:
                best = filled if best is None or filled.sum() < best.sum() else best
                break
    if best is None:
        raise ValueError(f"no dark cortical ring encloses the bone point {point}")
    return best


def _draw(markers: np.ndarray, polyline: list[list[int]], value: int, origin: tuple[int, int]) -> None:
    from skimage.draw import line

    pts = [(int(p[0]) - origin[0], int(p[1]) - origin[1]) for p in polyline]
    pts = pts * 2 if len(pts) == 1 else pts
    for (a, b), (c, d) in zip(pts[:-1], pts[1:]):
        rr, cc = line(a, b, c, d)
        markers[rr, cc] = value


def annotate_slice(ip: np.ndarray, op: np.ndarray, entry: dict[str, Any], abbrev_to_class: dict[str, int],
                   origin: tuple[int, int]) -> np.ndarray:
    """Class map of one box (``ip``, ``op`` already normalised) from one scribbles entry."""
    from skimage.segmentation import watershed

    outside, fat = 255, abbrev_to_class["SCF"]
    leg = leg_mask(ip)
    markers = np.zeros(ip.shape, np.int32)
    markers[~ndi.binary_dilation(leg, iterations=2)] = outside
    bones = {abbrev_to_class[{"tibia": "TIB", "fibula": "FIB"}[name]]:
             bone_mask(ip, leg, (p[0] - origin[0], p[1] - origin[1])) for name, p in entry["bones"].items()}
    for abbrev, lines in entry["scribbles"].items():
        for pl in lines:
            _draw(markers, pl, outside if abbrev == "BG" else abbrev_to_class[abbrev], origin)
    ring = (ndi.binary_erosion(leg, iterations=FAT_RING_DEPTH_VOX)
            & ~ndi.binary_erosion(leg, iterations=FAT_RING_DEPTH_VOX + 1))
    markers[ring & (markers == 0)] = fat
    for cls, mask in bones.items():
        markers[mask] = cls
    relief = landscape(ip, op)
    out = watershed(relief, markers)
    bone_any = np.zeros_like(leg)
    for cls, mask in bones.items():
        out[mask] = cls
        bone_any |= mask
    stray = np.isin(out, list(bones)) & ~bone_any  # a bone's marker grew into soft tissue nobody scribbled
    if stray.any():
        seeds = np.where(np.isin(out, [*bones, outside]) | stray | ~leg, 0, out)
        regrown = watershed(relief, seeds, mask=leg & ~bone_any)
        out[stray] = regrown[stray]
    out[out == outside] = 0
    deep = (out == fat) & (ndi.distance_transform_edt(leg) > FAT_MAX_DEPTH_VOX)
    if deep.any():
        seeds = np.where((out == fat) | ~leg, 0, out)
        regrown = watershed(relief, seeds, mask=leg & ((out != fat) | deep))
        out[deep] = regrown[deep]
    return out.astype(np.uint8)


def box_of(entry: dict[str, Any], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The entry's box on the slice: ``box_x`` and ``box_y_top`` if given, else the half of the matrix the leg's
    scribbles lie in (the box only bounds the work; labels come from the scribbles)."""
    xs = [p[0] for lines in entry["scribbles"].values() for pl in lines for p in pl]
    x0, x1 = entry.get("box_x") or ((int(min(xs)) - 80, int(max(xs)) + 80))
    return slice(max(int(x0), 0), min(int(x1), shape[0])), slice(15, min(int(entry.get("box_y_top", 135)), shape[1]))


def annotate(scribbles: dict[str, Any], ip_img: nib.Nifti1Image, op_img: nib.Nifti1Image
             ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Label volume on the source grid and the list of annotated (side, slice)."""
    reg = registry("calf")
    abbrev_to_class = {reg.structures[c]["abbrev"]: reg.class_id(c) for c in reg.classes[1:]}
    ip_all = np.asarray(ip_img.dataobj, np.float32)
    op_all = np.asarray(op_img.dataobj, np.float32)
    out = np.zeros(ip_all.shape, np.uint8)
    done = []
    for entry in scribbles.values():
        z = int(entry["slice"])
        bx, by = box_of(entry, ip_all.shape)
        scale = float(np.percentile(ip_all[..., z], 99.5))
        labels = annotate_slice(ip_all[bx, by, z] / scale, op_all[bx, by, z] / scale, entry, abbrev_to_class,
                                (bx.start, by.start))
        view = out[bx, by, z]
        view[labels > 0] = labels[labels > 0]
        done.append({"side": entry["side"], "slice": z})
    return out, done


def save_pictures(labels: np.ndarray, ip: np.ndarray, done: list[dict[str, Any]], scribbles: dict[str, Any],
                  folder: Path) -> None:
    """One PNG per annotated slice: the in-phase box with the structure outlines (registry colours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from skimage.segmentation import find_boundaries

    reg = registry("calf")
    colours = ["#000000"] + [reg.structures[c].get("color", "#888888") for c in reg.classes[1:]]
    folder.mkdir(parents=True, exist_ok=True)
    for item, entry in zip(done, scribbles.values()):
        z = item["slice"]
        bx, by = box_of(entry, ip.shape)
        img = ip[bx, by, z]
        lab = labels[bx, by, z]
        edge = find_boundaries(lab, mode="inner") & (lab > 0)
        fig, ax = plt.subplots(1, 2, figsize=(13, 5.2))
        extent = (bx.start - 0.5, bx.stop - 0.5, by.start - 0.5, by.stop - 0.5)
        for a in ax:
            a.imshow(img.T, origin="lower", cmap="gray", vmin=0, vmax=float(np.percentile(img, 99.7)), extent=extent)
            a.set_xticks([])
            a.set_yticks([])
        ax[1].imshow(np.ma.masked_where(~edge, lab).T, origin="lower", cmap=ListedColormap(colours), vmin=0,
                     vmax=len(colours) - 1, extent=extent, interpolation="nearest")
        ax[0].set_title(f"{item['side']} leg, slice {z}: in-phase")
        ax[1].set_title("reference outlines")
        fig.tight_layout()
        fig.savefig(folder / f"{item['side']}_{z}.png", dpi=70)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scribbles", type=Path, required=True)
    p.add_argument("--inphase", type=Path, required=True)
    p.add_argument("--opposed", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pictures", type=Path, default=None, help="folder for one overlay PNG per annotated slice")
    a = p.parse_args(argv)
    scribbles = yaml.safe_load(a.scribbles.read_text())
    ip_img, op_img = nib.load(a.inphase), nib.load(a.opposed)
    labels, done = annotate(scribbles, ip_img, op_img)
    a.out.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(labels, ip_img.affine)
    img.set_data_dtype(np.uint8)
    with atomic_path(a.out / "labels.nii.gz") as tmp:
        nib.save(img, str(tmp))
    with atomic_path(a.out / "slices.json") as tmp:
        Path(tmp).write_text(json.dumps(done, indent=1) + "\n")
    if a.pictures:
        save_pictures(labels, np.asarray(ip_img.dataobj, np.float32), done, scribbles, a.pictures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
