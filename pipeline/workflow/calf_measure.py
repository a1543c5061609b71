"""Calf part of the measure stage: ``calf/labels.nii.gz`` + Dixon volumes -> ``calf/measurements.csv``,
``calf/slices.csv`` and the calf section of ``summary.json``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pipeline.calf.dixon import two_point_dixon
from pipeline.calf.measure import CalfImages, measure_calf_labels
from pipeline.core.atomic import write_text
from pipeline.core.config import load_config
from pipeline.core.errors import InternalError
from pipeline.core.labels import registry
from pipeline.core.provenance import update_provenance
from pipeline.core.summary import Summary, update_summary_section
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume

KEY_METRICS = ("volume_ml", "ff_pct", "lean_volume_ml", "fat_volume_ml", "max_csa_mm2")


def _volumes(out: Path) -> dict[str, str]:
    index = json.loads((out / "series.json").read_text(encoding="utf-8"))
    return {s["role"]: s["volume"] for s in index["series"] if s.get("volume")}


def calf_inputs(out: Path) -> tuple[Volume, Volume, str] | None:
    """(water, fat, how) for the study in ``out``: the exported Dixon images, or 2-point Dixon from IP/OP."""
    vols = _volumes(out)
    if "calf_water" in vols and "calf_fat" in vols:
        return load_volume(out / vols["calf_water"]), load_volume(out / vols["calf_fat"]), "scanner water/fat images"
    if "calf_inphase" in vols and "calf_outphase" in vols:
        w, f = two_point_dixon(load_volume(out / vols["calf_inphase"]), load_volume(out / vols["calf_outphase"]))
        return w, f, str(w.meta["derived"])
    return None


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def _unavailable(reason: str) -> Summary:
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


def measure_calf(out: Path) -> dict[str, Any]:
    """Measure the calf of the study in ``out``; returns facts for provenance."""
    labels_path = out / "calf" / "labels.nii.gz"
    inputs = calf_inputs(out)
    if inputs is None or not labels_path.exists():
        reason = "no calf Dixon series in the study" if inputs is None else "calf not segmented (no calf/labels.nii.gz)"
        update_summary_section(out, "calf", _unavailable(reason))
        return {"status": reason}
    water, fat, how = inputs
    vols = _volumes(out)
    labels = load_volume(labels_path)
    images = CalfImages(water, fat, load_volume(out / vols["calf_inphase"]) if "calf_inphase" in vols else None,
                        load_volume(out / vols["calf_ffmap"]) if "calf_ffmap" in vols else None)
    for v in (images.water, images.fat, images.inphase, images.ffmap):
        if v is not None and not v.same_grid(labels):
            raise InternalError("calf Dixon volumes are not on the grid of calf/labels.nii.gz.")
    res = measure_calf_labels(labels, images, registry("calf"), load_config("default")["calf"])
    write_text(out / "calf" / "measurements.csv", csv_text(res.rows, ["side", "structure", "metric", "value", "unit"]))
    write_text(out / "calf" / "slices.csv", csv_text(res.slices, ["z_mm", "side", "muscle", "csa_mm2", "ff_pct",
                                                                  "girth_mm"]))
    update_summary_section(out, "calf", res.summary)
    update_provenance(out, notes=[f"calf inputs: {how}", *[f"calf: {n}" for n in res.notes]])
    return {"status": "measured", "legs": res.summary.get("calf.legs_present")}
