"""Batch-wise inference (class map and the requested probability maps reduced batch by batch) gives what the whole
probability volume gives: a straightforward reference (all S x K maps, then torch.argmax) is kept here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.labels import registry
from pipeline.core.volume import Volume
from pipeline.segment import infer
from pipeline.segment.bundle import build_network, set_threads_once
from pipeline.segment.train import TrainConfig, _metadata


class _Bundle:
    """The parts of a bundle inference reads, around a tiny random-weight network."""

    def __init__(self, mirror_axes: tuple[int, ...] = ()):
        torch.manual_seed(0)
        cfg = TrainConfig(name="tiny", anatomy="calf", labels=list(registry("calf").classes),
                          input_channels=["water", "fat"], channels=(4, 8), strides=(2,), num_res_units=0,
                          target_spacing_mm=(1.5, 1.5))
        self.metadata = _metadata(cfg, "", {})
        self.metadata["inference"] = {"mirror_axes": list(mirror_axes)}
        self.network = build_network(self.metadata).eval()
        self.name = "tiny"

    def to(self, device: str) -> _Bundle:
        return self


class _Canonical:
    """The slices inference gives the network (reoriented, normalised, across the bundle's plane) and the way back
    to the input's array order."""

    def __init__(self, bundle: _Bundle, channels: list[Volume]):
        meta = bundle.metadata
        canon = []
        for c in channels:
            arr, spacing, self.ornt = infer.to_canonical(np.asarray(c.array, np.float32), channels[0].affine)
            canon.append(arr)
        canon = infer.normalise(canon, meta["normalisation"])
        self.axis = infer.slicing_axis(meta["slice_plane"], spacing)
        self.in_plane = tuple(float(spacing[i]) for i in range(3) if i != self.axis)
        self.slices = infer.slices_tensor(canon, self.axis)

    def back(self, a: np.ndarray) -> np.ndarray:
        """(S, H, W) canonical slices -> the input's array order."""
        return np.ascontiguousarray(infer.from_canonical(np.moveaxis(a, 0, self.axis), self.ornt))


def reference(bundle: _Bundle, channels: list[Volume], classes: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All probabilities of the volume at once, then argmax over the class dimension."""
    meta = bundle.metadata
    can = _Canonical(bundle, channels)
    mirror = tuple(meta["inference"]["mirror_axes"])
    with torch.no_grad():
        probs = infer.predict_probabilities(bundle.network, can.slices, can.in_plane,
                                            tuple(meta["target_spacing_mm"]), "cpu", mirror)
    labels = can.back(probs.argmax(dim=1).numpy().astype(np.uint8))
    return labels, {c: can.back(probs[:, meta["labels"].index(c)].numpy()) for c in classes}


def _study(n_slices: int) -> list[Volume]:
    rng = np.random.default_rng(1)
    aff = np.diag([-1.2, 1.1, 5.0, 1.0])  # LAS: reoriented before slicing
    water = rng.uniform(0, 300, (40, 36, n_slices)).astype(np.float32)
    water[10:30, 8:28] += 400
    fat = rng.uniform(0, 200, water.shape).astype(np.float32)
    return [Volume(water, aff), Volume(fat, aff)]


@pytest.mark.parametrize("n_slices,mirror", [(infer.BATCH_SLICES * 2 + 3, ()), (5, (0, 1))])
def test_batchwise_inference_equals_the_whole_volume_reference(n_slices, mirror):
    bundle = _Bundle(mirror)
    channels = _study(n_slices)
    classes = ["soleus", "tibia"]
    labels, soft = infer.predict_soft(bundle, channels, classes)
    ref_labels, ref_soft = reference(bundle, channels, classes)
    assert labels.array.dtype == np.uint8 and np.array_equal(labels.array, ref_labels)
    for c in classes:
        assert soft[c].array.dtype == np.float32 and np.array_equal(soft[c].array, ref_soft[c])


def test_argmax_classes_is_torch_argmax_with_ties():
    g = torch.Generator().manual_seed(0)
    probs = torch.randint(0, 4, (3, 7, 9, 11), generator=g).float()  # many ties
    assert np.array_equal(infer.argmax_classes(probs), probs.argmax(dim=1).numpy())


def test_normalise_does_not_touch_its_inputs():
    a = np.arange(10, dtype=np.float32)
    out = infer.normalise([a], {"method": "joint_percentile", "percentile": 100})
    assert a[-1] == 9.0 and out[0][-1] == 1.0


def test_threads_are_set_once():
    n = set_threads_once()
    assert set_threads_once(n + 1) == n == torch.get_num_threads()


def test_entropy_is_that_of_the_network_grid_resampled_and_classes_are_the_native_argmax():
    """predict_entropy against a whole-volume computation written out here: logits on the model grid, the entropy
    -sum p ln p / ln K of their softmax resampled bilinearly to the native grid, the class the argmax of the logits
    resampled to the native grid."""
    bundle = _Bundle()
    channels = _study(infer.BATCH_SLICES + 4)
    labels, entropy = infer.predict_entropy(bundle, channels)
    meta = bundle.metadata
    can = _Canonical(bundle, channels)
    slices = can.slices
    h, w = slices.shape[-2:]
    size = tuple(infer.output_size(n, s, t) for n, s, t in zip((h, w), can.in_plane, meta["target_spacing_mm"]))
    with torch.no_grad():
        x = torch.nn.functional.interpolate(slices, size=size, mode="bilinear", align_corners=False)
        pad = (0, -size[1] % 16, 0, -size[0] % 16)
        z = bundle.network(torch.nn.functional.pad(x, pad))[..., :size[0], :size[1]]
    p = torch.softmax(z, dim=1)
    h_small = -(p * torch.log(p)).sum(dim=1, keepdim=True) / np.log(p.shape[1])
    up = torch.nn.functional.interpolate
    ref_entropy = up(h_small, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
    ref_classes = up(z, size=(h, w), mode="bilinear", align_corners=False).argmax(dim=1).numpy()

    assert np.allclose(entropy.array, can.back(ref_entropy), atol=1e-5)
    assert float(np.asarray(entropy.array).max()) > 0.05  # a random network is unsure: the test sees non-zero maps
    assert np.mean(labels.array == can.back(ref_classes.astype(np.uint8))) > 0.999
