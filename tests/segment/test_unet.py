"""The plain-PyTorch U-Net used for inference is MONAI's network: same parameter names, outputs equal bit for bit, on
the shipped bundles and on small networks of other shapes."""

from __future__ import annotations

import pytest
import torch

from pipeline.segment import unet
from pipeline.segment.bundle import (
    WEIGHTS_DIR,
    build_inference_network,
    build_network,
    load_bundle,
    read_metadata,
)


def _same_outputs(meta: dict, shape: tuple[int, ...], state: dict | None = None) -> None:
    torch.manual_seed(0)
    ref = build_network(meta)
    if state is None:
        for p in ref.parameters():  # random, non-default parameters (PReLU slopes, batch-norm affine)
            p.data.uniform_(-0.5, 0.5)
        for name, b in ref.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                b.uniform_(-0.2, 0.2)
        state = ref.state_dict()
    else:
        ref.load_state_dict(state, strict=True)
    light = build_inference_network(meta)
    assert not any(type(m).__module__.startswith("monai") for m in light.modules())
    light.load_state_dict(state, strict=True)
    ref.eval(), light.eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        assert torch.equal(ref(x), light(x))


@pytest.mark.parametrize("name", sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "metadata.json").exists()))
def test_shipped_bundles_give_monai_outputs(name):
    path = WEIGHTS_DIR / name
    meta = read_metadata(path)
    bundle = load_bundle(path)
    _same_outputs(meta, (2, len(meta["input_channels"]), 64, 48), bundle.network.state_dict())


@pytest.mark.parametrize("net", [
    {"channels": [4, 8], "strides": [2], "num_res_units": 0},
    {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 2},
    {"channels": [4, 8, 16], "strides": [2, 1], "num_res_units": 1},
])
def test_other_shapes_give_monai_outputs(net):
    meta = {"network": {"class": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 2, "out_channels": 5,
                        "norm": "batch", **net}}
    _same_outputs(meta, (3, 2, 32, 40))


def test_unsupported_settings_fall_back_to_monai():
    meta = {"network": {"class": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                        "channels": [4, 8], "strides": [2], "norm": "instance"}}
    assert not unet.supports({k: v for k, v in meta["network"].items() if k != "class"})
    assert type(build_inference_network(meta)).__module__.startswith("monai")
