"""Core: Volume validation and geometry, side convention, configuration schema errors, atomic writes, summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import atomic
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, InternalError
from pipeline.core.geometry import lps_to_ras_affine, side_of_world_x
from pipeline.core.labels import registry
from pipeline.core.summary import Summary, update_summary_section
from pipeline.core.volume import Volume


def test_volume_rejects_bad_affines_and_arrays():
    with pytest.raises(InternalError, match="4x4"):
        Volume(np.zeros((2, 2, 2)), np.eye(3))
    with pytest.raises(InternalError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(InternalError, match="3-D"):
        Volume(np.zeros((2, 2)), np.eye(4))
    with pytest.raises(InternalError, match="last row"):
        bad = np.eye(4)
        bad[3, 0] = 1
        Volume(np.zeros((2, 2, 2)), bad)


def test_volume_world_roundtrip_oblique():
    rot = np.array([[0.0, -1.0, 0.0], [np.cos(0.3), 0, -np.sin(0.3)], [np.sin(0.3), 0, np.cos(0.3)]])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array([0.7, 0.9, 4.0])
    aff[:3, 3] = [10.0, -20.0, 35.0]
    v = Volume(np.zeros((5, 6, 7), np.float32), aff)
    assert v.spacing_mm == pytest.approx((0.7, 0.9, 4.0))
    assert v.voxel_volume_mm3 == pytest.approx(0.7 * 0.9 * 4.0)
    pts = np.array([[0, 0, 0], [4, 5, 6], [1.5, 2.25, 3.0]])
    assert np.allclose(v.world_to_voxel(v.voxel_to_world(pts)), pts)
    assert np.allclose(v.voxel_to_world([[0, 0, 0]]), [[10.0, -20.0, 35.0]])


def test_lps_to_ras_negates_x_and_y():
    aff_lps = np.eye(4)
    aff_lps[:3, 3] = [5.0, 6.0, 7.0]
    ras = lps_to_ras_affine(aff_lps)
    assert ras[:3, 3].tolist() == [-5.0, -6.0, 7.0]


def test_side_of_world_x():
    assert side_of_world_x(12.0, 0.0) == "right"
    assert side_of_world_x(-12.0, 0.0) == "left"
    assert side_of_world_x(-5.0, -20.0) == "right"
    with pytest.raises(ValueError, match="midline"):
        side_of_world_x(3.0, 3.0)


def test_label_registry_is_consecutive_and_sided():
    calf = registry("calf")
    ids = [lab.id for lab in calf.labels]
    assert ids == list(range(1, len(ids) + 1))
    assert calf.classes[0] == "background"
    gm_l, gm_r = calf.sided_id("gastrocnemius_medial", "left"), calf.sided_id("gastrocnemius_medial", "right")
    assert (gm_l, gm_r) == (1, 2)
    assert set(calf.groups()["triceps_surae"]) == {"gastrocnemius_medial", "gastrocnemius_lateral", "soleus"}
    spine = registry("spine")
    assert "disc_L4_L5" in [lab.name for lab in spine.labels]


def test_config_error_names_file_and_key(tmp_path: Path):
    bad = tmp_path / "labels.yaml"
    bad.write_text("version: 1\ncalf:\n  structures:\n    - {name: Bad Name, kind: muscle}\nspine: {structures: []}\n")
    with pytest.raises(ConfigError) as exc:
        load_config("labels", bad)
    msg = str(exc.value)
    assert str(bad) in msg and "calf.structures[0].name" in msg and "spine.structures" in msg


def test_a_default_yaml_without_keys_read_without_a_default_is_refused(tmp_path: Path):
    """A configuration folder from an older legmri lacks the calf fold keys: refused with the file and key named,
    not a KeyError in the segment stage."""
    import yaml

    from pipeline.core.config import DEFAULT_CONFIG_DIR

    data = yaml.safe_load((DEFAULT_CONFIG_DIR / "default.yaml").read_text())
    del data["calf"]["fold_gastrocnemius_return_fraction"]
    old = tmp_path / "default.yaml"
    old.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_config("default", old)
    assert str(old) in str(exc.value) and "fold_gastrocnemius_return_fraction" in str(exc.value)


def test_a_whole_configuration_folder_from_an_older_legmri_is_refused(tmp_path: Path):
    """A copy of configs/ made by an older legmri carries its own schemas, which do not ask for the keys this
    version reads: the folder is still refused against this legmri's schema, with the file and key named."""
    import shutil

    import yaml

    from pipeline.core.config import DEFAULT_CONFIG_DIR

    old = tmp_path / "configs"
    shutil.copytree(DEFAULT_CONFIG_DIR, old)
    for name, section, key in (("qc.yaml", "spine", "sac_entropy_review"),
                               ("schemas/qc.schema.yaml", None, "sac_entropy_review")):
        path = old / name
        if section:
            data = yaml.safe_load(path.read_text())
            del data[section][key]
            path.write_text(yaml.safe_dump(data))
        else:
            path.write_text(path.read_text().replace(f", {key}]", "]"))
    assert "sac_entropy_review]" not in (old / "schemas/qc.schema.yaml").read_text()
    with pytest.raises(ConfigError) as exc:
        load_config("qc", old / "qc.yaml")
    assert str(old / "qc.yaml") in str(exc.value) and "sac_entropy_review" in str(exc.value)


def test_config_yaml_syntax_error_names_line(tmp_path: Path):
    bad = tmp_path / "labels.yaml"
    bad.write_text("version: 1\ncalf: [\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config("labels", bad)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "x.json"
    atomic.write_json(target, {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(target.read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "y.nii.gz") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_summary_nulls_need_reason(tmp_path: Path):
    s = Summary()
    with pytest.raises(InternalError, match="without a reason"):
        s.set("calf.x_ml", None)
    s.set("calf.x_ml", float("nan"), "not measurable: muscle absent")
    s.set("calf.y_ml", np.float64(2.0))
    update_summary_section(tmp_path, "calf", s)
    spine = Summary()
    spine.set_null("spine.L4-L5.dsca_mm2", "no lumbar series")
    merged = update_summary_section(tmp_path, "spine", spine)
    assert merged.values["calf.y_ml"] == 2.0
    assert merged.missing == {"calf.x_ml": "not measurable: muscle absent", "spine.L4-L5.dsca_mm2": "no lumbar series"}


def test_atomic_dir_replaces_the_folder_on_success_only(tmp_path):
    import pytest

    from pipeline.core.atomic import atomic_dir

    target = tmp_path / "study"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no temporary folder left
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
