"""The 2-D U-Net of MONAI (``monai.networks.nets.UNet``) rebuilt from plain PyTorch layers, for inference.

Importing MONAI loads all of its sub-packages (data, transforms, apps, with SciPy's signal module and matplotlib):
about 2.5 s of CPU per process on the development machine, more than the network takes on a sample study. This
module builds the same network with the same module tree, so the parameter names of a bundle's weights fit it
(``load_state_dict(strict=True)``), and the same operations in the same order, so its outputs equal MONAI's bit for
bit (tests/segment/test_unet.py compares the two on every shipped bundle). Training keeps MONAI's class.

Structure (MONAI 1.x ``UNet``, ``Convolution``, ``ResidualUnit``, ``ADN``, ``SkipConnection``; Apache-2.0, Copyright
MONAI Consortium): ``model = Sequential(down, SkipConnection(sub), up)`` recursively; ``down`` is a residual unit
(stride s) or a convolution block; the bottom is a down block of stride 1; ``up`` is a transposed convolution block
(stride s, output padding s - 1) followed, with residual units, by a one-subunit residual unit whose last
convolution is bare at the top. A convolution block is conv -> BatchNorm -> Dropout -> PReLU ("NDA").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: network settings this module reproduces; anything else is built by MONAI
SUPPORTED = {"spatial_dims": (2,), "kernel_size": (3,), "up_kernel_size": (3,), "act": ("PRELU", "prelu"),
             "norm": ("batch", "BATCH"), "dropout": (0.0, 0), "bias": (True,), "adn_ordering": ("NDA",)}


def supports(kwargs: dict[str, Any]) -> bool:
    """Whether :func:`unet` builds the network of these ``monai.networks.nets.UNet`` keyword arguments.

    >>> supports({"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": (4, 8), "strides": (2,),
    ...           "norm": "batch"}), supports({"spatial_dims": 3, "norm": "batch"})
    (True, False)
    """
    known = {"in_channels", "out_channels", "channels", "strides", "num_res_units", *SUPPORTED}
    if set(kwargs) - known:
        return False
    defaults = {"kernel_size": 3, "up_kernel_size": 3, "act": "PRELU", "norm": "INSTANCE", "dropout": 0.0,
                "bias": True, "adn_ordering": "NDA"}
    return all({**defaults, **kwargs}.get(k) in allowed for k, allowed in SUPPORTED.items())


class _Convolution(nn.Sequential):
    """conv (3 x 3, padding 1; transposed: output padding stride - 1), then BatchNorm, Dropout(0), PReLU unless
    ``conv_only``."""

    def __init__(self, cin: int, cout: int, stride: int, transposed: bool = False, conv_only: bool = False):
        super().__init__()
        if transposed:
            self.add_module("conv", nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=1,
                                                       output_padding=stride - 1))
        else:
            self.add_module("conv", nn.Conv2d(cin, cout, 3, stride=stride, padding=1))
        if not conv_only:
            self.add_module("adn", nn.Sequential())
            self.adn.add_module("N", nn.BatchNorm2d(cout))
            self.adn.add_module("D", nn.Dropout(0.0))
            self.adn.add_module("A", nn.PReLU())


class _ResidualUnit(nn.Module):
    """``subunits`` convolution blocks plus a residual path (a 3 x 3 convolution of the same stride when the stride
    is not 1, a 1 x 1 convolution when only the channel count changes, else the identity)."""

    def __init__(self, cin: int, cout: int, stride: int, subunits: int, last_conv_only: bool = False):
        super().__init__()
        self.conv = nn.Sequential()
        channels, s = cin, stride
        for su in range(max(1, subunits)):
            self.conv.add_module(f"unit{su:d}", _Convolution(channels, cout, s,
                                                             conv_only=last_conv_only and su == subunits - 1))
            channels, s = cout, 1
        self.residual: nn.Module = nn.Identity()
        if stride != 1:
            self.residual = nn.Conv2d(cin, cout, 3, stride, 1)
        elif cin != cout:
            self.residual = nn.Conv2d(cin, cout, 1, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.residual(x)
        return self.conv(x) + res


class _SkipConnection(nn.Module):
    """Concatenate the input with the output of ``submodule`` along the channels."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet(nn.Module):
    """``monai.networks.nets.UNet`` for 2-D inputs, 3 x 3 kernels, PReLU, batch norm, no dropout."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...], strides: tuple[int, ...],
                 num_res_units: int = 0, **_: Any):
        super().__init__()
        self.num_res_units = num_res_units

        def block(cin: int, cout: int, chans: tuple[int, ...], strides_: tuple[int, ...], is_top: bool) -> nn.Module:
            c, s = chans[0], strides_[0]
            if len(chans) > 2:
                sub, upc = block(c, c, chans[1:], strides_[1:], False), c * 2
            else:
                sub, upc = self._down(c, chans[1], 1), c + chans[1]
            return nn.Sequential(self._down(cin, c, s), _SkipConnection(sub), self._up(upc, cout, s, is_top))

        self.model = block(in_channels, out_channels, tuple(channels), tuple(strides), True)

    def _down(self, cin: int, cout: int, stride: int) -> nn.Module:
        if self.num_res_units > 0:
            return _ResidualUnit(cin, cout, stride, self.num_res_units)
        return _Convolution(cin, cout, stride)

    def _up(self, cin: int, cout: int, stride: int, is_top: bool) -> nn.Module:
        conv = _Convolution(cin, cout, stride, transposed=True, conv_only=is_top and self.num_res_units == 0)
        if self.num_res_units > 0:
            return nn.Sequential(conv, _ResidualUnit(cout, cout, 1, 1, last_conv_only=is_top))
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
