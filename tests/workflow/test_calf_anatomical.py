"""A calf study with one anatomical series (no Dixon, no echoes) through segment, measure and rules: the one-input
bundle segments it, sizes are measured, fat fraction is null with the reason, and no rule reads a fat fraction."""

from __future__ import annotations

import json

import numpy as np

from pipeline.core.config import load_config
from pipeline.core.layout import StudyDir
from pipeline.segment.bundle import load_bundle
from pipeline.synth.calf_atlas import AtlasSpec, write_atlas_study
from tests.report.study_fixture import through_rules


def test_t1_only_calf_study(tmp_path):
    spec = AtlasSpec.random(np.random.default_rng(3))
    spec.n_slices = 12
    study = write_atlas_study(3, tmp_path / "study", spec=spec, contrasts=("anatomical",))
    out = through_rules(study, tmp_path / "out")
    d = StudyDir(out)
    prov = json.loads(d.provenance.read_text())
    assert prov["models"]["calf"]["name"] == "calf_unet"
    summary = json.loads(d.summary.read_text())
    values, missing = summary["values"], summary["missing"]
    assert values["calf.available"] is True and values["calf.qc_status"] in ("pass", "review", "fail")
    assert any(values.get(f"calf.{s}.soleus.volume_ml") for s in ("left", "right"))
    ff_keys = [k for k in values if k.startswith("calf.") and k.endswith((".ff_pct", ".lean_volume_ml"))]
    assert ff_keys and all(values[k] is None and "no fat fraction" in missing[k] for k in ff_keys)
    assert not d.calf_ff_map.exists()
    certainty = json.loads(d.calf_certainty.read_text())  # the network's own uncertainty, judged by QC
    key = "mirrored_entropy" if load_bundle("calf_unet").metadata["inference"]["mirror_axes"] else "entropy"
    assert set(certainty) - {"flip_dice"} == {key}
    assert set(certainty[key]) == set(values["calf.legs_present"].split(","))
    assert all(0.0 <= v <= 1.0 for per in certainty[key].values() for v in per.values())
    qc = json.loads(d.calf_qc.read_text())
    review = load_config("qc")["calf"][f"{key}_review"]
    for side, per in certainty[key].items():
        for name, h in per.items():
            judged = qc["structures"].get(side, {}).get(name)
            if judged is not None:
                assert any("entropy" in r for r in judged["reasons"]) == (h > review), (side, name, h)
    findings = json.loads(d.findings.read_text())
    assert findings["quality_control"]["calf_status"] == values["calf.qc_status"]
