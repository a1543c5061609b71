"""Write a phantom case as a study folder: DICOM series (or NIfTI + study.yaml), clinical.yaml, ground_truth.json
and the ground-truth label maps under ground_truth/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.core.atomic import atomic_dir, write_json, write_text
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.nifti import save_volume, to_closest_canonical
from pipeline.synth.calf import generate_calf
from pipeline.synth.cases import make_case
from pipeline.synth.common import GENERATOR_VERSION, SynthSeries

MANUFACTURER = {"siemens": ("SIEMENS", "MAGNETOM Vida"), "philips": ("Philips Medical Systems", "Ingenia"),
                "ge": ("GE MEDICAL SYSTEMS", "SIGNA Premier")}
DIXON_IMAGE_TYPE = {
    "siemens": {"water": ("ORIGINAL", "PRIMARY", "M", "DIXON", "W"), "fat": ("ORIGINAL", "PRIMARY", "M", "DIXON", "F"),
                "inphase": ("ORIGINAL", "PRIMARY", "M", "DIXON", "IN_PHASE"),
                "outphase": ("ORIGINAL", "PRIMARY", "M", "DIXON", "OPP_PHASE"),
                "ffmap": ("DERIVED", "PRIMARY", "M", "DIXON", "FF")},
    "philips": {"water": ("ORIGINAL", "PRIMARY", "W", "W", "DERIVED"), "fat": ("ORIGINAL", "PRIMARY", "F", "F", "DERIVED"),
                "inphase": ("ORIGINAL", "PRIMARY", "IP", "IP", "DERIVED"),
                "outphase": ("ORIGINAL", "PRIMARY", "OP", "OP", "DERIVED"),
                "ffmap": ("DERIVED", "PRIMARY", "FF", "FF", "DERIVED")},
    "ge": {"water": ("DERIVED", "PRIMARY", "WATER"), "fat": ("DERIVED", "PRIMARY", "FAT"),
           "inphase": ("DERIVED", "PRIMARY", "IN_PHASE"), "outphase": ("DERIVED", "PRIMARY", "OUT_PHASE"),
           "ffmap": ("DERIVED", "PRIMARY", "FF")},
}
LUMBAR_DESCRIPTION = {"siemens": {"sag": "t2_tse_sag", "ax": "t2_tse_tra"},
                      "philips": {"sag": "T2W_TSE SAG", "ax": "T2W_TSE TRA"},
                      "ge": {"sag": "Sag T2 FSE", "ax": "Ax T2 FSE"}}


def _series_info(s: SynthSeries, vendor: str, number: int) -> SeriesInfo:
    manufacturer, model = MANUFACTURER[vendor]
    if s.role.startswith("calf_") and s.contrast in DIXON_IMAGE_TYPE[vendor]:
        return SeriesInfo(s.description, series_number=number, image_type=DIXON_IMAGE_TYPE[vendor][s.contrast],
                          body_part="LEG", manufacturer=manufacturer, model=model, scanning_sequence="GR",
                          sequence_variant="SP", echo_time_ms=2.46, repetition_time_ms=6.2, flip_angle_deg=10,
                          sequence_name="*fl3d2" if vendor == "siemens" else "")
    if s.role.startswith("calf_"):
        return SeriesInfo(s.description, series_number=number, image_type=("ORIGINAL", "PRIMARY", "M", "NORM"),
                          body_part="LEG", manufacturer=manufacturer, model=model, scanning_sequence="IR",
                          sequence_variant="SK", echo_time_ms=41, repetition_time_ms=5000, flip_angle_deg=150)
    plane = "sag" if s.plane == "sagittal" else "ax"
    return SeriesInfo(LUMBAR_DESCRIPTION[vendor][plane], series_number=number,
                      image_type=("ORIGINAL", "PRIMARY", "M", "NORM"), body_part="LSPINE", manufacturer=manufacturer,
                      model=model, scanning_sequence="SE", sequence_variant="SK", echo_time_ms=95,
                      repetition_time_ms=3500, flip_angle_deg=150)


def _lumbar(case_name: str, seed: int, vendor: str) -> tuple[list[SynthSeries], dict[str, Any] | None]:
    try:
        from pipeline.synth.lumbar import generate_lumbar, lumbar_spec_for_case
    except ImportError:  # a calf-only build of the generator
        return [], None
    spec = lumbar_spec_for_case(case_name, np.random.default_rng([seed, 11]))
    spec.vendor = vendor
    ph = generate_lumbar(spec, seed=seed)
    return ph.series, ph.truth


def write_case(case: str, seed: int, out: str | Path, fmt: str = "dicom", vendor: str | None = None,
               transfer_syntax: str = "explicit", lumbar: bool = True) -> Path:
    """Generate the named case (``nmh``, ``control``, ``myopathic`` or ``random``) with ``seed`` and write it as a
    study folder at ``out`` (replaced if it exists). Deterministic: the same arguments give the same pixel data."""
    out = Path(out)
    c = make_case(case, seed, vendor)
    vendor_ = c.calf.vendor
    calf = generate_calf(c.calf, seed=seed)
    series = list(calf.series)
    spine_truth = None
    if lumbar:
        lumbar_series, spine_truth = _lumbar(c.lumbar_case, seed, vendor_)
        series += lumbar_series
    rng = np.random.default_rng([seed, 99])
    uid_root = f"2.25.{int.from_bytes(rng.bytes(12), 'big')}"
    study = StudyInfo(patient_name=c.patient["name"], patient_id=c.patient["id"],
                      patient_birth_date=c.patient["birth_date"], patient_sex=c.patient["sex"],
                      patient_age=c.patient["age"], study_instance_uid=f"{uid_root}.1",
                      frame_of_reference_uid=f"{uid_root}.2", accession_number=f"ACC{seed:06d}",
                      study_description="MRI BOTH LOWER LEGS AND LUMBAR SPINE")
    with atomic_dir(out) as tmp:
        gt_dir = tmp / "ground_truth"
        study_yaml: list[dict[str, str]] = []
        for n, s in enumerate(series, start=1):
            info = _series_info(s, vendor_, n)
            info.series_instance_uid = f"{uid_root}.3.{n}"
            if fmt == "dicom":
                folder = tmp / "DICOM" / f"{rng.integers(10**7, 10**8)}"
                _write_deterministic(s, folder, study, info, rng, transfer_syntax, uid_root, n)
            else:
                save_volume(s.volume, tmp / f"{s.role}.nii.gz")
                study_yaml.append({"file": f"{s.role}.nii.gz", "role": s.role, "description": s.description})
            if s.labels is not None and not (gt_dir / f"{_label_role(s.role)}_labels.nii.gz").exists():
                # on the grid that ingestion gives the series (closest canonical axis order)
                save_volume(to_closest_canonical(s.labels)[0], gt_dir / f"{_label_role(s.role)}_labels.nii.gz",
                            dtype=np.int16)
        if fmt == "nifti":
            write_text(tmp / "study.yaml", yaml.safe_dump({"series": study_yaml}, sort_keys=False))
        truth = {"case": c.name, "seed": seed, "generator_version": GENERATOR_VERSION, "vendor": vendor_,
                 "intended_diagnosis": c.intended_diagnosis, "calf": calf.truth,
                 "spine": spine_truth if spine_truth is not None else None}
        write_json(tmp / "ground_truth.json", truth)
        if c.clinical is not None:
            write_text(tmp / "clinical.yaml", yaml.safe_dump(c.clinical, sort_keys=False))
    return out


def _label_role(role: str) -> str:
    """Calf series share one label map (calf); lumbar series keep their own role."""
    return "calf" if role.startswith("calf_") else role


def _write_deterministic(s: SynthSeries, folder: Path, study: StudyInfo, info: SeriesInfo,
                         rng: np.random.Generator, transfer_syntax: str, uid_root: str, n: int) -> None:
    """Write a series with instance UIDs derived from the case seed (the same seed gives the same files)."""
    uids = [f"{uid_root}.4.{n}.{k + 1}" for k in range(s.volume.shape[2])]
    write_series(s.volume, folder, study, info, rng=rng, transfer_syntax=transfer_syntax, sop_instance_uids=uids)
