"""Model bundles: a folder with the network weights (safetensors), ``metadata.json`` and ``MODEL_CARD.md``.

A bundle is verified on load, as MONAI model-zoo bundles are: the sha256 of the weights file must equal the one in
``metadata.json`` and the bundle's class list must equal the classes of ``configs/labels.yaml`` for its anatomy.
Weights are read with ``safetensors`` (no pickle). A :class:`BundleCache` loads each bundle once per process.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from pipeline.core.config import PROJECT_ROOT
from pipeline.core.errors import BundleError
from pipeline.core.labels import registry
from pipeline.core.provenance import file_sha256

WEIGHTS_DIR = PROJECT_ROOT / "weights"
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

    def predict(self, channels: list[Any], device: str | None = None) -> Any:
        """Class map (uint8 Volume) on the grid of ``channels[0]``; see :func:`pipeline.segment.infer.predict`."""
        from pipeline.segment.infer import predict

        with self._lock:
            return predict(self, channels, device=device or self.device)

    def predict_soft(self, channels: list[Any], classes: tuple[str, ...] | list[str], device: str | None = None
                     ) -> tuple[Any, dict[str, Any]]:
        """Class map and the probability maps of ``classes``; see :func:`pipeline.segment.infer.predict_soft`."""
        from pipeline.segment.infer import predict_soft

        with self._lock:
            return predict_soft(self, channels, classes, device=device or self.device)

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.metadata["version"], "sha256": self.sha256,
                "path": self.path.name}


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


def build_network(meta: dict[str, Any]) -> torch.nn.Module:
    """The MONAI network described by ``metadata["network"]``."""
    from monai.networks.nets import UNet

    net = dict(meta["network"])
    kind = net.pop("class", "monai.networks.nets.UNet")
    if kind != "monai.networks.nets.UNet":
        raise BundleError(f"unsupported network class '{kind}'.", path=None, fix="use monai.networks.nets.UNet.")
    return UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in net.items()})


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


def resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.exists():
        return p
    q = WEIGHTS_DIR / str(name_or_path)
    if q.exists():
        return q
    raise BundleError(f"no model bundle '{name_or_path}'.", path=p,
                      fix=f"use a folder under {WEIGHTS_DIR.name}/ or train one with 'legmri train'.")


def load_bundle(name_or_path: str | Path, device: str = "cpu") -> Bundle:
    """Load and verify a bundle (folder path, or a name under ``weights/``)."""
    path = resolve(name_or_path)
    meta = read_metadata(path)
    digest = verify(path, meta)
    net = build_network(meta)
    state = load_file(str(path / meta["weights"]["file"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"weights do not fit the network in metadata.json ({str(exc)[:200]}).", path=path,
                          fix="retrain the bundle or restore the metadata that belongs to these weights.") from exc
    net.eval()
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
