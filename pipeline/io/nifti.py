"""NIfTI reading and writing of :class:`~pipeline.core.volume.Volume` (nibabel; RAS+ world, mm)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.core.atomic import atomic_path
from pipeline.core.config import load_config
from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume

#: qform and sform must agree within this (mm, on every affine entry) when both are set.
QFORM_SFORM_ATOL_MM = 1e-3
#: The largest image (bytes of its voxel data, as the header declares them) read; checked before decompression.

#: Bytes of voxel data that :func:`load_volume` keeps in memory, so that a file read again (by a later stage of the
#: same process, or after :func:`save_volume` wrote it) is not decompressed again.
CACHE_MAX_BYTES = 768 * 2**20

_CACHE: OrderedDict[str, tuple[np.ndarray, np.ndarray, tuple[int, ...], int]] = OrderedDict()


def _file_key(path: Path) -> str | None:
    """SHA-256 of the bytes of the file at ``path`` (a tenth of the cost of decompressing it); None when it cannot be
    read or is larger than :data:`CACHE_MAX_BYTES`."""
    try:
        if path.stat().st_size > CACHE_MAX_BYTES:
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _remember(key: str | None, data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header,
              copy: bool = True) -> None:
    """Keep the voxel data (a private copy with ``copy``, else ``data`` itself, which no one else may hold), affine
    and declared size (:func:`_declared_size` of ``header``) of the file whose bytes hash to ``key``, evicting the
    least recently used beyond :data:`CACHE_MAX_BYTES`."""
    if key is None or data.nbytes > CACHE_MAX_BYTES:
        return
    _CACHE[key] = (data.copy(order="K") if copy else data, affine.copy(), *_declared_size(header))
    _CACHE.move_to_end(key)
    while sum(entry[0].nbytes for entry in _CACHE.values()) > CACHE_MAX_BYTES:
        _CACHE.popitem(last=False)


def _recalled(key: str | None, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A copy of the voxel data and affine kept for ``key`` (None when not kept), its declared size checked against
    the limit in force (:func:`_check_declared_size`)."""
    if key is None or key not in _CACHE:
        return None
    _CACHE.move_to_end(key)
    data, affine, shape, declared = _CACHE[key]
    _check_declared_size(shape, declared, path)
    return data.copy(order="K"), affine.copy()


def _declared_size(header: nib.Nifti1Header) -> tuple[tuple[int, ...], int]:
    """Shape and bytes of voxel data a NIfTI header declares."""
    shape = tuple(int(n) for n in header.get_data_shape())
    return shape, int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize


def _check_declared_size(shape: tuple[int, ...], declared: int, path: Path) -> None:
    """Refuse an image whose declared voxel data exceed ``ingest.max_image_gib``."""
    limit_gib = float(load_config("default")["ingest"].get("max_image_gib", 4))
    if declared > limit_gib * 2**30:
        raise BadInputError(f"the header declares {shape} voxels, {declared / 2**30:.1f} GiB, above the "
                            f"{limit_gib:g} GiB limit (ingest.max_image_gib).", path=path,
                            fix="check the file: a calf or lumbar MRI series is well under 1 GiB.")


def clear_cache() -> None:
    """Forget every volume kept by :func:`load_volume` and :func:`save_volume`."""
    _CACHE.clear()


def _checked_affine(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    if qform is not None and sform is not None and not np.allclose(qform, sform, atol=QFORM_SFORM_ATOL_MM):
        diff = float(np.max(np.abs(qform - sform)))
        raise BadInputError(
            f"qform (code {qcode}) and sform (code {scode}) disagree by up to {diff:.3g} mm; the voxel positions are "
            "ambiguous.",
            path=path,
            fix="rewrite the file with one geometry (e.g. nibabel: img.set_qform(img.get_sform(), code=1)), or "
                "re-convert it from DICOM with dcm2niix.")
    affine = sform if sform is not None else qform
    if affine is not None:
        sizes = np.linalg.norm(affine[:3, :3], axis=0)
        if np.all(np.isfinite(affine)) and not np.all((sizes >= 0.01) & (sizes <= 50.0)):
            raise BadInputError(f"voxel sizes {np.round(sizes, 6).tolist()} mm are not those of an MR image "
                                "(0.01-50 mm).", path=path, fix="correct pixdim / the affine, or re-convert the "
                                                                "image from DICOM (dcm2niix).")
        if not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9:
            raise BadInputError(f"the voxel-to-world affine is not finite and invertible: {np.round(affine, 4).tolist()}.",
                                path=path, fix="re-convert the image from DICOM (dcm2niix).")
        return affine
    raise BadInputError("neither qform nor sform is set; the image has no position in the patient.", path=path,
                        fix="re-convert the image from DICOM (dcm2niix) so that it carries its scanner geometry.")


def load_volume(path: str | Path) -> Volume:
    """Read a 3-D NIfTI file into a Volume; refuses qform/sform disagreement and images without geometry.

    A 4-D file with a single volume is squeezed to 3-D; more volumes are refused. A file whose bytes this process
    read or wrote before gives the data kept then (a copy: the caller may modify it), without decompression.
    """
    path = Path(path)
    key = _file_key(path)
    kept = _recalled(key, path)
    if kept is not None:
        return Volume(kept[0], kept[1], {"source": str(path)})
    volume, header = _read_volume(path)
    _remember(key, volume.array, volume.affine, header)
    return volume


def _read_volume(path: Path) -> tuple[Volume, nib.Nifti1Header]:
    """:func:`load_volume` from the file, and the file's header."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several exception types for broken files
        raise BadInputError(f"cannot read NIfTI ({type(exc).__name__}: {exc}).", path=path,
                            fix="check that the file is a complete .nii/.nii.gz image.") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise BadInputError(f"not a NIfTI image ({type(img).__name__}).", path=path, fix="convert it to NIfTI.")
    affine = _checked_affine(img, path)
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
                                        or dtype == np.bool_):
        raise BadInputError(f"voxels of type {dtype} are not real grey-scale values.", path=path,
                            fix="give a magnitude (or fat-fraction) image: integer or floating point, one value per "
                                "voxel (split complex data into magnitude and phase).")
    _check_declared_size(*_declared_size(img.header), path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt compressed data (EOFError, zlib.error, OSError, ValueError)
        raise BadInputError(f"cannot read the voxel data ({type(exc).__name__}: {exc}).", path=path,
                            fix="the file is truncated or damaged; copy or convert it again.") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BadInputError(f"expected a 3-D image, got shape {data.shape}.", path=path,
                            fix="split 4-D series into one 3-D file per volume.")
    slope, inter = img.header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(data.shape)
    return Volume(np.asarray(data), affine, {"source": str(path)}), img.header


def save_volume(volume: Volume, path: str | Path, dtype: np.dtype | type | None = None) -> Path:
    """Atomically write ``volume`` as NIfTI-1 (qform and sform both set to the affine, code 1 = scanner, mm)."""
    data = volume.array if dtype is None else volume.array.astype(dtype)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    path = _write_nifti(nib.Nifti1Image(data, volume.affine), volume.affine, Path(path))
    _remember_written(path, data)
    return path


def _remember_written(path: Path, data: np.ndarray) -> None:
    """Keep what :func:`load_volume` would read back from the file just written from ``data``: the same values in
    file (Fortran) order and the affine of its header, when the file stores ``data`` unscaled in its own type."""
    img = nib.load(str(path))
    slope, inter = img.header.get_slope_inter()
    if img.header.get_data_dtype() != data.dtype or slope not in (None, 1.0) or inter not in (None, 0.0):
        return
    try:
        affine = _checked_affine(img, path)
    except BadInputError:  # a geometry load_volume refuses: nothing to keep
        return
    _remember(_file_key(path), np.array(data, order="F"), affine, img.header, copy=False)


PROBABILITY_STEPS = 250  # probability maps are stored as uint8 0-250 with scl_slope 1/250 (steps of 0.004)


def save_probability(volume: Volume, path: str | Path) -> Path:
    """Atomically write a probability map (values 0-1) as uint8 NIfTI with ``scl_slope = 1/250``: 4x smaller than
    float32 and well compressed; :func:`load_volume` gives back the values within 0.002."""
    data = np.rint(np.clip(np.asarray(volume.array, np.float32), 0.0, 1.0) * PROBABILITY_STEPS).astype(np.uint8)
    img = nib.Nifti1Image(data, volume.affine)
    img.header.set_slope_inter(1.0 / PROBABILITY_STEPS, 0.0)
    img.header.set_intent("estimate", name="probability")
    return _write_nifti(img, volume.affine, Path(path))


def _write_nifti(img: nib.Nifti1Image, affine: np.ndarray, path: Path) -> Path:
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def to_closest_canonical(volume: Volume) -> tuple[Volume, int]:
    """Reorient ``volume`` to the closest canonical (RAS+) axis order with nibabel's ``as_closest_canonical``.

    Returns the reoriented volume and the array axis that held the original axis 2 (the acquisition slice axis).
    Only axes are permuted and flipped: voxel values and world positions are unchanged.
    """
    img = nib.Nifti1Image(volume.array, volume.affine)
    ornt = nib.orientations.io_orientation(volume.affine)
    can = nib.as_closest_canonical(img)
    return Volume(np.asanyarray(can.dataobj), can.affine, dict(volume.meta)), int(ornt[2, 0])

