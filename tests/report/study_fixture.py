"""A study output folder for report tests: the index-case sample study ingested, its ground-truth label maps in
place of a segmentation (so the picture and the exports have exact known content), measured and ruled."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.workflow import stages

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "nmh_case"
GT_COPIES = {"calf_labels.nii.gz": "calf/labels.nii.gz", "lumbar_sag_t2_labels.nii.gz": "spine/labels_sag.nii.gz",
             "lumbar_ax_t2_labels.nii.gz": "spine/labels_ax.nii.gz",
             "lumbar_ax_t2_2_labels.nii.gz": "spine/labels_ax_2.nii.gz",
             "lumbar_ax_t2_3_labels.nii.gz": "spine/labels_ax_3.nii.gz"}


def ground_truth_out(out: Path, measure: bool = True) -> Path:
    """Ingest the sample index case into ``out`` and put its ground-truth labels where segmentation writes them."""
    stages.ingest(SAMPLE, out)
    for src, dst in GT_COPIES.items():
        (out / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "ground_truth" / src, out / dst)
    if measure:
        stages.measure(out)
        stages.rules(out)
    return out


def small_study(out: Path, seed: int = 0) -> Path:
    """A tiny DICOM study with one knee series (neither calf Dixon nor lumbar): every stage runs quickly and writes
    its contract files with null calf/spine sections, which is what the batch and workflow plumbing tests need."""
    import numpy as np

    from pipeline.core.volume import Volume
    from pipeline.io.dicom_write import SeriesInfo, StudyInfo, write_series

    rng = np.random.default_rng(seed)
    vol = Volume((rng.random((24, 24, 6)) * 100).astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
    write_series(vol, Path(out) / "DICOM", StudyInfo(patient_name="TEST^KNEE"),
                 SeriesInfo(description="t1_tse_cor knee", body_part="KNEE"))
    return Path(out)


def corrupt_study(out: Path) -> Path:
    """A study folder whose DICOM files are cut short after the header (unreadable images)."""
    small_study(out, seed=99)
    for f in (Path(out) / "DICOM").iterdir():
        f.write_bytes(f.read_bytes()[:300])
    return Path(out)


def through_rules(study: Path, out: Path) -> Path:
    """Ingest ``study`` into ``out`` and run segment, measure and rules (the stages the QC tests read)."""
    assert stages.ingest(study, out) == 0
    stages.segment(out)
    stages.measure(out)
    stages.rules(out)
    return out
