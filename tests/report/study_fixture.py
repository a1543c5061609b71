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
