"""Two-point Dixon water/fat separation from in-phase and opposed-phase magnitudes.

With water signal W and fat signal F (real, >= 0) the in-phase magnitude is IP = W + F and the opposed-phase
magnitude OP = |W - F| (Dixon, Radiology 1984;153:189-194; Ma, J Magn Reson Imaging 2008;28:543-558). Assuming water
dominance (W >= F, true of muscle unless fat fraction exceeds 50 %):

    W = (IP + OP) / 2,    F = (IP - OP) / 2.

Magnitude data cannot tell which species dominates: in fat-dominant voxels (subcutaneous fat, marrow, muscle with
FF > 50 %) the two outputs are swapped. Use this only when the scanner exported no separated water and fat images,
and say so in provenance.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume


def two_point_dixon(inphase: Volume, outphase: Volume) -> tuple[Volume, Volume]:
    """(water, fat) magnitudes from in-phase and opposed-phase magnitudes, assuming water dominance.

    >>> ip = Volume(np.full((1, 1, 1), 100.0), np.eye(4)); op = ip.with_array(np.full((1, 1, 1), 80.0))
    >>> [float(v.array[0, 0, 0]) for v in two_point_dixon(ip, op)]
    [90.0, 10.0]
    """
    if not inphase.same_grid(outphase):
        raise BadInputError("in-phase and opposed-phase images are not on the same grid.", path=None,
                            fix="use the in-phase and opposed-phase series of one Dixon acquisition.")
    ip = np.asarray(inphase.array, np.float32)
    op = np.asarray(outphase.array, np.float32)
    water = (ip + op) / 2
    fat = np.clip((ip - op) / 2, 0, None)
    note = "water/fat derived from in-phase and opposed-phase by 2-point Dixon (water-dominance assumed)"
    return inphase.with_array(water, derived=note), inphase.with_array(fat, derived=note)
