"""DICOM discovery, grouping into stacks, slice sorting, decoding and exact geometry.

A *frame* is one 2-D image: a classic single-frame instance, or one frame of an Enhanced (multi-frame) instance with
its per-frame functional groups. Frames are grouped by SeriesInstanceUID and split into *stacks* of frames that share
orientation, ImageType, echo time and matrix (a localizer series holds three planes under one UID). A stack is sorted
by the position of each frame along the slice normal (never by InstanceNumber or file name) and becomes a
:class:`~pipeline.core.volume.Volume` whose affine comes from ImagePositionPatient, ImageOrientationPatient and
PixelSpacing alone.

Array layout (as nibabel and dcm2niix before flipping): ``array[i, j, k]`` with ``i`` the column index (along the
first IOP direction, spacing PixelSpacing[1]), ``j`` the row index (along the second IOP direction, spacing
PixelSpacing[0]) and ``k`` the sorted frame index. The LPS affine is::

    [ r * dc,  c * dr,  (P_last - P_first) / (n - 1),  P_first ]

with ``r``/``c`` the IOP row/column direction cosines, ``dc``/``dr`` the column/row spacing, and ``P`` the
ImagePositionPatient of the first and last sorted frames; it is then converted to RAS+ by negating x and y.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipeline.core.errors import BadInputError
from pipeline.core.geometry import lps_to_ras_affine
from pipeline.core.volume import Volume

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Relative tolerance on slice spacing before a stack is called uneven (warning).
UNEVEN_SPACING_TOL = 0.01
#: A gap larger than this multiple of the median spacing means a missing slice (error).
MISSING_SLICE_FACTOR = 1.5
#: Positions closer than this (mm) along the normal are the same position.
DUPLICATE_POSITION_MM = 1e-3
#: ImageOrientationPatient direction cosines must be unit length and orthogonal within this tolerance (PS3.3
#: C.7.6.2.1.1; exporters round them to 6 decimals, which stays far inside it).
ORIENTATION_TOL = 1e-3
#: Pixel spacing (mm) accepted as physical: above the resolution of any MR image, below a whole-body field of view.
PIXEL_SPACING_RANGE_MM = (0.01, 50.0)


#: SOP classes whose Image Plane module is mandatory (MR Image, Enhanced MR Image): without it, or with invalid
#: values in it, the file is damaged, not merely an image without a place (as a secondary capture is).
MR_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1")


class InvalidGeometryError(BadInputError):
    """An MR image whose geometry is absent or invalid: the study cannot be read without guessing where it lies,
    and dropping the file could silently drop a series (and change what the study is measured from)."""


def frame_geometry(path: Path, ipp: Any, iop: Any, pixel_spacing: Any
                   ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """ImagePositionPatient (3), ImageOrientationPatient (6) and PixelSpacing (row, column) of one frame as numbers,
    checked before any volume is built: finite, PixelSpacing positive and physical, the two IOP direction cosines
    unit vectors and orthogonal. A negative spacing or a mirrored orientation would otherwise change which leg is
    which without a trace; they are refused with the file and the fix.

    >>> frame_geometry(Path("x.dcm"), [0, 0, 5], [1, 0, 0, 0, 1, 0], ["0.5", "0.5"])[2]
    (0.5, 0.5)
    >>> frame_geometry(Path("x.dcm"), [0, 0, 5], [1, 0, 0, 0, 1, 0], [-1.5, 1.5])
    Traceback (most recent call last):
    ...
    pipeline.io.dicom_read.InvalidGeometryError: x.dcm: PixelSpacing [-1.5, 1.5] is not a pair of positive spacings in mm (0.01-50). Fix: correct the header (PixelSpacing is row then column spacing, both positive) or export the series again.
    """
    fix = "correct the header or export the series again from the scanner or PACS."

    def values(v: Any) -> list[Any]:  # a multi-valued tag holding one value reads as a scalar
        return [v] if isinstance(v, (str, bytes, int, float)) else list(v)

    try:
        p = np.asarray([float(v) for v in values(ipp)], dtype=np.float64)
        o = np.asarray([float(v) for v in values(iop)], dtype=np.float64)
        ps = [float(v) for v in values(pixel_spacing)]
    except (TypeError, ValueError) as exc:
        raise InvalidGeometryError(f"geometry tags are not numbers ({exc}).", path=path, fix=fix) from None
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InvalidGeometryError(f"ImagePositionPatient {list(ipp)} is not three finite numbers.", path=path, fix=fix)
    lo, hi = PIXEL_SPACING_RANGE_MM
    if len(ps) != 2 or not all(np.isfinite(v) and lo <= v <= hi for v in ps):
        raise InvalidGeometryError(f"PixelSpacing {ps} is not a pair of positive spacings in mm ({lo:g}-{hi:g}).",
                            path=path, fix="correct the header (PixelSpacing is row then column spacing, both "
                                           "positive) or export the series again.")
    if o.shape != (6,) or not np.all(np.isfinite(o)):
        raise InvalidGeometryError(f"ImageOrientationPatient {list(iop)} is not six finite numbers.", path=path, fix=fix)
    r, c = o[:3], o[3:]
    if (abs(np.linalg.norm(r) - 1) > ORIENTATION_TOL or abs(np.linalg.norm(c) - 1) > ORIENTATION_TOL
            or abs(float(r @ c)) > ORIENTATION_TOL):
        raise InvalidGeometryError(f"ImageOrientationPatient {o.tolist()} is not two orthogonal unit vectors.", path=path,
                            fix=fix)
    return p, o, (ps[0], ps[1])


@dataclass
class Frame:
    """One 2-D image and the header facts that place it in space."""

    path: Path
    frame_index: int | None  # None for a single-frame instance
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    ipp: np.ndarray  # ImagePositionPatient, LPS mm
    iop: np.ndarray  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    rows: int
    columns: int
    image_type: tuple[str, ...]
    echo_time: float | None
    slice_thickness: float | None
    instance_number: int | None
    rescale: tuple[float, float] | None  # (slope, intercept) when given per frame (enhanced)
    header: Dataset = field(repr=False)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.iop[:3], self.iop[3:])

    def stack_key(self) -> tuple:
        return (self.series_uid, tuple(np.round(self.iop, 4)), self.image_type,
                None if self.echo_time is None else round(self.echo_time, 3), self.rows, self.columns,
                tuple(round(s, 4) for s in self.pixel_spacing))


@dataclass
class Skipped:
    file: str
    reason: str


@dataclass
class Stack:
    """Frames of one series that form one volume, sorted along the slice normal."""

    frames: list[Frame]
    warnings: list[str] = field(default_factory=list)

    @property
    def first(self) -> Frame:
        return self.frames[0]

    @property
    def header(self) -> Dataset:
        return self.first.header

    @property
    def files(self) -> list[str]:
        return [str(f.path) if f.frame_index is None else f"{f.path}#frame{f.frame_index + 1}" for f in self.frames]


# -- discovery --------------------------------------------------------------------------------------------------
def _text(ds: Dataset, keyword: str, default: str = "") -> str:
    v = ds.get(keyword, default)
    return default if v is None else str(v)


def _float_or_none(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _int_or_none(v: Any) -> int | None:
    """An integer tag's value, or None when absent or not a number (InstanceNumber orders nothing here: slices are
    sorted by position).

    >>> _int_or_none("7"), _int_or_none("x"), _int_or_none(None)
    (7, None, None)
    """
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def read_header(path: Path) -> Dataset:
    """Read a DICOM header without pixel data; raise InvalidDicomError for anything that is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Files without the 128-byte preamble and 'DICM' marker (allowed for old media): accept only if the
        # forced parse yields an image header.
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "SOPClassUID" not in ds or "Rows" not in ds:
            raise
        return ds


def discover(root: Path) -> tuple[list[tuple[Path, Dataset]], list[Skipped]]:
    """Every DICOM image file under ``root`` (recursively, whatever the names) and the files skipped, with why.

    DICOMDIR index files, segmentation objects (DICOM SEG, such as legmri's own) and links to files outside
    ``root`` (a study reads only its own files) are skipped.
    """
    found: list[tuple[Path, Dataset]] = []
    skipped: list[Skipped] = []
    inside = Path(root).resolve()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = str(path)
        if path.name.startswith("."):
            skipped.append(Skipped(rel, "hidden file"))
            continue
        if not path.resolve().is_relative_to(inside):
            skipped.append(Skipped(rel, "a link to a file outside the study folder (a study reads only its own "
                                        "files; copy the file in)"))
            continue
        try:
            ds = read_header(path)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            skipped.append(Skipped(rel, f"not a DICOM file ({type(exc).__name__}: {str(exc)[:120]})"))
            continue
        sop_class = _text(ds.file_meta if hasattr(ds, "file_meta") else ds, "MediaStorageSOPClassUID") or _text(
            ds, "SOPClassUID")
        if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            skipped.append(Skipped(rel, "DICOMDIR index (its images are read directly from the folder tree)"))
            continue
        if sop_class == SEG_SOP_CLASS:
            skipped.append(Skipped(rel, "a segmentation object (DICOM SEG), not an image series"))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append(Skipped(rel, f"DICOM object without an image (SOP class {sop_class or 'unknown'})"))
            continue
        found.append((path, ds))
    return found, skipped


# -- frames -----------------------------------------------------------------------------------------------------
def _seq_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None or keyword not in ds or not ds[keyword].value:
        return None
    return ds[keyword].value[0]


def _enhanced_frames(path: Path, ds: Dataset) -> list[Frame]:
    """Frames of an Enhanced (multi-frame) instance from its shared and per-frame functional groups."""
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n = int(ds.get("NumberOfFrames", 1))
    if len(per_frame) != n:
        raise BadInputError(f"Enhanced DICOM lists {len(per_frame)} per-frame groups for {n} frames.", path=path,
                            fix="re-export the series from the scanner or PACS; the file is inconsistent.")
    frames = []
    base_type = tuple(str(t).upper() for t in ds.get("ImageType", []))

    def lookup(item: Dataset, seq: str) -> Dataset | None:
        return _seq_item(item, seq) or _seq_item(shared, seq)

    for f, item in enumerate(per_frame):
        pos = lookup(item, "PlanePositionSequence")
        ori = lookup(item, "PlaneOrientationSequence")
        meas = lookup(item, "PixelMeasuresSequence")
        if pos is None or ori is None or meas is None:
            raise BadInputError(f"frame {f + 1} lacks plane position, orientation or pixel measures.", path=path,
                                fix="this multi-frame file carries no usable geometry; export classic MR images.")
        mr_type = lookup(item, "MRImageFrameTypeSequence")
        ftype = tuple(str(t).upper() for t in mr_type.get("FrameType", [])) if mr_type is not None else base_type
        echo = lookup(item, "MREchoSequence")
        te = _float_or_none(echo.get("EffectiveEchoTime")) if echo is not None else None
        pvt = lookup(item, "PixelValueTransformationSequence")
        rescale = None
        if pvt is not None and "RescaleSlope" in pvt:
            rescale = rescale_of(pvt, path)
        ipp, iop, spacing = frame_geometry(path, pos.ImagePositionPatient, ori.ImageOrientationPatient,
                                           meas.PixelSpacing)
        frames.append(Frame(
            path=path, frame_index=f, series_uid=_text(ds, "SeriesInstanceUID"),
            sop_instance_uid=_text(ds, "SOPInstanceUID"), sop_class_uid=_text(ds, "SOPClassUID"),
            ipp=ipp, iop=iop, pixel_spacing=spacing,
            rows=int(ds.Rows), columns=int(ds.Columns), image_type=ftype, echo_time=te,
            slice_thickness=_float_or_none(meas.get("SliceThickness")), instance_number=f + 1, rescale=rescale,
            header=ds))
    return frames


def frames_of(path: Path, ds: Dataset) -> list[Frame]:
    """The frames of one DICOM instance; raise BadInputError when it has no usable geometry."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(path, ds)
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        error = InvalidGeometryError if str(ds.get("SOPClassUID", "")) in MR_IMAGE_SOP_CLASSES else BadInputError
        raise error(f"image lacks {', '.join(missing)}; its position in the patient is unknown.", path=path,
                    fix="export the series with full geometry (not as secondary capture / screenshots).")
    ipp, iop, spacing = frame_geometry(path, ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing)
    return [Frame(
        path=path, frame_index=None, series_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"), sop_class_uid=_text(ds, "SOPClassUID"),
        ipp=ipp, iop=iop, pixel_spacing=spacing,
        rows=int(ds.Rows), columns=int(ds.Columns),
        image_type=tuple(str(t).upper() for t in ds.get("ImageType", [])),
        echo_time=_float_or_none(ds.get("EchoTime")), slice_thickness=_float_or_none(ds.get("SliceThickness")),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        rescale=None, header=ds)]


# -- stacks -----------------------------------------------------------------------------------------------------
def group_stacks(frames: Iterable[Frame]) -> list[list[Frame]]:
    """Group frames by series, then by orientation, ImageType, echo time, matrix and pixel spacing."""
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for fr in frames:
        groups[fr.stack_key()].append(fr)
    return list(groups.values())


def sort_stack(frames: Sequence[Frame], *, strict: bool = True) -> Stack:
    """Sort frames along the slice normal and check the spacing.

    Identical duplicates (same SOPInstanceUID and frame) are kept once. Two different images at one position, or a
    gap wider than ``MISSING_SLICE_FACTOR`` times the median spacing, raise :class:`BadInputError` when ``strict``
    (warnings otherwise); unequal spacing within tolerance gives a warning.
    """
    normal = frames[0].normal
    uniq: dict[tuple[str, int | None], Frame] = {}
    for fr in frames:
        uniq.setdefault((fr.sop_instance_uid, fr.frame_index), fr)
    ordered = sorted(uniq.values(), key=lambda fr: float(fr.ipp @ normal))
    stack = Stack(ordered)
    if len(ordered) < 2:
        return stack
    pos = np.array([float(fr.ipp @ normal) for fr in ordered])
    steps = np.diff(pos)
    dup = np.nonzero(steps < DUPLICATE_POSITION_MM)[0]
    if dup.size:
        a, b = ordered[dup[0]], ordered[dup[0] + 1]
        msg = (f"two different images share slice position {pos[dup[0]]:.3f} mm along the normal "
               f"({a.path.name} and {b.path.name}) in series {a.series_uid}.")
        fix = "remove the duplicate files (e.g. a repeated export) or split the acquisitions into separate folders."
        if strict:
            raise BadInputError(msg, path=b.path, fix=fix)
        stack.warnings.append(msg)
        return stack
    median = float(np.median(steps))
    gaps = np.nonzero(steps > MISSING_SLICE_FACTOR * median)[0]
    if gaps.size:
        g = gaps[0]
        a, b = ordered[g], ordered[g + 1]
        msg = (f"a slice is missing in series {a.series_uid}: the gap between {a.path.name} ({pos[g]:.2f} mm) and "
               f"{b.path.name} ({pos[g + 1]:.2f} mm) is {steps[g]:.2f} mm, {steps[g] / median:.1f}x the usual "
               f"{median:.2f} mm spacing.")
        fix = "copy the complete series again (all slices) from the scanner or PACS."
        if strict:
            raise BadInputError(msg, path=a.path.parent, fix=fix)
        stack.warnings.append(msg)
    elif np.max(np.abs(steps - median)) > UNEVEN_SPACING_TOL * median:
        stack.warnings.append(f"uneven slice spacing: {steps.min():.3f}-{steps.max():.3f} mm (median {median:.3f});"
                              " the volume uses the mean step between first and last slice.")
    return stack


# -- pixels and geometry ----------------------------------------------------------------------------------------
def stack_affine_lps(stack: Stack) -> np.ndarray:
    """The voxel-to-LPS affine of a sorted stack (see module docstring)."""
    fr = stack.first
    row_dir, col_dir = fr.iop[:3], fr.iop[3:]
    dr, dc = fr.pixel_spacing
    aff = np.eye(4)
    aff[:3, 0] = row_dir * dc
    aff[:3, 1] = col_dir * dr
    n = len(stack.frames)
    if n > 1:
        aff[:3, 2] = (stack.frames[-1].ipp - fr.ipp) / (n - 1)
    else:
        hdr = fr.header
        step = _float_or_none(hdr.get("SpacingBetweenSlices")) or fr.slice_thickness or 1.0
        aff[:3, 2] = fr.normal * step
    aff[:3, 3] = fr.ipp
    return aff


def _decode(path: Path, cache: dict[Path, Dataset]) -> Dataset:
    ds = cache.get(path)
    if ds is None:
        try:
            ds = pydicom.dcmread(path, force=True)
            _ = ds.pixel_array
        except Exception as exc:  # decoding errors come in many types from the codec plugins
            raise BadInputError(f"cannot decode the pixel data ({type(exc).__name__}: {exc}).", path=path,
                                fix="check that the file is complete (not truncated); for a compressed transfer "
                                    "syntax install the pylibjpeg plugins (pip install legmri installs them).") from exc
        cache[path] = ds
    return ds


def _frame_pixels(fr: Frame, cache: dict[Path, Dataset]) -> np.ndarray:
    ds = _decode(fr.path, cache)
    arr = ds.pixel_array
    if fr.frame_index is not None:
        arr = arr[fr.frame_index] if arr.ndim == 3 and int(ds.get("NumberOfFrames", 1)) > 1 else arr
        if fr.rescale is not None:
            slope, inter = fr.rescale
            return arr.astype(np.float64) * slope + inter if (slope, inter) != (1.0, 0.0) else arr
        return arr
    if arr.ndim != 2:
        raise BadInputError(f"expected a 2-D grey-scale image, got pixel array shape {arr.shape}.", path=fr.path,
                            fix="colour or multi-sample images are not MR magnitude data; remove them from the study.")
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope, inter = rescale_of(ds, fr.path)
        if (slope, inter) != (1.0, 0.0):
            return arr.astype(np.float64) * slope + inter
    return arr


def rescale_of(ds: Dataset, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 when absent), checked: numbers, finite, a non-zero slope (a zero
    slope would make every voxel the intercept)."""
    fix = "correct RescaleSlope / RescaleIntercept or export the series again."
    try:
        slope = float(ds.get("RescaleSlope", 1.0) if ds.get("RescaleSlope") not in (None, "") else 1.0)
        inter = float(ds.get("RescaleIntercept", 0.0) if ds.get("RescaleIntercept") not in (None, "") else 0.0)
    except (TypeError, ValueError):
        raise BadInputError(f"RescaleSlope {ds.get('RescaleSlope')!r} / RescaleIntercept "
                            f"{ds.get('RescaleIntercept')!r} are not numbers.", path=path, fix=fix) from None
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope == 0.0:
        raise BadInputError(f"RescaleSlope {slope} / RescaleIntercept {inter} do not map stored values to "
                            "intensities (not finite, or a zero slope).", path=path, fix=fix)
    return slope, inter


def read_stack_volume(stack: Stack, cache: dict[Path, Dataset] | None = None) -> Volume:
    """Decode a sorted stack into a Volume (modality LUT applied; float32 when rescaled, else the stored integers)."""
    cache = {} if cache is None else cache
    planes = [_frame_pixels(fr, cache) for fr in stack.frames]
    rescaled = any(p.dtype.kind == "f" for p in planes)
    dtype = np.float32 if rescaled else np.result_type(*[p.dtype for p in planes])
    data = np.stack([np.asarray(p, dtype=dtype).T for p in planes], axis=-1)  # (cols, rows, slices)
    affine = lps_to_ras_affine(stack_affine_lps(stack))
    return Volume(data, affine, {"series_uid": stack.first.series_uid})


def read_stack(files: Sequence[str | Path], *, strict: bool = True) -> Volume:
    """Read DICOM files holding ONE stack (any order, any names) into a Volume.

    Raises :class:`BadInputError` when the files hold several stacks, miss slices or are not DICOM images.
    """
    frames: list[Frame] = []
    for f in files:
        path = Path(f)
        try:
            ds = read_header(path)
        except (InvalidDicomError, EOFError, OSError) as exc:
            raise BadInputError(f"not a readable DICOM file ({exc}).", path=path, fix="remove it from the list.") from exc
        frames.extend(frames_of(path, ds))
    if not frames:
        raise BadInputError("no DICOM frames given.", path=Path(files[0]).parent if files else Path("."),
                            fix="pass the files of one series.")
    groups = group_stacks(frames)
    if len(groups) != 1:
        raise BadInputError(f"the files hold {len(groups)} different stacks (orientation/type/echo/matrix differ).",
                            path=frames[0].path.parent, fix="pass the files of one stack, or use ingest_study.")
    return read_stack_volume(sort_stack(groups[0], strict=strict))
