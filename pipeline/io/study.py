"""Ingestion of one study folder: discover, group, sort, classify and convert every series.

``ingest_study(STUDY, OUT)`` writes ``OUT/series.json`` and ``OUT/volumes/<role>.nii.gz`` (RAS+, reoriented once to
the closest canonical axis order); ``inspect_study(STUDY)`` returns the same classification as table rows without
decoding pixels. A study folder holds DICOM files (any names, any depth, with or without DICOMDIR) or NIfTI files
with a ``study.yaml`` that maps each file to its role.

Everything is read and checked before anything is written, so a rejected study leaves nothing half-written in OUT.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.multival import MultiValue

from pipeline.core.atomic import write_json
from pipeline.core.config import load_config, read_yaml, validate
from pipeline.core.errors import BadInputError
from pipeline.core.provenance import file_sha256, update_provenance
from pipeline.core.units import PROTON_GAMMA_MHZ_PER_T
from pipeline.core.volume import Volume
from pipeline.io.classify import Classification, RoleRules, plane_of
from pipeline.io.dicom_read import (
    Frame,
    InvalidGeometryError,
    Skipped,
    Stack,
    discover,
    frames_of,
    group_stacks,
    read_stack_volume,
    sort_stack,
)
from pipeline.io.nifti import load_volume, save_volume, to_closest_canonical

log = logging.getLogger(__name__)

PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription",
                    "ReferringPhysicianName", "Manufacturer", "ManufacturerModelName", "InstitutionName",
                    "FrameOfReferenceUID", "MagneticFieldStrength")
#: Header facts that identify the patient or the visit (the identifiers, names and dates of the DICOM basic
#: application level confidentiality profile, PS3.15 Table E.1-1). ``series.json`` leaves them out unless ingest is
#: asked for them (``--show-phi``); legmri's outputs then identify no one except DICOM SEG and SR, which carry the
#: source study's patient module as DICOM requires.
IDENTIFYING_KEYWORDS = frozenset({"PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate",
                                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                                  "InstitutionName", "name", "id", "birth_date"})
MIN_SLICES_FOR_VOLUME = 3
STUDY_YAML_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["series"],
    "additionalProperties": False,
    "properties": {
        "series": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["file", "role"], "additionalProperties": False,
            "properties": {"file": {"type": "string"}, "role": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                           "description": {"type": "string"},
                           "echo_time_ms": {"type": "number", "exclusiveMinimum": 0},
                           "part": {"enum": ["magnitude", "phase"]},
                           "field_strength_t": {"type": "number", "exclusiveMinimum": 0},
                           "imaging_frequency_mhz": {"type": "number", "exclusiveMinimum": 0},
                           "repetition_time_ms": {"type": "number", "exclusiveMinimum": 0},
                           "flip_angle_deg": {"type": "number", "exclusiveMinimum": 0, "maximum": 180},
                           "phase_range": {"type": "array", "items": {"type": "number"}, "minItems": 2,
                                           "maxItems": 2}}}},
        "patient": {"type": "object"},
        # the reader's naming of one vertebra, for a lumbar study without the sacrum in view (pipeline.spine.levels)
        "spine_anchor_level": {"type": "string", "pattern": "^(vertebra_[1-9][0-9]?=)?L[1-5]$"},
    },
}


@dataclass
class StackInfo:
    """A classified stack of a DICOM study, before pixels are decoded."""

    stack: Stack
    cls: Classification
    role: str = ""
    volume_reason: str | None = None  # why no volume is built (localizer, too few slices)
    warnings: list[str] = field(default_factory=list)
    echo: dict[str, Any] | None = None  # echo_index, echo_time_ms, part, field_strength_t of a multi-echo stack

    @property
    def header(self) -> Any:
        return self.stack.header

    def center_z_lps(self) -> float:
        return float(np.mean([fr.ipp[2] for fr in self.stack.frames]))


def _text(ds: Any, kw: str) -> str:
    v = ds.get(kw)
    return "" if v is None else str(v)


def _patient(header: Any) -> dict[str, str]:
    return {kw: _text(header, kw) for kw in PATIENT_KEYWORDS}


# -- DICOM ------------------------------------------------------------------------------------------------------
def _scan_dicom(study: Path, rules: RoleRules) -> tuple[list[StackInfo], list[Skipped]]:
    found, skipped = discover(study)
    frames: list[Frame] = []
    for path, ds in found:
        try:
            frames.extend(frames_of(path, ds))
        except InvalidGeometryError:
            raise
        except BadInputError as exc:  # e.g. a secondary capture: an image without a place in the patient
            skipped.append(Skipped(str(path), exc.message))
    infos: list[StackInfo] = []
    for group in group_stacks(frames):
        first = group[0]
        cls = rules.classify(first.header, first.iop, first.image_type)
        strict = not cls.localizer and len(group) >= MIN_SLICES_FOR_VOLUME
        stack = sort_stack(group, strict=strict)
        info = StackInfo(stack, cls, warnings=list(stack.warnings))
        if cls.localizer:
            info.volume_reason = "localizer/scout images are not analysed"
        elif len(stack.frames) < MIN_SLICES_FOR_VOLUME:
            info.volume_reason = f"only {len(stack.frames)} slice(s); at least {MIN_SLICES_FOR_VOLUME} make a volume"
        infos.append(info)
    _assign_roles(infos)
    _assign_echo_roles(infos, rules)
    return infos, skipped


def _assign_echo_roles(infos: list[StackInfo], rules: RoleRules) -> None:
    """Stacks of one gradient-echo series (ScanningSequence GR, when given) at >= multi_echo.min_echoes echo times
    (axial, not lumbar) become the echoes of one calf acquisition: roles calf_echo_<n> (magnitude, by echo time) and calf_echo_<n>_phase. Only the series with
    the most echoes is taken when several qualify (one multi-echo acquisition per study is fitted)."""
    min_echoes = int(rules.multi_echo.get("min_echoes", 3))
    by_series: dict[str, list[StackInfo]] = defaultdict(list)
    for info in infos:
        fr = info.stack.first
        scanning = _text(info.header, "ScanningSequence").upper()
        gradient_echo = not scanning or "GR" in scanning  # a multi-echo spin echo (T2 mapping) is not water-fat data
        if (info.volume_reason is None and fr.echo_time is not None and info.cls.plane == "axial"
                and info.cls.anatomy != "lumbar" and not info.cls.localizer and gradient_echo):
            by_series[fr.series_uid].append(info)
    def n_magnitudes(group: list[StackInfo]) -> int:
        tes = [round(i.stack.first.echo_time or 0.0, 3) for i in group if not rules.is_phase_image(i.stack.first.image_type)]
        return len(tes) if len(set(tes)) == len(tes) else 0

    best = max(by_series.values(), key=n_magnitudes, default=[])
    if n_magnitudes(best) < min_echoes:
        return
    mags = sorted((i for i in best if not rules.is_phase_image(i.stack.first.image_type)),
                  key=lambda i: i.stack.first.echo_time or 0.0)
    te_index = {round(i.stack.first.echo_time or 0.0, 3): n for n, i in enumerate(mags, start=1)}
    # Siemens and others store the phase images as a series of their own: take phase stacks of the same protocol,
    # frame of reference, orientation and matrix from other series when this one has none at that echo time
    have_phase = {round(i.stack.first.echo_time or 0.0, 3) for i in best if rules.is_phase_image(i.stack.first.image_type)}
    ref = mags[0].stack
    for group in by_series.values():
        if group is best:
            continue
        for info in group:
            fr = info.stack.first
            te = round(fr.echo_time or 0.0, 3)
            same = (rules.is_phase_image(fr.image_type) and te in te_index and te not in have_phase
                    and _text(info.header, "ProtocolName") == _text(ref.header, "ProtocolName")
                    and _text(info.header, "FrameOfReferenceUID") == _text(ref.header, "FrameOfReferenceUID")
                    and np.allclose(fr.iop, ref.first.iop, atol=1e-4) and (fr.rows, fr.columns) == (
                        ref.first.rows, ref.first.columns) and len(info.stack.frames) == len(ref.frames))
            if same:
                best = [*best, info]
                have_phase.add(te)
    field_t = _float(_text(best[0].header, "MagneticFieldStrength"))
    frequency = imaging_frequency_mhz(best[0].header)
    tr_ms, flip_deg = (mr_timing(best[0].header, kw) for kw in ("RepetitionTime", "FlipAngle"))
    for info in best:
        te = round(info.stack.first.echo_time or 0.0, 3)
        if te not in te_index:
            info.warnings.append(f"phase image at TE {te:g} ms has no magnitude image at that echo time; not used")
            continue
        part = "phase" if rules.is_phase_image(info.stack.first.image_type) else "magnitude"
        info.role = echo_role(te_index[te], part)
        info.echo = {"echo_index": te_index[te], "echo_time_ms": float(info.stack.first.echo_time or 0.0),
                     "part": part, "field_strength_t": field_t, "imaging_frequency_mhz": frequency,
                     "repetition_time_ms": tr_ms, "flip_angle_deg": flip_deg}


def imaging_frequency_mhz(ds: Any) -> float | None:
    """The proton imaging frequency (MHz) of a DICOM header: ImagingFrequency (0018,0084) of an MR Image, or the
    TransmitterFrequency (0018,9098) of the MR Imaging Modifier functional group of an Enhanced MR Image (shared,
    else the first frame's); None when neither is given.

    >>> from pydicom import Dataset
    >>> mod, group, ds = Dataset(), Dataset(), Dataset()
    >>> mod.TransmitterFrequency = [123.2, 32.4]
    >>> group.MRImagingModifierSequence = [mod]
    >>> ds.SharedFunctionalGroupsSequence = [group]
    >>> imaging_frequency_mhz(ds), imaging_frequency_mhz(Dataset())
    (123.2, None)
    """
    return _header_number(ds, "ImagingFrequency", "MRImagingModifierSequence", "TransmitterFrequency")


def mr_timing(ds: Any, keyword: str) -> float | None:
    """RepetitionTime (ms) or FlipAngle (degrees) of a DICOM header: top level (MR Image), else the MR Timing and
    Related Parameters functional group of an Enhanced MR Image (shared, else the first frame's); None if absent.

    >>> from pydicom import Dataset
    >>> timing, group, ds = Dataset(), Dataset(), Dataset()
    >>> timing.RepetitionTime, timing.FlipAngle = 23.0, 5.0
    >>> group.MRTimingAndRelatedParametersSequence = [timing]
    >>> ds.SharedFunctionalGroupsSequence = [group]
    >>> mr_timing(ds, "RepetitionTime"), mr_timing(ds, "FlipAngle"), mr_timing(Dataset(), "FlipAngle")
    (23.0, 5.0, None)
    """
    return _header_number(ds, keyword, "MRTimingAndRelatedParametersSequence", keyword)


def _header_number(ds: Any, keyword: str, group_sequence: str, group_keyword: str) -> float | None:
    """A positive number of a DICOM header: ``keyword`` at the top level, else ``group_keyword`` in the functional
    group ``group_sequence`` of an Enhanced image (shared, else the first frame's; the first value of a
    multi-valued one); None when absent."""
    direct = _float(_text(ds, keyword))
    if direct:
        return direct
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in (ds.get(groups) or [])[:1]:
            for item in (group.get(group_sequence) or [])[:1]:
                value = item.get(group_keyword)
                if value is not None:
                    first = float(value[0] if isinstance(value, MultiValue) else value)
                    return first if first > 0 else None
    return None


def _float(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _assign_roles(infos: list[StackInfo]) -> None:
    """Give each stack a unique role: duplicates get _2, _3 ... from superior to inferior; others other_<n>."""
    by_role: dict[str, list[StackInfo]] = defaultdict(list)
    others: list[StackInfo] = []
    for info in infos:
        base = info.cls.base_role
        if base is None or info.volume_reason:
            others.append(info)
        else:
            by_role[base].append(info)
    for base, group in by_role.items():
        group.sort(key=lambda i: (-i.center_z_lps(), _text(i.header, "SeriesNumber")))
        for n, info in enumerate(group, start=1):
            info.role = base if n == 1 else f"{base}_{n}"
    others.sort(key=lambda i: (_text(i.header, "SeriesNumber").zfill(6), i.stack.first.series_uid,
                               float(i.stack.first.ipp @ i.stack.first.normal)))
    counters: dict[str, int] = defaultdict(int)
    for info in others:
        prefix = "localizer" if info.cls.localizer else "other"
        counters[prefix] += 1
        n = counters[prefix]
        info.role = prefix if prefix == "localizer" and n == 1 else f"{prefix}_{n}"


def _series_entry(info: StackInfo, volume: Volume | None, slice_axis: int | None, acq_affine: np.ndarray | None,
                  ) -> dict[str, Any]:
    hdr, fr = info.header, info.stack.first
    entry: dict[str, Any] = {
        "uid": fr.series_uid,
        "series_number": _text(hdr, "SeriesNumber"),
        "description": _text(hdr, "SeriesDescription"),
        "role": info.role,
        "anatomy": info.cls.anatomy,
        "contrast": info.cls.contrast,
        "plane": info.cls.plane,
        "obliquity_deg": info.cls.obliquity_deg,
        "dixon": info.cls.dixon,
        "localizer": info.cls.localizer,
        "vendor": _text(hdr, "Manufacturer"),
        "image_type": list(fr.image_type),
        "echo_time_ms": fr.echo_time,
        "sop_class_uid": fr.sop_class_uid,
        "n_slices": len(info.stack.frames),
        "files": info.stack.files,
        "sop_instance_uids": [f.sop_instance_uid for f in info.stack.frames],
        "frame_numbers": [None if f.frame_index is None else f.frame_index + 1 for f in info.stack.frames],
        "volume": None,
        "volume_reason": info.volume_reason,
        "warnings": list(info.warnings),
        **(info.echo or {}),
    }
    if volume is not None:
        entry.update({
            "volume": f"volumes/{info.role}.nii.gz",
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
            "affine": np.round(volume.affine, 6).tolist(),
            "axcodes": "".join(volume.axcodes),
            "slice_axis": slice_axis,
            "acquisition_affine": np.round(acq_affine, 6).tolist() if acq_affine is not None else None,
        })
    else:
        entry.update({"shape": [fr.columns, fr.rows, len(info.stack.frames)],
                      "spacing_mm": [fr.pixel_spacing[1], fr.pixel_spacing[0], fr.slice_thickness]})
    return entry


def _phase_volume(vol: Volume, info: StackInfo, rules: RoleRules) -> Volume:
    """A phase stack of a multi-echo acquisition in radians: values within +-pi are kept, others mapped from the
    manufacturer's stored range (configs/series_roles.yaml multi_echo.phase_ranges); other stacks as they are."""
    if not info.echo or info.echo.get("part") != "phase":
        return vol
    arr = np.asarray(vol.array, np.float64)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    rng = None if peak <= np.pi * 1.01 else rules.phase_range(_text(info.header, "Manufacturer"))
    try:
        rad = phase_to_radians(arr, rng)
    except ValueError as exc:
        raise BadInputError(f"phase series {info.stack.first.series_uid}: {exc}", path=info.stack.first.path,
                            fix="add the manufacturer's stored phase range to multi_echo.phase_ranges in a "
                                "series_roles.yaml beside the study.") from exc
    info.echo = {**(info.echo or {}), "phase_range": list(rng) if rng else None}
    return vol.with_array(rad)


def _no_images_error(study: Path, skipped: list[Skipped]) -> BadInputError:
    if not skipped:
        return BadInputError("the folder holds no files.", path=study,
                             fix="point legmri at a folder containing the study's DICOM files (or NIfTI + study.yaml).")
    examples = "; ".join(f"{Path(s.file).name}: {s.reason}" for s in skipped[:3])
    return BadInputError(f"no DICOM image series found among {len(skipped)} file(s) ({examples}).", path=study,
                         fix="copy the DICOM images of the study into this folder, or add a study.yaml for NIfTI.")


# -- NIfTI ------------------------------------------------------------------------------------------------------
ECHO_ROLE = "calf_echo"


def echo_role(index: int, part: str) -> str:
    """Role of echo ``index`` (1-based, in echo-time order) of a multi-echo calf acquisition.

    >>> echo_role(2, "magnitude"), echo_role(2, "phase")
    ('calf_echo_2', 'calf_echo_2_phase')
    """
    return f"{ECHO_ROLE}_{index}" + ("_phase" if part == "phase" else "")


def phase_to_radians(values: np.ndarray, phase_range: tuple[float, float] | None) -> np.ndarray:
    """Phase in radians in [-pi, pi): ``phase_range`` (stored minimum, maximum) is mapped linearly onto
    [-pi, pi); without it the values must already be radians.

    >>> [round(float(v), 4) for v in phase_to_radians(np.array([0.0, 2048.0, 4095.0]), (0.0, 4096.0))]
    [-3.1416, 0.0, 3.1401]
    """
    v = np.asarray(values, np.float64)
    if phase_range is not None:
        lo, hi = float(phase_range[0]), float(phase_range[1])
        if hi <= lo:
            raise ValueError(f"phase_range must be [min, max] with max > min, got {list(phase_range)}.")
        return ((v - lo) / (hi - lo) * 2.0 * np.pi - np.pi).astype(np.float32)
    if v.size and float(np.max(np.abs(v))) > np.pi * 1.01:
        raise ValueError(f"phase values reach {float(np.max(np.abs(v))):.4g}, beyond +-pi radians.")
    return v.astype(np.float32)


def _echo_entries(items: list[dict[str, Any]], spec_path: Path) -> dict[int, tuple[str, int]]:
    """Role and echo index of each ``calf_echo`` item of study.yaml (position -> (role, index)): magnitudes
    numbered by echo time; a phase takes the number of the magnitude at its echo time."""
    echoes = [(i, it) for i, it in enumerate(items) if it["role"] == ECHO_ROLE]
    for i, it in echoes:
        if "echo_time_ms" not in it:
            raise BadInputError(f"series {i + 1} ('{it['file']}') has role calf_echo but no echo_time_ms.",
                                path=spec_path, fix="add echo_time_ms (milliseconds) to every calf_echo entry.")
    mags = sorted(((float(it["echo_time_ms"]), i) for i, it in echoes if it.get("part", "magnitude") == "magnitude"))
    tes = [te for te, _ in mags]
    if len(set(tes)) != len(tes):
        raise BadInputError(f"two magnitude echoes share an echo time ({tes} ms).", path=spec_path,
                            fix="list each echo once, with its own echo_time_ms.")
    out = {i: (echo_role(n, "magnitude"), n) for n, (_, i) in enumerate(mags, start=1)}
    for i, it in echoes:
        if it.get("part", "magnitude") != "phase":
            continue
        te = float(it["echo_time_ms"])
        match = [n for n, t in enumerate(tes, start=1) if abs(t - te) < 1e-6]
        if not match:
            raise BadInputError(f"phase image '{it['file']}' at TE {te:g} ms has no magnitude image at that echo time.",
                                path=spec_path, fix="add the magnitude image of that echo (part: magnitude).")
        if any(r == echo_role(match[0], "phase") for r, _ in out.values()):
            raise BadInputError(f"two phase images at TE {te:g} ms.", path=spec_path, fix="list each echo once.")
        out[i] = (echo_role(match[0], "phase"), match[0])
    return out


def _nifti_study(study: Path) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Volume]]]:
    spec_path = study / "study.yaml"
    spec = read_yaml(spec_path)
    validate(spec, STUDY_YAML_SCHEMA, path=spec_path, name="study.yaml")
    roles = [s["role"] for s in spec["series"] if s["role"] != ECHO_ROLE]
    dup = sorted({r for r in roles if roles.count(r) > 1})
    if dup:
        raise BadInputError(f"role(s) {', '.join(dup)} listed more than once.", path=spec_path,
                            fix="give each file its own role (e.g. lumbar_ax_t2 and lumbar_ax_t2_2).")
    _check_roles(spec["series"], RoleRules.load(study_dir=study), spec_path)
    echo_roles = _echo_entries(spec["series"], spec_path)
    out: list[tuple[dict[str, Any], Volume]] = []
    for pos, item in enumerate(spec["series"]):
        path = (study / item["file"]).resolve()
        if not path.is_relative_to(study.resolve()):
            raise BadInputError(f"file '{item['file']}' listed in study.yaml lies outside the study folder.",
                                path=spec_path, fix="copy the file into the study folder and list it by its name "
                                                    "there; a study reads only its own files.")
        if not path.is_file():
            raise BadInputError(f"file '{item['file']}' listed in study.yaml does not exist.", path=spec_path,
                                fix="correct the file name in study.yaml or add the file.")
        vol = load_volume(path)
        _check_finite(vol, path, item["role"])
        extra: dict[str, Any] = {}
        if pos in echo_roles:
            role, n = echo_roles[pos]
            part = item.get("part", "magnitude")
            extra = {"echo_index": n, "echo_time_ms": float(item["echo_time_ms"]), "part": part,
                     "field_strength_t": item.get("field_strength_t"),
                     "imaging_frequency_mhz": item.get("imaging_frequency_mhz"),
                     "repetition_time_ms": item.get("repetition_time_ms"), "flip_angle_deg": item.get("flip_angle_deg")}
            if part == "phase":
                try:
                    rad = phase_to_radians(vol.array, item.get("phase_range"))
                except ValueError as exc:
                    raise BadInputError(f"phase image '{item['file']}': {exc}", path=spec_path,
                                        fix="give phase_range: [min, max] of the stored values (mapped to [-pi, pi))"
                                            " or store the phase in radians.") from exc
                vol = vol.with_array(rad)
                extra["phase_range"] = item.get("phase_range")
        else:
            role = item["role"]
        can, slice_axis = to_closest_canonical(vol)
        anatomy = "calf" if role.startswith("calf_") else "lumbar" if role.startswith("lumbar_") else "other"
        plane = {0: "sagittal", 1: "coronal", 2: "axial"}[int(np.argmax(np.abs(vol.affine[:3, 2])))]
        contrast = ("echo_phase" if extra.get("part") == "phase" else "echo") if extra else (
            role.split("_")[-1] if anatomy == "calf" else role.split("_")[2] if anatomy == "lumbar"
            and role.count("_") >= 2 else "unknown")
        entry = {"uid": None, "description": item.get("description", ""), "role": role, "anatomy": anatomy,
                 "contrast": contrast, "plane": plane, "vendor": "", "files": [str(path)],
                 "sha256": file_sha256(path), "sop_instance_uids": [], "volume": f"volumes/{role}.nii.gz",
                 "shape": list(can.shape), "spacing_mm": [round(s, 6) for s in can.spacing_mm],
                 "affine": np.round(can.affine, 6).tolist(), "axcodes": "".join(can.axcodes),
                 "slice_axis": slice_axis, "acquisition_affine": np.round(vol.affine, 6).tolist(), "warnings": [],
                 **extra}
        out.append((entry, can))
    _check_echo_grids([(e, v) for e, v in out if "echo_index" in e], spec_path)
    return spec, out


#: Words users write for a contrast, and the contrast name of ``configs/series_roles.yaml`` they mean (a hint only).
CONTRAST_WORDS = {"opposed": "outphase", "opp": "outphase", "op": "outphase", "out": "outphase",
                  "oppphase": "outphase", "ip": "inphase", "in": "inphase", "w": "water", "f": "fat", "ff": "ffmap",
                  "t1w": "t1", "t2w": "t2", "pdw": "pd"}


def role_hint(role: str, rules: RoleRules) -> str | None:
    """The known role a misspelt one most likely means: its last word read through :data:`CONTRAST_WORDS`, else the
    closest known role by spelling.

    >>> rules = RoleRules({"contrast": [{"name": n} for n in ("water", "inphase", "outphase", "t2")]}, "-")
    >>> role_hint("calf_opposed", rules), role_hint("lumbar_sag_t2w", rules), role_hint("calf_watr", rules)
    ('calf_outphase', 'lumbar_sag_t2', 'calf_water')
    """
    import difflib

    head, _, word = role.rpartition("_")
    guess = f"{head}_{CONTRAST_WORDS[word]}" if head and word in CONTRAST_WORDS else None
    if guess is not None and rules.is_known_role(guess):
        return guess
    close = difflib.get_close_matches(role, rules.known_roles(), n=1, cutoff=0.6)
    return close[0] if close else None


def _check_roles(items: list[dict[str, Any]], rules: RoleRules, spec_path: Path) -> None:
    """Refuse a study.yaml role that legmri does not know (:meth:`RoleRules.known_roles`): a misspelt role would be
    ingested and never used, and the study measured without it. The error names the role it most likely means."""
    for item in items:
        if not rules.is_known_role(item["role"]):
            hint = role_hint(item["role"], rules)
            raise BadInputError(
                f"file '{item['file']}' has role '{item['role']}', which legmri does not know.", path=spec_path,
                fix=(f"did you mean '{hint}'? " if hint else "")
                + f"Roles are calf_<contrast> or lumbar_<sag|ax|cor>_<contrast> with <contrast> one of "
                f"{', '.join(rules.contrasts())}; calf_anatomical (one anatomical calf series); calf_echo (with "
                "echo_time_ms); _2, _3 ... for a repeated series; other_<n> for a file to ingest and not use.")


def _check_finite(vol: Volume, path: Path, role: str) -> None:
    """Refuse an image with NaN or infinite voxels: they would enter sums and volumes as numbers. (A scanner
    fat-fraction map, ``*_ffmap``, may leave its background undefined; it is read through its finite values.)"""
    if role.endswith("ffmap") or not np.issubdtype(np.asarray(vol.array).dtype, np.floating):
        return
    bad = int(np.count_nonzero(~np.isfinite(vol.array)))
    if bad:
        raise BadInputError(f"{bad} of {vol.array.size} voxels are NaN or infinite.", path=path,
                            fix="export the image again, or replace the non-finite voxels (e.g. with 0) if they lie "
                                "outside the body.")


def _flag_echo_limits(series: list[dict[str, Any]]) -> None:
    """Warnings on the echoes of a multi-echo acquisition that say what its fat fraction can and cannot be."""
    mags = [e for e in series if e.get("part") == "magnitude" and "echo_index" in e]
    phases = [e for e in series if e.get("part") == "phase" and "echo_index" in e]
    if not mags:
        return
    notes = []
    if len(mags) < 3:
        notes.append(f"only {len(mags)} echo(es): a multi-echo fat fraction needs at least 3")
    elif len(phases) < len(mags) and len(mags) == 3:
        notes.append("magnitude-only echoes: water/fat dominance is ambiguous for FF of about 80-95 % (read as its "
                     "5-35 % alias unless nearly pure fat lies nearby); fat fraction near 50 % is imprecise")
    elif len(phases) < len(mags):
        notes.append("magnitude-only echoes: water/fat dominance rests on the multi-peak fat spectrum; fat fraction "
                     "near 50 % is imprecise")
    else:
        notes.append("complex echoes: a field map changing by more than half an echo-spacing period between "
                     "neighbouring regions (phase wraps) can swap water and fat")
    if not any(e.get("field_strength_t") or e.get("imaging_frequency_mhz") for e in mags):
        notes.append("field strength unknown (no MagneticFieldStrength / ImagingFrequency, no field_strength_t / "
                     "imaging_frequency_mhz): no multi-echo fit")
    for e in mags:
        e.setdefault("warnings", []).extend(notes)


def _check_echo_grids(items: list[tuple[dict[str, Any], Volume]], path: Path) -> None:
    """All echoes of a multi-echo acquisition must share one grid (they are fitted voxel by voxel)."""
    if len(items) < 2:
        return
    ref_entry, ref = items[0]
    for entry, vol in items[1:]:
        if not vol.same_grid(ref):
            raise BadInputError(f"echo '{entry['role']}' is not on the grid of '{ref_entry['role']}' "
                                f"(shape {list(vol.shape)} vs {list(ref.shape)}).", path=path,
                                fix="give the echoes of one multi-echo acquisition (same matrix and geometry).")


# -- public API -------------------------------------------------------------------------------------------------
def _check_study(study: Path) -> Path:
    study = Path(study)
    if not study.exists():
        raise BadInputError("study folder does not exist.", path=study, fix="check the path.")
    if not study.is_dir():
        raise BadInputError("is a file, not a study folder.", path=study,
                            fix="pass the folder that holds the study's files.")
    return study.resolve()


def _rules_for(study: Path) -> RoleRules:
    extra = load_config("default").get("ingest", {}).get("series_roles_extra")
    return RoleRules.load(study, extra)


def inspect_study(study: Path) -> list[dict[str, Any]]:
    """Rows describing every series of ``study`` (role, plane, shape, spacing, slices, warnings)."""
    study = _check_study(study)
    if (study / "study.yaml").exists():
        _, items = _nifti_study(study)
        return [{k: e.get(k) for k in ("role", "description", "plane", "shape", "spacing_mm", "warnings")}
                | {"uid": "", "n_slices": e["shape"][e["slice_axis"]], "vendor": "NIfTI"} for e, _ in items]
    infos, skipped = _scan_dicom(study, _rules_for(study))
    if not infos:
        raise _no_images_error(study, skipped)
    rows = []
    for info in infos:
        fr = info.stack.first
        rows.append({"uid": fr.series_uid, "role": info.role, "description": _text(info.header, "SeriesDescription"),
                     "plane": info.cls.plane, "shape": [fr.columns, fr.rows, len(info.stack.frames)],
                     "spacing_mm": [fr.pixel_spacing[1], fr.pixel_spacing[0],
                                    _slice_step(info.stack) or fr.slice_thickness],
                     "n_slices": len(info.stack.frames), "vendor": _text(info.header, "Manufacturer"),
                     "warnings": info.warnings + ([info.volume_reason] if info.volume_reason else [])})
    return sorted(rows, key=lambda r: r["role"])


def _slice_step(stack: Stack) -> float | None:
    if len(stack.frames) < 2:
        return None
    return round(float(np.linalg.norm(stack.frames[-1].ipp - stack.frames[0].ipp) / (len(stack.frames) - 1)), 4)


def format_inspect_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`inspect_study` rows."""
    def fmt_shape(s: Any) -> str:
        return "x".join(str(v) for v in s) if s else "-"

    def fmt_sp(s: Any) -> str:
        return "x".join(f"{v:.3g}" if v is not None else "?" for v in s) if s else "-"

    header = ("role", "plane", "shape", "spacing_mm", "vendor", "description", "notes")
    table = [header] + [(r["role"], r["plane"], fmt_shape(r["shape"]), fmt_sp(r["spacing_mm"]), r.get("vendor") or "",
                         r.get("description") or "", "; ".join(r.get("warnings") or [])) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(table):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + ("  " + row[-1] if row[-1]
                                                                                         else ""))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def without_phi(patient: dict[str, Any]) -> dict[str, Any]:
    """``patient`` without the keys of :data:`IDENTIFYING_KEYWORDS` (sex, age, scanner and field strength stay).

    >>> without_phi({"PatientName": "Doe^Jane", "PatientSex": "F", "MagneticFieldStrength": "3"})
    {'PatientSex': 'F', 'MagneticFieldStrength': '3'}
    """
    return {k: v for k, v in patient.items() if k not in IDENTIFYING_KEYWORDS}


#: study.yaml keys that ingest keeps in series.json for the later stages
KEPT_STUDY_KEYS = ("spine_anchor_level",)


def _kept_study_keys(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in KEPT_STUDY_KEYS if k in spec}


def ingest_study(study: Path, out: Path, show_phi: bool = False) -> dict[str, Any]:
    """Read, classify and convert every series of ``study``; write ``OUT/series.json`` and ``OUT/volumes/``.
    ``series.json`` holds no patient-identifying header facts unless ``show_phi``.

    Returns the content of series.json. Raises :class:`BadInputError` (nothing written) for a study that cannot be
    used: no images, a stack with a missing slice or duplicate positions, NIfTI geometry conflicts.
    """
    study = _check_study(study)
    out = Path(out)
    written: list[tuple[str, Volume]] = []
    extra: dict[str, Any] = {}
    if (study / "study.yaml").exists():
        spec, items = _nifti_study(study)
        patient = spec.get("patient", {})
        extra = _kept_study_keys(spec)
        series = [e for e, _ in items]
        written = [(e["role"], v) for e, v in items]
        skipped: list[Skipped] = []
        inputs = {e["role"]: {"files": e["files"], "sha256": e["sha256"]} for e in series}
        fmt = "nifti"
    else:
        rules = _rules_for(study)
        infos, skipped = _scan_dicom(study, rules)
        if not any(i.volume_reason is None for i in infos):
            if infos:
                raise BadInputError(f"no image series with at least {MIN_SLICES_FOR_VOLUME} slices was found "
                                    f"({len(infos)} localizer or single-slice stack(s) only).", path=study,
                                    fix="copy the study's diagnostic series (not only localizers) into the folder.")
            raise _no_images_error(study, skipped)
        cache: dict = {}
        series = []
        for info in infos:
            vol = can = None
            slice_axis = None
            if info.volume_reason is None:
                vol = _phase_volume(read_stack_volume(info.stack, cache), info, rules)
                can, slice_axis = to_closest_canonical(vol)
                written.append((info.role, can))
            series.append(_series_entry(info, can, slice_axis, vol.affine if vol is not None else None))
            cache.clear()
        patient = _patient(infos[0].header)
        uids = sorted({_text(i.header, "StudyInstanceUID") for i in infos})
        if len(uids) > 1:
            for e in series:
                e["warnings"].append(f"the folder holds {len(uids)} studies (StudyInstanceUIDs); "
                                     "they are ingested together")
        inputs = {e["role"]: {"sop_instance_uids": e["sop_instance_uids"]} for e in series}
        fmt = "dicom"
    _flag_echo_limits(series)
    patient = (patient if show_phi else without_phi(patient)) if isinstance(patient, dict) else {}
    index = {"study": str(study), "format": fmt, "patient": patient, "phi": "kept" if show_phi else "removed",
             "study_uid": patient.get("StudyInstanceUID", ""),
             "series": series, "skipped": [{"file": s.file, "reason": s.reason} for s in skipped], **extra}
    # --- everything was read and checked: write (each file atomically; series.json last) ---
    vol_dir = out / "volumes"
    keep = {f"{role}.nii.gz" for role, _ in written}
    if vol_dir.exists():
        for stale in vol_dir.glob("[!.]*.nii.gz"):  # not another writer's temporary ``.name.*.tmp`` file
            if stale.name not in keep:
                stale.unlink()
    for role, vol in written:
        save_volume(vol, vol_dir / f"{role}.nii.gz")
    write_json(out / "series.json", index)
    update_provenance(out, inputs=inputs)
    return index


def role_pattern(role: str) -> re.Pattern:
    """Regex matching ``role`` and its numbered duplicates (``lumbar_ax_t2``, ``lumbar_ax_t2_2``, ...)."""
    return re.compile(rf"^{re.escape(role)}(_\d+)?$")


def volumes_by_role(out: Path, role: str) -> list[tuple[dict[str, Any], Volume]]:
    """Series entries and volumes in ``OUT`` whose role is ``role`` or a numbered duplicate of it."""
    import json

    index = json.loads((Path(out) / "series.json").read_text(encoding="utf-8"))
    rx = role_pattern(role)
    return [(e, load_volume(Path(out) / e["volume"])) for e in index["series"] if e.get("volume") and rx.match(e["role"])]


@dataclass
class EchoSet:
    """The echoes of one multi-echo calf acquisition, read back from an ingested study (echo-time order)."""

    echo_times_ms: list[float]
    field_strength_t: float | None  # nominal (MagneticFieldStrength, study.yaml field_strength_t)
    magnitudes: list[Volume]
    phases: list[Volume] | None  # radians; None unless every echo has its phase image
    roles: list[str]
    imaging_frequency_mhz: float | None = None  # the proton resonance frequency (ImagingFrequency)
    repetition_time_ms: float | None = None
    flip_angle_deg: float | None = None

    @property
    def chemical_shift_field_t(self) -> float | None:
        """The field strength that sets the fat-water frequency shifts: ``f0 / (gamma / 2 pi)`` from the imaging
        frequency when it is known (a nominal 3 T system may run at 2.89 T: 123.2 MHz), else the nominal field.

        >>> EchoSet([], 3.0, [], None, [], 123.25).chemical_shift_field_t
        2.8947...
        """
        if self.imaging_frequency_mhz:
            return self.imaging_frequency_mhz / PROTON_GAMMA_MHZ_PER_T
        return self.field_strength_t


def echo_set(out: Path) -> EchoSet | None:
    """The multi-echo calf acquisition of the study ingested in ``OUT`` (roles ``calf_echo_<n>`` and
    ``calf_echo_<n>_phase``), or None when it holds none."""
    import json

    index = json.loads((Path(out) / "series.json").read_text(encoding="utf-8"))
    rx = re.compile(rf"^{ECHO_ROLE}_(\d+)(_phase)?$")
    mags: dict[int, dict[str, Any]] = {}
    phases: dict[int, dict[str, Any]] = {}
    for e in index["series"]:
        m = rx.match(e.get("role", ""))
        if m and e.get("volume"):
            (phases if m.group(2) else mags)[int(m.group(1))] = e
    if not mags:
        return None
    order = sorted(mags)

    def first(key: str) -> float | None:
        return next((float(e[key]) for e in mags.values() if e.get(key)), None)

    field = first("field_strength_t")
    if field is None:
        hdr = (index.get("patient") or {}).get("MagneticFieldStrength")
        try:
            field = float(hdr) if hdr not in (None, "") else None
        except (TypeError, ValueError):
            field = None
    have_phase = all(n in phases for n in order)
    return EchoSet([float(mags[n]["echo_time_ms"]) for n in order], field,
                   [load_volume(Path(out) / mags[n]["volume"]) for n in order],
                   [load_volume(Path(out) / phases[n]["volume"]) for n in order] if have_phase else None,
                   [mags[n]["role"] for n in order], first("imaging_frequency_mhz"), first("repetition_time_ms"),
                   first("flip_angle_deg"))


__all__ = ["inspect_study", "ingest_study", "format_inspect_table", "volumes_by_role", "role_pattern", "plane_of",
           "echo_set", "EchoSet", "echo_role", "phase_to_radians"]
