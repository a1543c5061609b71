"""Generic 2-D U-Net training for a segmentation bundle (any anatomy), on CPU or GPU.

Cases (input channels + class map, as Volumes) are cut into slices across the bundle's plane on its target in-plane
spacing (:func:`prepare_slices`). Training samples random slices, pads/crops them to a fixed patch and augments them
with MONAI transforms (affine, flips, intensity scale/shift, bias field, Gaussian noise); flips are safe because the
classes carry no side (sides are assigned afterwards from world coordinates). Loss: Dice + cross-entropy
(``monai.losses.DiceCELoss``). Validation Dice per class on held-out cases decides the best checkpoint, which is
written as ``model.safetensors`` with ``metadata.json`` (sha256, labels, spacing, normalisation, network, training
facts and validation Dice).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.core.atomic import atomic_path, write_json
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.core.provenance import file_sha256
from pipeline.core.volume import Volume
from pipeline.segment.bundle import build_network
from pipeline.segment.infer import (
    PLANE_AXIS,
    canonical_spacing,
    normalise,
    output_size,
    slicing_axis,
    to_canonical,
)


def _train_settings() -> dict[str, Any]:
    """The ``train`` section of configs/default.yaml."""
    return load_config("default")["train"]


@dataclass
class TrainConfig:
    """Everything that defines a bundle and its training run."""

    name: str
    anatomy: str
    labels: list[str]
    input_channels: list[str]
    slice_plane: str = "axial"
    target_spacing_mm: tuple[float, float] = (1.25, 1.25)
    normalisation: dict[str, Any] = field(default_factory=lambda: {"method": "joint_percentile", "percentile": 99.5})
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1
    patch: tuple[int, int] = (192, 192)
    batch_size: int = 16
    max_iterations: int = 4000
    max_minutes: float = 30.0
    learning_rate: float = 2e-3
    validate_every: int = 200
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    version: str = "1.0.0"
    training_data: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a bundle (name under weights/ or folder) whose weights start the training
    init_member: int | None = None  # which network of an ensemble bundle ``init_from`` starts it
    mirror_axes: tuple[int, ...] = ()  # test-time mirroring written into metadata["inference"] (see infer.py)
    # foreground oversampling: this fraction of every batch is cut around a pixel of ``oversample_class`` on a slice
    # that shows it, from series sliced in ``oversample_plane`` (any plane if None); see :func:`focus_slices`
    oversample_class: str | None = None
    oversample_plane: str | None = None
    oversample_fraction: float = 0.0
    # AdamW weight decay and the augmentation settings: ``train.weight_decay`` / ``train.augmentation`` of
    # configs/default.yaml unless given
    weight_decay: float = field(default_factory=lambda: float(_train_settings()["weight_decay"]))
    augmentation: dict[str, Any] = field(default_factory=lambda: dict(_train_settings()["augmentation"]))

    def network(self) -> dict[str, Any]:
        return {"class": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": len(self.input_channels),
                "out_channels": len(self.labels), "channels": list(self.channels), "strides": list(self.strides),
                "num_res_units": self.num_res_units, "norm": "batch"}


def prepare_slices(channels: list[Volume], classes: Volume, plane: str, target_mm: tuple[float, float],
                   rule: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Slices (S, C, H, W) float32 and class maps (S, H, W) uint8 on the target in-plane spacing."""
    canon = []
    for c in channels:
        arr, spacing, _ = to_canonical(np.asarray(c.array, np.float32), channels[0].affine)
        canon.append(arr)
    canon = normalise(canon, rule)
    lab, _, _ = to_canonical(np.asarray(classes.array), channels[0].affine)
    axis = slicing_axis(plane, spacing)
    sp = [float(spacing[i]) for i in range(3) if i != axis]
    img = torch.from_numpy(np.ascontiguousarray(np.stack([np.moveaxis(a, axis, 0) for a in canon], 1)))
    lab_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(lab, axis, 0).astype(np.float32)))[:, None]
    size = (output_size(img.shape[-2], sp[0], target_mm[0]), output_size(img.shape[-1], sp[1], target_mm[1]))
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    # pixel-centre aligned like the bilinear image ("nearest" alone maps output pixel i to input floor(i * scale),
    # which shifts the class map by up to half an input pixel against the image)
    lab_t = F.interpolate(lab_t, size=size, mode="nearest-exact")
    return img.numpy(), lab_t[:, 0].numpy().astype(np.uint8)


def check_oversampling(cfg: TrainConfig) -> None:
    """Refuse an oversampled class that is not one of the bundle's labels (before any data is prepared)."""
    if cfg.oversample_class and cfg.oversample_class not in cfg.labels:
        raise ConfigError(f"the class to oversample, '{cfg.oversample_class}', is not one of the bundle's labels "
                          f"({', '.join(cfg.labels[1:])}).", fix="name one of them in train.<anatomy>.oversample.")


def check_init(cfg: TrainConfig) -> None:
    """Refuse a starting bundle (``cfg.init_from``, ``cfg.init_member``) that cannot start this training, before any
    data is prepared: the checks :func:`initial_weights` makes, from the bundle's metadata and weights' sha256
    alone (no network is built)."""
    if cfg.init_from:
        from pipeline.segment.bundle import read_metadata, resolve, verify

        path = resolve(cfg.init_from)
        start_meta = read_metadata(path)
        verify(path, start_meta)
        _check_start(path, start_meta, _metadata(cfg, sha256="", record={}), cfg.init_member)


def slice_plane_of(channels: list[Volume], plane: str) -> str:
    """Anatomical plane (sagittal, coronal, axial) of the slices :func:`prepare_slices` cuts from a case."""
    axis = slicing_axis(plane, canonical_spacing(channels[0].affine))
    return next(name for name, a in PLANE_AXIS.items() if a == axis)


def focus_slices(cases: list[tuple[np.ndarray, np.ndarray]], planes: list[str], class_index: int,
                 plane: str | None) -> list[tuple[int, int]]:
    """(case, slice) pairs whose class map shows ``class_index``, restricted to cases sliced in ``plane``.

    These are the slices foreground oversampling draws from (the nnU-Net idea of forcing a share of each batch to
    contain a foreground class; Isensee et al., Nat Methods 2021;18:203-211), e.g. the few sagittal slices that
    cross the dural sac, on which the sagittal antero-posterior diameter is measured.
    """
    return [(ci, si) for ci, ((_, lab), pl) in enumerate(zip(cases, planes)) if plane is None or pl == plane
            for si in range(len(lab)) if (lab[si] == class_index).any()]


def crop_around(image: np.ndarray, label: np.ndarray, centre: tuple[int, int], patch: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Patch of ``image`` (C, H, W) and ``label`` (H, W) around ``centre``, zero-padded where the slice is smaller
    or the centre lies near its edge.

    >>> img, lab = crop_around(np.ones((1, 5, 5)), np.arange(25).reshape(5, 5), (0, 4), (3, 3))
    >>> img.shape, lab.tolist()
    ((1, 3, 3), [[0, 0, 0], [3, 4, 0], [8, 9, 0]])
    """
    ph, pw = patch
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    img = np.pad(image, ((0, 0), *pad))
    lab = np.pad(label, pad)
    r0, c0 = centre  # in padded coordinates the patch starts at the centre itself
    return img[:, r0:r0 + ph, c0:c0 + pw], lab[r0:r0 + ph, c0:c0 + pw]


def augment_transforms(patch: tuple[int, int], seed: int, aug: dict[str, Any]):
    """Random crop of ``patch`` and the augmentation of ``train.augmentation`` (configs/default.yaml)."""
    from monai.transforms import (
        Compose,
        RandAffined,
        RandBiasFieldd,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        SpatialPadd,
    )

    aff, bias, scale, shift, noise = (aug[k] for k in ("affine", "bias_field", "intensity_scale",
                                                        "intensity_shift", "gaussian_noise"))
    t = Compose([
        SpatialPadd(keys=["image", "label"], spatial_size=patch),
        RandSpatialCropd(keys=["image", "label"], roi_size=patch, random_size=False),
        RandAffined(keys=["image", "label"], prob=aff["prob"], rotate_range=(math.radians(aff["rotate_deg"]),),
                    scale_range=(aff["scale_fraction"],) * 2, translate_range=(aff["translate_px"],) * 2,
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(keys=["image", "label"], prob=aug["flip_prob"], spatial_axis=0),
        RandFlipd(keys=["image", "label"], prob=aug["flip_prob"], spatial_axis=1),
        RandBiasFieldd(keys=["image"], prob=bias["prob"], coeff_range=(0.0, bias["coeff_max"])),
        RandScaleIntensityd(keys=["image"], prob=scale["prob"], factors=scale["factor"]),
        RandShiftIntensityd(keys=["image"], prob=shift["prob"], offsets=shift["offset"]),
        RandGaussianNoised(keys=["image"], prob=noise["prob"], std=noise["std"]),
    ])
    t.set_random_state(seed=seed)
    return t


def optimiser_step(net: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: Any, x: torch.Tensor, y: torch.Tensor,
                   progress: float, max_lr: float) -> torch.Tensor:
    """One training step: the learning rate of :func:`learning_rate_at` for ``progress``, then the gradient of
    ``loss_fn(net(x), y)`` applied by ``opt``; returns the loss."""
    for group in opt.param_groups:
        group["lr"] = learning_rate_at(progress, max_lr)
    opt.zero_grad()
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return loss


def learning_rate_at(progress: float, max_lr: float, warmup: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 1 % of ``max_lr`` over training progress in [0, 1]; progress is the
    larger of the iteration and the wall-time fractions, so a time-limited run still anneals.

    >>> learning_rate_at(0.0, 1.0) < learning_rate_at(0.05, 1.0) == 1.0 > learning_rate_at(1.0, 1.0)
    True
    """
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return max_lr * max(p / warmup, 0.01)
    return max_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (p - warmup) / (1 - warmup))))


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float | None]:
    """Dice = 2|P and T| / (|P| + |T|) per class (None where the class is absent in both).

    >>> dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)[1:]
    [0.6666666666666666, 0.6666666666666666]
    """
    out: list[float | None] = []
    for c in range(n_classes):
        p, t = pred == c, truth == c
        denom = int(p.sum() + t.sum())
        out.append(None if denom == 0 else 2.0 * float(np.logical_and(p, t).sum()) / denom)
    return out


@torch.no_grad()
def _validate(net: torch.nn.Module, val: list[tuple[np.ndarray, np.ndarray]], n_classes: int, device: str
              ) -> list[float | None]:
    net.eval()
    inter = np.zeros(n_classes)
    denom = np.zeros(n_classes)
    for img, lab in val:
        for start in range(0, len(img), 16):
            x = torch.from_numpy(img[start:start + 16]).to(device)
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16))
            pred = net(x)[..., :h, :w].argmax(1).cpu().numpy()
            t = lab[start:start + 16]
            for c in range(n_classes):
                p_, t_ = pred == c, t == c
                inter[c] += np.logical_and(p_, t_).sum()
                denom[c] += p_.sum() + t_.sum()
    net.train()
    return [None if d == 0 else float(2 * i / d) for i, d in zip(inter, denom)]


def train_bundle(train_cases: Iterable[tuple[list[Volume], Volume]], val_cases: Iterable[tuple[list[Volume], Volume]],
                 cfg: TrainConfig, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, keep the best validation checkpoint, write the bundle to ``out``; returns the training record."""
    check_oversampling(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    train, planes = [], []
    for ch, lab in train_cases:
        train.append(prepare_slices(ch, lab, cfg.slice_plane, cfg.target_spacing_mm, cfg.normalisation))
        planes.append(slice_plane_of(ch, cfg.slice_plane))
    val = [prepare_slices(ch, lab, cfg.slice_plane, cfg.target_spacing_mm, cfg.normalisation)
           for ch, lab in val_cases]
    n_slices = sum(len(a) for a, _ in train)
    log(f"{len(train)} training cases ({n_slices} slices), {len(val)} validation cases; "
        f"data ready in {time.perf_counter() - t0:.0f} s")
    index = [(ci, si) for ci, (a, _) in enumerate(train) for si in range(len(a))]
    focus: list[tuple[int, int]] = []
    focus_id = 0
    if cfg.oversample_class and cfg.oversample_fraction > 0:
        focus_id = cfg.labels.index(cfg.oversample_class)
        focus = focus_slices(train, planes, focus_id, cfg.oversample_plane)
        log(f"oversampling {cfg.oversample_fraction:.0%} of each batch from {len(focus)} slices showing "
            f"{cfg.oversample_class}" + (f" ({cfg.oversample_plane})" if cfg.oversample_plane else ""))
    meta = _metadata(cfg, sha256="", record={})
    net = build_network(meta)
    start = initial_weights(net, meta, cfg.init_from, cfg.init_member) if cfg.init_from else None
    net = net.to(cfg.device)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    augment = augment_transforms(cfg.patch, cfg.seed, cfg.augmentation)
    rng = np.random.default_rng(cfg.seed)
    n_classes = len(cfg.labels)
    best: tuple[float, dict[str, torch.Tensor] | None, list, int] = (-1.0, None, [], 0)
    history = []
    it = 0
    t_train = time.perf_counter()
    while it < cfg.max_iterations and (time.perf_counter() - t_train) < cfg.max_minutes * 60:
        items = [augment(sample_item(train, index, focus, focus_id, cfg, rng))
                 for _ in range(cfg.batch_size)]
        x = torch.stack([torch.as_tensor(np.asarray(d["image"])) for d in items]).float().to(cfg.device)
        y = torch.stack([torch.as_tensor(np.asarray(d["label"])) for d in items]).round().long().to(cfg.device)
        progress = max(it / cfg.max_iterations, (time.perf_counter() - t_train) / (cfg.max_minutes * 60))
        loss = optimiser_step(net, opt, loss_fn, x, y, progress, cfg.learning_rate)
        it += 1
        if it % cfg.validate_every == 0 or it == cfg.max_iterations:
            dice = _validate(net, val, n_classes, cfg.device)
            fg = [d for d in dice[1:] if d is not None]
            mean = float(np.mean(fg)) if fg else 0.0
            history.append({"iteration": it, "loss": round(loss.item(), 4), "val_mean_dice": round(mean, 4)})
            log(f"it {it} loss {loss.item():.3f} val mean Dice {mean:.4f} ({time.perf_counter() - t_train:.0f} s)")
            if mean > best[0]:
                best = (mean, copy.deepcopy(net.state_dict()), dice, it)
    if best[1] is None:  # time ran out before the first validation
        dice = _validate(net, val, n_classes, cfg.device)
        fg = [d for d in dice[1:] if d is not None]
        best = (float(np.mean(fg)) if fg else 0.0, copy.deepcopy(net.state_dict()), dice, it)
    record = {"initialised_from": start, "iterations": it, "best_iteration": best[3], "train_minutes": round((time.perf_counter() - t_train) / 60, 1),
              "device": cfg.device, "threads": cfg.threads, "history": history,
              "validation_dice": {cfg.labels[c]: (None if d is None else round(d, 4)) for c, d in enumerate(best[2])
                                  if c > 0}}
    write_bundle(out, cfg, {k: v.detach().cpu().contiguous() for k, v in best[1].items()}, record)
    return record


def sample_item(train: list[tuple[np.ndarray, np.ndarray]], index: list[tuple[int, int]],
            focus: list[tuple[int, int]], focus_id: int, cfg: TrainConfig, rng: np.random.Generator
            ) -> dict[str, np.ndarray]:
    """One training item: a uniformly drawn slice, or (with ``cfg.oversample_fraction``) a patch of a focus slice
    centred on a random pixel of the focus class; the augmentation's random crop then keeps that patch."""
    if focus and rng.uniform() < cfg.oversample_fraction:
        ci, si = focus[int(rng.integers(len(focus)))]
        image, label = train[ci][0][si], train[ci][1][si]
        pixels = np.argwhere(label == focus_id)
        image, label = crop_around(image, label, tuple(pixels[int(rng.integers(len(pixels)))]), cfg.patch)
    else:
        ci, si = index[int(rng.integers(len(index)))]
        image, label = train[ci][0][si], train[ci][1][si]
    return {"image": image, "label": label[None].astype(np.float32)}


def initial_weights(net: torch.nn.Module, meta: dict[str, Any], bundle: str, member: int | None = None
                    ) -> dict[str, Any]:
    """Load the verified weights of ``bundle`` into ``net`` (fine-tuning); the bundle must have the same labels,
    input channels, slicing and network. From an ensemble bundle, ``member`` names the network to start from.
    Returns the starting bundle's provenance (name, version, sha256, and the member if any)."""
    from pipeline.segment.bundle import load_bundle

    start = load_bundle(bundle)
    _check_start(start.path, start.metadata, meta, member)
    source = start.network if member is None else start.network.members[member]
    net.load_state_dict(source.state_dict(), strict=True)
    return {**start.provenance(), **({"member": member} if member is not None else {})}


def _check_start(path: Path, start_meta: dict[str, Any], meta: dict[str, Any], member: int | None) -> None:
    """Refuse a starting bundle whose labels, inputs, slicing or network differ from the new bundle's, an ensemble
    without a valid ``member`` and a ``member`` of a single-network bundle."""
    from pipeline.core.errors import BundleError

    network = dict(start_meta.get("network", {}))
    n = int(network.pop("ensemble_members", 1))
    if n > 1 and (member is None or not 0 <= member < n):
        raise BundleError(f"this bundle is an ensemble of {n} networks; training starts from one of them.",
                          path=path, fix=f"name the network with --init-member K (K = 0 .. {n - 1}).")
    if n == 1 and member is not None:
        raise BundleError("--init-member applies to ensemble bundles only; this bundle holds one network.",
                          path=path, fix="leave out --init-member.")
    for key in ("labels", "input_channels", "slice_plane", "network", "target_spacing_mm", "normalisation"):
        have = network if key == "network" else start_meta.get(key)
        if have != meta[key]:
            raise BundleError(f"cannot start from this bundle: its {key} {have!r} differs from the new bundle's "
                              f"{meta[key]!r}.", path=path,
                              fix="start from a bundle of the same anatomy and network, or train from scratch.")


def _metadata(cfg: TrainConfig, sha256: str, record: dict[str, Any]) -> dict[str, Any]:
    c = asdict(cfg)
    return {"name": cfg.name, "version": cfg.version, "anatomy": cfg.anatomy, "labels": list(cfg.labels),
            "input_channels": list(cfg.input_channels), "slice_plane": cfg.slice_plane,
            "target_spacing_mm": list(cfg.target_spacing_mm), "normalisation": dict(cfg.normalisation),
            "network": cfg.network(), "weights": {"file": "model.safetensors", "sha256": sha256},
            "inference": {"mirror_axes": list(cfg.mirror_axes)},
            "training": {"data": cfg.training_data, "seed": cfg.seed, "patch": list(cfg.patch),
                         "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                         "max_iterations": c["max_iterations"], "loss": "DiceCELoss(softmax)",
                         "weight_decay": cfg.weight_decay, "augmentation": cfg.augmentation,
                         **({"oversampling": {"class": cfg.oversample_class, "plane": cfg.oversample_plane,
                                              "fraction": cfg.oversample_fraction}}
                            if cfg.oversample_class and cfg.oversample_fraction > 0 else {}), **record}}


def write_bundle(out: Path, cfg: TrainConfig, state: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write model.safetensors and metadata.json (with the weights' sha256) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = _metadata(cfg, file_sha256(out / "model.safetensors"), record)
    previous = out / "metadata.json"
    if previous.exists():  # keep an evaluation table written earlier for the same weights
        old = json.loads(previous.read_text())
        if old.get("weights", {}).get("sha256") == meta["weights"]["sha256"] and "evaluation" in old:
            meta["evaluation"] = old["evaluation"]
    write_json(out / "metadata.json", meta)
    return out
