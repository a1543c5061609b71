"""Spine segmentation QC through measure and rules: the index case with its ground-truth labels passes; a level
whose dural sac is missing fails and its values are held back from the rules; a sagittal image without named levels
fails the study, and no spine value reaches the rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.core.labels import registry
from pipeline.core.layout import StudyDir
from pipeline.io.nifti import load_volume, save_volume
from pipeline.workflow import stages
from tests.report.study_fixture import ground_truth_out, through_rules


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["values"]


def test_ground_truth_labels_pass(tmp_path):
    v = _summary(ground_truth_out(tmp_path / "nmh"))
    assert v["spine.qc_status"] == "pass"
    assert all(v[f"spine.{lv}.qc_status"] == "pass" for lv in ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"))


def test_a_level_without_dural_sac_fails_and_is_held_back(tmp_path):
    out = ground_truth_out(tmp_path / "nmh", measure=False)
    d = StudyDir(out)
    reg = registry("spine")
    sag = load_volume(d.spine_labels_sag)
    arr = np.asarray(sag.array).copy()
    disc = np.argwhere(arr == reg.label_id("disc_L4_L5"))
    z_disc = sag.voxel_to_world(disc)[:, 2].mean()
    sac = np.argwhere(arr == reg.label_id("dural_sac"))
    near = np.abs(sag.voxel_to_world(sac)[:, 2] - z_disc) <= 8.0
    arr[tuple(sac[near].T)] = 0
    save_volume(sag.with_array(arr), d.spine_labels_sag)
    stages.measure(out)
    stages.rules(out)
    v = _summary(out)
    assert v["spine.L4-L5.qc_status"] == "fail" and "no dural sac" in v["spine.L4-L5.qc_reasons"]
    assert v["spine.L3-L4.qc_status"] == "pass" and v["spine.qc_status"] == "review"
    held = json.loads(d.findings.read_text())["quality_control"]["held_back"]
    assert any(k.startswith("spine.L4-L5.") for k in held)
    assert not any(k.startswith("spine.L3-L4.") for k in held)


def test_a_sagittal_image_without_named_levels_fails(tmp_path):
    """A calf image given as the lumbar sagittal T2: the spine fails QC with the reasons and no value measured from
    it is used."""
    from pipeline.synth.not_calf import write_not_calf_study

    study = write_not_calf_study("noise", 3, tmp_path / "study", n_slices=10, in_plane_mm=1.6)
    (study / "study.yaml").write_text("series:\n  - {file: calf_inphase.nii.gz, role: lumbar_sag_t2}\n")
    out = through_rules(study, tmp_path / "out")
    v = _summary(out)
    assert v["spine.qc_status"] == "fail" and v["spine.qc_reasons"]
    level_status = {k: x for k, x in v.items() if k.startswith("spine.") and k.endswith(".qc_status")
                    and k != "spine.qc_status"}
    assert all(x == "fail" for x in level_status.values()), level_status
    qc = json.loads(StudyDir(out).findings.read_text())["quality_control"]
    assert qc["spine_status"] == "fail"
    measured = [k for k in v if k.startswith("spine.L") and v[k] not in (None, "")
                and not k.endswith(("qc_status", "qc_reasons"))]
    assert all(k in qc["held_back"] for k in measured)


def test_a_level_where_the_network_hesitates_over_the_sac_is_marked_for_review(tmp_path):
    """The index case's true labels with a dural-sac probability beside them: certain everywhere, every level passes;
    the network undecided (p = 0.5) over the sac within 8 mm of the L4-L5 disc, that level (and only it) is marked
    for review with the reason, and its values still reach the rules (review, not fail)."""
    from pipeline.io.nifti import save_probability

    out = ground_truth_out(tmp_path / "nmh", measure=False)
    d = StudyDir(out)
    reg = registry("spine")
    sag = load_volume(d.spine_labels_sag)
    arr = np.asarray(sag.array)
    sac = arr == reg.label_id("dural_sac")
    save_probability(sag.with_array(sac.astype(np.float32)), d.spine_probability(d.spine_labels_sag))
    stages.measure(out)
    v = _summary(out)
    assert v["spine.qc_status"] == "pass"
    disc = np.argwhere(arr == reg.label_id("disc_L4_L5"))
    z_disc = sag.voxel_to_world(disc)[:, 2].mean()
    idx = np.argwhere(sac)
    near = np.abs(sag.voxel_to_world(idx)[:, 2] - z_disc) <= 8.0
    prob = sac.astype(np.float32)
    prob[tuple(idx[near].T)] = 0.5
    save_probability(sag.with_array(prob), d.spine_probability(d.spine_labels_sag))
    stages.measure(out)
    stages.rules(out)
    v = _summary(out)
    assert v["spine.L4-L5.qc_status"] == "review" and "unsure of the dural sac" in v["spine.L4-L5.qc_reasons"]
    assert all(v[f"spine.{lv}.qc_status"] == "pass" for lv in ("L1-L2", "L2-L3", "L3-L4", "L5-S1"))
    held = json.loads(d.findings.read_text())["quality_control"]["held_back"]
    assert not any(k.startswith("spine.L4-L5.") for k in held)


def test_a_level_whose_axial_and_sagittal_sac_disagree_fails(tmp_path):
    """The index case's true labels with the back 45 % of the dural sac relabelled epidural fat on every axial
    slice: at the three levels measured on axial slices the sac is several millimetres shallower there than on the
    sagittal image, so those levels fail (one of the two segmentations is wrong) and are held back; the two levels
    measured on the sagittal image alone pass."""
    out = ground_truth_out(tmp_path / "nmh", measure=False)
    d = StudyDir(out)
    reg = registry("spine")
    sac, fat = reg.label_id("dural_sac"), reg.label_id("epidural_fat")
    for name in ("labels_ax.nii.gz", "labels_ax_2.nii.gz", "labels_ax_3.nii.gz"):
        vol = load_volume(out / "spine" / name)
        arr = np.asarray(vol.array).copy()
        idx = np.argwhere(arr == sac)
        y = vol.voxel_to_world(idx)[:, 1]  # RAS: posterior is low y
        k = idx[:, 2]
        for s in np.unique(k):
            on = k == s
            cut = y[on].min() + 0.45 * (y[on].max() - y[on].min())
            back = idx[on][y[on] < cut]
            arr[tuple(back.T)] = fat
        save_volume(vol.with_array(arr), out / "spine" / name)
    stages.measure(out)
    stages.rules(out)
    v = _summary(out)
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        assert v[f"spine.{level}.qc_status"] == "fail", level
        assert "on the sagittal image" in v[f"spine.{level}.qc_reasons"] and "apart" in v[f"spine.{level}.qc_reasons"]
    assert v["spine.L1-L2.qc_status"] == v["spine.L2-L3.qc_status"] == "pass"
    held = json.loads(d.findings.read_text())["quality_control"]["held_back"]
    assert any(k.startswith("spine.L4-L5.") for k in held)
