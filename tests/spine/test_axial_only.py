"""A lumbar study with axial stacks and no sagittal image: its discs found per stack, numbered upwards by height,
measured on their own stacks and judged; no level named, nothing of it read by the rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import load_config
from pipeline.core.labels import registry
from pipeline.core.summary import Summary
from pipeline.core.volume import Volume
from pipeline.io.nifti import save_volume
from pipeline.spine.axial_only import find_axial_discs
from pipeline.workflow import stages
from pipeline.workflow.evaluation import DSCA_BARS, dsca_tolerance_mm2, evaluate_spine_axial_only

REG = registry("spine")
CFG = load_config("default")["spine"]
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "nmh_case"


def _stack(z0_mm: float, n_slices: int, discs: list[tuple[int, int, slice]]) -> Volume:
    """An axial class map (1 x 1 x 3 mm, slices upwards from world height ``z0_mm``) holding disc class in the
    boxes ``(x0, y0, slices)``, each 20 x 20 voxels."""
    arr = np.zeros((80, 60, n_slices), np.uint8)
    for x0, y0, ks in discs:
        arr[x0:x0 + 20, y0:y0 + 20, ks] = REG.class_id("disc")
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[2, 3] = z0_mm
    return Volume(arr, affine)


def test_discs_are_joined_at_one_height_kept_once_and_numbered_upwards():
    """A disc labelled in two pieces side by side is one disc; a disc two stacks show is kept once, from the stack
    holding more of it; a long stack shows two discs 39 mm apart, the upper one only on its last slice (cut);
    numbers rise with height whatever the order of the stacks."""
    upper = _stack(100.0, 5, [(10, 20, slice(1, 4))])  # one disc at z 106 mm
    lower = _stack(0.0, 5, [(5, 20, slice(1, 4)), (45, 20, slice(1, 4))])  # one disc in two pieces at z 6 mm
    overlap = _stack(0.0, 5, [(5, 20, slice(2, 3))])  # the lower disc again, one slice of it
    long_stack = _stack(150.0, 16, [(10, 20, slice(1, 4)), (10, 20, slice(15, 16))])  # z 156 and 195 mm
    discs = find_axial_discs([upper, overlap, long_stack, lower], REG, CFG)
    assert [d.level for d in discs] == ["disc_1", "disc_2", "disc_3", "disc_4"]
    assert [d.stack for d in discs] == [3, 0, 2, 2]
    assert [round(float(d.center_ras[2])) for d in discs] == [6, 106, 156, 195]
    assert discs[0].volume_ml == pytest.approx(2 * 20 * 20 * 3 * 3 / 1000)  # both pieces
    assert [d.cut for d in discs] == [False, False, False, True]  # the top disc is widest on the stack's last slice
    assert all(np.allclose(d.normal_ras, [0, 0, 1]) for d in discs)


def test_a_stack_without_disc_class_gives_no_disc():
    assert find_axial_discs([_stack(0.0, 5, [])], REG, CFG) == []


def test_the_axial_stacks_of_phantoms_measure_their_discs():
    """The shipped network on a fresh phantom's three axial stacks alone: each disc found where it is, numbered from
    L5-S1 upwards, its sac area and lateral recesses within the bars of the path with a sagittal image."""
    rows, _ = evaluate_spine_axial_only([600000], qc=True)
    assert [(r["level"], r["found_as"]) for r in rows] == [("L5-S1", "disc_1"), ("L4-L5", "disc_2"),
                                                           ("L3-L4", "disc_3")]
    for r in rows:
        assert abs(r["dsca"] - r["dsca_true"]) <= dsca_tolerance_mm2(r["dsca_true"], DSCA_BARS["project"]), r
        assert abs(r["ap"] - r["ap_true"]) <= 1.5, r
        for side in ("left", "right"):
            assert abs(r[f"recess_{side}"] - r[f"recess_{side}_true"]) <= 1.0, (side, r)
        assert r["qc_status"] in ("pass", "review"), r


def _axial_only_copy(tmp_path: Path) -> Path:
    """The sample index case's three axial lumbar DICOM series alone (its sagittal and calf series left out)."""
    probe = tmp_path / "probe"
    assert stages.ingest(SAMPLE, probe) == 0
    study = tmp_path / "axial_only"
    for s in json.loads((probe / "series.json").read_text())["series"]:
        if s["role"].startswith("lumbar_ax"):
            for f in s["files"]:
                dst = study / "DICOM" / s["role"] / Path(f).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dst)
    return study


def test_a_study_with_axial_stacks_alone_is_measured_under_positional_names(tmp_path: Path):
    """Through every stage: the discs of the index case's L3-L4, L4-L5 and L5-S1 stacks as disc_1-3, the stenotic
    L4-L5 (true sac area 70 mm2, right recess 2.0 mm) as disc_2; the named levels null with the reason; the
    foramina null; the report shows each disc's axial picture."""
    study = _axial_only_copy(tmp_path)
    out = tmp_path / "out"
    assert stages.ingest(study, out) == 0
    stages.segment(out)
    stages.measure(out)
    stages.rules(out)
    stages.report(out)
    s = Summary.load(out / "summary.json")
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())["spine"]["levels"]
    assert s.get("spine.levels_named") is False and "no sagittal image" in s.get("spine.levels_flags")
    for disc, level in (("disc_1", "L5-S1"), ("disc_2", "L4-L5"), ("disc_3", "L3-L4")):
        t = truth[level]
        assert abs(s.get(f"spine.{disc}.dsca_mm2") - t["dsca_mm2"]) <= max(8.0, 0.08 * t["dsca_mm2"]), disc
        assert abs(s.get(f"spine.{disc}.right.lateral_recess_depth_mm")
                   - t["lateral_recess_depth_mm"]["right"]) <= 1.0, disc
        assert s.get(f"spine.{disc}.right.foramen_area_mm2") is None
        assert "sagittal" in s.missing[f"spine.{disc}.right.foramen_area_mm2"]
        assert s.get(f"spine.{disc}.qc_status") in ("pass", "review")
        assert (out / "qa" / f"spine_axial_{disc}.png").exists()
    assert s.get("spine.L4-L5.dsca_mm2") is None and "no sagittal image" in s.missing["spine.L4-L5.dsca_mm2"]
    assert s.get("spine.disc_4.dsca_mm2") is None
    findings = json.loads((out / "findings.json").read_text())
    assert "disc_" not in json.dumps(findings.get("hypotheses", findings))


@pytest.mark.parametrize("image", ["calf", "noise"])
def test_a_non_spine_image_given_as_an_axial_lumbar_stack_fails_spine_qc(tmp_path: Path, image: str):
    """A calf image, or noise, given as the only lumbar series: spine QC fails with the reason, and nothing measured
    from it is a finding's evidence."""
    from pipeline.synth.calf import CalfSpec, generate_calf

    calf = generate_calf(CalfSpec(n_slices=8, slice_mm=4.0, in_plane_mm=0.8, t_start=0.3), seed=5, fast=True)
    vol = calf.volume("calf_inphase")
    if image == "noise":
        vol = vol.with_array(np.random.default_rng(0).rayleigh(100.0, vol.shape).astype(np.float32))
    study = tmp_path / "study"
    save_volume(vol, study / "ax.nii.gz")
    (study / "study.yaml").write_text("series:\n  - {file: ax.nii.gz, role: lumbar_ax_t2}\n")
    out = tmp_path / "out"
    assert stages.ingest(study, out) == 0
    stages.segment(out)
    stages.measure(out)
    stages.rules(out)
    s = Summary.load(out / "summary.json")
    assert s.get("spine.qc_status") == "fail" and s.get("spine.qc_reasons")
    measured = [k for k, v in s.values.items() if k.startswith("spine.disc_") and k.endswith("_mm2") and v is not None]
    findings = json.dumps(json.loads((out / "findings.json").read_text()))
    assert all(k not in findings for k in measured)
