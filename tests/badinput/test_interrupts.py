"""A run that is killed (SIGKILL), interrupted (Ctrl-C, SIGINT) or run twice at once into one output folder leaves
a folder that the next run turns into exactly what a clean run gives: no half-written file survives, no temporary
file is left, and nothing of the interrupted run is mistaken for a result."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.badinput.test_corpus import bases  # noqa: F401  (fixture)

#: Outputs that carry the run's time or fresh UIDs by design (DICOM SEG and SR instance UIDs and dates, the
#: provenance log, the report's "generated at" line); every other file of a run is bit-for-bit reproducible.
TIME_STAMPED = {"calf/seg.dcm", "spine/seg.dcm", "measurements_sr.dcm", "provenance.json", "report.html"}
ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _reproducible(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if k not in TIME_STAMPED}


def _start(study: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "LEGMRI_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(study), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop_when(proc: subprocess.Popen, path: Path, sig: int, timeout_s: float = 300.0) -> tuple[int, str]:
    """Send ``sig`` to ``proc`` as soon as ``path`` exists (mid-run: later stages have not written yet)."""
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {path.name} was written: {proc.communicate()[1][-2000:]}")
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            pytest.fail(f"{path.name} not written within {timeout_s} s")
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def clean(bases, tmp_path_factory) -> dict[str, str]:  # noqa: F811
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(["run", str(bases["nifti"]), "--out", str(out)]) == 0
    return _tree(out)


def test_interrupted_then_killed_run_is_mended_by_the_next_run(bases, clean, tmp_path):  # noqa: F811
    study, out = bases["nifti"], tmp_path / "out"
    inputs = _tree(study)
    # each signal goes in as soon as a stage's output appears, with the longest stages still to run (segmentation
    # after ingest; measure and report after segmentation), so that a loaded machine that is slow to poll still
    # delivers it mid-run
    code, err = _stop_when(_start(study, out), out / "series.json", signal.SIGINT)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not (out / "summary.json").exists()  # nothing downstream of the interruption looks like a result
    code, _ = _stop_when(_start(study, out), out / "calf" / "labels.nii.gz", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert main(["run", str(study), "--out", str(out)]) == 0
    after = _tree(out)
    assert set(after) == set(clean)  # no temporary file, no leftover of the killed runs
    assert _reproducible(after) == _reproducible(clean)
    assert _tree(study) == inputs


def test_two_runs_at_once_into_one_folder_end_clean(bases, clean, tmp_path):  # noqa: F811
    study, out = bases["nifti"], tmp_path / "out"
    procs = [_start(study, out) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for err in errors]
    after = _tree(out)
    assert set(after) == set(clean)
    assert _reproducible(after) == _reproducible(clean)


def test_a_ctrl_c_that_a_library_swallows_still_stops_the_run(bases, tmp_path, monkeypatch):  # noqa: F811
    """Code that catches every exception (a bare ``except:`` around an optional import, say) can swallow the
    KeyboardInterrupt of a Ctrl-C: the run must still stop with 130 before the next stage writes anything."""
    from pipeline.workflow import stages

    real_ingest = stages.ingest

    def ingest_swallowing_a_ctrl_c(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
        except BaseException:  # noqa: BLE001  the library's bare except
            pass
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(stages, "ingest", ingest_swallowing_a_ctrl_c)
    out = tmp_path / "out"
    assert main(["run", str(bases["nifti"]), "--out", str(out)]) == 130
    assert (out / "series.json").exists() and not (out / "calf").exists() and not (out / "summary.json").exists()
