"""QA overlays (PNG) in radiological convention.

Every picture is drawn from a display grid derived from the volume's affine with nibabel orientations, never from
array order: axial slices are reoriented to (P, L, S) so that image rows run anterior (top) to posterior and image
columns run from the patient's right (image left) to the patient's left; sagittal slices to (I, P, R) so that
superior is up and anterior is on the image left. The R/L markers are computed from the world x of the displayed
image's edges with :func:`pipeline.core.geometry.side_of_world_x`.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel.orientations as nio  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import ndimage  # noqa: E402

from pipeline.core.atomic import atomic_path  # noqa: E402
from pipeline.core.geometry import side_of_world_x  # noqa: E402
from pipeline.core.labels import Registry  # noqa: E402
from pipeline.core.volume import Volume  # noqa: E402

AXIAL_CODES = ("P", "L", "S")
SAGITTAL_CODES = ("I", "P", "R")


def to_display(volume: Volume, codes: Sequence[str]) -> Volume:
    """Reorient ``volume`` so that array axes point along ``codes`` (nibabel axis codes); the affine follows. The
    array is a view of the volume's (flips and transposes), not a copy: pictures take a few slices of it.

    >>> import numpy as np
    >>> v = Volume(np.arange(8.0).reshape(2, 2, 2), np.eye(4))
    >>> to_display(v, ("P", "L", "S")).axcodes
    ('P', 'L', 'S')
    """
    start = nio.io_orientation(volume.affine)
    transform = nio.ornt_transform(start, nio.axcodes2ornt(tuple(codes)))
    arr = nio.apply_orientation(np.asarray(volume.array), transform)
    affine = volume.affine @ nio.inv_ornt_aff(transform, volume.array.shape)
    return Volume(arr, affine, dict(volume.meta))


def _world(volume: Volume, ijk: Sequence[float]) -> np.ndarray:
    """World (RAS, mm) position of one voxel index triple: affine @ [i, j, k, 1]."""
    return volume.affine[:3, :3] @ np.asarray(ijk, dtype=float) + volume.affine[:3, 3]


def side_markers(display: Volume) -> tuple[str, str]:
    """The letters for the image's left and right edges ("R", "L") from the world x of the first and last columns
    of a display grid (columns = array axis 1)."""
    ni, nj = display.shape[0], display.shape[1]
    centre = _world(display, [(ni - 1) / 2, (nj - 1) / 2, 0])[0]
    x0 = _world(display, [(ni - 1) / 2, 0, 0])[0]
    x1 = _world(display, [(ni - 1) / 2, nj - 1, 0])[0]
    left = side_of_world_x(x0, centre)[0].upper()
    right = side_of_world_x(x1, centre)[0].upper()
    return left, right


def _extent(display: Volume) -> list[float]:
    """imshow extent (mm) so that pixels are square in world units."""
    dr, dc = display.spacing_mm[0], display.spacing_mm[1]
    return [0, display.shape[1] * dc, display.shape[0] * dr, 0]


def _window(img: np.ndarray) -> tuple[float, float]:
    """Grey-level window: the 1st and 99.5th percentiles of the finite voxel values (any order of the voxels)."""
    vals = img if img.dtype.kind in "iu" else img[np.isfinite(img)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [1, 99.5])
    return float(lo), float(max(hi, lo + 1e-6))


#: zlib level of the PNG files: on the FF picture of a real calf study level 3 takes 40 % of level 6's time for a
#: file 18 % larger (the QA pictures are written for every study of a batch).
PNG_OPTIONS = {"compress_level": 3}


def _save(fig: Any, path: str | Path, dpi: int, facecolor: str = "black") -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", facecolor=facecolor, pil_kwargs=PNG_OPTIONS)
    plt.close(fig)
    return Path(path)


def _mark_sides(ax: Any, display: Volume) -> None:
    left, right = side_markers(display)
    kw = dict(color="yellow", fontsize=12, fontweight="bold", va="center", transform=ax.transAxes)
    ax.text(0.02, 0.5, left, ha="left", **kw)
    ax.text(0.98, 0.5, right, ha="right", **kw)


def _slice_at_z(display: Volume, z_mm: float) -> int:
    """Index along axis 2 of the display grid nearest the world z ``z_mm``."""
    zs = [_world(display, [0, 0, k])[2] for k in range(display.shape[2])]
    return int(np.argmin(np.abs(np.asarray(zs) - z_mm)))


def display_window(image: Volume) -> tuple[float, float]:
    """The grey-level window (:func:`_window`) the calf pictures show ``image`` with."""
    return _window(np.asarray(image.array))


def montage_levels_z(labels: Volume, fractions: Sequence[float]) -> list[float]:
    """World z (mm) at the given fractions of the labelled extent (0 = most inferior labelled slice)."""
    return _levels_z(to_display(labels, AXIAL_CODES), fractions)


def _levels_z(disp: Volume, fractions: Sequence[float]) -> list[float]:
    """:func:`montage_levels_z` of labels already on the axial display grid."""
    ks = np.nonzero(disp.array.reshape(-1, disp.shape[2]).any(axis=0))[0]
    if ks.size == 0:
        ks = np.arange(disp.shape[2])
    zs = sorted(_world(disp, [0, 0, k])[2] for k in (ks[0], ks[-1]))
    return [zs[0] + f * (zs[1] - zs[0]) for f in fractions]


def outline_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of a 2-D ``mask``'s bounding box widened by one pixel (clipped to the array): the 0.5 level of
    the mask lies between a set pixel and its neighbours, so the grid outside this box holds none of its outline. The
    whole array when nothing is set.

    >>> m = np.zeros((6, 5), bool); m[2:4, 0] = True
    >>> outline_box(m)
    (slice(1, 5, None), slice(0, 2, None))
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    return (slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, mask.shape[0])),
            slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, mask.shape[1])))


def _contour(ax: Any, mask: np.ndarray, spacing: tuple[float, float], color: str, width: float = 0.8) -> None:
    """Outline ``mask`` on an image drawn with :func:`_extent` (pixel centres at (index + 0.5) * spacing), traced in
    its :func:`outline_box` (the same line as on the whole grid)."""
    rows, cols = outline_box(mask)
    ys = (np.arange(rows.start, rows.stop) + 0.5) * spacing[0]
    xs = (np.arange(cols.start, cols.stop) + 0.5) * spacing[1]
    ax.contour(xs, ys, mask[rows, cols].astype(float), levels=[0.5], colors=[color], linewidths=width)


def _title(ax: Any, text: str) -> None:
    ax.set_title(text, color="white", fontsize=9)


def _header(fig: Any, phi: str | None, title: str) -> None:
    fig.suptitle(title if not phi else f"{title}  |  {phi}", color="white", fontsize=10)


def label_crop(labels: Volume, slices: Sequence[int], margin_mm: float = 15.0) -> tuple[slice, slice]:
    """Rows and columns of an axial display grid that hold the labels of any of ``slices``, widened by
    ``margin_mm`` (clipped to the grid); the whole grid when none is labelled. One crop for all the panels of a
    picture keeps their scale and position comparable.

    >>> lab = np.zeros((100, 200, 2), np.int16); lab[40:50, 20:30, 1] = 3
    >>> label_crop(Volume(lab, np.eye(4)), [0, 1], margin_mm=5.0)
    (slice(35, 55, None), slice(15, 35, None))
    """
    arr = np.asarray(labels.array)[:, :, list(slices)].any(axis=2)
    rows, cols = np.flatnonzero(arr.any(axis=1)), np.flatnonzero(arr.any(axis=0))
    if rows.size == 0:
        return slice(0, arr.shape[0]), slice(0, arr.shape[1])
    mr = int(np.ceil(margin_mm / labels.spacing_mm[0]))
    mc = int(np.ceil(margin_mm / labels.spacing_mm[1]))
    return (slice(max(int(rows[0]) - mr, 0), min(int(rows[-1]) + 1 + mr, arr.shape[0])),
            slice(max(int(cols[0]) - mc, 0), min(int(cols[-1]) + 1 + mc, arr.shape[1])))


def _level_rows(img: Volume, lab: Volume, fractions: Sequence[float], width_in: float, extra_in: float
                ) -> tuple[Any, np.ndarray, list[tuple[float, float, int]], tuple[slice, slice]]:
    """A figure with one full-width row per montage level, each showing the labelled region of its slice (one crop
    for all rows): the figure, its axes, (fraction, z, slice index) per row and the crop."""
    levels = [(f, z, _slice_at_z(img, z)) for f, z in zip(fractions, _levels_z(lab, fractions))]
    rows, cols = label_crop(lab, [k for _, _, k in levels])
    h_mm = (rows.stop - rows.start) * img.spacing_mm[0]
    w_mm = (cols.stop - cols.start) * img.spacing_mm[1]
    row_in = width_in * h_mm / max(w_mm, 1e-6)
    fig, axes = plt.subplots(len(levels), 1, figsize=(width_in, row_in * len(levels) + extra_in), facecolor="black",
                             squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, hspace=0.12, top=1 - 0.85 / (row_in * len(levels) + extra_in),
                        bottom=(extra_in - 0.2) / (row_in * len(levels) + extra_in))
    return fig, axes[:, 0], levels, (rows, cols)


def _crop_extent(display: Volume, crop: tuple[slice, slice]) -> list[float]:
    """imshow extent (mm) of a crop of the display grid, in the coordinates of :func:`_extent` (so outlines drawn in
    whole-grid millimetres fall on it)."""
    dr, dc = display.spacing_mm[0], display.spacing_mm[1]
    return [crop[1].start * dc, crop[1].stop * dc, crop[0].stop * dr, crop[0].start * dr]


#: opacity of the colour each label tints its voxels with in the calf montage: a structure whose borders are all
#: shared with others (its own outline drawn over by theirs) still shows as a region of its colour
MONTAGE_TINT = 0.22
#: a label region of at least this area (mm2) on a montage slice is named at its interior point
MONTAGE_NAME_MIN_MM2 = 40.0


def label_tint(labels: np.ndarray, by_id: Mapping[int, Any], alpha: float) -> np.ndarray:
    """RGBA image (rows x columns x 4, float) that tints every voxel of a known label id with its colour at opacity
    ``alpha``; background and unknown ids are transparent.

    >>> from types import SimpleNamespace
    >>> label_tint(np.array([[0, 3]]), {3: SimpleNamespace(color="#ff0000")}, 0.5)[0, 1].tolist()
    [1.0, 0.0, 0.0, 0.5]
    """
    lut = np.zeros((int(max([*by_id, int(labels.max(initial=0))])) + 1, 4))
    for i, info in by_id.items():
        lut[i, :3], lut[i, 3] = matplotlib.colors.to_rgb(info.color), alpha
    return lut[np.clip(labels, 0, len(lut) - 1)]


def interior_point(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """(x, y) in the millimetres of :func:`_extent` of the point of a 2-D ``mask`` farthest from its border (the
    maximum of the Euclidean distance transform, in the thickest part; of tied points the one nearest their mean):
    a name placed there lies inside the region, which a centroid of a curved or split region does not.

    >>> m = np.zeros((5, 9), bool); m[1:4, 1:8] = True
    >>> interior_point(m, (1.0, 2.0))
    (9.0, 2.5)
    """
    rows, cols = outline_box(mask)
    depth = ndimage.distance_transform_edt(mask[rows, cols], sampling=spacing)
    deepest = np.argwhere(depth >= depth.max() - 1e-9)  # ties: the one nearest their mean
    r, c = deepest[np.argmin(((deepest - deepest.mean(axis=0)) ** 2).sum(axis=1))]
    return float((cols.start + c + 0.5) * spacing[1]), float((rows.start + r + 0.5) * spacing[0])


def calf_montage(image: Volume, labels: Volume, registry: Registry, fractions: Sequence[float], path: str | Path,
                 phi: str | None = None, dpi: int = 110, window: tuple[float, float] | None = None) -> Path:
    """Axial calf slices at fixed fractions of the labelled length, one full-width row each, cropped to the labelled
    legs so that every muscle border can be judged, with coloured muscle contours and a legend; ``window``: the
    grey levels (:func:`display_window` of ``image`` when None)."""
    img, lab = to_display(image, AXIAL_CODES), to_display(labels, AXIAL_CODES)
    by_id = registry.by_id()
    fig, axes, levels, crop = _level_rows(img, lab, fractions, 12.0, 0.9)
    lo, hi = window or _window(img.array)
    seen: dict[str, str] = {}
    sp = (img.spacing_mm[0], img.spacing_mm[1])
    for ax, (frac, z, k) in zip(axes, levels):
        ax.imshow(img.array[crop[0], crop[1], k], cmap="gray", vmin=lo, vmax=hi, extent=_crop_extent(img, crop),
                  interpolation="nearest")
        sl = lab.array[:, :, k]
        ax.imshow(label_tint(sl[crop[0], crop[1]], by_id, MONTAGE_TINT), extent=_crop_extent(img, crop),
                  interpolation="nearest")
        for lid in np.unique(sl):
            info = by_id.get(int(lid))
            if info is None:
                continue
            mask = sl == lid
            _contour(ax, mask, sp, info.color, width=1.0)
            name = info.abbrev or info.structure
            if mask.sum() * sp[0] * sp[1] >= MONTAGE_NAME_MIN_MM2:
                x, y = interior_point(mask, sp)
                ax.text(x, y, name, color=info.color, fontsize=7, fontweight="bold", ha="center", va="center",
                        path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
            seen[name] = info.color
        _mark_sides(ax, img)
        _title(ax, f"{int(round(frac * 100))}% of length, z = {z:.0f} mm")
        ax.axis("off")
    handles = [Patch(color=c, label=n) for n, c in seen.items()]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 12), fontsize=9, frameon=False,
                   labelcolor="white")
    _header(fig, phi, "Calf muscles (radiological view: patient right on image left)")
    return _save(fig, path, dpi)


def ff_overlay(image: Volume, ff_pct: Volume, fractions: Sequence[float], labels: Volume, path: str | Path,
               phi: str | None = None, dpi: int = 110, window: tuple[float, float] | None = None) -> Path:
    """Fat-fraction map (0-100 %) inside the labelled tissue (noise outside the body is not shown) over the
    anatomical image at the montage levels, one full-width row each as in :func:`calf_montage`, with a colour bar;
    ``window`` as for :func:`calf_montage`."""
    img, ff = to_display(image, AXIAL_CODES), to_display(ff_pct, AXIAL_CODES)
    lab = to_display(labels, AXIAL_CODES)
    fig, axes, levels, crop = _level_rows(img, lab, fractions, 12.0, 0.5)
    lo, hi = window or _window(img.array)
    extent = _crop_extent(img, crop)
    im = None
    for ax, (_, z, k) in zip(axes, levels):
        ax.imshow(img.array[crop[0], crop[1], k], cmap="gray", vmin=lo, vmax=hi, extent=extent)
        f = np.ma.masked_where(lab.array[crop[0], crop[1], k] == 0, ff.array[crop[0], crop[1], k])
        im = ax.imshow(f, cmap="inferno", vmin=0, vmax=100, alpha=0.6, extent=extent)
        _mark_sides(ax, img)
        _title(ax, f"z = {z:.0f} mm")
        ax.axis("off")
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01)
        cb.set_label("fat fraction (%)", color="white")
        cb.ax.tick_params(colors="white")
    _header(fig, phi, "Fat fraction map")
    return _save(fig, path, dpi)


def read_slices_csv(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def csa_plot(slices: Sequence[Mapping[str, Any]], registry: Registry, path: str | Path, dpi: int = 100,
             verdicts: Mapping[tuple[str, str], str | None] | None = None) -> Path:
    """CSA (mm2) along z, left vs right, one panel per muscle, from the rows of ``calf/slices.csv``. The panels sit
    on fixed margins with one legend for the figure: matplotlib's tight layout measured every tick label of every
    panel again and took most of the time of the picture. ``verdicts`` ((muscle, side) -> segmentation QC verdict):
    a side whose QC failed is drawn grey, and a panel with a verdict other than pass names it in its title."""
    verdicts = verdicts or {}
    muscles = [m for m in registry.muscles if any(r.get("muscle") == m for r in slices)]
    n = max(len(muscles), 1)
    cols = 3
    rows = (n + cols - 1) // cols
    height = 2.6 * rows + 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, height), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.7 / height, top=1 - 0.45 / height, wspace=0.28,
                        hspace=0.75 / 2.6 + 0.25)
    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in slices:
        if r.get("csa_mm2") not in ("", None):
            points.setdefault((str(r.get("muscle")), str(r.get("side"))), []).append(
                (float(r["z_mm"]), float(r["csa_mm2"])))
    for ax, m in zip(axes.ravel(), muscles):
        for side, style in (("right", "-"), ("left", "--")):
            pts = sorted(points.get((m, side), []))
            if pts:
                z, a = zip(*pts)
                colour = "#999999" if verdicts.get((m, side)) == "fail" else "C0" if side == "right" else "C1"
                ax.plot(z, a, style, color=colour, label=side)
        qc = [f"{s[0].upper()} {verdicts.get((m, s))}" for s in ("right", "left")
              if verdicts.get((m, s)) not in (None, "pass")]
        ax.set_title(m.replace("_", " ") + (f" (QC {', '.join(qc)})" if qc else ""), fontsize=9)
        ax.set_xlabel("z (mm)", fontsize=8)
        ax.set_ylabel("CSA (mm²)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(muscles):]:
        ax.axis("off")
    fig.legend(handles=[Line2D([], [], ls="-", color="C0", label="right"),
                        Line2D([], [], ls="--", color="C1", label="left")], loc="upper center", ncol=2, fontsize=8,
               frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, pil_kwargs=PNG_OPTIONS)
    plt.close(fig)
    return Path(path)


def _centroid_rc(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    r, c = np.nonzero(mask)
    return float(c.mean() * spacing[1]), float(r.mean() * spacing[0])


#: midline structures of the lumbar spine: their centre marks the mid-sagittal slice
MIDLINE = ("vertebral_body", "disc")


def midsagittal_slice(labels: Volume, registry: Registry) -> int:
    """The mid-sagittal slice (index along axis 2) of a lumbar label map on the sagittal display grid: the slice
    nearest the voxel-weighted mean slice of the vertebral bodies and discs, which lie across the midline, so that a
    lateral slice does not win by holding more of a falsely labelled band; without bodies or discs the slice with the
    most dural sac, else the middle slice.

    >>> from pipeline.core.labels import registry as reg_of
    >>> r = reg_of("spine"); lab = np.zeros((4, 4, 7), np.int16)
    >>> lab[:, :, 2:5] = r.labels[[l.structure for l in r.labels].index("vertebral_body")].id
    >>> lab[:, :, 6] = [l.id for l in r.labels if l.kind == "canal"][0]
    >>> midsagittal_slice(Volume(lab, np.eye(4)), r)
    3
    """
    arr = np.asarray(labels.array)
    midline = [i.id for i in registry.labels if i.structure in MIDLINE]
    counts = np.isin(arr, midline).sum(axis=(0, 1)).astype(float)
    if counts.sum() > 0:
        return int(round(float(np.average(np.arange(arr.shape[2]), weights=counts))))
    canal = np.isin(arr, [i.id for i in registry.labels if i.kind == "canal"]).sum(axis=(0, 1))
    return int(np.argmax(canal)) if canal.any() else arr.shape[2] // 2


def lumbar_sagittal(image: Volume, labels: Volume, registry: Registry, path: str | Path, phi: str | None = None,
                    dpi: int = 110) -> Path:
    """Mid-sagittal T2 with vertebral level labels and disc markers (superior up, anterior on the image left)."""
    img, lab = to_display(image, SAGITTAL_CODES), to_display(labels, SAGITTAL_CODES)
    by_id = registry.by_id()
    canal = [i.id for i in registry.labels if i.kind == "canal"]
    k = midsagittal_slice(lab, registry)
    fig, ax = plt.subplots(figsize=(5, 6), facecolor="black")
    lo, hi = _window(img.array)
    ax.imshow(img.array[:, :, k], cmap="gray", vmin=lo, vmax=hi, extent=_extent(img))
    sl = lab.array[:, :, k]
    sp = (img.spacing_mm[0], img.spacing_mm[1])
    for lid in np.unique(sl):
        info = by_id.get(int(lid))
        if info is None or info.level is None:
            continue
        x, y = _centroid_rc(sl == lid, sp)
        if info.kind == "disc":
            ax.plot([x], [y], "o", color=info.color, markersize=5)
            ax.text(x + 25, y, info.level, color=info.color, fontsize=8, va="center")
        else:
            ax.text(x, y, info.level, color="yellow", fontsize=9, ha="center", va="center", fontweight="bold")
    for cid in canal:
        if (sl == cid).any():
            _contour(ax, sl == cid, sp, by_id[cid].color)
    kw = dict(color="yellow", fontsize=11, fontweight="bold", transform=ax.transAxes)
    ax.text(0.02, 0.97, "A", va="top", **kw)
    ax.text(0.98, 0.97, "P", va="top", ha="right", **kw)
    ax.axis("off")
    _header(fig, phi, "Lumbar spine, sagittal T2: levels and discs")
    return _save(fig, path, dpi)


#: width (mm) of the axial lumbar pictures, centred on the dural sac
AXIAL_ZOOM_MM = 90.0


def _display_xy(display: Volume, points_ras: Any) -> np.ndarray:
    """(x, y) in the mm coordinates of :func:`_extent` of world points, and their slice index: rows (x, y, k)."""
    rck = display.world_to_voxel(np.atleast_2d(np.asarray(points_ras, float)))
    sp = display.spacing_mm
    return np.stack([(rck[:, 1] + 0.5) * sp[1], (rck[:, 0] + 0.5) * sp[0], rck[:, 2]], axis=1)


def _measured_slice(display: Volume, marks: Mapping[str, Any] | None) -> int | None:
    """Index of the display slice holding the measured point of ``marks`` (None if it is outside this stack)."""
    if not marks or "slice_point_ras" not in marks:
        return None
    r, c, k = display.world_to_voxel(np.asarray([marks["slice_point_ras"]], float))[0]
    k_int = int(np.rint(k))
    inside = 0 <= k_int < display.shape[2] and abs(k - k_int) < 0.5 + 1e-3 and \
        0 <= r < display.shape[0] and 0 <= c < display.shape[1]
    return k_int if inside else None


def lumbar_axial(image: Volume, labels: Volume, registry: Registry, level: str, values: Mapping[str, Any],
                 path: str | Path, phi: str | None = None, dpi: int = 110,
                 marks: Mapping[str, Any] | None = None) -> Path | None:
    """Axial T2 at the disc ``level``: dural sac outline with its area, lateral recess and foramen values per side.

    ``values`` are the saved summary values of that level (``dsca_mm2``, ``central_grade``,
    ``<side>.lateral_recess_depth_mm`` ...). With ``marks`` (spine/marks.json of that level) the picture shows the
    slice that was measured, with the AP chord and the narrowest lateral recess line of each side drawn where they
    were measured; it returns None when that slice is not in this stack. Without marks it shows the slice with the
    most disc and returns None when no slice of this stack shows that disc.
    """
    img, lab = to_display(image, AXIAL_CODES), to_display(labels, AXIAL_CODES)
    disc = next((i.id for i in registry.labels if i.kind == "disc" and i.level == level), None)
    if disc is None:
        return None
    if marks:
        k_marked = _measured_slice(img, marks)
        if k_marked is None:
            return None
        k = k_marked
    else:
        counts = (lab.array == disc).sum(axis=(0, 1))
        if not counts.any():
            return None
        k = int(np.argmax(counts))
    by_id = registry.by_id()
    sp = (img.spacing_mm[0], img.spacing_mm[1])
    fig, ax = plt.subplots(figsize=(5, 5), facecolor="black")
    lo, hi = _window(img.array)
    ax.imshow(img.array[:, :, k], cmap="gray", vmin=lo, vmax=hi, extent=_extent(img))
    sl = lab.array[:, :, k]
    for info in registry.labels:
        if info.kind in ("canal", "nerve") and (sl == info.id).any():
            _contour(ax, sl == info.id, sp, info.color, 1.0)
    canal = [i.id for i in registry.labels if i.kind == "canal"]
    if canal and np.isin(sl, canal).any():
        x, y = _centroid_rc(np.isin(sl, canal), sp)
        dsca = values.get("dsca_mm2")
        txt = f"DSCA {dsca:.0f} mm²" if isinstance(dsca, (int, float)) else "DSCA n/a"
        ax.text(x, y + 22, f"{txt} ({values.get('central_grade') or 'n/a'})", color=by_id[canal[0]].color,
                fontsize=8, ha="center", bbox={"facecolor": "black", "alpha": 0.7, "edgecolor": "none"})
        half = AXIAL_ZOOM_MM / 2  # the canal, the recesses and the foramina, not the whole abdomen
        ax.set_xlim(x - half, x + half)
        ax.set_ylim(y + half, y - half)
    for key, color in (("ap_line_ras", "yellow"), ("right.lateral_recess_line_ras", "orange"),
                       ("left.lateral_recess_line_ras", "orange")):
        if marks and key in marks:
            xy = _display_xy(img, marks[key])
            ax.plot(xy[:, 0], xy[:, 1], color=color, linewidth=1.5, marker="_" if "recess" in key else None,
                    markersize=6, solid_capstyle="butt")
    left, right = side_markers(img)
    for pos, letter in ((0.02, left), (0.98, right)):
        side = "right" if letter == "R" else "left"
        rec = values.get(f"{side}.lateral_recess_depth_mm")
        fa = values.get(f"{side}.foramen_area_mm2")
        lines = [f"recess {rec:.1f} mm" if isinstance(rec, (int, float)) else "recess n/a",
                 f"foramen {fa:.0f} mm² (grade {values.get(f'{side}.foramen_grade', 'n/a')})"
                 if isinstance(fa, (int, float)) else "foramen n/a"]
        ax.text(pos, 0.06, "\n".join(lines), color="cyan", fontsize=7, ha="left" if pos < 0.5 else "right",
                transform=ax.transAxes)
    _mark_sides(ax, img)
    ax.axis("off")
    _header(fig, phi, f"{level}: axial T2 at the disc")
    return _save(fig, path, dpi)


def asymmetry_chart(values: Mapping[str, Any], structures: Sequence[str], flag_pct: float, path: str | Path,
                    dpi: int = 100, failed: Collection[str] = ()) -> Path | None:
    """Horizontal bars of the volume asymmetry index AI = (R - L) / ((R + L) / 2) x 100 per structure (from
    ``calf.asymmetry.<structure>.volume_ai_pct``), bars beyond ``flag_pct`` in red, and the fat-fraction difference
    R - L (percentage points) beside them; None when the summary has no asymmetry value. The structures in
    ``failed`` (whose segmentation failed QC in a leg) are drawn as grey hatched bars named "(QC fail)", never red."""
    rows = [(s, values.get(f"calf.asymmetry.{s}.volume_ai_pct"), values.get(f"calf.asymmetry.{s}.ff_diff_pp"))
            for s in structures]
    rows = [r for r in rows if isinstance(r[1], int | float) or isinstance(r[2], int | float)]
    if not rows:
        return None
    bad = [r[0] in failed for r in rows][::-1]
    names = [r[0].replace("_", " ") + (" (QC fail)" if r[0] in failed else "") for r in rows][::-1]
    height = 0.32 * len(rows) + 1.2
    fig, axes = plt.subplots(1, 2, figsize=(10, height), sharey=True)
    # fixed margins (a tight layout measures every label again): room for the longest name at 8 pt on the left
    fig.subplots_adjust(left=min(0.45, 0.02 + 0.0085 * max(len(n) for n in names)), right=0.98, wspace=0.08,
                        bottom=0.45 / height, top=1 - 0.4 / height)
    for ax, k, title, limit in ((axes[0], 1, "volume AI (%), right minus left", flag_pct),
                                (axes[1], 2, "FF difference (pp), right minus left", None)):
        vals = [float(r[k]) if isinstance(r[k], int | float) else np.nan for r in rows][::-1]
        colours = ["#bbbbbb" if b else "#c0392b" if limit is not None and abs(v) >= limit else "#5b7fa6"
                   for v, b in zip(vals, bad, strict=True)]
        bars = ax.barh(range(len(vals)), np.nan_to_num(vals), color=colours)
        for bar, b in zip(bars, bad, strict=True):
            if b:
                bar.set_hatch("///")
                bar.set_edgecolor("#777777")
        if limit is not None:
            for x in (-limit, limit):
                ax.axvline(x, color="#999", lw=0.8, ls="--")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(range(len(names)), names)
    return _save(fig, path, dpi, facecolor="white")


def canal_chart(values: Mapping[str, Any], levels: Sequence[str], path: str | Path, dpi: int = 100,
                failed: Collection[str] = ()) -> Path | None:
    """Dural sac cross-sectional area (mm²) and lateral recess depth per side (mm) at each disc level, from
    ``spine.<level>.dsca_mm2`` and ``spine.<level>.<side>.lateral_recess_depth_mm``; None when none was measured.
    Only the levels with a measurement are drawn, in the order of ``levels``. The levels in ``failed`` (whose QC
    failed) are drawn grey and hatched and named "(QC fail)"."""
    keys = ("dsca_mm2", "right.lateral_recess_depth_mm", "left.lateral_recess_depth_mm")
    levels = [lv for lv in levels if any(isinstance(values.get(f"spine.{lv}.{k}"), int | float) for k in keys)]
    dsca = [values.get(f"spine.{lv}.dsca_mm2") for lv in levels]
    recess = {s: [values.get(f"spine.{lv}.{s}.lateral_recess_depth_mm") for lv in levels] for s in ("right", "left")}
    if not any(isinstance(v, int | float) for v in [*dsca, *recess["right"], *recess["left"]]):
        return None
    x = np.arange(len(levels))
    bad = [lv in failed for lv in levels]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    bars = [axes[0].bar(x, [v if isinstance(v, int | float) else 0 for v in dsca], color="#5b7fa6")]
    axes[0].set_title("dural sac area (mm²)", fontsize=9)
    for k, (side, colour) in enumerate((("right", "#c0392b"), ("left", "#2e86c1"))):
        bars.append(axes[1].bar(x + (k - 0.5) * 0.38, [v if isinstance(v, int | float) else 0 for v in recess[side]],
                                0.38, color=colour, label=side))
    for group in bars:
        for bar, b in zip(group, bad, strict=True):
            if b:
                bar.set_facecolor("#bbbbbb")
                bar.set_hatch("///")
                bar.set_edgecolor("#777777")
    axes[1].set_title("lateral recess depth (mm)", fontsize=9)
    axes[1].legend(fontsize=8)
    names = [f"{lv}\n(QC fail)" if b else lv for lv, b in zip(levels, bad, strict=True)]
    for ax in axes:
        ax.set_xticks(x, names, fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi, facecolor="white")
