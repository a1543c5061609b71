"""Left/right comparison and semi-quantitative grading."""

from __future__ import annotations

from collections.abc import Sequence


def asymmetry_index_pct(right: float | None, left: float | None) -> float | None:
    """Asymmetry index AI = (R - L) / ((R + L) / 2) x 100 %; positive when the right side is larger. None when a
    side is missing or both are zero.

    >>> asymmetry_index_pct(120.0, 80.0)
    40.0
    >>> asymmetry_index_pct(None, 80.0) is None
    True
    """
    if right is None or left is None or (right + left) == 0:
        return None
    return 100.0 * (right - left) / ((right + left) / 2.0)


def difference(right: float | None, left: float | None, scale: float = 1.0) -> float | None:
    """(R - L) x ``scale`` (e.g. FF difference in percentage points, girth difference mm -> cm with 0.1).

    >>> difference(42.0, 37.0)
    5.0
    """
    if right is None or left is None:
        return None
    return (right - left) * scale


def mercuri_like_grade(ff_pct: float | None, bounds_pct: Sequence[float]) -> int | None:
    """Grade 0-4 from mean FF with configurable upper bounds of grades 0-3 (semi-quantitative stand-in for the
    Mercuri visual scale, Mercuri et al., J Magn Reson Imaging 2007;25:433-440).

    >>> [mercuri_like_grade(v, [10, 20, 40, 60]) for v in (3, 15, 35, 55, 80)]
    [0, 1, 2, 3, 4]
    """
    if ff_pct is None:
        return None
    for grade, bound in enumerate(bounds_pct):
        if ff_pct < bound:
            return grade
    return len(bounds_pct)
