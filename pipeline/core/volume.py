"""The one image type passed between stages: a 3-D array and its 4x4 voxel-to-world affine in RAS+ millimetres.

Conventions (nibabel's): voxel index ``(i, j, k)`` maps to world ``(x, y, z)`` by ``affine @ [i, j, k, 1]``;
+x is the patient's Right, +y Anterior, +z Superior. Volumes built from DICOM are converted once, at ingestion, from
DICOM's LPS+ patient coordinates (see :mod:`pipeline.core.geometry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.errors import InternalError


def _validate_affine(affine: Any) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise InternalError(f"Volume affine must be 4x4, got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise InternalError(f"Volume affine has non-finite entries: {a.tolist()}.")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise InternalError(f"Volume affine last row must be [0, 0, 0, 1], got {a[3].tolist()}.")
    det = float(np.linalg.det(a[:3, :3]))
    if abs(det) < 1e-9:
        raise InternalError(f"Volume affine is singular (det={det:g}); voxel spacing must be non-zero.")
    return a


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image (or label map) with an exact RAS+ affine.

    Parameters
    ----------
    array:
        Voxel data indexed ``[i, j, k]``; 3-D, any numeric or boolean dtype.
    affine:
        4x4 voxel-to-world transform in RAS+ millimetres, stored as float64.
    meta:
        Free-form provenance (source series UID, role, derivation notes); never used for geometry.

    >>> v = Volume(np.zeros((4, 5, 6)), np.diag([0.5, 0.5, 3.0, 1.0]))
    >>> v.spacing_mm
    (0.5, 0.5, 3.0)
    >>> v.voxel_to_world([[1, 2, 3]]).tolist()
    [[0.5, 1.0, 9.0]]
    """

    array: np.ndarray
    affine: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise InternalError(f"Volume array must be 3-D, got shape {arr.shape}.")
        if arr.dtype.kind not in "biuf":
            raise InternalError(f"Volume array must be numeric or boolean, got dtype {arr.dtype}.")
        if min(arr.shape) < 1:
            raise InternalError(f"Volume array has an empty axis: shape {arr.shape}.")
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "affine", _validate_affine(self.affine))
        object.__setattr__(self, "meta", dict(self.meta))

    # -- geometry -------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm: the norms of the affine's first three columns."""
        return tuple(float(round(s, 9)) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm3: ``|det(A[:3, :3])|`` (exact also for sheared/oblique grids)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Closest anatomical direction of each array axis, e.g. ``('R', 'A', 'S')`` (nibabel ``aff2axcodes``)."""
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    def voxel_to_world(self, ijk: Any) -> np.ndarray:
        """Map voxel indices (N x 3, may be fractional) to RAS+ world coordinates in mm."""
        pts = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: Any) -> np.ndarray:
        """Map RAS+ world points (N x 3, mm) to fractional voxel indices."""
        pts = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def axis_direction(self, axis: int) -> np.ndarray:
        """Unit RAS+ direction of array axis ``axis`` (0, 1 or 2)."""
        col = self.affine[:3, axis]
        return col / np.linalg.norm(col)

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and an affine equal within ``atol_mm``."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm))

    # -- derivation -----------------------------------------------------------------------------------------
    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """A new Volume on the same grid holding ``array`` (shape must match); ``meta`` entries are added."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise InternalError(f"with_array: shape {array.shape} does not match the grid {self.array.shape}.")
        return Volume(array, self.affine.copy(), {**self.meta, **meta})

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:g}" for s in self.spacing_mm)
        return f"Volume(shape={self.shape}, spacing_mm=({sp}), axcodes={''.join(self.axcodes)}, dtype={self.array.dtype})"
