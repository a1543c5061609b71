"""Report driver: QA pictures (``qa/*.png``), ``report.html`` and, for DICOM studies, ``calf/seg.dcm`` and
``measurements_sr.dcm``, from the saved outputs of the earlier stages (read through
:class:`~pipeline.core.layout.StudyDir`; nothing is recomputed)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.atomic import write_text
from pipeline.core.config import load_config
from pipeline.core.labels import Registry, registry
from pipeline.core.layout import SeriesEntry, SeriesIndex, StudyDir
from pipeline.core.verdict import FAIL, group_verdict, level_verdict
from pipeline.core.volume import Volume
from pipeline.io.nifti import load_volume

log = logging.getLogger(__name__)
#: the calf series a DICOM SEG may reference, in order of preference (the first on the label map's grid)
SEG_SOURCES = ("calf_water", "calf_inphase", "calf_fat", "calf_outphase")


def _existing(series: SeriesIndex, role: str) -> Path | None:
    p = series.volume(role)
    return p if p is not None and p.exists() else None


def ff_display(series: SeriesIndex, water: Volume, ff_map: Path | None = None) -> Volume | None:
    """Fat fraction (%) for display: the study's calf/ff_map.nii.gz (``ff_map``) when written on this grid, else the
    scanner FF map when exported (stored in percent by ingest), else F / (W + F) x 100 of the saved Dixon magnitudes
    (display only; the reported FF values come from summary.json)."""
    if ff_map is not None and ff_map.exists():
        ff = load_volume(ff_map)
        if ff.same_grid(water):
            return ff.with_array(np.asarray(ff.array, dtype=np.float32))
    ffp = _existing(series, "calf_ffmap")
    if ffp is not None:
        ff = load_volume(ffp)
        return ff.with_array(np.asarray(ff.array, dtype=np.float32))
    fp = _existing(series, "calf_fat")
    if fp is None:
        return None
    fat = load_volume(fp)
    if not fat.same_grid(water):
        return None
    w, f = np.asarray(water.array, float), np.asarray(fat.array, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(w + f > 0, 100.0 * f / (w + f), 0.0)
    return water.with_array(ff)


def failed_calf_structures(values: dict[str, Any], creg: Registry) -> set[str]:
    """Structures and groups whose segmentation failed QC in either leg (a group fails with any member; all of them
    when the study failed), so that their left/right asymmetry rests on a failed segmentation."""
    return {name for name, parts in creg.members().items()
            if any(group_verdict([values.get(f"calf.{side}.{m}.qc_status") for m in parts],
                                 study=values.get("calf.qc_status")) == FAIL for side in ("left", "right"))}


def _calf_pictures(study: StudyDir, series: SeriesIndex, cfg: dict[str, Any], phi: str | None) -> list[Path]:
    """The calf montage, FF overlay and CSA plot of the study (those its outputs allow)."""
    from pipeline.report import overlays

    made: list[Path] = []
    creg = registry("calf")
    ref = _existing(series, "calf_water") or _existing(series, "calf_inphase") or (
        study.calf_water_fit if study.calf_water_fit.exists() else None) or next(
        (p for p in (_existing(series, r) for r in load_config("default")["calf"]["anatomical_roles"]) if p), None)
    if study.calf_labels.exists() and ref is not None:
        labels, image = load_volume(study.calf_labels), load_volume(ref)
        if labels.same_grid(image):
            window = overlays.display_window(image)
            made.append(overlays.calf_montage(image, labels, creg, cfg["montage_fractions"],
                                              study.qa("calf_montage"), phi=phi, dpi=cfg["dpi"], window=window))
            ff = ff_display(series, image, study.calf_ff_map)
            if ff is not None:
                made.append(overlays.ff_overlay(image, ff, cfg["montage_fractions"], labels, study.qa("calf_ff"),
                                                phi=phi, dpi=cfg["dpi"], window=window))
        else:
            log.warning("calf labels are not on the grid of %s; no calf montage", ref.name)
    values = study.summary_values()
    if study.calf_slices.exists():
        rows = overlays.read_slices_csv(study.calf_slices)
        if rows:
            verdicts = {(m, side): group_verdict([values.get(f"calf.{side}.{m}.qc_status")],
                                                 study=values.get("calf.qc_status"))
                        for m in creg.muscles for side in ("left", "right")}
            made.append(overlays.csa_plot(rows, creg, study.qa("calf_csa_along_z"), verdicts=verdicts))
    chart = overlays.asymmetry_chart(values, [*creg.structures, *creg.groups()], cfg["asymmetry_flag_pct"],
                                     study.qa("calf_asymmetry"), failed=failed_calf_structures(values, creg))
    return made + ([chart] if chart is not None else [])


def _spine_pictures(study: StudyDir, series: SeriesIndex, cfg: dict[str, Any], phi: str | None) -> list[Path]:
    """The sagittal picture and one axial picture per disc level (the stack and slice measured, else the first
    stack that shows the disc)."""
    from pipeline.report import overlays

    made: list[Path] = []
    sreg = registry("spine")
    sag = _existing(series, "lumbar_sag_t2")
    if sag is not None and study.spine_labels_sag.exists():
        made.append(overlays.lumbar_sagittal(load_volume(sag), load_volume(study.spine_labels_sag), sreg,
                                             study.qa("spine_sagittal"), phi=phi, dpi=cfg["dpi"]))
    values = study.summary_values()
    marks = (study.read_json(study.spine_marks, {}) or {}).get("levels", {})
    stacks = [(load_volume(s.volume), load_volume(study.spine_labels_for(s.role))) for s in series.axial_stacks()
              if study.spine_labels_for(s.role).exists()]
    for lv in (lab.level for lab in sreg.labels if lab.kind == "disc"):
        vals = {k[len(f"spine.{lv}."):]: v for k, v in values.items() if k.startswith(f"spine.{lv}.")}
        for lv_marks in ([marks[lv], None] if lv in marks else [None]):
            picture = _first_axial_picture(stacks, sreg, lv, vals, study.qa(f"spine_axial_{lv}"), phi, cfg["dpi"],
                                           lv_marks)
            if picture is not None:
                made.append(picture)
                break
    levels = [lab.level for lab in sreg.labels if lab.kind == "disc"]
    failed = {lv for lv in levels
              if level_verdict(values.get(f"spine.{lv}.qc_status"), values.get("spine.qc_status")) == FAIL}
    chart = overlays.canal_chart(values, levels, study.qa("spine_canal_levels"), failed=failed)
    return made + ([chart] if chart is not None else [])


def patient_label(series: SeriesIndex) -> str:
    """Patient name and ID for pictures made with ``--show-phi``: from ``series.json`` when ingest kept them, else
    read from the first source DICOM file (``series.json`` holds no PHI by default); "patient" when unknown."""
    label = series.patient_label()
    if label != "patient":
        return label
    import pydicom

    for entry in series.entries:
        for f in entry.files[:1]:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:  # a NIfTI source, or the file moved: no label
                continue
            return f"{ds.get('PatientName', '')} {ds.get('PatientID', '')}".strip() or "patient"
    return "patient"


def qa_images(study: StudyDir, show_phi: bool = False) -> list[Path]:
    """Write the QA pictures of the study; returns their paths."""
    cfg = load_config("report")
    series = study.series()
    phi = patient_label(series) if show_phi else None
    return _calf_pictures(study, series, cfg, phi) + _spine_pictures(study, series, cfg, phi)


def _first_axial_picture(stacks: list[tuple[Volume, Volume]], reg: Registry, level: str, values: dict[str, Any],
                         path: Path, phi: str | None, dpi: int, marks: dict[str, Any] | None) -> Path | None:
    """The axial picture of ``level`` from the first (image, labels) stack that can show it, or None."""
    from pipeline.report import overlays

    for img, lab in stacks:
        picture = overlays.lumbar_axial(img, lab, reg, level, values, path, phi=phi, dpi=dpi, marks=marks)
        if picture is not None:
            return picture
    return None


def _seg_source(series: SeriesIndex, labels: Volume) -> SeriesEntry | None:
    """The DICOM calf series the SEG references: the first of :data:`SEG_SOURCES`, then of the anatomical roles
    (``calf.anatomical_roles``), on the label map's grid."""
    for role in (*SEG_SOURCES, *load_config("default")["calf"]["anatomical_roles"]):
        e = series.entry(role)
        if e is not None and e.volume is not None and e.is_dicom and load_volume(e.volume).same_grid(labels):
            return e
    return None


def sr_texts(findings: dict[str, Any], values: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The texts of the SR's report-level evaluations from ``findings.json``: the decision with its reason, the
    evidence line of the report (:func:`pipeline.report.html.evidence_line`) and the caveat; and one line per
    anatomy with its segmentation QC verdict and reasons.

    >>> sr_texts({"decision": {"statement": "neurogenic muscle hypertrophy, right S1/L5 territory", "status": "decided",
    ...           "reason": "margin 15"}, "quality_control": {"calf_status": "fail", "calf_reasons": "GM in pieces"}}, {})
    ('neurogenic muscle hypertrophy, right S1/L5 territory (decided: margin 15).', ['calf segmentation quality control: fail: GM in pieces'])
    """
    from pipeline.report.html import evidence_line

    decision = findings.get("decision") or {}
    impression = None
    head = decision.get("statement") or decision.get("status")
    if head:
        impression = f"{head} ({decision.get('status')}: {decision['reason']})." if decision.get("reason") else f"{head}."
        evidence = evidence_line(findings, values)
        impression += f" Evidence: {evidence}." if evidence else ""
        impression += f" {findings['caveat']}" if findings.get("caveat") else ""
    qc = findings.get("quality_control") or {}
    texts = [f"{name} segmentation quality control: {qc[key + '_status']}"
             + (f": {qc[key + '_reasons']}" if qc.get(key + "_reasons") else "")
             for key, name in (("calf", "calf"), ("spine", "lumbar spine")) if qc.get(key + "_status")]
    return impression, texts


def dicom_exports(study: StudyDir, deidentify: bool = False) -> list[str]:
    """Write ``calf/seg.dcm``, ``spine/seg.dcm`` and ``measurements_sr.dcm`` when the study was DICOM
    (de-identified with ``deidentify``: :func:`pipeline.io.export.deidentify`); returns what was written. A study
    without DICOM series writes none (and does not load the DICOM writers)."""
    series = study.series()
    if not any(e.is_dicom for e in series.entries):
        return []
    from pipeline.io.export import sr_groups, write_seg, write_sr

    written: list[str] = []
    calf_src = None
    if study.calf_labels.exists():
        labels = load_volume(study.calf_labels)
        calf_src = _seg_source(series, labels)
        if calf_src is not None:
            write_seg(labels, list(calf_src.files), registry("calf"), study.calf_seg, deidentified=deidentify)
            written.append(study.relative(study.calf_seg))
    sag = series.entry("lumbar_sag_t2")
    if study.spine_labels_sag.exists() and sag is not None and sag.is_dicom and sag.volume is not None:
        labels = load_volume(study.spine_labels_sag)
        if load_volume(sag.volume).same_grid(labels) and np.any(np.asarray(labels.array)):
            write_seg(labels, list(sag.files), registry("spine"), study.spine_seg, deidentified=deidentify)
            written.append(study.relative(study.spine_seg))
    values = study.summary_values()
    spine_src = next((e for e in series.entries if e.is_dicom and e.role.startswith("lumbar")), None)
    evidence = [src.files[0] for src in (calf_src, spine_src) if src is not None and src.files]
    if evidence and sr_groups(values):
        segs = [study.root / w for w in written]
        impression, qc_texts = sr_texts(study.read_json(study.findings, {}) or {}, values)
        write_sr(values, evidence, study.sr, deidentified=deidentify, segs=segs, impression=impression,
                 qc_texts=qc_texts)
        written.append(study.relative(study.sr))
    return written


#: Whether this process may start a second one for the DICOM exports (:func:`report`); batch workers that already
#: use every core turn it off (:func:`allow_export_process`).
_EXPORT_PROCESS_ALLOWED = True


def allow_export_process(allowed: bool) -> None:
    """Let :func:`report` write the DICOM exports in a second process (``True``, the default) or not."""
    global _EXPORT_PROCESS_ALLOWED
    _EXPORT_PROCESS_ALLOWED = allowed


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def export_child_main(argv: list[str] | None = None) -> int:
    """The second process of :func:`report` (``python -c "from pipeline.workflow.report import export_child_main;
    export_child_main()" ROOT [--deidentify] LOG_LEVEL``): write the DICOM exports of the study output folder ROOT
    and print one JSON line, ``{"written": [...]}`` or ``{"error": {"type", "message"}}``."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    root, deidentify, level = args[0], "--deidentify" in args, int(args[-1])
    logging.basicConfig(level=level)
    _die_with_parent()
    try:
        result: dict[str, Any] = {"written": dicom_exports(StudyDir(Path(root)), deidentify)}
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    print(json.dumps(result), flush=True)
    return 0


def _die_with_parent() -> None:
    """Ask Linux to end this process when its parent ends (``prctl(PR_SET_PDEATHSIG, SIGTERM)``), so that a killed
    run leaves no writer behind, and end at once if the parent is already gone; elsewhere nothing."""
    import signal

    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _raised(error: dict[str, str]) -> Exception:
    """The exception of this process for an error the export process reported: the same legmri error class, else
    an :class:`~pipeline.core.errors.InternalError` naming the type."""
    from pipeline.core import errors

    kind = getattr(errors, error["type"], None)
    if isinstance(kind, type) and issubclass(kind, errors.LegMRIError):
        return kind(error["message"])
    return errors.InternalError(f"DICOM export: {error['type']}: {error['message']}")


class _ExportProcess:
    """:func:`dicom_exports` of one study in a second Python process (:func:`export_child_main`) while this one draws
    the QA pictures: the two take about the same time and neither reads what the other writes. A fresh interpreter
    (not ``multiprocessing``), so that nothing of the caller's main script runs again there. :meth:`result` returns
    what was written or raises what the export raised; leaving the ``with`` block ends the process."""

    def __init__(self, study: StudyDir, deidentify: bool) -> None:
        import subprocess
        import sys

        import pipeline

        package_root = str(Path(pipeline.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                           if p)}
        cmd = [sys.executable, "-c", "from pipeline.workflow.report import export_child_main; export_child_main()",
               str(study.root), *(["--deidentify"] if deidentify else []), str(logging.getLogger().level)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)

    def result(self) -> list[str]:
        import json

        out, _ = self._proc.communicate()
        lines = out.strip().splitlines()
        if not lines:
            from pipeline.core.errors import InternalError

            raise InternalError(f"the DICOM export process ended without a result (exit code "
                                f"{self._proc.returncode})")
        result = json.loads(lines[-1])
        if "error" in result:
            raise _raised(result["error"])
        return list(result["written"])

    def __enter__(self) -> _ExportProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def report(study: StudyDir, show_phi: bool = False, deidentify: bool = False) -> dict[str, Any]:
    """QA pictures, DICOM exports (DICOM studies) and ``report.html`` of ``study``. For a DICOM study the exports
    are written in a second process while the QA pictures are drawn, when ``report.export_process`` is on, this
    process may (:func:`allow_export_process`) and more than one CPU is usable."""
    from pipeline.report.html import render_study_report

    cfg = load_config("report")
    settings = load_config("default").get("report", {})
    show = show_phi or bool(settings.get("show_phi", False))
    exporting = settings.get("dicom_export", True) and any(e.is_dicom for e in study.series().entries)
    if (exporting and settings.get("export_process", True) and _EXPORT_PROCESS_ALLOWED
            and _usable_cpus() > 1):
        with _ExportProcess(study, deidentify) as export:
            images = qa_images(study, show_phi=show)
            exports = export.result()
    else:
        images = qa_images(study, show_phi=show)
        exports = dicom_exports(study, deidentify) if exporting else []
    creg = registry("calf")
    write_text(study.report_html, render_study_report(study, creg.muscles, creg.groups(), cfg, images,
                                                      exports))
    return {"qa_images": [p.name for p in images], "exports": exports, "report": study.relative(study.report_html)}
