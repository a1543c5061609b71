"""A corpus of bad studies, generated at test time from the sample study ``control``: damaged DICOM headers and
files, broken NIfTI files and study.yaml, hostile clinical.yaml, and command lines that point the outputs at the
wrong place. Each case is a table row: how to make it from a clean copy, the command, and what legmri must do
(exit code, a fragment of its one-line error message).

The bases are the four calf Dixon series of ``sample_data/control`` (DICOM, 28 slices each) and the same images as
a NIfTI study with a ``study.yaml``; each case changes one thing of a fresh copy.
"""

from __future__ import annotations

import gzip
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "control"
WATER = "t1_vibe_dixon_tra_W"
INPHASE = "t1_vibe_dixon_tra_in"
NIFTI_ROLES = ("calf_water", "calf_fat", "calf_inphase", "calf_outphase")

Mutate = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One bad input: ``base`` ("dicom" or "nifti") copied to STUDY, changed by ``mutate``; ``command`` is the legmri
    command line with ``{study}`` and ``{out}`` filled in; legmri must exit with ``exit_code`` and say ``fragment``
    (case-insensitive) in its error line."""

    name: str
    base: str
    mutate: Mutate
    exit_code: int
    fragment: str
    command: tuple[str, ...] = ("ingest", "{study}", "--out", "{out}")


# -- DICOM -------------------------------------------------------------------------------------------------------
def water_files(study: Path, description: str = WATER) -> list[Path]:
    """The files of the calf water series (or of the series ``description``), in slice order."""
    files = [p for p in study.rglob("*") if p.is_file()
             and pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription == description]
    return sorted(files, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def set_raw(ds: pydicom.Dataset, keyword: str, text: str | None) -> None:
    """Store ``text`` as the raw value of ``keyword`` (None deletes it): invalid values written as a careless
    exporter would, bypassing pydicom's validation."""
    tag = Tag(tag_for_keyword(keyword))
    if text is None:
        del ds[tag]
        return
    raw = text.encode()
    raw += b" " * (len(raw) % 2)
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)


def header(keyword: str, text: str | None, which: str, series: str = WATER) -> Mutate:
    """Set ``keyword`` of the water series' files (or of ``series``; ``which``: "all" or "one", the middle
    slice)."""
    def mutate(study: Path) -> None:
        files = water_files(study, series)
        for p in files if which == "all" else [files[len(files) // 2]]:
            ds = pydicom.dcmread(p)
            set_raw(ds, keyword, text)
            ds.save_as(p)
    return mutate


def _edit(p: Path, **values: Any) -> None:
    ds = pydicom.dcmread(p)
    for k, v in values.items():
        setattr(ds, k, v)
    ds.save_as(p)


def _linked_from_outside(study: Path, files: list[Path], p: Path) -> None:
    elsewhere = study.parent / f"{study.name}_other_patient"
    elsewhere.mkdir(exist_ok=True)
    shutil.move(str(p), elsewhere / p.name)
    p.symlink_to(elsewhere / p.name)


def _junk_beside(study: Path, files: list[Path], p: Path) -> None:
    (study / "README.txt").write_text("scanned at site A")
    (study / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))


#: kind -> change(study, water files in slice order, the middle one)
DAMAGES: dict[str, Callable[[Path, list[Path], Path], Any]] = {
    "truncated": lambda study, files, p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda study, files, p: p.write_bytes(b""),
    "noise": lambda study, files, p: p.write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
    "short_pixels": lambda study, files, p: _edit(p, PixelData=pydicom.dcmread(p).PixelData[:1000]),
    "rows_mismatch": lambda study, files, p: _edit(p, Rows=int(pydicom.dcmread(p).Rows) + 7),
    "duplicate_position": lambda study, files, p: _edit(
        p, ImagePositionPatient=pydicom.dcmread(files[files.index(p) + 1]).ImagePositionPatient),
    "missing_slice": lambda study, files, p: p.unlink(),
    # one slice with another in-plane orientation: a stack of its own
    "rotated_orientation": lambda study, files, p: _edit(p, ImageOrientationPatient=[0, 1, 0, -1, 0, 0]),
    # the water series cut to two slices: too few for a volume
    "two_slices_left": lambda study, files, p: [q.unlink() for q in files[2:]],
    "all_hidden": lambda study, files, p: [q.rename(q.with_name("." + q.name))
                                           for q in [q for q in study.rglob("*") if q.is_file()]],
    "junk_beside": _junk_beside,
    # the file replaced by a link to a copy in another folder
    "linked_from_outside": _linked_from_outside,
}


def damage(kind: str) -> Mutate:
    """Damage the water series (:data:`DAMAGES`): one file truncated, emptied, overwritten with noise, its pixel
    data cut, its matrix or position changed, deleted or linked from elsewhere; or the series cut, the files hidden,
    junk beside them."""
    def mutate(study: Path) -> None:
        files = water_files(study)
        DAMAGES[kind](study, files, files[len(files) // 2])
    return mutate


GEOMETRY = [
    ("pixel_spacing_negative", "PixelSpacing", "-1.5\\1.5", "PixelSpacing"),
    ("pixel_spacing_both_negative", "PixelSpacing", "-1.5\\-1.5", "PixelSpacing"),
    ("pixel_spacing_zero", "PixelSpacing", "0\\0", "PixelSpacing"),
    ("pixel_spacing_text", "PixelSpacing", "abc\\1.5", "not numbers"),
    ("pixel_spacing_nan", "PixelSpacing", "nan\\1.5", "PixelSpacing"),
    ("pixel_spacing_huge", "PixelSpacing", "1e6\\1e6", "PixelSpacing"),
    ("pixel_spacing_one_value", "PixelSpacing", "1.5", "PixelSpacing"),
    ("pixel_spacing_missing", "PixelSpacing", None, "lacks PixelSpacing"),
    ("position_nan", "ImagePositionPatient", "nan\\0\\0", "ImagePositionPatient"),
    ("position_inf", "ImagePositionPatient", "0\\inf\\0", "ImagePositionPatient"),
    ("position_text", "ImagePositionPatient", "a\\b\\c", "not numbers"),
    ("position_two_values", "ImagePositionPatient", "0\\0", "ImagePositionPatient"),
    ("position_missing", "ImagePositionPatient", None, "lacks ImagePositionPatient"),
    ("orientation_not_unit", "ImageOrientationPatient", "2\\0\\0\\0\\1\\0", "ImageOrientationPatient"),
    ("orientation_not_orthogonal", "ImageOrientationPatient", "1\\0\\0\\1\\0\\0", "ImageOrientationPatient"),
    ("orientation_zero", "ImageOrientationPatient", "0\\0\\0\\0\\0\\0", "ImageOrientationPatient"),
    ("orientation_nan", "ImageOrientationPatient", "nan\\0\\0\\0\\1\\0", "ImageOrientationPatient"),
    ("orientation_five_values", "ImageOrientationPatient", "1\\0\\0\\0\\1", "ImageOrientationPatient"),
    ("orientation_missing", "ImageOrientationPatient", None, "lacks ImageOrientationPatient"),
]
PIXEL_MODULE = [  # (name, keyword, raw value, message fragment): damaged pixel descriptions
    ("rescale_slope_text", "RescaleSlope", "abc", "RescaleSlope"),
    ("rescale_slope_nan", "RescaleSlope", "nan", "RescaleSlope"),
    ("rescale_slope_zero", "RescaleSlope", "0", "zero slope"),
    ("rescale_intercept_inf", "RescaleIntercept", "inf", "RescaleSlope"),
    ("bits_allocated_8", "BitsAllocated", None, "pixel data"),
    ("samples_per_pixel_3", "SamplesPerPixel", None, "pixel data"),
    ("rows_zero", "Rows", None, "pixel data"),
]


def pixel_module(keyword: str, text: str | None) -> Mutate:
    """Damage the pixel description of every water file (typed values for the integer tags)."""
    typed = {"BitsAllocated": 8, "SamplesPerPixel": 3, "Rows": 0}

    def mutate(study: Path) -> None:
        for p in water_files(study):
            ds = pydicom.dcmread(p)
            if keyword in typed:
                setattr(ds, keyword, typed[keyword])
            else:
                set_raw(ds, keyword, text)
            ds.save_as(p)
    return mutate


DAMAGE = [  # a file that is no longer DICOM is skipped (and named); its slice is then missing from the series
    ("truncated", "pixel data"),
    ("empty", "slice is missing"),
    ("noise", "slice is missing"),
    ("short_pixels", "pixel"),
    ("rows_mismatch", "slice is missing"),
    ("duplicate_position", "share slice position"),
    ("missing_slice", "slice is missing"),
    ("linked_from_outside", "slice is missing"),
    ("rotated_orientation", "slice is missing"),
    ("all_hidden", "no DICOM image"),
]


# -- NIfTI -------------------------------------------------------------------------------------------------------
def write_study_yaml(study: Path, text: str) -> None:
    (study / "study.yaml").write_text(text)


def nifti_file(role: str, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Mutate:
    """Rewrite the NIfTI file of ``role`` with its (data, affine) changed."""
    def mutate(study: Path) -> None:
        p = study / f"{role}.nii.gz"
        img = nib.load(p)
        data, aff = change(np.asarray(img.dataobj, np.float32), img.affine.copy())
        out = nib.Nifti1Image(data, aff)
        out.set_qform(aff, code=1)
        out.set_sform(aff, code=1)
        nib.save(out, p)
    return mutate


def with_nan(data: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data[10:20, 10:20, 5] = np.nan
    return data, aff


def with_inf(data: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data[0, 0, 0] = np.inf
    return data, aff


def four_d(data: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([data, data], axis=-1), aff


def two_d(data: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return data[:, :, 0], aff


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _huge_header(data: bytes) -> bytes:
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(gzip.decompress(data)))
    hdr.set_data_shape((4000, 4000, 4000))
    hdr.set_data_dtype(np.float32)
    return gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024)


def _negative_dim(data: bytes) -> bytes:
    raw = bytearray(gzip.decompress(data))
    raw[42:44] = np.int16(-5).tobytes()  # dim[1]
    return gzip.compress(bytes(raw))


def _as_dicom(data: bytes) -> bytes:  # a DICOM file under a NIfTI name
    return next(p for p in (SAMPLE / "DICOM").rglob("*") if p.is_file()).read_bytes()


def _uncompressed_truncated(data: bytes) -> bytes:  # plain .nii bytes, cut (the name says .nii.gz)
    raw = gzip.decompress(data)
    return raw[: len(raw) // 3]


BYTES = {"as_dicom": _as_dicom, "uncompressed_truncated": _uncompressed_truncated,
         "truncated": _truncated, "not_gzip": lambda d: b"this is not an image\n" * 20, "empty": lambda d: b"",
         "huge_header": _huge_header, "negative_dim": _negative_dim}


def _singular(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:  # sform only, with a zero slice axis
    hdr["qform_code"] = 0
    hdr["srow_z"] = [0.0, 0.0, 0.0, float(hdr["srow_z"][3])]
    hdr["srow_y"] = [0.0, float(hdr["srow_y"][1]), 0.0, float(hdr["srow_y"][3])]
    hdr["srow_x"] = [float(hdr["srow_x"][0]), 0.0, 0.0, float(hdr["srow_x"][3])]
    return data


def _no_geometry(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:
    hdr["qform_code"], hdr["sform_code"] = 0, 0
    return data


def _disagree(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:
    hdr["srow_x"] = hdr["srow_x"] + np.array([0.0, 0.0, 0.0, 25.0], np.float32)
    return data


def _slope_nan(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:
    hdr["scl_slope"] = np.nan
    return data


def _complex(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:
    hdr.set_data_dtype(np.complex64)
    return data.astype(np.complex64)


def _rgb(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    hdr.set_data_dtype(rgb.dtype)
    return rgb


def _voxels(size: float) -> Any:
    def change(hdr: nib.Nifti1Header, data: np.ndarray) -> np.ndarray:
        hdr["qform_code"] = 0
        for row in ("srow_x", "srow_y", "srow_z"):
            r = hdr[row].copy()
            r[:3] = np.sign(r[:3]) * (np.abs(r[:3]) > 0) * size
            hdr[row] = r
        return data
    return change


HEADERS = {"voxels_1km": _voxels(1000.0), "voxels_0.1um": _voxels(1e-4), "singular_affine": _singular, "no_geometry": _no_geometry, "qform_sform_disagree": _disagree,
           "slope_nan": _slope_nan, "complex": _complex, "rgb": _rgb}


def raw_file(role: str, kind: str) -> Mutate:
    """Replace the file of ``role`` by a broken one: its bytes changed (:data:`BYTES`: truncated gzip, no gzip, empty,
    a header declaring a huge image over a few bytes, a negative dimension), its header changed (:data:`HEADERS`),
    or a folder in its place."""
    def mutate(study: Path) -> None:
        p = study / f"{role}.nii.gz"
        if kind == "folder":
            p.unlink()
            p.mkdir()
        elif kind in BYTES:
            p.write_bytes(BYTES[kind](p.read_bytes()))
        else:
            img = nib.load(p)
            hdr = img.header.copy()
            data = HEADERS[kind](hdr, np.asarray(img.dataobj))
            nib.save(nib.Nifti1Image(data, None, hdr), p)
    return mutate


def entry(role: str, file: str) -> str:
    return f"  - {{file: '{file}', role: {role}}}\n"


def clean_yaml() -> str:
    return "series:\n" + "".join(entry(r, f"{r}.nii.gz") for r in NIFTI_ROLES)


def study_yaml(text: str) -> Mutate:
    return lambda study: write_study_yaml(study, text)


def outside_file(study: Path) -> None:
    other = study.parent / f"{study.name}_other"
    other.mkdir(exist_ok=True)
    shutil.copy(study / "calf_water.nii.gz", other / "calf_water.nii.gz")
    write_study_yaml(study, clean_yaml().replace("'calf_water.nii.gz'", f"'../{other.name}/calf_water.nii.gz'"))


def symlinked_outside(study: Path) -> None:
    other = study.parent / f"{study.name}_elsewhere"
    other.mkdir(exist_ok=True)
    shutil.move(str(study / "calf_water.nii.gz"), other / "calf_water.nii.gz")
    (study / "calf_water.nii.gz").symlink_to(other / "calf_water.nii.gz")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(12))

STUDY_YAML = [
    ("yaml_outside_study", outside_file, "outside the study folder"),
    ("yaml_absolute_path", study_yaml(clean_yaml().replace("'calf_water.nii.gz'", "'/etc/passwd'")),
     "outside the study folder"),
    ("yaml_symlink_outside", symlinked_outside, "outside the study folder"),
    ("yaml_missing_file", study_yaml(clean_yaml().replace("calf_water.nii.gz", "nowhere.nii.gz")), "does not exist"),
    ("yaml_duplicate_role", study_yaml(clean_yaml().replace("role: calf_fat", "role: calf_water")),
     "more than once"),
    ("yaml_unknown_key", study_yaml(clean_yaml() + "colour: blue\n"), "study.yaml"),
    ("yaml_bad_role", study_yaml(clean_yaml().replace("role: calf_fat", "role: 'Calf Fat!'")), "study.yaml"),
    ("yaml_not_mapping", study_yaml("- just\n- a list\n"), "study.yaml"),
    ("yaml_syntax", study_yaml("series: [unclosed\n"), "not valid YAML"),
    ("yaml_bomb", study_yaml(BOMB), "aliases"),
    ("yaml_python_tag", study_yaml("series: !!python/object/apply:os.system ['true']\n"), "study.yaml"),
    ("yaml_empty", study_yaml(""), "study.yaml"),
    ("yaml_binary", lambda s: (s / "study.yaml").write_bytes(b"\xff\xfe\x00garbage"), "UTF-8"),
    ("yaml_is_folder", lambda s: ((s / "study.yaml").unlink(), (s / "study.yaml").mkdir()), "not a file"),
    ("yaml_too_large", study_yaml(clean_yaml() + "#" + "x" * (2 << 20) + "\n"), "at most"),
]
NIFTI_FILES = [
    ("nifti_nan_voxels", nifti_file("calf_water", with_nan), "NaN or infinite"),
    ("nifti_inf_voxels", nifti_file("calf_fat", with_inf), "NaN or infinite"),
    ("nifti_singular_affine", raw_file("calf_water", "singular_affine"), "affine"),
    ("nifti_4d", nifti_file("calf_water", four_d), "3-D"),
    ("nifti_2d", nifti_file("calf_water", two_d), "3-D"),
    ("nifti_truncated", raw_file("calf_water", "truncated"), "calf_water.nii.gz"),
    ("nifti_not_gzip", raw_file("calf_water", "not_gzip"), "calf_water.nii.gz"),
    ("nifti_empty", raw_file("calf_water", "empty"), "calf_water.nii.gz"),
    ("nifti_folder", raw_file("calf_water", "folder"), "does not exist"),
    ("nifti_huge_header", raw_file("calf_water", "huge_header"), "GiB"),
    ("nifti_negative_dim", raw_file("calf_water", "negative_dim"), "calf_water.nii.gz"),
    ("nifti_no_geometry", raw_file("calf_fat", "no_geometry"), "neither qform nor sform"),
    ("nifti_voxels_1km", raw_file("calf_fat", "voxels_1km"), "voxel sizes"),
    ("nifti_voxels_tiny", raw_file("calf_fat", "voxels_0.1um"), "voxel sizes"),
    ("nifti_is_dicom", raw_file("calf_water", "as_dicom"), "calf_water.nii.gz"),
    ("nifti_uncompressed_truncated", raw_file("calf_water", "uncompressed_truncated"), "calf_water.nii.gz"),
    ("nifti_qform_sform_disagree", raw_file("calf_fat", "qform_sform_disagree"), "disagree"),
    ("nifti_complex", raw_file("calf_water", "complex"), "calf_water.nii.gz"),
    ("nifti_rgb", raw_file("calf_water", "rgb"), "calf_water.nii.gz"),
    ("yaml_echo_without_time", study_yaml(clean_yaml() + "  - {file: 'calf_water.nii.gz', role: calf_echo}\n"),
     "echo_time_ms"),
    ("yaml_series_empty", study_yaml("series: []\n"), "study.yaml"),
    ("yaml_file_not_string", study_yaml("series:\n  - {file: 12, role: calf_water}\n"), "study.yaml"),
    ("yaml_echo_time_negative", study_yaml("series:\n  - {file: calf_water.nii.gz, role: calf_echo, "
                                           "echo_time_ms: -2}\n"), "study.yaml"),
    ("yaml_echo_part", study_yaml("series:\n  - {file: calf_water.nii.gz, role: calf_echo, echo_time_ms: 2, "
                                  "part: real}\n"), "study.yaml"),
    ("yaml_field_zero", study_yaml("series:\n  - {file: calf_water.nii.gz, role: calf_echo, echo_time_ms: 2, "
                                   "field_strength_t: 0}\n"), "study.yaml"),
    ("yaml_phase_range_three", study_yaml("series:\n  - {file: calf_water.nii.gz, role: calf_echo, echo_time_ms: 2, "
                                          "part: phase, phase_range: [1, 2, 3]}\n"), "study.yaml"),
    ("yaml_patient_not_mapping", study_yaml(clean_yaml() + "patient: Jane\n"), "study.yaml"),
    ("yaml_series_not_list", study_yaml("series: calf_water.nii.gz\n"), "study.yaml"),
    ("yaml_file_is_folder", lambda s: (s / "sub").mkdir() or write_study_yaml(s, clean_yaml().replace(
        "'calf_water.nii.gz'", "'sub'")), "does not exist"),
    ("yaml_tab_indent", study_yaml("series:\n\t- {file: calf_water.nii.gz, role: calf_water}\n"), "YAML"),
]

# -- clinical.yaml (checked before any image work) -----------------------------------------------------------------
CLINICAL = [
    ("clinical_inf", "labs: {ck_u_l: .inf}\n", "ck_u_l"),
    ("clinical_nan", "labs: {ck_u_l: .nan}\n", "ck_u_l"),
    ("clinical_negative", "labs: {ck_u_l: -5}\n", "ck_u_l"),
    ("clinical_text", "labs: {ck_u_l: high}\n", "ck_u_l"),
    ("clinical_unknown_field", "favourite_colour: blue\n", "favourite_colour"),
    ("clinical_age", "age_years: 400\n", "age_years"),
    ("clinical_list", "- a\n- b\n", "mapping"),
    ("clinical_bomb", BOMB, "aliases"),
    ("clinical_python_tag", "labs: !!python/object/apply:os.system ['true']\n", "clinical.yaml"),
    ("clinical_syntax", "labs: {ck_u_l: 100\n", "not valid YAML"),
    ("clinical_emg_root", "emg: [{root: L9, side: right, finding: chronic_neurogenic}]\n", "emg"),
    ("clinical_emg_side", "emg: [{root: L5, side: middle, finding: chronic_neurogenic}]\n", "emg"),
    ("clinical_emg_not_list", "emg: {root: L5}\n", "emg"),
    ("clinical_reflex_grade", "reflexes: {ankle: {left: 9, right: 2}}\n", "reflexes"),
    ("clinical_reflex_site", "reflexes: {elbow: {left: 2, right: 2}}\n", "reflexes"),
    ("clinical_mrc_above_5", "strength_mrc: {plantar_flexion: {left: 6, right: 5}}\n", "strength_mrc"),
    ("clinical_sensory_percent", "sensory_loss: [{dermatome: L5, side: right, percent: 150}]\n", "sensory_loss"),
    ("clinical_sex", "sex: X\n", "sex"),
    ("clinical_onset", "onset: sudden\n", "onset"),
    ("clinical_slr_angle", "straight_leg_raise: {right: {positive: true, angle_deg: 120}}\n", "straight_leg_raise"),
    ("clinical_age_negative", "age_years: -1\n", "age_years"),
    ("clinical_ck_list", "labs: {ck_u_l: [1, 2]}\n", "ck_u_l"),
]


def clinical(text: str | None, folder: bool = False) -> Mutate:
    def mutate(study: Path) -> None:
        p = study / "clinical.yaml"
        if folder:
            p.mkdir()
        else:
            p.write_text(text or "")
    return mutate


RUN = ("run", "{study}", "--out", "{out}")


def user_rules(text: str) -> Mutate:
    """A study-folder series_roles.yaml (the user's own classification rules)."""
    return lambda study: (study / "series_roles.yaml").write_text(text)


USER_RULES = [
    ("rules_lookahead", "version: 1\ncontrast:\n  - name: water\n    any: {SeriesDescription: '(?=W)W'}\n", "RE2"),
    ("rules_backreference", "version: 1\ncontrast:\n  - name: water\n    any: {SeriesDescription: '(a)\\1'}\n",
     "regular expression"),
    ("rules_unclosed", "version: 1\ncontrast:\n  - name: water\n    any: {SeriesDescription: '(W'}\n",
     "regular expression"),
    ("rules_bad_section", "version: 1\nflavour:\n  - name: water\n", "series_roles.yaml"),
]


def cases() -> list[Case]:
    out: list[Case] = []
    for name, kw, text, frag in GEOMETRY:
        for which in ("all", "one"):
            out.append(Case(f"dicom_{name}_{which}", "dicom", header(kw, text, which), 3, frag))
    for name, kw, text, frag in [g for g in GEOMETRY if g[0] in ("pixel_spacing_negative", "position_nan",
                                                                  "orientation_not_orthogonal", "position_missing")]:
        out.append(Case(f"dicom_inphase_{name}", "dicom", header(kw, text, "all", INPHASE), 3, frag))
    out += [Case(f"dicom_file_{kind}", "dicom", damage(kind), 3, frag) for kind, frag in DAMAGE]
    out += [Case(f"dicom_{name}", "dicom", pixel_module(kw, text), 3, frag) for name, kw, text, frag in PIXEL_MODULE]
    # header oddities that do not change the image: read as they are (exit 0)
    out += [Case("dicom_photometric_rgb_on_grey_pixels", "dicom", pixel_module("PhotometricInterpretation", "RGB"),
                 0, ""),
            Case("nifti_scale_slope_nan_means_unscaled", "nifti", raw_file("calf_inphase", "slope_nan"), 0, ""),
            Case("dicom_water_cut_to_two_slices", "dicom", damage("two_slices_left"), 0, ""),
            Case("dicom_junk_files_beside", "dicom", damage("junk_beside"), 0, ""),
            Case("dicom_instance_number_text", "dicom", header("InstanceNumber", "x", "all"), 0, ""),
            Case("dicom_slice_thickness_text", "dicom", header("SliceThickness", "thick", "all"), 0, ""),
            Case("dicom_echo_time_text", "dicom", header("EchoTime", "short", "all"), 0, ""),
            Case("dicom_series_uid_missing", "dicom", header("SeriesInstanceUID", None, "all"), 0, ""),
            Case("dicom_manufacturer_empty", "dicom", header("Manufacturer", "", "all"), 0, ""),
            Case("dicom_body_part_unknown", "dicom", header("BodyPartExamined", "ELBOW", "all"), 0, ""),
            Case("dicom_description_empty", "dicom", header("SeriesDescription", "", "all"), 0, ""),
            Case("dicom_instance_numbers_shuffled", "dicom", header("InstanceNumber", "7", "all"), 0, "")]
    out += [Case(name, "nifti", m, 3, frag) for name, m, frag in STUDY_YAML]
    out += [Case(name, "nifti", m, 3, frag) for name, m, frag in NIFTI_FILES]
    out += [Case(name, "nifti", clinical(text), 3, frag, RUN) for name, text, frag in CLINICAL]
    out += [Case(name, "dicom", user_rules(text), 3, frag) for name, text, frag in USER_RULES]
    out.append(Case("clinical_is_folder", "nifti", clinical(None, folder=True), 3, "not a file", RUN))
    out += [
        Case("out_is_a_file", "nifti", lambda s: (s.parent / "out_file").write_text("x"), 3, "is a file",
             ("ingest", "{study}", "--out", "{study}/../out_file")),
        Case("out_inside_study", "nifti", lambda s: None, 3, "inside the study",
             ("ingest", "{study}", "--out", "{study}/results")),
        Case("clinical_file_missing", "nifti", lambda s: None, 3, "not found",
             ("run", "{study}", "--out", "{out}", "--clinical", "{study}/nowhere.yaml")),
        Case("device_cuda_without_gpu", "nifti", lambda s: None, 3, "CUDA",
             ("run", "{study}", "--out", "{out}", "--device", "cuda")),
        Case("study_missing", "nifti", lambda s: shutil.rmtree(s), 3, "does not exist"),
        Case("study_is_a_file", "nifti", lambda s: (shutil.rmtree(s), s.write_text("x")), 3, "not a folder"),
        Case("study_without_images", "nifti", lambda s: [p.unlink() for p in s.iterdir()], 3, "holds no files"),
    ]
    return out
