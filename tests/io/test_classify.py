"""Series-role classification across vendor naming styles, planes from geometry, duplicate roles and user rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.volume import Volume
from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series
from pipeline.io.study import ingest_study, inspect_study

AXIAL = np.diag([-1.0, -1.0, 5.0, 1.0])
SAGITTAL = np.array([[0, 0, -4.0, 0], [-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])

CALF_DIXON = {
    "siemens": [("t1_vibe_dixon_tra_W", ("ORIGINAL", "PRIMARY", "M", "DIXON", "W"), "water"),
                ("t1_vibe_dixon_tra_F", ("ORIGINAL", "PRIMARY", "M", "DIXON", "F"), "fat"),
                ("t1_vibe_dixon_tra_in", ("ORIGINAL", "PRIMARY", "M", "DIXON", "IN_PHASE"), "inphase"),
                ("t1_vibe_dixon_tra_opp", ("ORIGINAL", "PRIMARY", "M", "DIXON", "OPP_PHASE"), "outphase"),
                ("t1_vibe_dixon_tra_FF", ("DERIVED", "PRIMARY", "M", "DIXON", "FF"), "ffmap")],
    "philips": [("sWIP mDIXON_TSE W", ("ORIGINAL", "PRIMARY", "W", "W", "DERIVED"), "water"),
                ("sWIP mDIXON_TSE F", ("ORIGINAL", "PRIMARY", "F", "F", "DERIVED"), "fat"),
                ("sWIP mDIXON_TSE IP", ("ORIGINAL", "PRIMARY", "IP", "IP", "DERIVED"), "inphase"),
                ("sWIP mDIXON_TSE OP", ("ORIGINAL", "PRIMARY", "OP", "OP", "DERIVED"), "outphase")],
    "ge": [("Ax IDEAL WATER", ("DERIVED", "PRIMARY", "WATER"), "water"),
           ("Ax IDEAL FAT", ("DERIVED", "PRIMARY", "FAT"), "fat"),
           ("Ax LAVA-Flex InPhase", ("DERIVED", "PRIMARY", "IN_PHASE"), "inphase"),
           ("Ax LAVA-Flex OutPhase", ("DERIVED", "PRIMARY", "OUT_PHASE"), "outphase")],
    # description-only naming (ImageType without Dixon tokens): the text decides
    "text_only": [("calf dixon_W", ("ORIGINAL", "PRIMARY", "M"), "water"),
                  ("calf dixon_F", ("ORIGINAL", "PRIMARY", "M"), "fat")],
}
MANUFACTURER = {"siemens": "SIEMENS", "philips": "Philips Medical Systems", "ge": "GE MEDICAL SYSTEMS",
                "text_only": "ACME"}


def _write(folder: Path, description: str, image_type: tuple[str, ...], affine: np.ndarray, *, body_part: str = "",
           manufacturer: str = "SIEMENS", number: int = 1, study: StudyInfo | None = None) -> None:
    data = np.random.default_rng(number).integers(0, 400, (12, 10, 4)).astype(np.uint16)
    write_series(Volume(data, affine), folder / f"s{number}", study or StudyInfo(),
                 SeriesInfo(description, series_number=number, image_type=image_type, body_part=body_part,
                            manufacturer=manufacturer), rng=np.random.default_rng(number))


@pytest.mark.parametrize("vendor", sorted(CALF_DIXON))
def test_vendor_dixon_naming(tmp_path: Path, vendor: str):
    study = StudyInfo()
    for n, (desc, itype, _) in enumerate(CALF_DIXON[vendor], start=1):
        _write(tmp_path, desc, itype, AXIAL, body_part="LOWER LEG" if vendor != "text_only" else "",
               manufacturer=MANUFACTURER[vendor], number=n, study=study)
    roles = {r["description"]: r["role"] for r in inspect_study(tmp_path)}
    assert roles == {desc: f"calf_{contrast}" for desc, _, contrast in CALF_DIXON[vendor]}


@pytest.mark.parametrize("vendor,sag,ax", [("siemens", "t2_tse_sag", "t2_tse_tra"),
                                           ("philips", "T2W_TSE SAG", "T2W_TSE TRA"),
                                           ("ge", "Sag T2 FSE", "Ax T2 FSE")])
def test_lumbar_roles_plane_from_geometry(tmp_path: Path, vendor: str, sag: str, ax: str):
    study = StudyInfo()
    _write(tmp_path, sag, ("ORIGINAL", "PRIMARY", "M"), SAGITTAL, body_part="LSPINE", number=1, study=study)
    lower = AXIAL.copy()
    lower[2, 3] = -60.0
    _write(tmp_path, ax, ("ORIGINAL", "PRIMARY", "M"), AXIAL, body_part="LSPINE", number=2, study=study)
    _write(tmp_path, ax, ("ORIGINAL", "PRIMARY", "M"), lower, body_part="LSPINE", number=3, study=study)
    rows = inspect_study(tmp_path)
    assert sorted(r["role"] for r in rows) == ["lumbar_ax_t2", "lumbar_ax_t2_2", "lumbar_sag_t2"]
    index = ingest_study(tmp_path, tmp_path.parent / "out")
    ax_entries = {s["role"]: s for s in index["series"] if s["plane"] == "axial"}
    # duplicates are numbered from superior to inferior: the first stack is the higher one
    z1 = np.array(ax_entries["lumbar_ax_t2"]["affine"])[2, 3]
    z2 = np.array(ax_entries["lumbar_ax_t2_2"]["affine"])[2, 3]
    assert z1 > z2


@pytest.mark.parametrize("description,role", [("t1_tse_tra_calf", "calf_t1"), ("Ax T2 FSE lower leg", "calf_t2"),
                                              ("PD_TSE_TRA", "calf_pd"), ("tirm_tra (STIR)", "calf_stir"),
                                              ("Proton density legs", "calf_pd")])
def test_anatomical_calf_series_get_a_calf_anatomical_role(tmp_path: Path, description: str, role: str):
    """The clinical neuromuscular protocol (axial T1w / T2w / PDw / STIR of the calves, no Dixon) is recognised; each
    of these roles is one the calf stages take (configs/default.yaml calf.anatomical_roles)."""
    from pipeline.core.config import load_config

    _write(tmp_path, description, ("ORIGINAL", "PRIMARY", "M"), AXIAL, body_part="LEG")
    (row,) = inspect_study(tmp_path)
    assert row["role"] == role
    assert role in load_config("default")["calf"]["anatomical_roles"]


def test_description_never_decides_the_plane(tmp_path: Path):
    _write(tmp_path, "t2_tse_tra", ("ORIGINAL", "PRIMARY", "M"), SAGITTAL, body_part="LSPINE")
    (row,) = inspect_study(tmp_path)
    assert row["plane"] == "sagittal" and row["role"] == "lumbar_sag_t2"


def test_user_rules_take_precedence(tmp_path: Path):
    study = tmp_path / "study"
    _write(study, "MY_SITE_WATERIMG", ("ORIGINAL", "PRIMARY", "M"), AXIAL)
    assert inspect_study(study)[0]["role"].startswith("other")
    (study / "series_roles.yaml").write_text(
        "version: 1\nanatomy:\n  - name: calf\n    any: {SeriesDescription: '^MY_SITE'}\n"
        "contrast:\n  - name: water\n    any: {SeriesDescription: 'WATERIMG$'}\n")
    assert inspect_study(study)[0]["role"] == "calf_water"


def test_bad_user_rule_names_the_file(tmp_path: Path):
    from pipeline.core.errors import ConfigError

    study = tmp_path / "study"
    _write(study, "x", ("ORIGINAL", "PRIMARY", "M"), AXIAL)
    (study / "series_roles.yaml").write_text("contrast:\n  - name: water\n    any: {SeriesDescription: '(['}\n")
    with pytest.raises(ConfigError, match="series_roles.yaml"):
        inspect_study(study)
