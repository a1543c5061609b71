"""The series index's view of repeated roles."""

from __future__ import annotations

from pathlib import Path


def test_repeated_roles_are_found_and_said():
    from pipeline.core.layout import SeriesEntry, SeriesIndex

    index = SeriesIndex(None, (SeriesEntry("lumbar_sag_t2", Path("a.nii.gz")), SeriesEntry("lumbar_ax_t2", Path("b")),
                               SeriesEntry("lumbar_ax_t2_2", Path("c")), SeriesEntry("lumbar_sag_t2_2", Path("d")),
                               SeriesEntry("lumbar_sag_t2_x", Path("e")), SeriesEntry("localizer", None)))
    assert index.repeats("lumbar_sag_t2") == ["lumbar_sag_t2_2"]
    assert index.repeats("calf_water") == []
    (warning,) = index.repeat_warnings(["lumbar_sag_t2"], "spine")
    assert "2 series classified lumbar_sag_t2 (lumbar_sag_t2, lumbar_sag_t2_2)" in warning and "spine" in warning
    assert index.repeat_warnings(["calf_water"], "calf") == []
