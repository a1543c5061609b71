"""``legmri evaluate`` with the shipped bundles on one fresh phantom each: tables and per-case rows are written,
and seeds of the training range are refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


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


def test_spine_level_qc_verdicts_are_set_against_the_truth(tmp_path: Path):
    """``legmri evaluate spine --qc`` runs the spine QC of ``legmri run`` on each case: every level row carries its
    verdict and the study's, and the summary counts the levels whose values reach the rules (level and study not
    failed) and the wrong ones among them (level misnamed, DSCA outside 8 mm2 or 8 %, AP off by more than 1 mm) as
    the rows say."""
    assert main(["evaluate", "spine", "--seeds", "100001", "--qc", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "spine_cases.csv").open()))
    assert len(rows) == 5 and all(r["qc_status"] in ("pass", "review", "fail") for r in rows)
    assert all(r["study_qc_status"] == rows[0]["study_qc_status"] != "fail" for r in rows)

    def wrong(r: dict[str, str]) -> bool:
        dsca_off = r["dsca"] != "" and abs(float(r["dsca"]) - float(r["dsca_true"])) > max(8.0, 0.08 * float(
            r["dsca_true"]))
        ap_off = r["ap"] != "" and abs(float(r["ap"]) - float(r["ap_true"])) > 1.0
        return r["levels_ok"] != "True" or dsca_off or ap_off

    used = [r for r in rows if r["qc_status"] != "fail"]
    expected = f"levels whose values reach the rules: {len(used)} ({sum(map(wrong, used))} wrong)"
    assert expected in (tmp_path / "spine_summary.md").read_text()


def test_the_spine_evaluation_uses_the_bundle_asked_for(tmp_path: Path):
    assert main(["evaluate", "spine", "--seeds", "100000", "--out", str(tmp_path), "--bundle",
                 "spine_t2_synth_unet"]) == 0
    version = json.loads((ROOT / "weights" / "spine_t2_synth_unet" / "metadata.json").read_text())["version"]
    assert (tmp_path / "spine_summary.md").read_text().startswith(f"Spine bundle spine_t2_synth_unet v{version}")


def test_the_spine_evaluation_runs_on_the_independent_generator(tmp_path: Path):
    """One atlas phantom through the spine evaluation: its five lumbar levels, with the truth of that generator and
    the wider DSCA bar."""
    from pipeline.synth.lumbar_atlas import AtlasLumbarSpec

    assert main(["evaluate", "spine", "--generator", "atlas", "--seeds", "1", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "spine_cases.csv").open()))
    assert [r["level"] for r in rows] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    spec = AtlasLumbarSpec.random(np.random.default_rng([1, 17]))
    assert [float(r["ap_true"]) for r in rows] == pytest.approx([spec.levels[r["level"]].ap_mm for r in rows], abs=0.1)
    assert {r["level"] for r in rows if r["axial"] == "True"} == set(spec.ax_levels)
    table = (tmp_path / "spine_summary.md").read_text()
    assert "independent atlas lumbar phantoms" in table and "bar 10 mm2 or 10 %" in table


def test_contrasts_the_bundle_cannot_take_are_a_usage_error(tmp_path: Path, capsys):
    """The configured Dixon bundle takes water + fat: asked for single contrasts only, the evaluation says so and how
    to ask instead (exit 2), rather than writing empty tables."""
    assert main(["evaluate", "calf", "--seeds", "100000", "--contrasts", "anatomical", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "water + fat" in err and "--bundle" in err
    assert not (tmp_path / "calf_cases.csv").exists()
