"""The report stage of one study: QA pictures (``qa/*.png``), ``report.html`` and, for DICOM studies,
``calf/seg.dcm`` and ``measurements_sr.dcm``. Everything is read from the study's output folder."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import write_text
from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.core.volume import Volume

log = logging.getLogger(__name__)
AX_ROLE = re.compile(r"^lumbar_ax_t2(_(\d+))?$")


def _series(out: Path) -> dict[str, Any]:
    p = out / "series.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {"series": []}


def _volume_path(out: Path, index: dict[str, Any], role: str) -> Path | None:
    s = next((s for s in index.get("series", []) if s.get("role") == role and s.get("volume")), None)
    return out / s["volume"] if s and (out / s["volume"]).exists() else None


def _phi(index: dict[str, Any]) -> str:
    pat = index.get("patient") or {}
    name = pat.get("name") or pat.get("PatientName") or ""
    pid = pat.get("id") or pat.get("PatientID") or ""
    return f"{name} {pid}".strip() or "patient"


def _is_dicom(files: list[str]) -> bool:
    return bool(files) and not any(str(f).endswith((".nii", ".nii.gz")) for f in files)


def _ff_display(out: Path, index: dict[str, Any], water: Volume) -> Volume | None:
    """Fat fraction (%) for display: the scanner FF map when exported, else F / (W + F) x 100 of the saved Dixon
    magnitudes (display only; the reported FF values come from summary.json)."""
    from pipeline.io.nifti import load_volume

    ffp = _volume_path(out, index, "calf_ffmap")
    if ffp is not None:
        ff = load_volume(ffp)
        arr = np.asarray(ff.array, dtype=float)
        return ff.with_array(arr * 100.0 if np.nanmax(arr) <= 1.5 else arr)
    fp = _volume_path(out, index, "calf_fat")
    if fp is None:
        return None
    fat = load_volume(fp)
    if not fat.same_grid(water):
        return None
    w, f = np.asarray(water.array, float), np.asarray(fat.array, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(w + f > 0, 100.0 * f / (w + f), 0.0)
    return water.with_array(ff)


def qa_images(out: Path, show_phi: bool = False) -> list[Path]:
    """Write the QA pictures of the study; returns their paths."""
    from pipeline.io.nifti import load_volume
    from pipeline.report import overlays
    from pipeline.report.overlays import read_slices_csv

    cfg = load_config("report")
    out = Path(out)
    index = _series(out)
    phi = _phi(index) if show_phi else None
    qa = out / "qa"
    made: list[Path] = []
    creg = registry("calf")
    labels_path = out / "calf" / "labels.nii.gz"
    ref = _volume_path(out, index, "calf_water") or _volume_path(out, index, "calf_inphase")
    if labels_path.exists() and ref is not None:
        labels, image = load_volume(labels_path), load_volume(ref)
        if labels.same_grid(image):
            made.append(overlays.calf_montage(image, labels, creg, cfg["montage_fractions"],
                                              qa / "calf_montage.png", phi=phi, dpi=cfg["dpi"]))
            ff = _ff_display(out, index, image)
            if ff is not None:
                made.append(overlays.ff_overlay(image, ff, cfg["montage_fractions"], labels, qa / "calf_ff.png",
                                                phi=phi, dpi=cfg["dpi"]))
        else:
            log.warning("calf labels are not on the grid of %s; no calf montage", ref.name)
    if (out / "calf" / "slices.csv").exists():
        rows = read_slices_csv(out / "calf" / "slices.csv")
        if rows:
            made.append(overlays.csa_plot(rows, creg, qa / "calf_csa_along_z.png"))
    sreg = registry("spine")
    sag = _volume_path(out, index, "lumbar_sag_t2")
    if sag is not None and (out / "spine" / "labels_sag.nii.gz").exists():
        made.append(overlays.lumbar_sagittal(load_volume(sag), load_volume(out / "spine" / "labels_sag.nii.gz"),
                                             sreg, qa / "spine_sagittal.png", phi=phi, dpi=cfg["dpi"]))
    values = json.loads((out / "summary.json").read_text())["values"] if (out / "summary.json").exists() else {}
    levels = [lab.level for lab in sreg.labels if lab.kind == "disc"]
    marks_path = out / "spine" / "marks.json"
    marks = json.loads(marks_path.read_text()).get("levels", {}) if marks_path.exists() else {}
    stacks = []
    for s in index.get("series", []):
        m = AX_ROLE.match(s.get("role", ""))
        if not m or not s.get("volume"):
            continue
        lab_path = out / "spine" / ("labels_ax.nii.gz" if m.group(2) is None else f"labels_ax_{m.group(2)}.nii.gz")
        if lab_path.exists():
            stacks.append((load_volume(out / s["volume"]), load_volume(lab_path)))
    for lv in levels:
        vals = {k[len(f"spine.{lv}."):]: v for k, v in values.items() if k.startswith(f"spine.{lv}.")}
        # the stack and slice that were measured (marks), else the first stack that shows the disc
        for lv_marks in ([marks[lv], None] if lv in marks else [None]):
            picture = _first_axial_picture(stacks, sreg, lv, vals, qa / f"spine_axial_{lv}.png", phi, cfg["dpi"],
                                           lv_marks)
            if picture is not None:
                made.append(picture)
                break
    return made


def _first_axial_picture(stacks: list[tuple[Volume, Volume]], reg: Any, level: str, values: dict[str, Any],
                         path: Path, phi: str | None, dpi: int, marks: dict[str, Any] | None) -> Path | None:
    """The axial picture of ``level`` from the first (image, labels) stack that can show it, or None."""
    from pipeline.report import overlays

    for img, lab in stacks:
        picture = overlays.lumbar_axial(img, lab, reg, level, values, path, phi=phi, dpi=dpi, marks=marks)
        if picture is not None:
            return picture
    return None


def dicom_exports(out: Path) -> list[str]:
    """Write ``calf/seg.dcm`` and ``measurements_sr.dcm`` when the study was DICOM; returns what was written."""
    from pipeline.io.export import write_seg, write_sr
    from pipeline.io.nifti import load_volume

    out = Path(out)
    index = _series(out)
    written: list[str] = []
    labels_path = out / "calf" / "labels.nii.gz"
    calf_src = None
    if labels_path.exists():
        labels = load_volume(labels_path)
        for role in ("calf_water", "calf_inphase", "calf_fat", "calf_outphase"):
            s = next((s for s in index.get("series", []) if s.get("role") == role), None)
            if s and s.get("volume") and _is_dicom(s.get("files", [])) and \
                    load_volume(out / s["volume"]).same_grid(labels):
                calf_src = s
                break
        if calf_src is not None:
            write_seg(labels, calf_src["files"], registry("calf"), out / "calf" / "seg.dcm")
            written.append("calf/seg.dcm")
    values = json.loads((out / "summary.json").read_text())["values"] if (out / "summary.json").exists() else {}
    src = calf_src or next((s for s in index.get("series", []) if _is_dicom(s.get("files", []))
                            and s.get("role", "").startswith("lumbar")), None)
    if src is not None:
        from pipeline.io.export import sr_groups

        if sr_groups(values):
            write_sr(values, src["files"], registry("calf"), out / "measurements_sr.dcm")
            written.append("measurements_sr.dcm")
    return written


def report(out: Path, show_phi: bool = False) -> dict[str, Any]:
    """QA pictures, DICOM exports (DICOM studies) and ``report.html`` of the study in ``out``."""
    from pipeline.report.html import render_study_report

    out = Path(out)
    cfg = load_config("report")
    show_phi = show_phi or bool(load_config("default").get("report", {}).get("show_phi", False))
    images = qa_images(out, show_phi=show_phi)
    exports = dicom_exports(out) if load_config("default").get("report", {}).get("dicom_export", True) else []
    creg = registry("calf")
    html = render_study_report(out, creg.muscles, tuple(creg.groups()), cfg, images, exports)
    write_text(out / "report.html", html)
    return {"qa_images": [p.name for p in images], "exports": exports, "report": "report.html"}
