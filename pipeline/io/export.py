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
from pipeline.core.labels import Registry
from pipeline.core.volume import Volume

#: UCUM units of the measurement keys exported to the SR (suffix of the summary key -> unit code, meaning).
UNITS: dict[str, tuple[str, str]] = {
    "_ml": ("ml", "milliliter"),
    "_mm2": ("mm2", "square millimeter"),
    "_mm": ("mm", "millimeter"),
    "_pct": ("%", "percent"),
}

#: Generic anatomy used when a structure has no ``code`` in configs/labels.yaml.
FALLBACK_CODE = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
#: Series number and description of each anatomy's SEG.
SEG_SERIES_NUMBER = {"calf": 900, "spine": 901}
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
      values, units, codes, tracking identifiers and image references, no text from the source headers), so it is
      kept as the measurements it is, where the basic profile alone would remove it.

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
    for suffix, unit in UNITS.items():
        if key.endswith(suffix):
            return unit
    return None


def _measurement(name: str, value: float, unit: tuple[str, str]) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=hd.sr.CodedConcept(_short(name), "99LEGMRI", name[:64]),
        value=float(value), unit=hd.sr.CodedConcept(unit[0], "UCUM", unit[1]))


def _short(name: str) -> str:
    """A stable code value (<= 16 characters) for a private measurement concept: a hash of its name."""
    import hashlib

    return "LM" + hashlib.sha1(name.encode()).hexdigest()[:14].upper()


def sr_groups(summary: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    """Group numeric summary values into (anatomy, tracking id) -> {metric: value}.

    Calf: ``calf.<side>.<muscle>.<metric>`` -> ("calf", "<muscle>_<side>"); spine: ``spine.<level>.<metric>`` and
    ``spine.<level>.<side>.<metric>`` -> ("spine", "<level>[_<side>]"). Only keys with a unit suffix and a number.

    >>> sr_groups({"calf.right.soleus.volume_ml": 410.0, "calf.available": True, "spine.L4-L5.dsca_mm2": 61.0})
    {('calf', 'soleus_right'): {'volume_ml': 410.0}, ('spine', 'L4-L5'): {'dsca_mm2': 61.0}}
    """
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or _unit(key) is None:
            continue
        parts = key.split(".")
        if parts[0] == "calf" and len(parts) == 4 and parts[1] in ("left", "right"):
            gid = ("calf", f"{parts[2]}_{parts[1]}")
        elif parts[0] == "spine" and len(parts) == 3:
            gid = ("spine", parts[1])
        elif parts[0] == "spine" and len(parts) == 4 and parts[2] in ("left", "right"):
            gid = ("spine", f"{parts[1]}_{parts[2]}")
        else:
            continue
        groups.setdefault(gid, {})[parts[-1]] = float(value)
    return groups


def write_sr(summary: Mapping[str, Any], source_files: Sequence[str | Path], registry: Registry | None,
             path: str | Path, deidentified: bool = False) -> Path:
    """Write a Comprehensive 3D SR (TID 1500 Measurement Report) of the per-muscle and per-level measurements.

    One measurement group (TID 1411) per muscle and side and per lumbar level (and side), each with numeric
    measurements in UCUM units (ml, mm2, mm, %). The evidence is the source series (its first image). With
    ``deidentified``, de-identified by :func:`deidentify`.
    """
    source = read_series(source_files[:1])
    ref = source[0]
    groups = []
    for (anatomy, tracking), metrics in sorted(sr_groups(summary).items()):
        finding_site = codes.SCT.LowerLeg if anatomy == "calf" else codes.SCT.LumbarSpine
        measurements = [_measurement(f"{tracking} {m}", v, _unit(m)) for m, v in sorted(metrics.items())]
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=tracking),
            finding_type=codes.SCT.Muscle if anatomy == "calf" else codes.SCT.LumbarSpine,
            finding_sites=[hd.sr.FindingSite(finding_site)],
            measurements=measurements,
        ))
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
        procedure_reported=codes.LN.MRIOfLowerExtremity if hasattr(codes.LN, "MRIOfLowerExtremity")
        else hd.sr.CodedConcept("25045-6", "LN", "Unspecified body region MRI"),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[ref], content=report[0], series_number=901, series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="legmri",
        series_description="legmri measurements", is_complete=True, is_final=False, is_verified=False,
    )
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = "99LEGMRI"
    scheme.CodingSchemeName = "legmri measurement names (<structure>_<side> or <level>[_<side>] and metric)"
    scheme.CodingSchemeResponsibleOrganization = "legmri"
    sr.CodingSchemeIdentificationSequence = [*sr.get("CodingSchemeIdentificationSequence", []), scheme]
    if deidentified:
        deidentify(sr)
    with atomic_path(path) as tmp:
        sr.save_as(tmp)
    return Path(path)
