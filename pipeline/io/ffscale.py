"""The scale of a scanner fat-fraction map, decided once at ingestion: ``volumes/calf_ffmap.nii.gz`` is stored in
percent (0-100), whatever the scanner wrote, so no later stage guesses the scale again.

Scanners export FF maps as a fraction (0-1), in percent (0-100) or in per mille (0-1000, e.g. Siemens Dixon
``FF`` maps scaled by 10). The scale is read from the map's robust maximum (99.9th percentile of the finite values):
at most :data:`FRACTION_MAX` -> fraction, above :data:`PERCENT_MAX` -> per mille, else percent. A real map of a
calf holds subcutaneous fat near 100 %, so its robust maximum is near the top of its scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.volume import Volume

#: a robust maximum at most this means a fraction map (0-1); 1.5 leaves room for noise above 1
FRACTION_MAX = 1.5
#: a robust maximum above this means a per-mille map (0-1000); 100.5 leaves room for rounding above 100 %
PERCENT_MAX = 100.5


def ff_map_scale(values: np.ndarray) -> float:
    """The factor that turns the FF map ``values`` into percent: 100 (fraction), 1 (percent) or 0.1 (per mille).

    >>> ff_map_scale(np.array([0.0, 0.2, 0.95])), ff_map_scale(np.array([0, 20, 95])), ff_map_scale(np.array([0, 950]))
    (100.0, 1.0, 0.1)
    """
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    top = float(np.percentile(finite, 99.9)) if finite.size else 0.0
    if top <= FRACTION_MAX:
        return 100.0
    return 0.1 if top > PERCENT_MAX else 1.0


def ff_map_in_percent(volume: Volume) -> tuple[Volume, float]:
    """The FF map in percent (float32) and the factor applied.

    >>> import numpy as np
    >>> v, f = ff_map_in_percent(Volume(np.full((2, 2, 2), 500.0), np.eye(4)))
    >>> float(v.array.max()), f
    (50.0, 0.1)
    """
    factor = ff_map_scale(np.asarray(volume.array))
    return volume.with_array((np.asarray(volume.array, np.float64) * factor).astype(np.float32)), factor


def store_ff_map_in_percent(path: Path | None) -> str | None:
    """Rewrite the ingested FF map at ``path`` in percent when it was in another scale; returns a provenance note
    (None when there is no map or it was in percent already)."""
    from pipeline.io.nifti import load_volume, save_volume

    if path is None or not Path(path).exists():
        return None
    volume, factor = ff_map_in_percent(load_volume(path))
    if factor == 1.0:
        return None
    save_volume(volume, path)
    scale = {100.0: "a fraction (0-1)", 0.1: "per mille (0-1000)"}[factor]
    return f"scanner FF map stored in percent (it was {scale}; multiplied by {factor:g})"
