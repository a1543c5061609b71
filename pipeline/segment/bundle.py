"""Model bundles: a folder with the network weights (safetensors), ``metadata.json`` and ``MODEL_CARD.md``.

A bundle is verified on load, as MONAI model-zoo bundles are: the sha256 of the weights file must equal the one in
``metadata.json`` and the bundle's class list must equal the classes of ``configs/labels.yaml`` for its anatomy.
Weights are read with ``safetensors`` (no pickle). A :class:`BundleCache` loads each bundle once per process.

A bundle may hold an ensemble of networks of one architecture trained separately (``network.ensemble_members``;
written by :func:`write_ensemble`): its probabilities are the mean of the members' probabilities.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.core.atomic import atomic_path, write_json
from pipeline.core.errors import BundleError
from pipeline.core.labels import registry
from pipeline.core.provenance import file_sha256
from pipeline.segment.paths import WEIGHTS_DIR, resolve  # noqa: F401  (re-exported)

REQUIRED_KEYS = ("name", "version", "anatomy", "labels", "input_channels", "slice_plane", "target_spacing_mm",
                 "normalisation", "network", "weights")


@dataclass
class Bundle:
    """A verified segmentation model: the network in eval mode and its metadata."""

    path: Path
    metadata: dict[str, Any]
    network: torch.nn.Module
    sha256: str
    device: str = "cpu"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["labels"])

    def to(self, device: str) -> Bundle:
        """Move the network to ``device`` (``cpu``, ``cuda`` or ``cuda:N``); refuses CUDA when it is absent."""
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BundleError(f"device '{device}' requested but CUDA is not available.", path=self.path,
                              fix="run with --device cpu, or on a machine with a CUDA GPU and a CUDA build of PyTorch.")
        if device != self.device:
            self.network.to(device)
            self.device = device
        return self

    def predict(self, channels: list[Any], device: str | None = None, mirror: bool = True) -> Any:
        """Class map (uint8 Volume) on the grid of ``channels[0]``; see :func:`pipeline.segment.infer.predict`."""
        from pipeline.segment.infer import predict

        set_threads_once()
        with self._lock:
            return predict(self, channels, device=device or self.device, mirror=mirror)

    def predict_soft(self, channels: list[Any], classes: tuple[str, ...] | list[str], device: str | None = None
                     ) -> tuple[Any, dict[str, Any]]:
        """Class map and the probability maps of ``classes``; see :func:`pipeline.segment.infer.predict_soft`."""
        from pipeline.segment.infer import predict_soft

        set_threads_once()
        with self._lock:
            return predict_soft(self, channels, classes, device=device or self.device)

    def predict_entropy(self, channels: list[Any], device: str | None = None) -> tuple[Any, Any]:
        """Class map and normalised entropy map; see :func:`pipeline.segment.infer.predict_entropy`."""
        from pipeline.segment.infer import predict_entropy

        set_threads_once()
        with self._lock:
            return predict_entropy(self, channels, device=device or self.device)

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.metadata["version"], "sha256": self.sha256,
                "path": self.path.name}


_THREADS: list[int] = []  # the intra-op thread count once set in this process


def inference_threads() -> int:
    """Threads for CPU inference: ``$LEGMRI_THREADS``, else ``$OMP_NUM_THREADS`` (a batch worker sets 1 so that
    -j workers share the cores), else the CPUs this process may run on."""
    for var in ("LEGMRI_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def set_threads_once(n: int | None = None) -> int:
    """Set torch's intra-op thread count once per process (the first inference, or an explicit call with ``n``);
    later calls leave it. Returns the count in force."""
    if not _THREADS:
        _THREADS.append(int(n) if n else inference_threads())
        torch.set_num_threads(_THREADS[0])
    return _THREADS[0]


def read_metadata(path: Path) -> dict[str, Any]:
    meta_path = path / "metadata.json"
    if not meta_path.exists():
        raise BundleError("bundle has no metadata.json.", path=path,
                          fix="point at a bundle folder written by 'legmri train', or retrain it.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"metadata.json is not valid JSON ({exc}).", path=meta_path,
                          fix="restore the bundle from the repository or retrain it.") from exc
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"metadata.json lacks {', '.join(missing)}.", path=meta_path,
                          fix="restore the bundle from the repository or retrain it.")
    return meta


class MeanEnsemble(torch.nn.Module):
    """Networks of one architecture whose softmax probabilities are averaged. The output is the log of the mean
    probability, so the softmax that inference applies to a network's output gives that mean back: p = (1/M) sum_m
    softmax(f_m(x)) (an ensemble of independently trained networks; Lakshminarayanan et al., NeurIPS 2017; nnU-Net
    averages the probabilities of its fold models the same way, Isensee et al., Nat Methods 2021;18:203-211)."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return torch.log(p.clamp_min(1e-12))


def build_network(meta: dict[str, Any]) -> torch.nn.Module:
    """The MONAI network described by ``metadata["network"]`` (a :class:`MeanEnsemble` of that network when
    ``ensemble_members`` > 1)."""
    from monai.networks.nets import UNet

    net = dict(meta["network"])
    kind = net.pop("class", "monai.networks.nets.UNet")
    members = int(net.pop("ensemble_members", 1))
    if kind != "monai.networks.nets.UNet":
        raise BundleError(f"unsupported network class '{kind}'.", path=None, fix="use monai.networks.nets.UNet.")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in net.items()}
    if members > 1:
        return MeanEnsemble([UNet(**kwargs) for _ in range(members)])
    return UNet(**kwargs)


def build_inference_network(meta: dict[str, Any]) -> torch.nn.Module:
    """The network of ``metadata["network"]`` for inference: built from plain PyTorch layers by
    :mod:`pipeline.segment.unet` (same parameter names and outputs as MONAI's, without MONAI's import cost) when it
    supports the settings, else by :func:`build_network`."""
    from pipeline.segment import unet

    net = dict(meta["network"])
    kind = net.pop("class", "monai.networks.nets.UNet")
    members = int(net.pop("ensemble_members", 1))
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in net.items()}
    if kind != "monai.networks.nets.UNet" or not unet.supports(kwargs):
        return build_network(meta)
    if members > 1:
        return MeanEnsemble([unet.UNet(**kwargs) for _ in range(members)])
    return unet.UNet(**kwargs)


def verify(path: Path, meta: dict[str, Any]) -> str:
    """Check the weights' sha256 and the label list; return the sha256."""
    weights = path / meta["weights"]["file"]
    if not weights.exists():
        raise BundleError(f"weights file '{weights.name}' is missing.", path=path,
                          fix="restore the bundle (git checkout weights/) or retrain it with 'legmri train'.")
    digest = file_sha256(weights)
    if digest != meta["weights"]["sha256"]:
        raise BundleError(f"sha256 of {weights.name} is {digest[:16]}..., metadata.json expects "
                          f"{meta['weights']['sha256'][:16]}...; the weights are corrupt or were replaced.", path=weights,
                          fix="restore the bundle from the repository or retrain it; never edit weights by hand.")
    expected = list(registry(meta["anatomy"]).classes)
    if list(meta["labels"]) != expected:
        raise BundleError(f"bundle classes {meta['labels']} differ from configs/labels.yaml "
                          f"({meta['anatomy']}: {expected}).", path=path / "metadata.json",
                          fix="retrain the bundle for the current label registry, or restore the matching labels.yaml.")
    return digest


def load_bundle(name_or_path: str | Path, device: str = "cpu") -> Bundle:
    """Load and verify a bundle (folder path, or a name under ``weights/``)."""
    path = resolve(name_or_path)
    meta = read_metadata(path)
    digest = verify(path, meta)
    net = build_inference_network(meta)
    state = load_file(str(path / meta["weights"]["file"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"weights do not fit the network in metadata.json ({str(exc)[:200]}).", path=path,
                          fix="retrain the bundle or restore the metadata that belongs to these weights.") from exc
    net.eval()
    net.to(memory_format=torch.channels_last)  # the layout inference feeds it (pipeline.segment.infer)
    return Bundle(path, meta, net, digest).to(device)


class BundleCache:
    """Loads each bundle at most once per process (a batch segments many studies with one load)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._bundles: dict[str, Bundle] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Bundle:
        with self._lock:
            if name not in self._bundles:
                self._bundles[name] = load_bundle(name, device=self.device)
            return self._bundles[name]

    def __contains__(self, name: str) -> bool:
        return name in self._bundles


#: metadata that every member of an ensemble must share
ENSEMBLE_SHARED = ("anatomy", "labels", "input_channels", "slice_plane", "target_spacing_mm", "normalisation",
                   "network")


def write_ensemble(members: list[str | Path], out: Path, version: str, mirror_axes: tuple[int, ...] = ()) -> Path:
    """Write a bundle into ``out`` whose network is the :class:`MeanEnsemble` of the verified single-network
    bundles ``members`` (same anatomy, labels, inputs, slicing and network). The bundle is named after ``out`` (as
    ``legmri train`` names its bundles); the weights are the members' weights under ``members.<i>.``;
    ``metadata.json`` keeps each member's name, version, sha256 and training record, and ``inference.mirror_axes``
    is ``mirror_axes`` (test-time mirroring of the ensemble as a whole)."""
    if len(members) < 2:
        raise BundleError("an ensemble needs at least two bundles.", path=None, fix="name two or more bundles.")
    loaded = [load_bundle(m) for m in members]
    first = loaded[0].metadata
    for b in loaded:
        if "ensemble_members" in b.metadata["network"]:
            raise BundleError("a member of an ensemble must hold one network, not an ensemble.", path=b.path,
                              fix="name the single-network bundles the ensemble is made of.")
        for key in ENSEMBLE_SHARED:
            if b.metadata.get(key) != first.get(key):
                raise BundleError(f"cannot join this bundle: its {key} {b.metadata.get(key)!r} differs from "
                                  f"{loaded[0].path.name}'s {first.get(key)!r}.", path=b.path,
                                  fix="join bundles trained for the same task with the same network.")
    state = {f"members.{i}.{k}": v.detach().contiguous() for i, b in enumerate(loaded)
             for k, v in b.network.state_dict().items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"name": out.name, **{key: first[key] for key in ENSEMBLE_SHARED}}
    meta.update({"version": version, "network": {**first["network"], "ensemble_members": len(loaded)},
                 "weights": {"file": "model.safetensors", "sha256": file_sha256(out / "model.safetensors")},
                 "inference": {"mirror_axes": list(mirror_axes)},
                 "training": {"ensemble_of": [{"name": b.name, "version": b.metadata["version"], "sha256": b.sha256,
                                               **b.metadata.get("training", {})} for b in loaded]}})
    write_json(out / "metadata.json", meta)
    return out
