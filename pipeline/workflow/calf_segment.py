"""Calf part of the segment stage: Dixon water + fat -> U-Net classes -> legs and sides -> ``calf/labels.nii.gz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.calf.legs import sided_label_map
from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.core.provenance import update_provenance
from pipeline.io.nifti import save_volume
from pipeline.segment.bundle import BundleCache
from pipeline.workflow.calf_measure import calf_inputs

_PROCESS_CACHE = BundleCache()


def segment_calf(out: Path, device: str = "cpu", models: BundleCache | None = None) -> dict[str, Any]:
    """Segment the calf muscles of the study in ``out``; returns facts for provenance."""
    inputs = calf_inputs(out)
    if inputs is None:
        return {"status": "no calf series (needs calf_water + calf_fat, or calf_inphase + calf_outphase)"}
    water, fat, how = inputs
    cfg = load_config("default")["segment"]
    bundle = (models or _PROCESS_CACHE).get(cfg["calf_bundle"])
    classes = bundle.predict([water, fat], device=device)
    labels, sides = sided_label_map(classes, registry("calf"), cfg["min_component_ml"])
    save_volume(labels, out / "calf" / "labels.nii.gz", dtype=np.int16)
    notes = [f"calf inputs: {how}"] + [f"calf: {w}" for w in sides.warnings]
    update_provenance(out, models={"calf": bundle.provenance()}, notes=notes)
    return {"status": "segmented", "legs": [{"side": leg.side, "method": leg.method,
                                             "centroid_x_mm": round(float(leg.centroid_ras[0]), 2)}
                                            for leg in sides.legs], "inputs": how, "warnings": sides.warnings}
