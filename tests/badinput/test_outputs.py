"""A run owns its output folder: a rerun leaves only its own files, a folder of other files is refused, and the
inputs are never changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from pipeline.cli import main
from tests.badinput.test_corpus import bases  # noqa: F401  (fixture)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_a_rerun_removes_what_an_earlier_run_left_and_keeps_its_own(bases, tmp_path):  # noqa: F811
    study, out = bases["nifti"], tmp_path / "out"
    before = _tree(study)
    assert main(["run", str(study), "--out", str(out)]) == 0
    first = set(_tree(out))
    for leftover in ("spine/measurements.csv", "qa/spine_axial_L4-L5.png", "calf/old_labels.nii.gz"):
        (out / leftover).parent.mkdir(parents=True, exist_ok=True)
        (out / leftover).write_text("from an earlier run")
    assert main(["run", str(study), "--out", str(out)]) == 0
    second = set(_tree(out))
    assert second == first and not (out / "spine").exists()
    notes = json.loads((out / "provenance.json").read_text())["notes"]
    assert any("removed 3 file(s) of an earlier run" in n for n in notes)
    assert _tree(study) == before


def test_an_out_folder_of_other_files_is_refused(bases, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "documents"
    out.mkdir()
    (out / "thesis.docx").write_text("not legmri's")
    assert main(["run", str(bases["nifti"]), "--out", str(out)]) == 3
    assert "did not write" in capsys.readouterr().err
    assert _tree(out) == {"thesis.docx": hashlib.sha256(b"not legmri's").hexdigest()}


def test_legmri_s_own_seg_in_the_study_folder_is_not_ingested(bases, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert main(["run", str(bases["dicom"]), "--out", str(out)]) == 0
    assert (out / "calf" / "seg.dcm").exists()
    study = tmp_path / "study"
    shutil.copytree(bases["dicom"], study)
    shutil.copy(out / "calf" / "seg.dcm", study / "seg.dcm")
    assert main(["ingest", str(study), "--out", str(tmp_path / "again")]) == 0
    index = json.loads((tmp_path / "again" / "series.json").read_text())
    assert any(s["file"].endswith("seg.dcm") and "segmentation object" in s["reason"] for s in index["skipped"])
    assert sorted(e["role"] for e in index["series"]) == sorted(
        e["role"] for e in json.loads((out / "series.json").read_text())["series"])


def test_a_broken_configuration_stops_the_run_before_any_image_work(bases, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A threshold of the wrong type in a user's qc.yaml (read by the measure stage) stops ``legmri run`` at once,
    naming the file, before ingestion writes anything."""
    from pipeline.core.config import DEFAULT_CONFIG_DIR

    configs = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, configs)
    qc = configs / "qc.yaml"
    qc.write_text(qc.read_text().replace("entropy_fail: 0.2", "entropy_fail: high", 1))
    assert "entropy_fail: high" in qc.read_text()
    monkeypatch.setenv("LEGMRI_CONFIG_DIR", str(configs))
    out = tmp_path / "out"
    assert main(["run", str(bases["nifti"]), "--out", str(out)]) == 3
    assert "qc.yaml" in capsys.readouterr().err
    assert not out.exists()
