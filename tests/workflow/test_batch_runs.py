"""legmri batch: a corrupt study is isolated (error.log, index.html, non-zero exit naming it) while the other
studies complete; an unchanged study is skipped on the next run, and rerun with --force or after a config edit."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.config import DEFAULT_CONFIG_DIR
from pipeline.workflow.batch import find_studies, input_fingerprint
from tests.report.study_fixture import corrupt_study, small_study


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "studies"
    small_study(r / "knee_a", 1)
    small_study(r / "knee_b", 2)
    corrupt_study(r / "broken")
    (r / "README.md").write_text("not a study")
    (r / "qa").mkdir()
    return r


def test_find_studies_skips_non_study_folders(root: Path):
    assert [p.name for p in find_studies(root)] == ["broken", "knee_a", "knee_b"]


def test_corrupt_study_is_isolated_and_named(root: Path, tmp_path: Path, capsys, monkeypatch):
    cfg = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    monkeypatch.setenv("LEGMRI_CONFIG_DIR", str(cfg))
    out = tmp_path / "out"
    rc = main(["batch", str(root), "--out", str(out), "-j", "1"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "failed studies: broken" in err
    for ok in ("knee_a", "knee_b"):
        assert (out / ok / "report.html").exists() and (out / ok / "findings.json").exists()
        assert not (out / ok / "error.log").exists()
    assert "broken" in (out / "broken" / "error.log").read_text()
    index = (out / "index.html").read_text()
    assert 'href="./knee_a/report.html"' in index and "broken/error.log" in index
    rows = {r["study"]: r["status"] for r in csv.DictReader(open(out / "cohort.csv"))}
    assert rows == {"broken": "failed", "knee_a": "ok", "knee_b": "ok", "README.md": "not run", "qa": "not run"}

    # second run: the good studies are up to date and skipped, the broken one is retried and fails again
    mtime = (out / "knee_a" / "report.html").stat().st_mtime_ns
    assert main(["batch", str(root), "--out", str(out)]) == 3
    assert "0 run, 2 up to date, 1 failed" in capsys.readouterr().out
    assert (out / "knee_a" / "report.html").stat().st_mtime_ns == mtime

    # an edited configuration reruns the studies
    (cfg / "report.yaml").write_text((cfg / "report.yaml").read_text().replace("dpi: 110", "dpi: 100"))
    shutil.rmtree(root / "broken")
    assert main(["batch", str(root), "--out", str(out)]) == 0
    assert "2 run, 0 up to date, 0 failed" in capsys.readouterr().out
    assert (out / "knee_a" / "report.html").stat().st_mtime_ns > mtime


def test_parallel_workers(root: Path, tmp_path: Path, capsys):
    shutil.rmtree(root / "broken")
    out = tmp_path / "out"
    assert main(["batch", str(root), "--out", str(out), "-j", "2", "--force"]) == 0
    assert (out / "knee_a" / "report.html").exists() and (out / "knee_b" / "report.html").exists()


def test_fingerprint_follows_inputs_and_legmri_version(root: Path, monkeypatch):
    study = root / "knee_a"
    before = input_fingerprint(study)
    assert input_fingerprint(study) == before
    monkeypatch.setattr("pipeline.__version__", "99.0.0")
    upgraded = input_fingerprint(study)
    assert upgraded != before
    victim = next(p for p in sorted(study.rglob("*")) if p.is_file())
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert input_fingerprint(study) != upgraded


def test_every_folder_not_run_is_listed_with_its_reason(tmp_path: Path):
    from pipeline.workflow.batch import not_studies

    root = tmp_path / "root"
    (root / "study_a").mkdir(parents=True)
    (root / "study_a" / "study.yaml").write_text("series: []\n")
    (root / "empty").mkdir()
    (root / ".cache").mkdir()
    (root / "README.md").write_text("notes")
    listed = {r["name"]: r["error"] for r in not_studies(root, find_studies(root))}
    assert listed == {".cache": "hidden", "README.md": "a file, not a study folder",
                      "empty": "holds neither DICOM files nor a study.yaml"}


def test_index_links_are_relative_and_percent_encoded(tmp_path: Path):
    from pipeline.core.config import load_config
    from pipeline.report.html import write_cohort

    name = "javascript:alert(1)"
    (tmp_path / name).mkdir()
    (tmp_path / name / "report.html").write_text("<html></html>")
    rows = [{"name": name, "status": "failed", "error": "bad <b>input</b>"},
            {"name": "empty", "status": "not run", "error": "holds neither DICOM files nor a study.yaml"}]
    html = write_cohort(tmp_path, rows, load_config("report")).read_text()
    assert 'href="javascript' not in html and 'href="./javascript%3Aalert%281%29/error.log"' in html
    assert "<b>input</b>" not in html and "not run: holds neither DICOM files" in html
