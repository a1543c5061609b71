"""Multi-echo calf acquisitions at ingestion: study.yaml echo entries and multi-echo DICOM series."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.study import echo_set, ingest_study, phase_to_radians

TES = (3.45, 4.60, 5.75)


def _save(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 5.0, 1.0])), str(path))


def _nifti_study(tmp_path: Path, *, phase: bool, extra: str = "") -> Path:
    study = tmp_path / "study"
    study.mkdir()
    lines = ["series:"]
    for n, te in enumerate(TES):
        _save(study / f"mag{n}.nii.gz", np.full((6, 5, 4), 100 + n, np.int16))
        lines.append(f"  - {{file: mag{n}.nii.gz, role: calf_echo, echo_time_ms: {te}, field_strength_t: 3.0}}")
        if phase:
            _save(study / f"ph{n}.nii.gz", np.full((6, 5, 4), 1024 * n, np.int16))
            lines.append(f"  - {{file: ph{n}.nii.gz, role: calf_echo, echo_time_ms: {te}, part: phase, "
                         "phase_range: [0, 4096]}")
    (study / "study.yaml").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return study


def test_nifti_echoes_ordered_by_echo_time_with_phase_in_radians(tmp_path: Path) -> None:
    study = _nifti_study(tmp_path, phase=True)
    index = ingest_study(study, tmp_path / "out")
    roles = {e["role"]: e for e in index["series"]}
    assert set(roles) == {"calf_echo_1", "calf_echo_2", "calf_echo_3", "calf_echo_1_phase", "calf_echo_2_phase",
                          "calf_echo_3_phase"}
    assert roles["calf_echo_2"]["echo_time_ms"] == 4.60 and roles["calf_echo_2"]["field_strength_t"] == 3.0
    es = echo_set(tmp_path / "out")
    assert es is not None and es.echo_times_ms == list(TES) and es.field_strength_t == 3.0
    assert es.phases is not None
    np.testing.assert_allclose(es.phases[2].array, -np.pi + 2 * np.pi * 2048 / 4096, atol=1e-5)


def test_nifti_magnitude_only_has_no_phases(tmp_path: Path) -> None:
    index = ingest_study(_nifti_study(tmp_path, phase=False), tmp_path / "out")
    assert all(any("magnitude-only" in w for w in e["warnings"]) for e in index["series"])
    es = echo_set(tmp_path / "out")
    assert es is not None and es.phases is None and len(es.magnitudes) == 3


def test_phase_outside_pi_without_range_is_refused(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    _save(study / "m.nii.gz", np.ones((4, 4, 3), np.int16))
    _save(study / "p.nii.gz", np.full((4, 4, 3), 2000, np.int16))
    (study / "study.yaml").write_text(
        "series:\n  - {file: m.nii.gz, role: calf_echo, echo_time_ms: 2.0}\n"
        "  - {file: p.nii.gz, role: calf_echo, echo_time_ms: 2.0, part: phase}\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="phase_range"):
        ingest_study(study, tmp_path / "out")


def test_echo_without_echo_time_is_refused(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    _save(study / "m.nii.gz", np.ones((4, 4, 3), np.int16))
    (study / "study.yaml").write_text("series:\n  - {file: m.nii.gz, role: calf_echo}\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="echo_time_ms"):
        ingest_study(study, tmp_path / "out")


def test_phase_to_radians_maps_the_range() -> None:
    assert phase_to_radians(np.array([-4096.0]), (-4096.0, 4096.0))[0] == pytest.approx(-np.pi)
    assert phase_to_radians(np.array([1.0]), None)[0] == pytest.approx(1.0)


def test_dicom_multi_echo_series_grouped_into_echoes(tmp_path: Path) -> None:
    study_dir = tmp_path / "study"
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    study, uid = StudyInfo(), "1.2.826.0.1.3680043.8.498.1234567"
    for n, te in enumerate(TES):
        write_series(Volume(np.full((8, 6, 4), 200 + 10 * n, np.uint16), aff), study_dir / f"m{n}", study,
                     SeriesInfo("calf ME GRE", series_number=5, echo_time_ms=te, series_instance_uid=uid,
                                image_type=("ORIGINAL", "PRIMARY", "M", "ND"), manufacturer="ACME"))
        write_series(Volume(np.full((8, 6, 4), 1024 * (n + 1), np.uint16), aff), study_dir / f"p{n}", study,
                     SeriesInfo("calf ME GRE", series_number=5, echo_time_ms=te, series_instance_uid=uid,
                                image_type=("ORIGINAL", "PRIMARY", "P", "ND"), manufacturer="ACME"))
    (study_dir / "series_roles.yaml").write_text(
        "version: 1\nmulti_echo:\n  phase_ranges:\n    - {manufacturer: acme, range: [0, 4096]}\n", encoding="utf-8")
    index = ingest_study(study_dir, tmp_path / "out")
    roles = sorted(e["role"] for e in index["series"])
    assert roles == ["calf_echo_1", "calf_echo_1_phase", "calf_echo_2", "calf_echo_2_phase", "calf_echo_3",
                     "calf_echo_3_phase"]
    es = echo_set(tmp_path / "out")
    assert es is not None and es.echo_times_ms == list(TES) and es.field_strength_t == 3.0
    assert es.phases is not None
    np.testing.assert_allclose(es.phases[0].array, -np.pi + 2 * np.pi * 1024 / 4096, atol=1e-5)


def test_the_imaging_frequency_sets_the_chemical_shift_field(tmp_path: Path) -> None:
    """A nominal 3 T system that runs at 123.25 MHz is a 2.895 T field for the fat-water shifts; the nominal field
    stays on record. Without the frequency, the nominal field is used."""
    study_dir, study = tmp_path / "study", StudyInfo()
    for n, te in enumerate(TES):
        write_series(Volume(np.full((8, 6, 4), 200 + 10 * n, np.uint16), np.diag([0.9, 0.9, 5.0, 1.0])),
                     study_dir / f"m{n}", study, SeriesInfo("calf ME GRE", series_number=5, echo_time_ms=te,
                                                            series_instance_uid="1.2.826.0.1.3680043.8.498.1234568",
                                                            imaging_frequency_mhz=123.25))
    ingest_study(study_dir, tmp_path / "out")
    es = echo_set(tmp_path / "out")
    assert es is not None and es.field_strength_t == 3.0 and es.imaging_frequency_mhz == pytest.approx(123.25)
    assert es.chemical_shift_field_t == pytest.approx(123.25 / 42.577478)
    assert (es.repetition_time_ms, es.flip_angle_deg) == (6.0, 10.0)  # RepetitionTime, FlipAngle of the series
    (tmp_path / "nifti").mkdir()
    ingest_study(_nifti_study(tmp_path / "nifti", phase=False), tmp_path / "out2")
    es = echo_set(tmp_path / "out2")
    assert es is not None and es.imaging_frequency_mhz is None and es.chemical_shift_field_t == 3.0


def test_study_yaml_imaging_frequency_alone_gives_the_field(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    lines = ["series:"]
    for n, te in enumerate((2.38, 4.76, 7.14)):
        _save(study / f"mag{n}.nii.gz", np.full((6, 5, 4), 100 + n, np.int16))
        lines.append(f"  - {{file: mag{n}.nii.gz, role: calf_echo, echo_time_ms: {te}, imaging_frequency_mhz: 63.87}}")
    (study / "study.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    index = ingest_study(study, tmp_path / "out")
    assert not any("field strength unknown" in w for e in index["series"] for w in e["warnings"])
    es = echo_set(tmp_path / "out")
    assert es is not None and es.field_strength_t is None and es.chemical_shift_field_t == pytest.approx(1.5, abs=0.01)


def test_multi_echo_spin_echo_series_is_not_water_fat_data(tmp_path: Path) -> None:
    study_dir = tmp_path / "study"
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    study, uid = StudyInfo(), "1.2.826.0.1.3680043.8.498.7654321"
    for n, te in enumerate((10.0, 20.0, 30.0)):
        write_series(Volume(np.full((8, 6, 4), 300 - 50 * n, np.uint16), aff), study_dir / f"m{n}", study,
                     SeriesInfo("calf T2 map", series_number=7, echo_time_ms=te, series_instance_uid=uid,
                                scanning_sequence="SE"))
    index = ingest_study(study_dir, tmp_path / "out")
    assert not any(e["role"].startswith("calf_echo") for e in index["series"])
    assert echo_set(tmp_path / "out") is None


def test_phase_images_in_a_series_of_their_own_join_the_echoes(tmp_path: Path) -> None:
    """Siemens stores the phase images of a multi-echo GRE as a separate series of the same protocol."""
    study_dir = tmp_path / "study"
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    study = StudyInfo()
    mag_uid, ph_uid = "1.2.826.0.1.3680043.8.498.111", "1.2.826.0.1.3680043.8.498.222"
    for n, te in enumerate(TES):
        write_series(Volume(np.full((8, 6, 4), 200 + 10 * n, np.uint16), aff), study_dir / f"m{n}", study,
                     SeriesInfo("calf ME GRE", series_number=5, echo_time_ms=te, series_instance_uid=mag_uid,
                                protocol_name="calf_me_gre", manufacturer="ACME"))
        write_series(Volume(np.full((8, 6, 4), 1024 * (n + 1), np.uint16), aff), study_dir / f"p{n}", study,
                     SeriesInfo("calf ME GRE", series_number=6, echo_time_ms=te, series_instance_uid=ph_uid,
                                protocol_name="calf_me_gre", image_type=("ORIGINAL", "PRIMARY", "P", "ND"),
                                manufacturer="ACME"))
    (study_dir / "series_roles.yaml").write_text(
        "version: 1\nmulti_echo:\n  phase_ranges:\n    - {manufacturer: acme, range: [0, 4096]}\n", encoding="utf-8")
    ingest_study(study_dir, tmp_path / "out")
    es = echo_set(tmp_path / "out")
    assert es is not None and es.phases is not None and es.roles == ["calf_echo_1", "calf_echo_2", "calf_echo_3"]
