"""The reader's level anchor reaches the segment stage: from study.yaml through series.json, or from the command line
(which wins); a malformed anchor is a clear bad-input error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core.errors import BadInputError
from pipeline.core.layout import StudyDir
from pipeline.core.volume import Volume
from pipeline.io.nifti import save_volume
from pipeline.spine.levels import Anchor
from pipeline.workflow import stages
from pipeline.workflow.spine import anchor_of


def _lumbar_study(folder: Path, anchor: str | None) -> Path:
    folder.mkdir(parents=True)
    vol = Volume(np.zeros((12, 40, 40), np.float32), np.diag([3.0, 1.0, 1.0, 1.0]))
    save_volume(vol, folder / "sag.nii.gz")
    lines = ["series:", "  - {file: sag.nii.gz, role: lumbar_sag_t2}"]
    if anchor is not None:
        lines.append(f"spine_anchor_level: '{anchor}'")
    (folder / "study.yaml").write_text("\n".join(lines) + "\n")
    return folder


def test_study_yaml_anchor_is_kept_by_ingest_and_the_command_line_wins(tmp_path):
    study = _lumbar_study(tmp_path / "study", "vertebra_2=L4")
    out = StudyDir(tmp_path / "out")
    assert stages.ingest(study, out.root) == 0
    assert json.loads(out.series_json.read_text())["spine_anchor_level"] == "vertebra_2=L4"
    assert anchor_of(out, None) == Anchor("L4", 2)
    assert anchor_of(out, "L3") == Anchor("L3", 1)


def test_without_an_anchor_there_is_none(tmp_path):
    out = StudyDir(tmp_path / "out")
    assert stages.ingest(_lumbar_study(tmp_path / "study", None), out.root) == 0
    assert "spine_anchor_level" not in json.loads(out.series_json.read_text())
    assert anchor_of(out, None) is None


def test_a_malformed_anchor_is_refused_with_the_fix(tmp_path, capsys):
    bad = _lumbar_study(tmp_path / "bad", "S1")
    assert main(["ingest", str(bad), "--out", str(tmp_path / "o1")]) == 3
    assert "spine_anchor_level" in capsys.readouterr().err
    out = StudyDir(tmp_path / "o2")
    assert stages.ingest(_lumbar_study(tmp_path / "good", None), out.root) == 0
    with pytest.raises(BadInputError, match="vertebra_N=L1"):
        anchor_of(out, "T12")
