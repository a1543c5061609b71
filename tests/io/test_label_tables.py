"""Label tables beside the label maps: the Slicer table parses as Slicer reads it and names every label id that a
label map holds; the ITK-SNAP table lists the same ids and names."""

from __future__ import annotations

import re

import numpy as np

from pipeline.core.labels import registry
from pipeline.core.layout import StudyDir
from pipeline.io.label_tables import itksnap_label_description, read_slicer_color_table, write_label_tables
from pipeline.io.nifti import load_volume
from pipeline.workflow import stages
from tests.badinput.test_corpus import bases  # noqa: F401  (fixture)


def test_tables_name_every_label_of_both_anatomies():
    for anatomy in ("calf", "spine"):
        reg = registry(anatomy)
        from pipeline.io.label_tables import slicer_color_table

        table = read_slicer_color_table(slicer_color_table(reg))
        assert set(table) == {0, *(lab.id for lab in reg.labels)}
        assert all(table[lab.id][0] == lab.name for lab in reg.labels)
        snap = re.findall(r'^\s*(\d+)\s.*"(.+)"$', itksnap_label_description(reg), re.M)
        assert {int(i): n for i, n in snap if i != "0"} == {lab.id: lab.name for lab in reg.labels}


def test_segment_writes_the_tables_beside_the_calf_labels(bases, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert stages.ingest(bases["nifti"], out) == 0
    stages.segment(out)
    d = StudyDir(out)
    ctbl, snap = d.label_tables("calf")
    table = read_slicer_color_table(ctbl.read_text())
    ids = {int(i) for i in np.unique(np.asarray(load_volume(d.calf_labels).array))}
    assert ids and ids <= set(table) and snap.exists()
    write_label_tables(d, "calf")  # idempotent
    assert read_slicer_color_table(ctbl.read_text()) == table
