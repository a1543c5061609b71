"""DICOM export with highdicom: a DICOM SEG of the calf label map and a TID 1500 measurement report (SR).

Both reference the source DICOM series recorded by ingestion in ``OUT/series.json`` (files sorted by slice position,
their SOPInstanceUIDs). The label map lives on the canonical (RAS+) grid of the calf reference volume; it is mapped
back onto each source image by world coordinates (nearest neighbour), so the SEG frames follow the source images
whatever the acquisition orientation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from pipeline import __version__
from pipeline.core.atomic import atomic_path
from pipeline.core.errors import BadInputError
from pipeline.core.geometry import lps_to_ras_points
from pipeline.core.labels import Registry, registry
from pipeline.core.units import split_unit
from pipeline.core.verdict import group_verdict, level_verdict
from pipeline.core.volume import Volume

#: Generic anatomy used when a structure has no ``code`` in configs/labels.yaml.
FALLBACK_CODE = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
#: Series number and description of each anatomy's SEG.
SEG_SERIES_NUMBER = {"calf": 900, "spine": 902}  # the SR is series 901
SEG_DESCRIPTION = {"calf": "calf muscles", "spine": "lumbar spine"}


def read_series(files: Sequence[str | Path]) -> list[pydicom.Dataset]:
    """Read the source DICOM datasets (pixel data included) of one series."""
    out = []
    for f in files:
        p = Path(f)
        if not p.exists():
            raise BadInputError("a source DICOM file listed in series.json is missing.", path=p,
                                fix="re-run 'legmri ingest' on the study, or restore the study folder.")
        out.append(pydicom.dcmread(p))
    return out


def image_world_grid(ds: pydicom.Dataset) -> np.ndarray:
    """RAS world coordinates (rows, cols, 3) of every pixel centre of a single-frame image.

    Position of pixel (r, c) = IPP + c * dcol * row_dir + r * drow * col_dir (DICOM PS3.3 C.7.6.2.1.1), in LPS,
    converted to RAS by negating x and y.
    """
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    drow, dcol = (float(v) for v in ds.PixelSpacing)
    rr, cc = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
    lps = ipp + cc[..., None] * dcol * iop[:3] + rr[..., None] * drow * iop[3:]
    return lps_to_ras_points(lps.reshape(-1, 3)).reshape(int(ds.Rows), int(ds.Columns), 3)


def labels_on_source(labels: Volume, source: Sequence[pydicom.Dataset]) -> np.ndarray:
    """Sample the label map at every pixel of every source image (nearest neighbour): (frames, rows, cols).

    Voxel indices are rounded to the nearest integer before the bounds test, so a pixel centre on the label map's
    outermost voxel centre (index -1e-9 after the world-to-voxel round trip) keeps its label; outside is 0."""
    inv = np.linalg.inv(labels.affine)
    arr = np.asarray(labels.array)
    frames = []
    for ds in source:
        xyz = image_world_grid(ds).reshape(-1, 3)
        ijk = np.rint(xyz @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.array(arr.shape)), axis=1)
        vals = np.zeros(len(ijk), arr.dtype)
        vals[inside] = arr[tuple(ijk[inside].T)]
        frames.append(vals.reshape(int(ds.Rows), int(ds.Columns)))
    return np.stack(frames).astype(np.int32)


def _code(code: Mapping[str, Any] | None) -> hd.sr.CodedConcept:
    """The coded concept of a ``configs/labels.yaml`` code (``scheme``, ``value``, ``meaning``); the generic
    :data:`FALLBACK_CODE` when there is none."""
    if code:
        return hd.sr.CodedConcept(str(code["value"]), str(code["scheme"]), str(code["meaning"]))
    return FALLBACK_CODE


#: DICOM PS3.15 table E.1-1 database of dicom-anonymizer used by :func:`deidentify`
DEIDENTIFICATION_TABLE = "dicomfields_2026c"
#: CID 7050 De-identification Methods: the profile and the options applied by :func:`deidentify`
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
RETAIN_UIDS = ("113110", "DCM", "Retain UIDs Option")
CLEAN_STRUCTURED_CONTENT = ("113104", "DCM", "Clean Structured Content Option")
CONTENT_SEQUENCE = (0x0040, 0xA730)


def deidentify(ds: pydicom.Dataset) -> pydicom.Dataset:
    """De-identify ``ds`` in place by the Basic Application Level Confidentiality Profile (DICOM PS3.15 E.1-1, the
    actions of table E.1-1 as dicom-anonymizer implements them: names, IDs, dates, times, institution and the other
    identifying attributes emptied, replaced by dummies or removed; private attributes removed) with two options:

    * Retain UIDs (PS3.15 Annex E; CID 7050 code 113110): study, series, instance and frame-of-reference UIDs are kept, because a SEG or SR
      that no longer names its source images cannot be used beside them;
    * Clean Structured Content (code 113104), for an SR: its content tree is legmri's own (measurement names,
      values, units, codes, tracking identifiers, image references, and the QC and decision texts legmri writes from
      its measurements; no text from the source headers), so it is kept as the measurements it is, where the basic
      profile alone would remove it.

    The dataset records what was done (PatientIdentityRemoved YES, DeidentificationMethod and its code sequence)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions, keep

    tables = dicom_anonymization_database_selector(DEIDENTIFICATION_TABLE)
    retain = {tag: keep for tag in (*tables["U_TAGS"], *tables["X_Z_U_STAR_TAGS"]) if len(tag) == 2}
    methods = [BASIC_PROFILE, RETAIN_UIDS]
    if CONTENT_SEQUENCE in ds:
        retain[CONTENT_SEQUENCE] = keep
        methods.append(CLEAN_STRUCTURED_CONTENT)
    anonymize_dataset(ds, extra_anonymization_rules=retain, delete_private_tags=True,
                      base_rules_gen=lambda: initialize_actions(DEIDENTIFICATION_TABLE))
    ds.walk(_valid_dummy_date)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 Basic Profile (legmri --deidentify)"
    items = []
    for value, scheme, meaning in methods:
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    return ds


#: dicom-anonymizer's dummy dates (year 1) are refused by DICOM validators; 1900-01-01 is as clearly a dummy
DUMMY_DATES = {"DA": ("00010101", "19000101"), "DT": ("00010101010101.000000+0000", "19000101000000")}


def _valid_dummy_date(ds: pydicom.Dataset, element: pydicom.DataElement) -> None:
    old_new = DUMMY_DATES.get(element.VR)
    if old_new and element.value == old_new[0]:
        element.value = old_new[1]


def write_seg(labels: Volume, source_files: Sequence[str | Path], registry: Registry, path: str | Path,
              deidentified: bool = False) -> Path:
    """Write a DICOM SEG (binary segments, one per label present) referencing the source images; with
    ``deidentified``, de-identified by :func:`deidentify`.

    Segment labels are the registry names (``<structure>_<side>``, ``disc_L4_L5``); the property type is the label's
    SNOMED CT code from ``configs/labels.yaml`` (:meth:`Registry.code_of`: per level where given), the anatomic region
    the anatomy's ``region``; laterality is carried by the region's modifier (Left/Right); the recommended display
    colour is the registry's colour (CIELab, as PS3.3 C.8.20.2 asks).
    """
    source = read_series(source_files)
    lab = labels_on_source(labels, source)
    by_id = registry.by_id()
    present = [i for i in sorted(np.unique(lab)) if i != 0 and i in by_id]
    if not present:
        raise BadInputError(f"the {registry.anatomy} label map has no labelled voxel on the source images; nothing "
                            "to export.", path=path, fix="check the segmentation (its label map) before exporting.")
    remapped = np.zeros_like(lab, dtype=np.uint8)
    descriptions = []
    for n, label_id in enumerate(present, start=1):
        info = by_id[label_id]
        remapped[lab == label_id] = n
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=info.name[:64],
            segmented_property_category=codes.SCT.Tissue if info.kind == "fat" else codes.SCT.AnatomicalStructure,
            segmented_property_type=_code(registry.code_of(info)),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="legmri", version=__version__, family=codes.DCM.ArtificialIntelligence),
            anatomic_regions=[_code(registry.region)], primary_anatomic_structures=None,
            display_color=hd.color.CIELabColor.from_string(info.color),
        ))
        if info.side is not None:
            m = codes.SCT.Left if info.side == "left" else codes.SCT.Right
            descriptions[-1].AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
                hd.sr.CodedConcept(m.value, m.scheme_designator, m.meaning)]
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=remapped, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER[registry.anatomy],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="legmri", manufacturer_model_name="legmri",
        software_versions=__version__, device_serial_number="0",
        series_description=f"legmri {SEG_DESCRIPTION[registry.anatomy]}", omit_empty_frames=True,
    )
    if deidentified:
        deidentify(seg)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return Path(path)


def _unit(key: str) -> tuple[str, str] | None:
    """(UCUM code, name) of a summary key's unit (:func:`pipeline.core.units.split_unit`), None without one."""
    found = split_unit(key)
    return None if found is None else (found[1], found[2])


#: Standard concept names (DICOM PS3.16) of the exported metrics: (concept name, derivation, tissue). The derivation
#: (CID 3488 / 7464 modifiers: Mean, Median, Maximum, 10th and 90th percentile) says which statistic of the structure
#: it is; the tissue, a finding site of the measurement itself (TID 300), says that a volume is the structure's
#: muscle (lean) or fat part. A metric not listed (the asymmetry indices, the matched-level CSA, the Mercuri and
#: foramen grades: this project's own definitions, for which PS3.16 has no concept) is named by a private code
#: (scheme 99LEGMRI) whose meaning is the metric's name in ``summary.json``.
METRIC_CONCEPTS: dict[str, tuple[Any, Any, Any]] = {
    "volume_ml": (codes.SCT.Volume, None, None),
    "lean_volume_ml": (codes.SCT.Volume, None, codes.SCT.MuscleTissue),
    "fat_volume_ml": (codes.SCT.Volume, None, codes.SCT.AdiposeTissue),
    "max_csa_mm2": (codes.SCT.Area, codes.SCT.Maximum, None),
    "ff_pct": (codes.DCM.FatFraction, codes.SCT.Mean, None),
    "ff_median_pct": (codes.DCM.FatFraction, codes.SCT.Median, None),
    "ff_p10_pct": (codes.DCM.FatFraction, codes.SCT.TenthPercentile, None),
    "ff_p90_pct": (codes.DCM.FatFraction, codes.SCT.NinetiethPercentile, None),
    "dsca_mm2": (codes.SCT.Area, None, None),
    "foramen_area_mm2": (codes.SCT.Area, None, None),
    "ap_diameter_mm": (codes.SCT.Diameter, None, None),
    "lateral_recess_depth_mm": (codes.SCT.Depth, None, None),
    "girth_max_mm": (codes.SCT.Circumference, codes.SCT.Maximum, None),
    "girth_matched_mm": (codes.SCT.Circumference, None, None),
}


def _coded(code: Any) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def _measurement(metric: str, value: float, unit: tuple[str, str]) -> hd.sr.Measurement:
    """One numeric measurement: the standard concept of :data:`METRIC_CONCEPTS` (else a private one), UCUM unit."""
    concept, derivation, tissue = METRIC_CONCEPTS.get(metric, (None, None, None))
    name = (_coded(concept) if concept is not None
            else hd.sr.CodedConcept(_short(metric), PRIVATE_SCHEME, metric[:64]))
    return hd.sr.Measurement(
        name=name, value=float(value), unit=hd.sr.CodedConcept(unit[0], "UCUM", unit[1]),
        derivation=derivation, finding_sites=[hd.sr.FindingSite(_coded(tissue))] if tissue is not None else None)


def _short(name: str) -> str:
    """A stable code value (<= 16 characters) for a private measurement concept: a hash of its name."""
    import hashlib

    return "LM" + hashlib.sha1(name.encode()).hexdigest()[:14].upper()


#: Coding scheme of the metrics without a standard concept.
PRIVATE_SCHEME = "99LEGMRI"

#: The RSNA 2024 lumbar grades of the summary (``spine.<level>[.<side>].<name>_rsna``) as coded values: moderate and
#: severe are SNOMED CT's severity concepts; the benchmark's combined "normal/mild" class has none, so it is private.
GRADE_VALUES: dict[str, tuple[str, str, str]] = {
    "normal_mild": ("NORMAL_MILD", PRIVATE_SCHEME, "Normal or mild"),
    "moderate": (codes.SCT.Moderate.value, "SCT", codes.SCT.Moderate.meaning),
    "severe": (codes.SCT.Severe.value, "SCT", codes.SCT.Severe.meaning),
}


def sr_grades(summary: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    """The RSNA grades of the lumbar levels grouped as :func:`sr_groups` groups the numbers: (anatomy, tracking id)
    -> {grade name: grade}.

    >>> sr_grades({"spine.L4-L5.canal_rsna": "severe", "spine.L4-L5.right.foraminal_rsna": "normal_mild"})
    {('spine', 'L4-L5'): {'canal_rsna': 'severe'}, ('spine', 'L4-L5_right'): {'foraminal_rsna': 'normal_mild'}}
    """
    out: dict[tuple[str, str], dict[str, str]] = {}
    for key, value in summary.items():
        if key.startswith("spine.") and key.endswith("_rsna") and value in GRADE_VALUES:
            gid = _group_of(key.split("."))
            if gid is not None:
                out.setdefault(gid, {})[key.split(".")[-1]] = str(value)
    return out


#: legmri's segmentation QC verdicts as the DICOM quality-control standard values (PS3.16 DCM 111237 / 111236 /
#: 111235) of a "Quality Assessment" (DCM 111050) evaluation: a pass meets the standard, a review is usable but does
#: not meet it, a fail is not usable (the rules do not use it).
QC_VALUES: dict[str, Any] = {
    "pass": codes.DCM.UsableMeetsTheQualityControlStandard,
    "review": codes.DCM.UsableDoesNotMeetTheQualityControlStandard,
    "fail": codes.DCM.UnusableQualityRendersImageUnusable,
}


def group_qc(summary: Mapping[str, Any], anatomy: str, tracking: str) -> str | None:
    """The segmentation QC verdict behind a measurement group (:func:`sr_groups`): a muscle's in its leg, a muscle
    group's the worst of its members' (:func:`~pipeline.core.verdict.group_verdict`), an asymmetry's the worst of
    both legs', a lumbar level's (and its sides') the level's; fail for every group when the study failed (the rules
    then use none of its values); None where the summary holds none (a leg's girth in a study that passed).

    >>> s = {"calf.left.soleus.qc_status": "pass", "calf.right.soleus.qc_status": "fail",
    ...      "spine.L4-L5.qc_status": "review"}
    >>> group_qc(s, "calf", "soleus_left"), group_qc(s, "calf", "soleus_asymmetry"), group_qc(s, "spine", "L4-L5_right")
    ('pass', 'fail', 'review')
    >>> group_qc({"spine.disc_2.qc_status": "fail"}, "spine", "disc_2_left"), group_qc(s, "calf", "leg_left")
    ('fail', None)
    >>> group_qc({**s, "calf.qc_status": "fail"}, "calf", "soleus_left")
    'fail'

    """
    head, _, side = tracking.rpartition("_")
    if anatomy == "spine":
        level = head if side in ("left", "right") else tracking
        status = level_verdict(summary.get(f"spine.{level}.qc_status"), summary.get("spine.qc_status"))
        return status if status in QC_VALUES else None
    members = registry("calf").members().get(head, (head,))
    sides = ("left", "right") if side == "asymmetry" else (side,)
    return group_verdict([summary.get(f"calf.{s}.{m}.qc_status") for s in sides for m in members],
                         study=summary.get("calf.qc_status"))


def _qc_evaluation(status: str) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(_coded(codes.DCM.QualityAssessment), _coded(QC_VALUES[status]))


def _qc_list(status: str | None) -> list[hd.sr.QualitativeEvaluation]:
    return [_qc_evaluation(status)] if status in QC_VALUES else []


def _report_texts(impression: str | None, qc_texts: Sequence[str]) -> hd.sr.ContainerContentItem | None:
    """TID 1500's "Qualitative Evaluations" container (UMLS C0034375) of the report: the study's QC verdicts with
    their reasons as "Quality Assessment" text and the decision with its evidence as "Impression" text (DCM 121073);
    None when there is neither."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = [hd.sr.TextContentItem(name=_coded(codes.DCM.QualityAssessment), value=text, relationship_type=contains)
             for text in qc_texts]
    if impression:
        items.append(hd.sr.TextContentItem(name=_coded(codes.DCM.Impression), value=impression,
                                           relationship_type=contains))
    if not items:
        return None
    container = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"), relationship_type=contains)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _grade(name: str, value: str) -> hd.sr.QualitativeEvaluation:
    code = GRADE_VALUES[value]
    return hd.sr.QualitativeEvaluation(hd.sr.CodedConcept(_short(name), PRIVATE_SCHEME, name[:64]),
                                       hd.sr.CodedConcept(*code))


def sr_groups(summary: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """Group numeric summary values into (anatomy, tracking id) -> {metric: value}.

    Calf: ``calf.<side>.<structure>.<metric>`` -> ("calf", "<structure>_<side>"); the leg's girth
    ``calf.<side>.<metric>`` -> ("calf", "leg_<side>"); left/right asymmetry ``calf.asymmetry.<structure>.<metric>``
    -> ("calf", "<structure>_asymmetry") and ``calf.asymmetry.<metric>`` -> ("calf", "leg_asymmetry"). Spine:
    ``spine.<level>.<metric>`` and ``spine.<level>.<side>.<metric>`` -> ("spine", "<level>[_<side>]"). Only keys
    with a unit suffix and a number; slice positions (:func:`_is_position`) are left to the tables.

    >>> sr_groups({"calf.right.soleus.volume_ml": 410.0, "calf.available": True, "spine.L4-L5.dsca_mm2": 61.0,
    ...            "calf.asymmetry.girth_diff_cm": 0.4})
    {('calf', 'soleus_right'): {'volume_ml': 410.0}, ('spine', 'L4-L5'): {'dsca_mm2': 61.0}, ('calf', 'leg_asymmetry'): {'girth_diff_cm': 0.4}}
    """
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or _unit(key) is None or _is_position(key):
            continue
        gid = _group_of(key.split("."))
        if gid is not None:
            groups.setdefault(gid, {})[key.split(".")[-1]] = float(value)
    return groups


def _is_position(key: str) -> bool:
    """Slice positions along the body axis (``z_first_mm``, ``max_csa_z_mm``, ...): where a value was taken, which
    the tables keep, not a measurement of the patient.

    >>> _is_position("calf.right.soleus.max_csa_z_mm"), _is_position("calf.right.soleus.max_csa_mm2")
    (True, False)
    """
    metric = key.rsplit(".", 1)[-1]
    return metric.startswith("z_") or metric.endswith("_z_mm")


def _group_of(parts: list[str]) -> tuple[str, str] | None:
    """The (anatomy, tracking id) of a summary key split at its dots (:func:`sr_groups`), or None."""
    sides = ("left", "right")
    if parts[0] == "calf" and len(parts) == 4 and parts[1] in (*sides, "asymmetry"):
        return "calf", f"{parts[2]}_{parts[1]}"
    if parts[0] == "calf" and len(parts) == 3 and parts[1] in (*sides, "asymmetry"):
        return "calf", f"leg_{parts[1]}"
    if parts[0] == "spine" and len(parts) == 3:
        return "spine", parts[1]
    if parts[0] == "spine" and len(parts) == 4 and parts[2] in sides:
        return "spine", f"{parts[1]}_{parts[2]}"
    return None


def _finding_site(anatomy: str, tracking: str) -> tuple[hd.sr.FindingSite, Any]:
    """Finding site (the structure's SNOMED CT concept of ``configs/labels.yaml``, with laterality) and finding type
    of a measurement group. Calf muscles: the muscle's code and side; a leg: the lower leg; spine levels: the
    level's disc (the canal is measured at its centre) and side."""
    head, _, side = tracking.rpartition("_")
    if side not in ("left", "right", "asymmetry"):
        head = tracking
    laterality = {"left": codes.SCT.Left, "right": codes.SCT.Right}.get(side)
    reg = registry(anatomy)
    if anatomy == "calf":
        structure = reg.structures.get(head)
        code = _code(structure.get("code")) if structure else _code(reg.region)
        return hd.sr.FindingSite(code, laterality=laterality), code
    disc = next((lab for lab in reg.labels if lab.structure == "disc" and lab.level == head), None)
    code = _code(reg.code_of(disc)) if disc is not None else _code(reg.region)
    return hd.sr.FindingSite(code, laterality=laterality), _code(reg.region)


def _tracking(study_uid: str, anatomy: str, tracking: str) -> hd.sr.TrackingIdentifier:
    """A tracking identifier whose UID is derived from the study and the group, so that the same structure keeps it
    from one run (and one report) of the study to the next, as longitudinal reading needs."""
    from pydicom.uid import generate_uid

    return hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=[study_uid, anatomy, tracking]),
                                    identifier=tracking)


def _segments(segs: Sequence[pydicom.Dataset]) -> dict[str, hd.sr.ReferencedSegment]:
    """Segment label -> its reference in the DICOM SEG objects ``segs`` (for the measurement groups)."""
    out = {}
    for seg in segs:
        series = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        for d in seg.SegmentSequence:
            out[str(d.SegmentLabel)] = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                segment_number=int(d.SegmentNumber),
                source_series=hd.sr.SourceSeriesForSegmentation(series))
    return out


def write_sr(summary: Mapping[str, Any], evidence_files: Sequence[str | Path], path: str | Path,
             deidentified: bool = False, segs: Sequence[str | Path] = (), impression: str | None = None,
             qc_texts: Sequence[str] = ()) -> Path:
    """Write a Comprehensive 3D SR (TID 1500 Measurement Report) of the per-structure, per-leg and per-level
    measurements and the left/right asymmetry.

    One measurement group (TID 1411) per muscle and side, leg, asymmetry and lumbar level (and side): numeric
    measurements with the standard concept names of :data:`METRIC_CONCEPTS` and UCUM units, and the level's RSNA
    grades as qualitative evaluations (:data:`GRADE_VALUES`); the finding site is the
    structure's SNOMED CT concept with its laterality (:func:`_finding_site`); tracking UIDs are stable across runs
    (:func:`_tracking`); a group whose structure has a segment in one of the DICOM SEG files ``segs`` references it;
    each group carries the segmentation QC verdict it rests on (:func:`group_qc`, :data:`QC_VALUES`). The report's
    qualitative evaluations hold ``qc_texts`` (the study's QC verdicts and reasons) and ``impression`` (the decision
    with its evidence) as text (:func:`_report_texts`).
    The evidence is the images ``evidence_files`` (one per source series) and the SEG objects. With
    ``deidentified``, de-identified by :func:`deidentify`.
    """
    evidence = read_series(evidence_files)
    study_uid = str(evidence[0].StudyInstanceUID)
    seg_datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in segs]
    segments = _segments(seg_datasets)
    evidence += seg_datasets
    groups = []
    numbers, grades = sr_groups(summary), sr_grades(summary)
    for anatomy, tracking in sorted(set(numbers) | set(grades)):
        site, finding_type = _finding_site(anatomy, tracking)
        metrics, graded = numbers.get((anatomy, tracking), {}), grades.get((anatomy, tracking), {})
        common = {"tracking_identifier": _tracking(study_uid, anatomy, tracking), "finding_type": finding_type,
                  "finding_sites": [site],
                  "measurements": [_measurement(m, v, _unit(m)) for m, v in sorted(metrics.items())] or None,
                  "qualitative_evaluations": [*_qc_list(group_qc(summary, anatomy, tracking)),
                                              *(_grade(g, v) for g, v in sorted(graded.items()))] or None}
        if tracking in segments:  # TID 1411: measurements of the volume a SEG segment outlines
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segments[tracking], **common))
        else:  # TID 1501: measurements of the structure, leg or level
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    if not groups:
        raise BadInputError("summary.json holds no numeric measurement to export.", path=path,
                            fix="run 'legmri measure' on the study first.")
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=None,
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=hd.UID(), name="legmri", model_name=__version__)),
        ),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "Unspecified body region MRI"),
        imaging_measurements=groups,
    )
    texts = _report_texts(impression, qc_texts)
    if texts is not None:
        report[0].ContentSequence.append(texts)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_number=901, series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="legmri",
        series_description="legmri measurements", is_complete=True, is_final=False, is_verified=False,
    )
    private = grades or any(m not in METRIC_CONCEPTS for metrics in numbers.values() for m in metrics)
    if private:  # declared only where used (PS3.3 C.12.1.1.8)
        scheme = pydicom.Dataset()
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = "legmri measurement names (the metric's name in summary.json)"
        scheme.CodingSchemeResponsibleOrganization = "legmri"
        sr.CodingSchemeIdentificationSequence = [*sr.get("CodingSchemeIdentificationSequence", []), scheme]
    if deidentified:
        deidentify(sr)
    with atomic_path(path) as tmp:
        sr.save_as(tmp)
    return Path(path)
