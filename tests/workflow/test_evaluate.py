"""``legmri evaluate`` with the shipped bundles on one fresh phantom each: tables and per-case rows are written,
and seeds of the training range are refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.cli import main


def test_training_seeds_are_refused(tmp_path: Path, capsys):
    assert main(["evaluate", "calf", "--seeds", "5-6", "--out", str(tmp_path)]) == 2
    assert ">= 100000" in capsys.readouterr().err


@pytest.mark.parametrize("anatomy", ["calf", "spine"])
def test_one_fresh_phantom(anatomy: str, tmp_path: Path):
    assert main(["evaluate", anatomy, "--seeds", "100000", "--out", str(tmp_path)]) == 0
    table = (tmp_path / f"{anatomy}_summary.md").read_text()
    rows = list(csv.DictReader((tmp_path / f"{anatomy}_cases.csv").open()))
    if anatomy == "calf":
        assert "side swaps: 0" in table
        muscles = [r for r in rows if r["structure"] == "soleus"]
        assert muscles and all(float(r["dice"]) > 0.85 for r in muscles)
        assert all(abs(float(r["volume_err_pct"])) < 10 for r in muscles)
    else:
        assert "levels right in 1/1" in table
        assert {r["level"] for r in rows} == {"L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"}


def test_the_independent_atlas_generator_per_contrast(tmp_path: Path):
    """The atlas generator (never trained on) with the one-input bundle on two contrasts: a Dice per structure,
    side and contrast, all between 0 and 1, and the table names the generator."""
    assert main(["evaluate", "calf", "--generator", "atlas", "--seeds", "4", "--bundle", "calf_unet",
                 "--contrasts", "inphase,anatomical", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "calf_cases.csv").open()))
    assert {r["contrast"] for r in rows} == {"inphase", "anatomical"} and {r["side"] for r in rows} <= {"left", "right"}
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    table = (tmp_path / "calf_summary.md").read_text()
    assert "atlas phantoms" in table and "| soleus |" in table


def test_qc_verdicts_are_set_against_the_truth(tmp_path: Path):
    """``--qc`` runs the segmentation QC of ``legmri run`` on each case: every row carries the structure's verdict,
    the summary counts them against the truth, and on a fresh project phantom QC passes no wrong muscle."""
    assert main(["evaluate", "calf", "--seeds", "100001", "--qc", "--contrasts", "dixon",
                 "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "calf_cases.csv").open()))
    assert rows and all(r["qc_status"] in ("pass", "review", "fail") for r in rows)
    table = (tmp_path / "calf_summary.md").read_text()
    assert "QC verdicts against the truth" in table
    passed = [r for r in rows if r["qc_status"] == "pass" and r["structure"] not in ("tibia", "fibula", "subcutaneous_fat")]
    assert passed and all(float(r["dice"]) >= 0.8 for r in passed)


def test_the_spine_evaluation_uses_the_bundle_asked_for(tmp_path: Path):
    assert main(["evaluate", "spine", "--seeds", "100000", "--out", str(tmp_path), "--bundle",
                 "spine_t2_synth_unet"]) == 0
    assert (tmp_path / "spine_summary.md").read_text().startswith("Spine bundle spine_t2_synth_unet v0.1.0")
