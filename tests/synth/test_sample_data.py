"""The committed sample studies: every series found with its role and the geometry it was written with; the case
definitions hold (index case, control, myopathy); size limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.io.nifti import load_volume
from pipeline.io.study import ingest_study

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
EXPECTED_ROLES = {"calf_water", "calf_fat", "calf_inphase", "calf_outphase", "lumbar_sag_t2", "lumbar_ax_t2",
                  "lumbar_ax_t2_2", "lumbar_ax_t2_3"}


@pytest.mark.parametrize("case", ["nmh_case", "control", "myopathic"])
def test_ingest_finds_every_series_with_the_written_geometry(tmp_path: Path, case: str):
    study = SAMPLE / case
    size_mb = sum(p.stat().st_size for p in study.rglob("*") if p.is_file()) / 1e6
    assert size_mb <= 6.0
    index = ingest_study(study, tmp_path)
    roles = {s["role"] for s in index["series"]}
    assert roles == EXPECTED_ROLES
    assert {Path(s["file"]).parent.name for s in index["skipped"]} <= {"ground_truth", case}
    for s in index["series"]:
        truth_role = "calf" if s["role"].startswith("calf_") else s["role"]
        truth = load_volume(study / "ground_truth" / f"{truth_role}_labels.nii.gz")
        got = load_volume(tmp_path / s["volume"])
        assert got.shape == truth.shape, s["role"]
        np.testing.assert_allclose(got.affine, truth.affine, atol=1e-4, err_msg=s["role"])


def _truth(case: str) -> dict:
    return json.loads((SAMPLE / case / "ground_truth.json").read_text())


def _ai(m: dict, name: str, key: str = "volume_ml") -> float:
    r, l_ = m["right"][name][key], m["left"][name][key]
    return 100 * (r - l_) / ((r + l_) / 2)


def test_index_case_truth():
    t = _truth("nmh_case")
    m = t["calf"]["muscles"]
    assert m["right"]["gastrocnemius_medial"]["ff_pct"] >= 70 and m["left"]["gastrocnemius_medial"]["ff_pct"] < 15
    assert 20 <= _ai(m, "soleus") <= 40 and m["right"]["soleus"]["ff_pct"] < 10
    g = t["calf"]["girth"]["matched_girth_mm"]
    assert 40 <= g["right"] - g["left"] <= 60
    l45 = t["spine"]["levels"]["L4-L5"]
    assert l45["dsca_mm2"] < 100
    assert l45["lateral_recess_depth_mm"]["right"] < l45["lateral_recess_depth_mm"]["left"]
    assert all(v["dsca_mm2"] > 150 for lv, v in t["spine"]["levels"].items() if lv != "L4-L5")
    assert t["intended_diagnosis"]["hypothesis"] == "neurogenic_hypertrophy"


def test_control_and_myopathic_truth():
    for case, limit in (("control", 10.0), ("myopathic", 15.0)):
        m = _truth(case)["calf"]["muscles"]
        for name in m["left"]:
            assert abs(_ai(m, name)) < limit, (case, name)
    my = _truth("myopathic")["calf"]["muscles"]
    assert sum(my[s][n]["ff_pct"] > 15 for s in ("left", "right") for n in my[s] if "ff_pct" in my[s][n]) >= 8
