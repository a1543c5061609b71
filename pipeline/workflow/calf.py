"""Calf driver of the segment and measure stages.

segment: Dixon water + fat (or 2-point Dixon from in-phase / opposed-phase) -> U-Net classes -> legs and sides ->
``calf/labels.nii.gz``. measure: label map + Dixon volumes -> ``calf/measurements.csv``, ``calf/slices.csv`` and the
calf section of ``summary.json``. Inputs and outputs go through :class:`~pipeline.core.layout.StudyDir`; the work is
done by the pure functions of :mod:`pipeline.calf` and the bundle's ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.calf.dixon import two_point_dixon
from pipeline.calf.legs import sided_label_map
from pipeline.calf.measure import CalfImages, measure_calf_labels
from pipeline.core.atomic import write_text
from pipeline.core.config import load_config
from pipeline.core.errors import InternalError
from pipeline.core.labels import registry
from pipeline.core.layout import SeriesIndex, StudyDir
from pipeline.core.provenance import update_provenance
from pipeline.core.summary import Summary, update_summary_section
from pipeline.core.tables import csv_text
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume, save_volume

KEY_METRICS = ("volume_ml", "ff_pct", "lean_volume_ml", "fat_volume_ml", "max_csa_mm2")
MEASUREMENT_COLUMNS = ["side", "structure", "metric", "value", "unit"]
SLICE_COLUMNS = ["z_mm", "side", "muscle", "csa_mm2", "ff_pct", "girth_mm"]
NO_CALF = "no calf series (needs calf_water + calf_fat, or calf_inphase + calf_outphase)"


@dataclass
class CalfInputs:
    """The Dixon water and fat images of a study and how they were obtained."""

    water: Volume
    fat: Volume
    how: str


def calf_inputs(series: SeriesIndex) -> CalfInputs | None:
    """The exported Dixon water and fat images, else 2-point Dixon from in-phase / opposed-phase, else None."""
    vols = series.volumes()
    if "calf_water" in vols and "calf_fat" in vols:
        return CalfInputs(load_volume(vols["calf_water"]), load_volume(vols["calf_fat"]), "scanner water/fat images")
    if "calf_inphase" in vols and "calf_outphase" in vols:
        w, f = two_point_dixon(load_volume(vols["calf_inphase"]), load_volume(vols["calf_outphase"]))
        return CalfInputs(w, f, str(w.meta["derived"]))
    return None


def segment(study: StudyDir, models: Any, device: str = "cpu") -> dict[str, Any]:
    """Segment the calf muscles of ``study`` with the bundle of ``models`` (a bundle cache); returns facts for
    provenance."""
    inputs = calf_inputs(study.series())
    if inputs is None:
        return {"status": NO_CALF}
    cfg = load_config("default")["segment"]
    bundle = models.get(cfg["calf_bundle"])
    classes = bundle.predict([inputs.water, inputs.fat], device=device)
    labels, sides = sided_label_map(classes, registry("calf"), cfg["min_component_ml"])
    save_volume(labels, study.calf_labels, dtype=np.int16)
    notes = [f"calf inputs: {inputs.how}"] + [f"calf: {w}" for w in sides.warnings]
    update_provenance(study.root, models={"calf": bundle.provenance()}, notes=notes)
    return {"status": "segmented", "legs": [{"side": leg.side, "method": leg.method,
                                             "centroid_x_mm": round(float(leg.centroid_ras[0]), 2)}
                                            for leg in sides.legs], "inputs": inputs.how, "warnings": sides.warnings}


def unavailable_summary(reason: str) -> Summary:
    """The calf section of a study without calf measurements: every key the rules read, null with ``reason``."""
    reg = registry("calf")
    s = Summary()
    s.set("calf.available", False)
    s.set_null("calf.legs_present", reason)
    for side in ("left", "right"):
        for name in (*reg.muscles, *reg.groups()):
            for key in KEY_METRICS:
                s.set_null(f"calf.{side}.{name}.{key}", reason)
        s.set_null(f"calf.{side}.girth_max_mm", reason)
    s.set_null("calf.asymmetry.girth_diff_cm", reason)
    return s


def _images(series: SeriesIndex, inputs: CalfInputs, labels: Volume) -> CalfImages:
    """The images the calf measurements read, checked to lie on the grid of the label map."""
    inphase, ffmap = series.volume("calf_inphase"), series.volume("calf_ffmap")
    images = CalfImages(inputs.water, inputs.fat, load_volume(inphase) if inphase else None,
                        load_volume(ffmap) if ffmap else None)
    for v in (images.water, images.fat, images.inphase, images.ffmap):
        if v is not None and not v.same_grid(labels):
            raise InternalError("calf Dixon volumes are not on the grid of calf/labels.nii.gz.")
    return images


def measure(study: StudyDir) -> dict[str, Any]:
    """Measure the calf of ``study``; returns facts for provenance."""
    series = study.series()
    inputs = calf_inputs(series)
    if inputs is None or not study.calf_labels.exists():
        reason = "no calf Dixon series in the study" if inputs is None else "calf not segmented (no calf/labels.nii.gz)"
        update_summary_section(study.root, "calf", unavailable_summary(reason))
        return {"status": reason}
    labels = load_volume(study.calf_labels)
    res = measure_calf_labels(labels, _images(series, inputs, labels), registry("calf"), load_config("default")["calf"])
    write_text(study.calf_measurements, csv_text(res.rows, MEASUREMENT_COLUMNS))
    write_text(study.calf_slices, csv_text(res.slices, SLICE_COLUMNS))
    update_summary_section(study.root, "calf", res.summary)
    update_provenance(study.root, notes=[f"calf inputs: {inputs.how}", *[f"calf: {n}" for n in res.notes]])
    return {"status": "measured", "legs": res.summary.get("calf.legs_present")}
