"""2-D U-Net inference on the slices of a volume, whatever its array orientation.

1. The input is reoriented (axes permuted/flipped only, no interpolation) to the closest canonical RAS order, so a
   study stored with sagittal-ordered axes, flipped rows or reversed slices gives the network the same slices.
2. Slices are taken across the bundle's ``slice_plane`` (axial: along z; sagittal: along x), intensities are
   normalised by the bundle's rule, and each slice is resampled in-plane to ``target_spacing_mm`` (bilinear).
3. Slices run through the network in batches (under ``torch.inference_mode``); the logits are resampled back to
   the native in-plane grid (bilinear) before the argmax, and the class map (and, on request, the probability of
   chosen classes and the entropy map) is returned on the exact grid of the input. Each batch's outputs are reduced
   to the class map and the requested maps before the next batch runs, so memory holds one batch of all K maps, not
   the whole volume's (:func:`iter_outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.errors import BadInputError
from pipeline.core.volume import Volume

PLANE_AXIS = {"axial": 2, "sagittal": 0, "coronal": 1}  # canonical RAS axis crossed by the slices


def slicing_axis(plane: str, spacing_canonical: np.ndarray) -> int:
    """Canonical array axis the 2-D slices are taken across: fixed by ``plane``, or for ``"acquisition"`` the axis
    with the largest spacing (the slice direction of a 2-D acquisition, whatever its plane).

    >>> slicing_axis("acquisition", np.array([3.5, 1.0, 1.0])), slicing_axis("axial", np.array([3.5, 1.0, 1.0]))
    (0, 2)
    """
    if plane == "acquisition":
        return int(np.argmax(spacing_canonical))
    return PLANE_AXIS[plane]


#: slices per network batch. Kept fixed: the convolution kernels chosen for another batch size round differently
#: (on the shared real calf a batch of 27 flipped one voxel of 9 million); larger batches saved about 10 % of CPU time.
BATCH_SLICES = 16


def normalise(arrays: list[np.ndarray], rule: dict[str, Any]) -> list[np.ndarray]:
    """Joint robust scaling: every channel divided by the ``percentile`` of the voxel-wise sum of the channels.

    >>> [float(a.max()) for a in normalise([np.arange(101.0), np.zeros(101)], {"method": "joint_percentile", "percentile": 100})]
    [1.0, 0.0]
    """
    if rule.get("method", "joint_percentile") != "joint_percentile":
        raise ValueError(f"unknown normalisation {rule.get('method')!r}")
    out = [np.array(a, np.float32) for a in arrays]  # own float32 copies, scaled in place below
    total = out[0].copy() if len(out) > 1 else out[0]
    for a in out[1:]:
        total += a
    scale = float(np.percentile(total, rule.get("percentile", 99.5)))
    del total
    scale = scale if scale > 0 else 1.0
    for a in out:
        a /= scale
    return out


def canonical_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) in closest-canonical (RAS) axis order."""
    ornt = nib.orientations.io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sp_can = np.empty(3)
    for i in range(3):
        sp_can[int(ornt[i, 0])] = spacing[i]
    return sp_can


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Array in closest-canonical (RAS) axis order, its voxel spacing, and the orientation used (for undoing)."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt), canonical_spacing(affine), ornt


def from_canonical(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`to_canonical` on an array."""
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    return nib.orientations.apply_orientation(array, nib.orientations.ornt_transform(ras, ornt))


def slices_tensor(arrays: list[np.ndarray], axis: int) -> torch.Tensor:
    """(n_slices, channels, H, W) float tensor from canonical arrays, slicing across array ``axis``."""
    stacked = np.stack([np.moveaxis(a, axis, 0) for a in arrays], axis=1)  # (S, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))


def _pad16(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


def predict_probabilities(network: torch.nn.Module, slices: torch.Tensor, in_plane_mm: tuple[float, float],
                          target_mm: tuple[float, float], device: str = "cpu", mirror_axes: tuple[int, ...] = ()
                          ) -> torch.Tensor:
    """Softmax probabilities (S, K, H, W) on the native in-plane grid for a (S, C, H, W) slice tensor.

    ``mirror_axes`` (0 = rows, 1 = columns of the canonical slice) adds test-time mirroring: the probabilities are
    the mean over the slices as given and mirrored along each listed axis (as nnU-Net does; Isensee et al., Nat
    Methods 2021;18:203-211). Only for networks trained with mirrored slices and side-less classes.

    Holds all S x K probability maps at once; :func:`iter_outputs` gives them batch by batch.
    """
    return torch.cat([out.probabilities for out in iter_outputs(network, slices, in_plane_mm, target_mm, device,
                                                                mirror_axes, probabilities=True)], dim=0)


class BatchOutput:
    """What :func:`iter_outputs` gives for one batch of B slices on the native in-plane grid: the class index
    (uint8, B x H x W), and on request the softmax probabilities (B x K x H x W) and the normalised entropy
    (float32, B x H x W)."""

    def __init__(self, classes: np.ndarray, probabilities: torch.Tensor | None, entropy: np.ndarray | None):
        self.classes, self.probabilities, self.entropy = classes, probabilities, entropy


def iter_outputs(network: torch.nn.Module, slices: torch.Tensor, in_plane_mm: tuple[float, float],
                 target_mm: tuple[float, float], device: str = "cpu", mirror_axes: tuple[int, ...] = (),
                 probabilities: bool = False, entropy: bool = False) -> Iterator[BatchOutput]:
    """The network's outputs one batch of ``BATCH_SLICES`` slices at a time, so that only one batch's K maps are
    held.

    With logits z_m on the model grid of pass m (the slices as given, and mirrored along each of ``mirror_axes``,
    mirrored back), U the bilinear resampling to the native grid and M the number of mirrors:

    - probabilities P = (1 / (1 + M)) sum_m softmax(U z_m), as :func:`predict_probabilities` returns them;
    - the class is argmax_k P (without mirrors argmax_k U z, the same class without the softmax);
    - the entropy is U H(p) with p = (1 / (1 + M)) sum_m softmax(z_m), H(p) = -sum_k p_k ln p_k / ln K: the
      network's uncertainty on its own grid, resampled (:func:`normalised_entropy`); computing it there costs a
      half of computing it on a 0.9 mm native grid from a 1.25 mm model grid.
    """
    h, w = slices.shape[-2:]
    size = (output_size(h, in_plane_mm[0], target_mm[0]), output_size(w, in_plane_mm[1], target_mm[1]))
    dims = [(-2, -1)[axis] for axis in mirror_axes]
    with torch.inference_mode():
        for start in range(0, slices.shape[0], BATCH_SLICES):
            batch = slices[start:start + BATCH_SLICES]
            passes = [_batch_logits(network, batch, size, device)]
            passes += [torch.flip(_batch_logits(network, torch.flip(batch, (dim,)), size, device), (dim,))
                       for dim in dims]
            ent = None
            if entropy:
                p = torch.stack([torch.softmax(z, dim=1) for z in passes]).mean(dim=0)
                ent = _to_native(torch.from_numpy(normalised_entropy(p))[:, None], (h, w))[:, 0].numpy()
            probs = None
            if probabilities or dims:
                probs = torch.softmax(_to_native(passes[0], (h, w)), dim=1)
                for z in passes[1:]:
                    probs += torch.softmax(_to_native(z, (h, w)), dim=1)
                if dims:
                    probs /= len(passes)
                classes = argmax_classes(probs)
            else:
                classes = argmax_classes(_to_native(passes[0], (h, w)))
            yield BatchOutput(classes, probs if probabilities else None, ent)


def _batch_logits(network: torch.nn.Module, batch: torch.Tensor, size: tuple[int, int], device: str
                  ) -> torch.Tensor:
    """Logits (B, K, h, w) on the model grid ``size`` of one batch of native slices (B, C, H, W): resampled
    (bilinear) to ``size``, padded to a multiple of 16, through the network, cropped. The slices go in as
    channels-last tensors (the network's weights are held so too, :func:`pipeline.segment.bundle.load_bundle`):
    oneDNN's convolutions take a third less CPU time in that layout than in the default one; the logits come back
    to the default layout, in which the softmax over classes is three times faster."""
    x = F.interpolate(batch.to(device), size=size, mode="bilinear", align_corners=False)
    x, (hh, ww) = _pad16(x)
    return network(x.contiguous(memory_format=torch.channels_last))[..., :hh, :ww].contiguous().cpu()


def _to_native(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) maps resampled (bilinear, as the input was) to the native in-plane ``size``."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def argmax_classes(probs: torch.Tensor) -> np.ndarray:
    """Index (uint8) of the largest of the K maps of (B, K, H, W), the first one on ties (as ``torch.argmax``).
    NumPy's argmax over the class axis takes a quarter of the CPU time of torch's on CPU tensors.

    >>> argmax_classes(torch.tensor([[[[0.2, 0.5]], [[0.7, 0.5]], [[0.1, 0.0]]]])).tolist()
    [[[1, 0]]]
    """
    index = np.argmax(probs.numpy(), axis=1)
    return index.astype(np.uint8) if probs.shape[1] <= 256 else index


def predict(bundle: Any, channels: list[Volume], device: str = "cpu", mirror: bool = True) -> Volume:
    """Class map (uint8) on the grid of ``channels[0]``; ``channels`` follow ``bundle.metadata['input_channels']``.
    ``mirror=False`` leaves out the bundle's test-time mirroring (one pass of the network)."""
    return _predict(bundle, channels, (), device, entropy=False, mirror=mirror)[0]


def predict_soft(bundle: Any, channels: list[Volume], classes: tuple[str, ...] | list[str], device: str = "cpu"
                 ) -> tuple[Volume, dict[str, Volume]]:
    """Class map (uint8) and the softmax probability (float32, 0-1) of each of ``classes`` (names from
    ``bundle.metadata['labels']``), all on the grid of ``channels[0]``.

    The probability is the network's belief in the class, resampled to the native grid like the class map: where a
    border cuts a voxel it takes intermediate values, so its 0.5 level places the border between voxel centres
    (sub-voxel measurements such as the dural sac's AP diameter use it).
    """
    labels, soft, _ = _predict(bundle, channels, classes, device, entropy=False)
    return labels, soft


def predict_entropy(bundle: Any, channels: list[Volume], device: str = "cpu") -> tuple[Volume, Volume]:
    """Class map (uint8) and the normalised entropy of the network's class probabilities (float32, 0-1) on the grid
    of ``channels[0]``: H = -sum_k p_k ln p_k / ln K over the K classes, 0 where the network is certain of one class,
    1 where all are equally likely (the voxel-wise uncertainty of Kendall & Gal, NeurIPS 2017, without sampling),
    computed on the network's grid and resampled (:func:`iter_outputs`)."""
    labels, _, entropy = _predict(bundle, channels, (), device, entropy=True)
    assert entropy is not None
    return labels, entropy


def normalised_entropy(probs: torch.Tensor) -> np.ndarray:
    """H / ln K of (B, K, H, W) probabilities over the class axis, float32 (B, H, W); the term -p ln p is 0 at p = 0
    (``torch.special.entr``).

    >>> normalised_entropy(torch.tensor([[[[0.5]], [[0.5]]], [[[1.0]], [[0.0]]]])).ravel().round(3).tolist()
    [1.0, 0.0]
    """
    return (torch.special.entr(probs).sum(dim=1) / math.log(probs.shape[1])).numpy().astype(np.float32)


def _predict(bundle: Any, channels: list[Volume], classes: tuple[str, ...] | list[str], device: str, entropy: bool,
             mirror: bool = True) -> tuple[Volume, dict[str, Volume], Volume | None]:
    meta = bundle.metadata
    if len(channels) != len(meta["input_channels"]):
        raise BadInputError(f"{bundle.name} needs {len(meta['input_channels'])} channels "
                            f"({', '.join(meta['input_channels'])}), got {len(channels)}.", path=bundle.path,
                            fix="provide every input series the bundle lists.")
    unknown = [c for c in classes if c not in meta["labels"]]
    if unknown:
        raise ValueError(f"{bundle.name} has no class {', '.join(unknown)} (it has {', '.join(meta['labels'])})")
    ref = channels[0]
    for c in channels[1:]:
        if not ref.same_grid(c):
            raise BadInputError("input channels are not on the same grid.", path=bundle.path,
                                fix="the channels must come from one acquisition (e.g. Dixon water and fat).")
    plane = meta["slice_plane"]
    canon = []
    for c in channels:
        arr, spacing, ornt = to_canonical(np.asarray(c.array, np.float32), ref.affine)
        canon.append(arr)
    canon = normalise(canon, meta["normalisation"])
    axis = slicing_axis(plane, spacing)
    in_plane = tuple(float(spacing[i]) for i in range(3) if i != axis)
    target = tuple(float(v) for v in meta["target_spacing_mm"])
    bundle.to(device)
    mirror_axes = tuple(int(a) for a in meta.get("inference", {}).get("mirror_axes", ())) if mirror else ()
    slices = slices_tensor(canon, axis)
    del canon
    n, h, w = slices.shape[0], slices.shape[2], slices.shape[3]
    wanted = [meta["labels"].index(c) for c in classes]
    label_slices = np.empty((n, h, w), np.uint8)
    soft_slices = {c: np.empty((n, h, w), np.float32) for c in classes}
    entropy_slices = np.empty((n, h, w), np.float32) if entropy else None
    start = 0
    for out in iter_outputs(bundle.network, slices, in_plane, target, device, mirror_axes, probabilities=bool(classes),
                            entropy=entropy):
        stop = start + out.classes.shape[0]
        label_slices[start:stop] = out.classes
        for c, k in zip(classes, wanted):
            soft_slices[c][start:stop] = out.probabilities[:, k].numpy()
        if entropy_slices is not None:
            entropy_slices[start:stop] = out.entropy
        start = stop
    del slices

    def on_input_grid(array: np.ndarray) -> np.ndarray:  # (S, H, W) canonical slices -> input array order
        return np.ascontiguousarray(from_canonical(np.moveaxis(array, 0, axis), ornt))

    labels = on_input_grid(label_slices)
    soft = {c: Volume(on_input_grid(soft_slices[c]), ref.affine.copy(), {"bundle": bundle.name, "probability_of": c})
            for c in classes}
    ent = (None if entropy_slices is None else
           Volume(on_input_grid(entropy_slices), ref.affine.copy(), {"bundle": bundle.name, "map": "entropy"}))
    return Volume(labels, ref.affine.copy(), {"bundle": bundle.name}), soft, ent


def output_size(n: int, spacing: float, target: float) -> int:
    """Number of samples after resampling ``n`` samples of ``spacing`` mm to ``target`` mm.

    >>> output_size(256, 1.0, 1.25)
    205
    """
    return max(16, int(math.floor(n * spacing / target + 0.5)))
