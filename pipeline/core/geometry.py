"""Patient coordinate conventions and the single definition of anatomical side.

DICOM patient coordinates are LPS+ (+x patient Left, +y Posterior, +z Superior); legmri volumes are RAS+
(+x patient Right, +y Anterior, +z Superior). Converting one to the other negates x and y.

Every decision about the side of a structure goes through :func:`side_of_world_x`, so there is one place that defines
it and one place to test it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Side = Literal["left", "right"]
SIDES: tuple[Side, Side] = ("left", "right")

#: Multiplying an LPS+ point or affine by this matrix gives RAS+ (and vice versa): negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a voxel-to-LPS affine into a voxel-to-RAS affine.

    >>> lps_to_ras_affine(np.eye(4))[:3, :3].diagonal().tolist()
    [-1.0, -1.0, 1.0]
    """
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def lps_to_ras_points(points_lps: np.ndarray) -> np.ndarray:
    """Convert N x 3 LPS+ points (mm) to RAS+ (negate x and y)."""
    pts = np.array(points_lps, dtype=np.float64, copy=True)
    pts[..., 0] *= -1.0
    pts[..., 1] *= -1.0
    return pts


def side_of_world_x(x_ras_mm: float, midline_x_ras_mm: float) -> Side:
    """The patient side of a point from its RAS+ world x relative to a midline x.

    In RAS+, x grows towards the patient's right, so a point right of the midline has the larger x. Points exactly on
    the midline are ambiguous; they are refused rather than silently assigned.

    >>> side_of_world_x(80.0, 0.0)
    'right'
    >>> side_of_world_x(-75.0, 0.0)
    'left'
    """
    dx = float(x_ras_mm) - float(midline_x_ras_mm)
    if not np.isfinite(dx):
        raise ValueError(f"side_of_world_x: non-finite coordinate x={x_ras_mm!r}, midline={midline_x_ras_mm!r}.")
    if dx == 0.0:
        raise ValueError(f"side_of_world_x: point x={x_ras_mm} mm lies on the midline; its side is undefined.")
    return "right" if dx > 0 else "left"
