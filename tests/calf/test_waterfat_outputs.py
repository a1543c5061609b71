"""The fat-fraction map of a study: written from multi-echo calf echoes or from Dixon water/fat images, before and
whatever becomes of segmentation (workflow/calf.py fit_water_fat)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.calf.waterfat import fat_phasors
from pipeline.core.layout import StudyDir
from pipeline.io.nifti import load_volume
from pipeline.io.study import ingest_study
from pipeline.workflow.calf import fit_water_fat

TES = (3.45, 4.60, 5.75)
AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])


@pytest.fixture
def saved_names(monkeypatch) -> list[str]:
    """The names of the files the calf workflow saves as volumes, in order (``save_volume`` counted)."""
    from pipeline.io import nifti
    from pipeline.workflow import calf

    names: list[str] = []
    real_save = nifti.save_volume

    def counting_save(volume, path, dtype=None):
        names.append(Path(path).name)
        return real_save(volume, path, dtype)

    monkeypatch.setattr(calf, "save_volume", counting_save)
    return names


def _truth() -> tuple[np.ndarray, np.ndarray]:
    """FF and R2* of a 40 x 30 x 3 block: muscle (FF 5 %, R2* 35 1/s) with a marrow-like disc of nearly pure fat."""
    x, y = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    disc = (x - 20) ** 2 + (y - 15) ** 2 < 36
    ff = np.where(disc, 0.99, 0.05)[:, :, None].repeat(3, axis=2)
    r2 = np.where(disc, 60.0, 35.0)[:, :, None].repeat(3, axis=2)
    return ff, r2


def _echo_study(tmp_path: Path, ff: np.ndarray | None = None, r2: np.ndarray | None = None, seed: int = 0) -> Path:
    """Three magnitude echoes (TES, 3 T) of the FF and R2* maps (default :func:`_truth`) with Rician noise, padded
    by 6 empty voxels in-plane, as a NIfTI study folder."""
    if ff is None or r2 is None:
        ff, r2 = _truth()
    te = np.asarray(TES) * 1e-3
    sig = 1000.0 * np.abs((1 - ff)[..., None] + ff[..., None] * fat_phasors(te, 3.0)) * np.exp(-r2[..., None] * te)
    sig = np.pad(sig, ((6, 6), (6, 6), (0, 0), (0, 0)))  # empty background around the tissue
    rng = np.random.default_rng(seed)
    study = tmp_path / "study"
    study.mkdir()
    lines = ["series:"]
    for n, t in enumerate(TES):
        noisy = np.abs(sig[..., n] + 5.0 * (rng.standard_normal(sig.shape[:3]) + 1j * rng.standard_normal(sig.shape[:3])))
        nib.save(nib.Nifti1Image(noisy.astype(np.float32), AFFINE), str(study / f"echo{n}.nii.gz"))
        lines.append(f"  - {{file: echo{n}.nii.gz, role: calf_echo, echo_time_ms: {t}, field_strength_t: 3.0}}")
    (study / "study.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return study


def test_echo_study_gets_ff_and_r2star_maps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest_study(_echo_study(tmp_path), out)
    facts = fit_water_fat(StudyDir(out))
    assert facts["status"] == "fitted" and facts["limits"]
    d = StudyDir(out)
    ff = load_volume(d.calf_ff_map).array[6:-6, 6:-6]
    r2 = load_volume(d.calf_r2star_map).array[6:-6, 6:-6]
    truth_ff, truth_r2 = _truth()
    muscle, fat = truth_ff < 0.5, truth_ff > 0.5
    assert abs(np.median(ff[muscle]) - 5.0) < 1.0
    assert abs(np.median(ff[fat]) - 99.0) < 2.0
    assert abs(np.median(r2[muscle]) - 35.0) < 5.0
    assert d.calf_water_fit.exists() and d.calf_fat_fit.exists()
    prov = json.loads(d.provenance.read_text(encoding="utf-8"))
    assert prov["water_fat"]["field_strength_t"] == 3.0 and prov["water_fat"]["limits"]


def test_a_t1_weighted_acquisition_states_its_bias_in_provenance(tmp_path: Path) -> None:
    """With TR and flip angle known (TR 23 ms, 5 degrees at 3 T, the real calf study's protocol) provenance says how
    far the fitted FF reads above the proton-density FF; without them it says nothing of it."""
    study = _echo_study(tmp_path)
    spec = (study / "study.yaml").read_text(encoding="utf-8")
    (study / "study.yaml").write_text(spec.replace("field_strength_t: 3.0}", "field_strength_t: 3.0, "
                                                   "repetition_time_ms: 23, flip_angle_deg: 5}"), encoding="utf-8")
    out = tmp_path / "out"
    ingest_study(study, out)
    facts = fit_water_fat(StudyDir(out))
    t1 = facts["t1_weighting"]
    assert t1["repetition_time_ms"] == 23 and 1.1 < t1["fat_to_water_signal_weight"] < 1.25
    assert 20.0 < t1["ff_pct_read_at_pdff_pct"]["20"] < 24.0
    assert any("T1 weighting" in x for x in facts["limits"])
    other = tmp_path / "other"
    other.mkdir()
    plain = tmp_path / "out_plain"
    ingest_study(_echo_study(other), plain)
    facts = fit_water_fat(StudyDir(plain))
    assert facts["t1_weighting"] is None and not any("T1 weighting" in x for x in facts["limits"])


def test_water_fat_study_gets_ff_map(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    water = np.full((10, 8, 3), 90.0, np.float32)
    fat = np.full((10, 8, 3), 10.0, np.float32)
    nib.save(nib.Nifti1Image(water, AFFINE), str(study / "w.nii.gz"))
    nib.save(nib.Nifti1Image(fat, AFFINE), str(study / "f.nii.gz"))
    (study / "study.yaml").write_text("series:\n  - {file: w.nii.gz, role: calf_water}\n"
                                      "  - {file: f.nii.gz, role: calf_fat}\n", encoding="utf-8")
    out = tmp_path / "out"
    ingest_study(study, out)
    facts = fit_water_fat(StudyDir(out))
    assert facts["status"] == "ff map"
    np.testing.assert_allclose(load_volume(StudyDir(out).calf_ff_map).array, 10.0, atol=1e-4)


def test_segmented_fat_takes_the_fat_branch_and_muscle_keeps_its_own(tmp_path: Path) -> None:
    """Three magnitude echoes of muscle (FF 5 %) around a block of subcutaneous-like fat (FF 88 %): the echoes
    alone cannot tell 88 % from its alias and the fit reads the fat far below 50 %; once the segmentation labels the
    block subcutaneous fat, the map there is the fat branch's own fit (88 %), and every muscle voxel is unchanged."""
    from pipeline.core.labels import registry
    from pipeline.core.volume import Volume
    from pipeline.workflow.calf import _fit_water_fat, with_tissue_dominance

    x, y = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    fat = (np.abs(x - 20) < 8) & (np.abs(y - 15) < 6)
    ff = np.where(fat, 0.88, 0.05)[:, :, None].repeat(3, axis=2)
    out = tmp_path / "out"
    ingest_study(_echo_study(tmp_path, ff, np.full(ff.shape, 35.0), seed=1), out)
    d = StudyDir(out)
    facts, fit = _fit_water_fat(d)
    assert facts["status"] == "fitted" and fit is not None
    block = np.pad(fat[:, :, None].repeat(3, axis=2), ((6, 6), (6, 6), (0, 0)))
    tissue = np.pad(np.ones(fat.shape + (3,), bool), ((6, 6), (6, 6), (0, 0)))
    muscle = tissue & ~block
    before = load_volume(d.calf_ff_map).array
    assert np.median(before[block]) < 50.0  # the alias: what the echoes alone give
    reg = registry("calf")
    labels = np.where(block, reg.sided_id("subcutaneous_fat", "left"),
                      np.where(muscle, reg.sided_id("soleus", "left"), 0)).astype(np.int16)
    sure = Volume(np.zeros(labels.shape, np.float32), fit.grid.affine)
    dominant, note = with_tissue_dominance(fit, Volume(labels, fit.grid.affine), sure,
                                           ["subcutaneous_fat", "tibia", "fibula"], 0.2)
    after = (100.0 * dominant.maps.ff).astype(np.float32)  # as calf/ff_map.nii.gz holds it
    assert note and "subcutaneous_fat" in note
    assert abs(np.median(after[block]) - 88.0) < 3.0
    np.testing.assert_array_equal(after[muscle], before[muscle])
    assert abs(np.median(after[muscle]) - 5.0) < 1.0
    assert with_tissue_dominance(fit, Volume(labels, fit.grid.affine), sure, [], 0.2) == (fit, None)
    unsure = Volume(np.full(labels.shape, 0.5, np.float32), fit.grid.affine)  # a label the network doubts: no change
    doubted, _ = with_tissue_dominance(fit, Volume(labels, fit.grid.affine), unsure, ["subcutaneous_fat"], 0.2)
    assert np.median(100.0 * doubted.maps.ff[block]) < 50.0 < np.median(after[block])


def test_in_and_opposed_phase_map_reads_segmented_fat_as_fat(tmp_path: Path) -> None:
    """In-phase + opposed-phase magnitudes give FF or 1 - FF; the map reads water-dominant (a block of 88 % fat as
    12 %) until the segmentation labels the block subcutaneous fat; muscle (5 %) is untouched, no R2* map appears."""
    from pipeline.core.labels import registry
    from pipeline.core.volume import Volume
    from pipeline.workflow.calf import _fit_water_fat, with_tissue_dominance

    x, y = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    fat = ((np.abs(x - 20) < 8) & (np.abs(y - 15) < 6))[:, :, None].repeat(3, axis=2)
    ff = np.where(fat, 0.88, 0.05)
    study = tmp_path / "study"
    study.mkdir()
    for name, sig in (("ip", 1000.0 * np.ones_like(ff)), ("op", 1000.0 * np.abs(1 - 2 * ff))):
        nib.save(nib.Nifti1Image(sig.astype(np.float32), AFFINE), str(study / f"{name}.nii.gz"))
    (study / "study.yaml").write_text("series:\n  - {file: ip.nii.gz, role: calf_inphase}\n"
                                      "  - {file: op.nii.gz, role: calf_outphase}\n", encoding="utf-8")
    out = tmp_path / "out"
    ingest_study(study, out)
    d = StudyDir(out)
    facts, fit = _fit_water_fat(d)
    assert facts["status"] == "ff map" and fit is not None and not fit.fitted
    before = load_volume(d.calf_ff_map).array
    np.testing.assert_allclose(before[fat], 12.0, atol=0.01)
    reg = registry("calf")
    labels = np.where(fat, reg.sided_id("subcutaneous_fat", "right"), reg.sided_id("soleus", "right")).astype(np.int16)
    sure = Volume(np.zeros(ff.shape, np.float32), fit.grid.affine)
    dominant, note = with_tissue_dominance(fit, Volume(labels, fit.grid.affine), sure, ["subcutaneous_fat"], 0.2)
    assert note
    after = (100.0 * dominant.maps.ff).astype(np.float32)  # as calf/ff_map.nii.gz holds it
    np.testing.assert_allclose(after[fat], 88.0, atol=0.01)
    np.testing.assert_array_equal(after[~fat], before[~fat])
    assert not d.calf_r2star_map.exists()


def test_a_computed_map_is_written_once_even_when_no_calf_is_segmented(tmp_path: Path, saved_names: list[str]) -> None:
    """Three echoes of a block of 40 x 30 x 3 voxels, too small for a calf: no calf comes of it (the segment stage
    segments nothing, or what it labels fails the calf QC as not a calf), and the fitted FF and R2* maps are there
    all the same, each written once."""
    from pipeline.workflow import stages

    study = _echo_study(tmp_path)
    out = tmp_path / "out"
    stages.ingest(study, out)
    stages.segment(out)
    d = StudyDir(out)
    if json.loads(d.segment_record.read_text())["calf"]["status"] == "segmented":
        stages.measure(out)
        values = json.loads((out / "summary.json").read_text())["values"]
        assert values["calf.qc_status"] == "fail" and "not a calf" in values["calf.qc_reasons"]
    assert d.calf_ff_map.exists() and d.calf_r2star_map.exists()
    assert saved_names.count(d.calf_ff_map.name) == 1 and saved_names.count(d.calf_r2star_map.name) == 1
    ff = load_volume(d.calf_ff_map).array
    assert abs(float(np.median(ff[6:-6, 6:-6][:5, :5])) - 5.0) < 2.0  # a muscle corner of the block


def test_the_in_and_opposed_phase_map_of_a_segmented_calf_is_written_once_with_fat_read_as_fat(
        tmp_path: Path, saved_names: list[str]) -> None:
    """A small in-phase + opposed-phase calf phantom through the segment stage: the FF map is written once, after the
    segmentation has put the subcutaneous fat on the fat-dominant branch (read > 50 % there)."""
    from pipeline.core.labels import registry
    from pipeline.synth.calf import CalfSpec, generate_calf
    from pipeline.workflow import stages

    ph = generate_calf(CalfSpec(n_slices=6, slice_mm=8.0, in_plane_mm=1.5), seed=3, fast=True)
    study = tmp_path / "study"
    study.mkdir()
    for role in ("calf_inphase", "calf_outphase"):
        v = ph.volume(role)
        nib.save(nib.Nifti1Image(np.asarray(v.array, np.float32), v.affine), str(study / f"{role}.nii.gz"))
    (study / "study.yaml").write_text("series:\n  - {file: calf_inphase.nii.gz, role: calf_inphase}\n"
                                      "  - {file: calf_outphase.nii.gz, role: calf_outphase}\n", encoding="utf-8")
    out = tmp_path / "out"
    stages.ingest(study, out)
    stages.segment(out)
    d = StudyDir(out)
    assert json.loads(d.segment_record.read_text())["calf"]["status"] == "segmented"
    assert saved_names.count(d.calf_ff_map.name) == 1
    labels = load_volume(d.calf_labels).array
    reg = registry("calf")
    sc = np.isin(labels, [lab.id for lab in reg.labels if lab.structure == "subcutaneous_fat"])
    assert sc.sum() > 100 and float(np.median(load_volume(d.calf_ff_map).array[sc])) > 50.0


def test_a_three_echo_calf_is_segmented_from_its_fit_and_each_map_written_once(tmp_path: Path,
                                                                              saved_names: list[str]) -> None:
    """Three magnitude echoes of a small calf phantom (its water and fat maps, the fat spectrum, R2* 35 1/s): the
    segment stage segments the calf on the acquired in-phase echo (TE 4.6 ms at 3 T, from the echo time and field;
    not on the fitted water + fat), measures it with the fitted water and fat, and writes each fitted map once."""
    from pipeline.synth.calf import CalfSpec, generate_calf
    from pipeline.workflow import stages

    ph = generate_calf(CalfSpec(n_slices=6, slice_mm=8.0, in_plane_mm=1.5), seed=3, fast=True)
    water, fat = (np.asarray(ph.water_fat[k].array, np.float64) for k in ("water", "fat"))
    affine = ph.water_fat["water"].affine
    te = np.asarray(TES) * 1e-3
    study = tmp_path / "study"
    study.mkdir()
    lines = ["series:"]
    rng = np.random.default_rng(0)
    for n, (t, phasor) in enumerate(zip(te, fat_phasors(te, 3.0))):
        sig = np.abs(water + fat * phasor) * np.exp(-35.0 * t) * 1000.0
        noisy = np.abs(sig + 5.0 * (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape)))
        nib.save(nib.Nifti1Image(noisy.astype(np.float32), affine), str(study / f"echo{n}.nii.gz"))
        lines.append(f"  - {{file: echo{n}.nii.gz, role: calf_echo, echo_time_ms: {TES[n]}, field_strength_t: 3.0}}")
    (study / "study.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    stages.ingest(study, out)
    stages.segment(out)
    d = StudyDir(out)
    record = json.loads(d.segment_record.read_text())["calf"]
    assert record["status"] == "segmented" and "multi-echo fit" in record["inputs"]
    for path in (d.calf_ff_map, d.calf_r2star_map, d.calf_water_fit, d.calf_fat_fit):
        assert saved_names.count(path.name) == 1, path.name
    notes = json.loads((out / "provenance.json").read_text())["notes"]
    assert any("network input: in-phase echo (TE 4.6 ms)" in n for n in notes), notes
