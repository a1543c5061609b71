"""Write a :class:`~pipeline.core.volume.Volume` as a real DICOM MR Image Storage series (pydicom).

The inverse of :func:`pipeline.io.dicom_read.read_stack`: the RAS+ affine is converted to LPS+, array axis 0 becomes
the DICOM row direction (columns of the image), axis 1 the column direction (rows of the image) and axis 2 the slice
order, so that reading the files back gives the same array and affine. Geometry tags are complete
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness, SpacingBetweenSlices, SliceLocation,
FrameOfReferenceUID); identification tags are those of the :class:`StudyInfo` and :class:`SeriesInfo` given.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import InternalError
from pipeline.core.geometry import LPS_TO_RAS
from pipeline.core.volume import Volume

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless, "jpeg2000": JPEG2000Lossless}


@dataclass
class StudyInfo:
    """Patient and study identification shared by every series of one study."""

    patient_name: str = "PHANTOM^CALF"
    patient_id: str = "PHANTOM0001"
    patient_birth_date: str = "19520101"
    patient_sex: str = "F"
    patient_age: str = "074Y"
    study_instance_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    study_date: str = "20260101"
    study_time: str = "090000"
    study_id: str = "1"
    accession_number: str = "ACC0001"
    study_description: str = "MRI LOWER LEG AND LUMBAR SPINE"
    referring_physician: str = ""
    institution: str = "legmri phantom"


@dataclass
class SeriesInfo:
    """Per-series acquisition and description tags."""

    description: str
    series_number: int = 1
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M")
    body_part: str = ""
    manufacturer: str = "SIEMENS"
    model: str = ""
    protocol_name: str = ""
    sequence_name: str = ""
    scanning_sequence: str = "GR"
    sequence_variant: str = "SP"
    echo_time_ms: float = 2.5
    repetition_time_ms: float = 6.0
    flip_angle_deg: float = 10.0
    field_strength_t: float = 3.0
    imaging_frequency_mhz: float | None = None  # ImagingFrequency (0018,0084); left out when None
    slice_thickness_mm: float | None = None  # defaults to the slice step
    series_instance_uid: str = field(default_factory=generate_uid)


def lps_geometry(volume: Volume) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray]:
    """(IOP (6,), IPP per slice (n, 3), PixelSpacing (row, column), slice step vector) of a volume, in LPS mm.

    Raises InternalError for sheared grids (rows not orthogonal to columns), which DICOM cannot express.
    """
    aff = LPS_TO_RAS @ volume.affine
    col0, col1, col2 = aff[:3, 0], aff[:3, 1], aff[:3, 2]
    dc, dr = float(np.linalg.norm(col0)), float(np.linalg.norm(col1))
    row_dir, col_dir = col0 / dc, col1 / dr
    if abs(float(row_dir @ col_dir)) > 1e-6:
        raise InternalError("cannot write a sheared in-plane grid as DICOM (axis 0 and 1 are not orthogonal).")
    n = volume.shape[2]
    ipp = aff[:3, 3][None, :] + np.arange(n)[:, None] * col2[None, :]
    return np.concatenate([row_dir, col_dir]), ipp, (dr, dc), col2


def _pixels(volume: Volume) -> tuple[np.ndarray, float, float]:
    """Stored values + (slope, intercept): integers as they are; floats scaled into uint16."""
    arr = volume.array
    if arr.dtype.kind in "biu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 65535:
            return arr.astype(np.uint16), 1.0, 0.0
        if lo >= -32768 and hi <= 32767:
            return arr.astype(np.int16), 1.0, 0.0
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if np.allclose(arr, np.round(arr)) and lo >= 0 and hi <= 65535:
        return np.round(arr).astype(np.uint16), 1.0, 0.0
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.round((arr - lo) / slope).astype(np.uint16)
    return stored, slope, lo


def _ds_str(v: float) -> str:
    """A DICOM Decimal String (at most 16 characters) for ``v``."""
    s = f"{v:.10g}"
    return s if len(s) <= 16 else f"{v:.6g}"


def write_series(volume: Volume, out_dir: str | Path, study: StudyInfo, series: SeriesInfo, *,
                 rng: np.random.Generator | None = None, random_names: bool = True,
                 transfer_syntax: str = "explicit", sop_instance_uids: Sequence[str] | None = None) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice into ``out_dir``; returns the paths in slice order.

    ``random_names`` gives files random hexadecimal names (as many PACS exports do); ``transfer_syntax`` is
    ``"explicit"`` (uncompressed), ``"rle"`` (RLE Lossless) or ``"jpeg2000"`` (JPEG 2000 Lossless, via pylibjpeg).
    ``sop_instance_uids`` fixes the instance UIDs (reproducible output); new UIDs are generated otherwise.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = rng if rng is not None else np.random.default_rng()
    iop, ipp, (dr, dc), step = lps_geometry(volume)
    normal = np.cross(iop[:3], iop[3:])
    stored, slope, intercept = _pixels(volume)
    tsuid = TRANSFER_SYNTAXES[transfer_syntax]
    thickness = series.slice_thickness_mm or float(abs(step @ normal))
    now = _dt.datetime(2026, 1, 1, 9, 0, 0)
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        sop_uid = sop_instance_uids[k] if sop_instance_uids is not None else generate_uid()
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = list(series.image_type)
        ds.Modality = "MR"
        ds.Manufacturer = series.manufacturer
        ds.ManufacturerModelName = series.model
        ds.InstitutionName = study.institution
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.patient_birth_date
        ds.PatientSex = study.patient_sex
        ds.PatientAge = study.patient_age
        ds.StudyInstanceUID = study.study_instance_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
        ds.StudyTime = study.study_time
        ds.SeriesTime = ds.ContentTime = (now + _dt.timedelta(minutes=series.series_number)).strftime("%H%M%S")
        ds.StudyID = study.study_id
        ds.AccessionNumber = study.accession_number
        ds.ReferringPhysicianName = study.referring_physician
        ds.StudyDescription = study.study_description
        ds.SeriesInstanceUID = series.series_instance_uid
        ds.SeriesNumber = series.series_number
        ds.SeriesDescription = series.description
        ds.ProtocolName = series.protocol_name or series.description
        ds.BodyPartExamined = series.body_part
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "FFS"
        ds.ScanningSequence = series.scanning_sequence
        ds.SequenceVariant = series.sequence_variant
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D" if series.scanning_sequence == "GR" else "2D"
        ds.SequenceName = series.sequence_name
        ds.EchoTime = _ds_str(series.echo_time_ms)
        ds.RepetitionTime = _ds_str(series.repetition_time_ms)
        ds.FlipAngle = _ds_str(series.flip_angle_deg)
        ds.MagneticFieldStrength = _ds_str(series.field_strength_t)
        if series.imaging_frequency_mhz is not None:
            ds.ImagingFrequency = _ds_str(series.imaging_frequency_mhz)
        ds.EchoTrainLength = 1
        ds.SliceThickness = _ds_str(thickness)
        ds.SpacingBetweenSlices = _ds_str(float(np.linalg.norm(step)))
        ds.ImagePositionPatient = [_ds_str(v) for v in ipp[k]]
        ds.ImageOrientationPatient = [_ds_str(v) for v in iop]
        ds.SliceLocation = _ds_str(float(ipp[k] @ normal))
        ds.PixelSpacing = [_ds_str(dr), _ds_str(dc)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        plane = np.ascontiguousarray(stored[:, :, k].T)
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if plane.dtype == np.int16 else 0
        ds.RescaleSlope = _ds_str(slope)
        ds.RescaleIntercept = _ds_str(intercept)
        ds.RescaleType = "US"
        ds.WindowCenter = _ds_str(float(np.percentile(plane, 50) * slope + intercept))
        ds.WindowWidth = _ds_str(max(1.0, float(np.ptp(plane)) * slope))
        ds.PixelData = plane.tobytes()
        if tsuid != ExplicitVRLittleEndian:
            kwargs = {"encoding_plugin": "pylibjpeg"} if tsuid == JPEG2000Lossless else {}
            ds.compress(tsuid, **kwargs)
        name = rng.bytes(8).hex().upper() if random_names else f"IM{k + 1:04d}.dcm"
        target = out_dir / name
        with atomic_path(target, suffix="") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(target)
    return paths
