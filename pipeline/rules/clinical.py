"""The clinical input of a study (``clinical.yaml``): every field optional, every value validated.

Errors name the field and the file, e.g. ``clinical.yaml: at 'reflexes.ankle.right': Input should be less than or
equal to 4``. The JSON-schema twin of this model is ``configs/schemas/clinical.schema.yaml`` (generated from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.config import read_yaml
from pipeline.core.errors import BadInputError

SideName = Literal["left", "right"]
Root = Literal["L2", "L3", "L4", "L5", "S1", "S2"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf / .nan are not findings


class Labs(_Model):
    ck_u_l: float | None = Field(None, ge=0, description="creatine kinase (U/L)")
    ck_uln_u_l: float | None = Field(None, gt=0, description="CK upper limit of normal (U/L)")
    ck_mb_u_l: float | None = Field(None, ge=0)
    ck_mb_uln_u_l: float | None = Field(None, gt=0)
    alp_u_l: float | None = Field(None, ge=0, description="alkaline phosphatase (U/L)")
    alp_uln_u_l: float | None = Field(None, gt=0)


class EmgFinding(_Model):
    root: Root
    side: SideName
    finding: Literal["normal", "chronic_neurogenic", "active_neurogenic", "myopathic_units",
                     "complex_repetitive_discharges"]


class Ncv(_Model):
    summary: Literal["normal", "axonal_neuropathy", "demyelinating_neuropathy", "entrapment", "abnormal"] | None = None


class SidePair(_Model):
    left: int | None = None
    right: int | None = None


class ReflexPair(SidePair):
    left: int | None = Field(None, ge=0, le=4, description="0-4+ scale")
    right: int | None = Field(None, ge=0, le=4)


class StrengthPair(SidePair):
    left: int | None = Field(None, ge=0, le=5, description="MRC 0-5")
    right: int | None = Field(None, ge=0, le=5)


class SensoryLoss(_Model):
    dermatome: Root
    side: SideName
    percent: float = Field(100.0, ge=0, le=100)


class SlrSide(_Model):
    positive: bool
    angle_deg: float | None = Field(None, ge=0, le=90)


class Slr(_Model):
    left: SlrSide | None = None
    right: SlrSide | None = None


class Pain(_Model):
    present: bool
    location: str | None = None


class Clinical(_Model):
    """Clinical findings of one patient; absent fields are reported as missing data, never assumed normal."""

    age_years: int | None = Field(None, ge=0, le=120)
    sex: Literal["F", "M", "O"] | None = None
    labs: Labs | None = None
    emg: list[EmgFinding] | None = None
    ncv: Ncv | None = None
    reflexes: dict[Literal["ankle", "knee"], ReflexPair] | None = None
    strength_mrc: dict[str, StrengthPair] | None = None
    sensory_loss: list[SensoryLoss] | None = None
    straight_leg_raise: Slr | None = None
    onset: Literal["acute", "subacute", "chronic"] | None = None
    pain: Pain | None = None
    oedema: bool | None = None


def load_clinical(path: str | Path) -> Clinical:
    """Read and validate a clinical.yaml; one BadInputError listing every invalid field."""
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise BadInputError(f"clinical findings must be a mapping of fields, got {type(data).__name__}.", path=path,
                            fix="write clinical.yaml as 'field: value' lines (see sample_data/*/clinical.yaml).")
    try:
        return Clinical.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            lines.append(f"at '{where}': {e['msg']} (got {e.get('input')!r})")
        raise BadInputError("invalid clinical findings:\n  " + "\n  ".join(lines), path=path,
                            fix="correct the listed fields (see configs/schemas/clinical.schema.yaml).") from exc
