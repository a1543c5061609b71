"""Named phantom cases: the index case of neurogenic muscle hypertrophy, a healthy control, a myopathy, and random
cases; each with its calf spec, its lumbar spec and the clinical findings written to clinical.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.synth.calf import MUSCLES, CalfSpec, MusclePathology

CASE_NAMES = ("nmh", "control", "myopathic", "random")

NMH_CLINICAL: dict[str, Any] = {
    "age_years": 74,
    "sex": "F",
    "labs": {"ck_u_l": 110, "ck_uln_u_l": 170, "ck_mb_u_l": 3.1, "ck_mb_uln_u_l": 5.0, "alp_u_l": 80,
             "alp_uln_u_l": 120},
    "emg": [{"root": "L5", "side": "right", "finding": "chronic_neurogenic"},
            {"root": "S1", "side": "right", "finding": "chronic_neurogenic"}],
    "ncv": {"summary": "normal"},
    "reflexes": {"ankle": {"left": 2, "right": 1}, "knee": {"left": 2, "right": 2}},
    "strength_mrc": {"plantar_flexion": {"left": 5, "right": 4}, "dorsiflexion": {"left": 5, "right": 5}},
    "sensory_loss": [{"dermatome": "L5", "side": "right", "percent": 50},
                     {"dermatome": "S1", "side": "right", "percent": 50}],
    "straight_leg_raise": {"right": {"positive": True, "angle_deg": 45}, "left": {"positive": False}},
    "onset": "chronic",
    "pain": {"present": True, "location": "right buttock and calf"},
    "oedema": False,
}
CONTROL_CLINICAL: dict[str, Any] = {
    "age_years": 58,
    "sex": "M",
    "labs": {"ck_u_l": 120, "ck_uln_u_l": 190, "ck_mb_u_l": 2.5, "ck_mb_uln_u_l": 5.0, "alp_u_l": 70,
             "alp_uln_u_l": 120},
    "emg": [{"root": "L5", "side": "right", "finding": "normal"}, {"root": "S1", "side": "right", "finding": "normal"},
            {"root": "L5", "side": "left", "finding": "normal"}, {"root": "S1", "side": "left", "finding": "normal"}],
    "ncv": {"summary": "normal"},
    "reflexes": {"ankle": {"left": 2, "right": 2}, "knee": {"left": 2, "right": 2}},
    "strength_mrc": {"plantar_flexion": {"left": 5, "right": 5}, "dorsiflexion": {"left": 5, "right": 5}},
    "sensory_loss": [],
    "straight_leg_raise": {"right": {"positive": False}, "left": {"positive": False}},
    "onset": "chronic",
    "pain": {"present": False},
    "oedema": False,
}
MYOPATHIC_CLINICAL: dict[str, Any] = {
    "age_years": 41,
    "sex": "M",
    "labs": {"ck_u_l": 2450, "ck_uln_u_l": 190, "ck_mb_u_l": 14.0, "ck_mb_uln_u_l": 5.0, "alp_u_l": 95,
             "alp_uln_u_l": 120},
    "emg": [{"root": "L5", "side": "right", "finding": "myopathic_units"},
            {"root": "S1", "side": "right", "finding": "myopathic_units"},
            {"root": "L5", "side": "left", "finding": "myopathic_units"},
            {"root": "S1", "side": "left", "finding": "myopathic_units"}],
    "ncv": {"summary": "normal"},
    "reflexes": {"ankle": {"left": 2, "right": 2}, "knee": {"left": 2, "right": 2}},
    "strength_mrc": {"plantar_flexion": {"left": 4, "right": 4}, "dorsiflexion": {"left": 4, "right": 4},
                     "hip_flexion": {"left": 4, "right": 4}},
    "sensory_loss": [],
    "straight_leg_raise": {"right": {"positive": False}, "left": {"positive": False}},
    "onset": "subacute",
    "pain": {"present": False},
    "oedema": False,
}


@dataclass
class Case:
    name: str
    calf: CalfSpec
    lumbar_case: str  # passed to the lumbar generator's case presets
    clinical: dict[str, Any] | None
    intended_diagnosis: dict[str, Any] = field(default_factory=dict)
    patient: dict[str, str] = field(default_factory=dict)


def _compact_acquisition(spec: CalfSpec) -> CalfSpec:
    """Acquisition of the committed sample studies: 1.5 mm in-plane, 28 slices of 7 mm (small files)."""
    spec.in_plane_mm = 1.5
    spec.n_slices = 28
    spec.slice_mm = 7.0
    spec.t_start = 0.07
    return spec


def make_case(name: str, seed: int, vendor: str | None = None) -> Case:
    """The named case with anatomy drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    if name == "random":
        spec = CalfSpec.random(rng)
        if vendor:
            spec.vendor = vendor
        return Case("random", spec, "random", None, {"hypothesis": "unspecified"},
                    {"name": f"PHANTOM^RANDOM{seed}", "id": f"RND{seed:05d}", "sex": "O", "age": "050Y",
                     "birth_date": "19760101"})
    spec = _compact_acquisition(CalfSpec(vendor=vendor or "siemens", snr=35.0, bias=0.2))
    spec.rotation_deg = {"left": float(rng.uniform(-12, -4)), "right": float(rng.uniform(4, 12))}
    spec.gap_mm = float(rng.uniform(35, 55))
    if name == "control":
        spec.leg_scale = {"left": 1.0, "right": 1.0}
        spec.fat_mm = {"left": 9.0, "right": 9.0}
        return Case("control", spec, "control", CONTROL_CLINICAL, {"hypothesis": "none"},
                    {"name": "PHANTOM^CONTROL", "id": "CTRL0001", "sex": "M", "age": "058Y",
                     "birth_date": "19680412"})
    if name == "myopathic":
        spec.leg_scale = {"left": 1.0, "right": 1.0}
        spec.fat_mm = {"left": 8.0, "right": 8.0}
        affected = {"gastrocnemius_medial": 0.42, "gastrocnemius_lateral": 0.38, "soleus": 0.33,
                    "peroneus": 0.30, "tibialis_anterior": 0.25, "extensor_digitorum_longus": 0.22}
        spec.pathology = {s: {m: MusclePathology(ff=ff, pattern="patchy" if m.startswith("gastro") else "diffuse",
                                                 scale=1.05) for m, ff in affected.items()} for s in ("left", "right")}
        spec.vendor = vendor or "philips"
        return Case("myopathic", spec, "myopathic", MYOPATHIC_CLINICAL,
                    {"hypothesis": "myopathic", "side": "bilateral", "roots": []},
                    {"name": "PHANTOM^MYOPATHIC", "id": "MYO0001", "sex": "M", "age": "041Y",
                     "birth_date": "19850203"})
    if name == "nmh":
        # index case: right calf ~5 cm larger; right GM complete fatty change; right soleus hypertrophy ~+30 %
        spec.leg_scale = {"left": 1.03, "right": 1.03}
        spec.fat_mm = {"left": 9.0, "right": 14.5}
        spec.pathology = {"right": {
            "gastrocnemius_medial": MusclePathology(ff=0.82, pattern="complete", scale=1.10),
            "soleus": MusclePathology(ff=0.04, pattern="diffuse", scale=1.32),
            "gastrocnemius_lateral": MusclePathology(ff=0.06, pattern="diffuse", scale=1.08),
            "flexor_hallucis_longus": MusclePathology(ff=0.05, pattern="diffuse", scale=1.05),
        }}
        spec.vendor = vendor or "siemens"
        return Case("nmh", spec, "nmh", NMH_CLINICAL,
                    {"hypothesis": "neurogenic_hypertrophy", "side": "right", "roots": ["S1", "L5"],
                     "spine_level": "L4-L5"},
                    {"name": "PHANTOM^NMH", "id": "NMH0001", "sex": "F", "age": "074Y", "birth_date": "19520615"})
    raise ValueError(f"unknown case '{name}'; choose one of {', '.join(CASE_NAMES)}")


__all__ = ["CASE_NAMES", "Case", "make_case", "MUSCLES"]
