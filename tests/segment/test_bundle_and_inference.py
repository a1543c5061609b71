"""Bundle verification and the whole inference path with a tiny random-weight network; orientation invariance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.errors import BundleError
from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.segment.bundle import BundleCache, load_bundle
from pipeline.segment.train import TrainConfig, write_bundle


def _tiny_cfg(name: str = "tiny") -> TrainConfig:
    return TrainConfig(name=name, anatomy="calf", labels=list(registry("calf").classes),
                       input_channels=["water", "fat"], channels=(4, 8), strides=(2,), num_res_units=0,
                       target_spacing_mm=(1.5, 1.5))


@pytest.fixture()
def tiny_bundle(tmp_path: Path) -> Path:
    from pipeline.segment.bundle import build_network
    from pipeline.segment.train import _metadata

    torch.manual_seed(0)
    cfg = _tiny_cfg()
    net = build_network(_metadata(cfg, "", {}))
    write_bundle(tmp_path / "tiny", cfg, {k: v.contiguous() for k, v in net.state_dict().items()}, {})
    return tmp_path / "tiny"


def test_bundle_loads_and_is_cached(tiny_bundle: Path):
    b = load_bundle(tiny_bundle)
    assert b.classes == list(registry("calf").classes)
    cache = BundleCache()
    assert cache.get(str(tiny_bundle)) is cache.get(str(tiny_bundle))


def test_corrupt_weights_are_refused(tiny_bundle: Path):
    w = tiny_bundle / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tiny_bundle)


def test_wrong_labels_are_refused(tiny_bundle: Path):
    meta_path = tiny_bundle / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["labels"] = meta["labels"][:-1] + ["skin"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="labels.yaml"):
        load_bundle(tiny_bundle)


def test_missing_bundle_names_the_fix(tmp_path: Path):
    with pytest.raises(BundleError, match="legmri train"):
        load_bundle(tmp_path / "nowhere")


def _study(shape=(40, 30, 6)) -> tuple[Volume, Volume]:
    rng = np.random.default_rng(0)
    aff = np.diag([0.9, 0.9, 5.0, 1.0])
    aff[:3, 3] = [-20, 10, 30]
    w = Volume(rng.uniform(0, 500, shape).astype(np.float32), aff)
    return w, w.with_array(rng.uniform(0, 300, shape).astype(np.float32))


def test_inference_path_returns_classes_on_the_input_grid(tiny_bundle: Path):
    b = load_bundle(tiny_bundle)
    w, f = _study()
    out = b.predict([w, f])
    assert out.shape == w.shape and np.allclose(out.affine, w.affine)
    assert out.array.dtype == np.uint8 and out.array.max() < len(b.classes)


def _reoriented(v: Volume, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Volume:
    """The same image stored with permuted/flipped array axes (world positions unchanged)."""
    arr = np.transpose(v.array, perm)
    aff = v.affine.copy()
    aff[:, :3] = v.affine[:, list(perm)]
    for ax, fl in enumerate(flips):
        if fl:
            n = arr.shape[ax]
            arr = np.flip(arr, axis=ax)
            aff[:3, 3] = aff[:3, 3] + aff[:3, ax] * (n - 1)
            aff[:3, ax] = -aff[:3, ax]
    return Volume(np.ascontiguousarray(arr), aff)


@pytest.mark.parametrize("perm,flips", [((0, 1, 2), (True, True, False)), ((1, 0, 2), (False, False, True)),
                                        ((2, 0, 1), (False, True, True))])
def test_any_array_orientation_gives_the_same_labels_in_world_space(tiny_bundle: Path, perm, flips):
    b = load_bundle(tiny_bundle)
    w, f = _study()
    ref = b.predict([w, f])
    w2, f2 = _reoriented(w, perm, flips), _reoriented(f, perm, flips)
    assert not np.allclose(w2.affine, w.affine)
    out = b.predict([w2, f2])
    pts = np.argwhere(np.ones(w.shape, bool))
    back = np.rint(out.world_to_voxel(w.voxel_to_world(pts))).astype(int)
    same = out.array[tuple(back.T)] == ref.array[tuple(pts.T)]
    assert same.mean() == 1.0


def test_cuda_request_without_cuda_is_a_clear_error(tiny_bundle: Path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BundleError, match="CUDA"):
        load_bundle(tiny_bundle, device="cuda")


def test_msd_dataset_reader(tmp_path: Path):
    import nibabel as nib

    from pipeline.segment.data import read_msd_dataset

    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    aff = np.diag([1.0, 1.0, 4.0, 1.0])
    for c in range(2):
        nib.save(nib.Nifti1Image(np.full((8, 8, 3), c + 1.0, np.float32), aff), root / "imagesTr" / f"a_{c:04d}.nii.gz")
    lab = np.zeros((8, 8, 3), np.uint8)
    lab[2:4, 2:4] = 7
    nib.save(nib.Nifti1Image(lab, aff), root / "labelsTr" / "a.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "water", "1": "fat"},
                                                   "labels": {"background": 0, "soleus_right": 7}}))
    classes = list(registry("calf").classes)
    (ch, cl), = read_msd_dataset(root, classes, ["water", "fat"])
    assert ch[1].array.max() == 2.0 and set(np.unique(cl.array)) == {0, classes.index("soleus")}
    shutil.rmtree(root / "labelsTr")
    (root / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(lab, aff), root / "labelsTr" / "a.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "water", "1": "fat"},
                                                   "labels": {"background": 0, "skin": 7}}))
    from pipeline.core.errors import BadInputError

    with pytest.raises(BadInputError, match="skin"):
        read_msd_dataset(root, classes, ["water", "fat"])


def _tiny_bundle(path: Path, seed: int, cfg: TrainConfig | None = None) -> Path:
    from pipeline.segment.bundle import build_network
    from pipeline.segment.train import _metadata

    torch.manual_seed(seed)
    cfg = cfg or _tiny_cfg()
    net = build_network(_metadata(cfg, "", {}))
    return write_bundle(path, cfg, {k: v.contiguous() for k, v in net.state_dict().items()}, {})


def test_an_ensemble_bundle_averages_its_members_probabilities(tmp_path: Path):
    """The ensemble's probability of every class is the mean of its members' (input on the bundle's own 1.5 mm
    grid, so that no resampling stands between them), its class map is the arg max of that mean, and it verifies
    and records its members like any bundle."""
    from pipeline.segment.bundle import write_ensemble

    a, b = _tiny_bundle(tmp_path / "a", 1), _tiny_bundle(tmp_path / "b", 2, _tiny_cfg("other_name"))
    ens = load_bundle(write_ensemble([a, b], tmp_path / "ens", "2.0.0"))
    assert ens.metadata["network"]["ensemble_members"] == 2 and ens.name == "ens"
    assert [m["name"] for m in ens.metadata["training"]["ensemble_of"]] == ["tiny", "other_name"]
    assert [m["sha256"] for m in ens.metadata["training"]["ensemble_of"]] == [load_bundle(a).sha256,
                                                                             load_bundle(b).sha256]
    rng = np.random.default_rng(3)
    aff = np.diag([1.5, 1.5, 5.0, 1.0])
    w = Volume(rng.uniform(0, 500, (32, 32, 4)).astype(np.float32), aff)
    f = w.with_array(rng.uniform(0, 300, (32, 32, 4)).astype(np.float32))
    classes = ens.classes
    members = [load_bundle(p).predict_soft([w, f], classes)[1] for p in (a, b)]
    labels, soft = ens.predict_soft([w, f], classes)
    mean = np.stack([np.mean([np.asarray(m[c].array) for m in members], axis=0) for c in classes])
    assert np.allclose(np.stack([np.asarray(soft[c].array) for c in classes]), mean, atol=1e-5)
    assert (np.asarray(labels.array) == mean.argmax(axis=0)).mean() > 0.999
    # and it differs from either member alone: the test would catch an ensemble that used one member only
    assert not np.allclose(np.asarray(members[0][classes[1]].array), mean[1], atol=1e-3)


def test_an_ensemble_refuses_members_of_another_network_and_cannot_start_training(tmp_path: Path):
    from pipeline.segment.bundle import build_network, write_ensemble
    from pipeline.segment.train import _metadata, initial_weights

    a = _tiny_bundle(tmp_path / "a", 1)
    wider = _tiny_bundle(tmp_path / "wide", 2, TrainConfig(
        name="tiny", anatomy="calf", labels=list(registry("calf").classes), input_channels=["water", "fat"],
        channels=(4, 16), strides=(2,), num_res_units=0, target_spacing_mm=(1.5, 1.5)))
    with pytest.raises(BundleError, match="network"):
        write_ensemble([a, wider], tmp_path / "ens", "2.0.0")
    with pytest.raises(BundleError, match="at least two"):
        write_ensemble([a], tmp_path / "ens", "2.0.0")
    ens = write_ensemble([a, _tiny_bundle(tmp_path / "b", 2)], tmp_path / "ens", "2.0.0")
    with pytest.raises(BundleError, match="one network"):
        write_ensemble([ens, a], tmp_path / "ens2", "3.0.0")
    meta = _metadata(_tiny_cfg(), "", {})
    with pytest.raises(BundleError, match="--init-member"):
        initial_weights(build_network(meta), meta, str(ens))
    with pytest.raises(BundleError, match="ensemble bundles only"):
        initial_weights(build_network(meta), meta, str(a), member=0)


def test_training_starts_from_the_named_member_of_an_ensemble(tmp_path: Path):
    from pipeline.segment.bundle import build_network, write_ensemble
    from pipeline.segment.train import _metadata, initial_weights

    a, b = _tiny_bundle(tmp_path / "a", 1), _tiny_bundle(tmp_path / "b", 2)
    ens = write_ensemble([a, b], tmp_path / "ens", "2.0.0")
    meta = _metadata(_tiny_cfg(), "", {})
    for k, member in enumerate((a, b)):
        net = build_network(meta)
        record = initial_weights(net, meta, str(ens), member=k)
        assert record["member"] == k and record["version"] == "2.0.0"
        want = load_bundle(member).network.state_dict()
        assert all(torch.equal(v, want[key]) for key, v in net.state_dict().items())


def test_ensemble_command(tmp_path: Path, capsys):
    from pipeline.cli import main

    a, b = _tiny_bundle(tmp_path / "a", 1), _tiny_bundle(tmp_path / "b", 2)
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens"), "--bundle-version", "2.0.0",
                 "--mirror-axes", "0"]) == 0
    meta = load_bundle(tmp_path / "ens").metadata
    assert meta["version"] == "2.0.0" and meta["inference"]["mirror_axes"] == [0]
    assert main(["ensemble", str(a), "--out", str(tmp_path / "one"), "--bundle-version", "2.0.0"]) != 0
    assert "at least two" in capsys.readouterr().err
    assert not (tmp_path / "one" / "model.safetensors").exists()
