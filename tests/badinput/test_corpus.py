"""Every case of the bad-input corpus (tests/badinput/corpus.py) ends with its expected exit code and one error line
that says what was wrong, with no traceback and no measurement written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from pipeline.cli import main
from pipeline.io.study import ingest_study
from tests.badinput.corpus import NIFTI_ROLES, SAMPLE, Case, cases, clean_yaml, header

CASES = cases()


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """The clean bases: the calf Dixon series of the sample control study as DICOM, and as NIfTI + study.yaml."""
    root = tmp_path_factory.mktemp("bases")
    dicom = root / "dicom"
    for folder in sorted((SAMPLE / "DICOM").iterdir()):
        first = next(p for p in folder.iterdir() if p.is_file())
        if pydicom.dcmread(first, stop_before_pixels=True).SeriesDescription.startswith("t1_vibe_dixon_tra_"):
            shutil.copytree(folder, dicom / folder.name)
    nifti = root / "nifti"
    nifti.mkdir()
    ingest_study(dicom, root / "ingested")
    for role in NIFTI_ROLES:
        shutil.copy(root / "ingested" / "volumes" / f"{role}.nii.gz", nifti / f"{role}.nii.gz")
    (nifti / "study.yaml").write_text(clean_yaml())
    return {"dicom": dicom, "nifti": nifti}


def test_the_clean_bases_ingest(bases, tmp_path):
    for name, base in bases.items():
        assert main(["ingest", str(base), "--out", str(tmp_path / name)]) == 0


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 80 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, bases, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(bases[case.base], study, symlinks=True)
    case.mutate(study)
    out = tmp_path / "out"
    code = main([a.format(study=study, out=out) for a in case.command])
    err = capsys.readouterr().err
    assert code == case.exit_code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("legmri ")]
    if case.exit_code == 0:  # an oddity legmri reads as it is
        assert not errors and (out / "series.json").exists()
        return
    assert len(errors) == 1, err
    assert case.fragment.lower() in err.lower(), err
    assert not (out / "summary.json").exists()


def test_a_user_rule_that_would_backtrack_catastrophically_finishes(bases, tmp_path):
    """``^(a+)+$`` against 'aaa...a!' takes exponential time with backtracking engines; with RE2 ingestion finishes
    at once (the same study otherwise takes seconds to ingest)."""
    import time

    study = tmp_path / "study"
    shutil.copytree(bases["dicom"], study)
    header("SeriesDescription", "a" * 60 + "!", "all")(study)
    (study / "series_roles.yaml").write_text(
        "version: 1\nanatomy:\n  - name: calf\n    any: {SeriesDescription: '^(a+)+$'}\n")
    start = time.perf_counter()
    assert main(["ingest", str(study), "--out", str(tmp_path / "out")]) == 0
    assert time.perf_counter() - start < 30


RESOURCE_CASES = ("yaml_bomb", "clinical_bomb", "nifti_huge_header")


@pytest.mark.parametrize("name", RESOURCE_CASES)
def test_resource_bombs_stay_small_and_quick_in_their_own_process(name: str, bases, tmp_path):  # noqa: F811
    """The YAML alias bombs and a NIfTI header declaring 4000^3 voxels, each as its own ``legmri`` process: exit 3
    within 10 s and under 1 GB of peak resident memory (the process's own maximum, from ``wait4``)."""
    import os
    import subprocess
    import sys
    import time

    case = next(c for c in CASES if c.name == name)
    study = tmp_path / "study"
    shutil.copytree(bases[case.base], study, symlinks=True)
    case.mutate(study)
    argv = [a.format(study=study, out=tmp_path / "out") for a in case.command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    assert proc.returncode == 3
    assert usage.ru_maxrss * 1024 < 1e9, f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB"  # ru_maxrss: KiB on Linux
    assert seconds < 10, f"{seconds:.1f} s"
