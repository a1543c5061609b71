"""A scanner fat-fraction map is stored in percent at ingestion, whatever scale the scanner wrote; the resolved
configuration and its hash are recorded in provenance.json by every stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.config import config_hash, load_config
from pipeline.core.layout import StudyDir
from pipeline.core.provenance import load_provenance
from pipeline.core.volume import Volume
from pipeline.io.ffscale import ff_map_in_percent
from pipeline.io.nifti import load_volume, save_volume
from pipeline.workflow import stages


def _ff(scale: float) -> Volume:
    rng = np.random.default_rng(0)
    return Volume((rng.random((12, 10, 6)) * scale).astype(np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))


@pytest.mark.parametrize("scale,factor", [(1.0, 100.0), (100.0, 1.0), (1000.0, 0.1)])
def test_every_scanner_scale_becomes_percent(scale: float, factor: float):
    vol, applied = ff_map_in_percent(_ff(scale))
    assert applied == factor
    assert 90.0 < float(np.percentile(vol.array, 99.9)) <= 100.0


def test_ingest_stores_a_fraction_map_in_percent_and_records_the_configuration(tmp_path: Path):
    study = tmp_path / "study"
    study.mkdir()
    fraction = _ff(1.0)
    save_volume(fraction, study / "ff.nii.gz")
    save_volume(fraction.with_array(np.full(fraction.shape, 100.0, np.float32)), study / "water.nii.gz")
    (study / "study.yaml").write_text(yaml.safe_dump({"series": [{"file": "ff.nii.gz", "role": "calf_ffmap"},
                                                                 {"file": "water.nii.gz", "role": "calf_water"}]}))
    out = StudyDir(tmp_path / "out")
    assert stages.ingest(study, out.root) == 0
    stored = load_volume(out.series().volume("calf_ffmap"))
    assert np.allclose(stored.array, np.asarray(fraction.array) * 100.0, atol=1e-3)
    prov = load_provenance(out.root)
    assert any("stored in percent" in n for n in prov["notes"])
    assert prov["configs"]["default"]["sha256"] == config_hash(load_config("default"))
    assert prov["configs"]["default"]["resolved"] == load_config("default")
    assert set(prov["configs"]) >= set(stages.STAGE_CONFIGS["ingest"])
