"""The coded concepts of ``configs/labels.yaml`` are concepts of DICOM PS3.16 with the code meaning given there
(pydicom's code dictionary is generated from PS3.16), so a SEG or SR reader finds them in the standard."""

from __future__ import annotations

from collections import defaultdict

import pytest
from pydicom.sr.codedict import Code, codes

from pipeline.core.labels import registry


def _ps3_16(scheme: str) -> dict[str, set[str]]:
    """Code value -> the code meanings PS3.16 gives it, in one coding scheme."""
    out: dict[str, set[str]] = defaultdict(set)
    for name in dir(getattr(codes, scheme)):
        code = getattr(getattr(codes, scheme), name)
        if isinstance(code, Code):
            out[code.value].add(code.meaning.lower())
    return out


#: CID 3031 "Lead Location Near or in Muscle": the one list of individual muscles in PS3.16 (MDC codes)
MUSCLES = {concept.value for concept in codes.cid3031.concepts.values()}


@pytest.mark.parametrize("anatomy", ["calf", "spine"])
def test_every_structure_and_level_has_a_ps3_16_concept(anatomy: str):
    reg = registry(anatomy)
    known = {scheme: _ps3_16(scheme) for scheme in ("SCT", "MDC")}
    coded = [reg.region, *(reg.code_of(lab) for lab in reg.labels)]
    assert all(c is not None for c in coded), "a structure without a code falls back to a generic concept"
    for c in coded:
        assert c["scheme"] in known
        assert c["meaning"].lower() in known[c["scheme"]].get(c["value"], set()), c
        if c["scheme"] == "MDC":
            assert c["value"] in MUSCLES, c


def test_calf_muscles_get_their_own_concepts_where_ps3_16_has_one():
    reg = registry("calf")
    muscles = [s for s in reg.structures if reg.structures[s].get("kind") == "muscle"]
    own = {s: reg.structures[s]["code"]["value"] for s in muscles if reg.structures[s]["code"]["scheme"] == "MDC"}
    assert set(own) == {"gastrocnemius_medial", "gastrocnemius_lateral", "soleus", "tibialis_anterior",
                        "extensor_digitorum_longus", "tibialis_posterior", "flexor_digitorum_longus"}
    assert len(set(own.values())) == len(own)


def test_levels_get_their_own_concepts():
    reg = registry("spine")
    discs = {lab.level: reg.code_of(lab)["value"] for lab in reg.labels if lab.structure == "disc"
             and not lab.level.startswith("disc_")}
    assert len(set(discs.values())) == len(discs) == 5
    unnamed = {reg.code_of(lab)["meaning"] for lab in reg.labels if lab.level and lab.level.startswith(("disc_", "vert"))}
    assert unnamed == {"Spine", "Vertebra"}  # an unnamed level is never coded as a named one
