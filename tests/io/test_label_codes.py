"""The coded concepts of ``configs/labels.yaml`` are concepts of DICOM PS3.16 with the code meaning given there
(pydicom's code dictionary is generated from PS3.16), so a SEG or SR reader finds them in the standard."""

from __future__ import annotations

from collections import defaultdict

import pytest
from pydicom.sr.codedict import Code, codes

from pipeline.core.labels import registry


def _ps3_16_sct() -> dict[str, set[str]]:
    """SNOMED CT code value -> the code meanings PS3.16 gives it."""
    out: dict[str, set[str]] = defaultdict(set)
    for name in dir(codes.SCT):
        code = getattr(codes.SCT, name)
        if isinstance(code, Code):
            out[code.value].add(code.meaning.lower())
    return out


@pytest.mark.parametrize("anatomy", ["calf", "spine"])
def test_every_structure_and_level_has_a_ps3_16_concept(anatomy: str):
    reg = registry(anatomy)
    known = _ps3_16_sct()
    coded = [reg.region, *(reg.code_of(lab) for lab in reg.labels)]
    assert all(c is not None for c in coded), "a structure without a code falls back to a generic concept"
    for c in coded:
        assert c["scheme"] == "SCT"
        assert c["meaning"].lower() in known.get(c["value"], set()), c


def test_levels_get_their_own_concepts():
    reg = registry("spine")
    discs = {lab.level: reg.code_of(lab)["value"] for lab in reg.labels if lab.structure == "disc"
             and not lab.level.startswith("disc_")}
    assert len(set(discs.values())) == len(discs) == 5
    unnamed = {reg.code_of(lab)["meaning"] for lab in reg.labels if lab.level and lab.level.startswith(("disc_", "vert"))}
    assert unnamed == {"Spine", "Vertebra"}  # an unnamed level is never coded as a named one
