"""scripts/screenshots.py: the report of the index-case sample study rendered by headless Chromium at 1280 px shows
its QC verdict boxes on the first screen (skipped where Chromium is not installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.workflow import stages
from tests.report.study_fixture import ground_truth_out
from tests.scripts_module import load_script

shots = load_script("screenshots")
needs_browser = pytest.mark.skipif(shots.find_browser() is None, reason="Chromium not installed")


@needs_browser
def test_the_first_screen_of_a_report_shows_the_qc_verdicts(tmp_path: Path):
    out = ground_truth_out(tmp_path / "nmh")
    assert stages.report(out) == 0
    assert shots.main([str(out), "--dest", str(tmp_path / "png"), "--page-height", "1800"]) == 0
    first = np.asarray(Image.open(tmp_path / "png" / "report_first_screen.png").convert("RGB")).astype(int)
    page = Image.open(tmp_path / "png" / "report_page.png")
    assert first.shape[:2] == (900, 1280) and page.size == (1280, 1800)
    # the verdict boxes (".qc-pass" background #e6f4e6) lie in the top third of the first screen
    green = np.abs(first - np.array([0xE6, 0xF4, 0xE6])).sum(axis=-1) < 4
    rows = np.nonzero(green.any(axis=1))[0]
    assert rows.size and rows.min() < 300 and green.sum() > 20000


def test_a_folder_without_pages_is_refused(tmp_path: Path, capsys):
    if shots.find_browser() is None:
        assert shots.main([str(tmp_path)]) == 3 and "Chromium" in capsys.readouterr().err
        return
    assert shots.main([str(tmp_path)]) == 3
    assert "no index.html or report.html" in capsys.readouterr().err
