"""VNet (Milletari et al. 2016) as used by the LA semi-supervised literature.

Input ``(N, C, X, Y, Z)``, output logits ``(N, num_classes, X, Y, Z)``. Each spatial size must
be divisible by 16 (four stride-2 stages).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

NORMS = ("batchnorm", "groupnorm", "instancenorm", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm3d(channels)
    if kind == "groupnorm":
        return nn.GroupNorm(num_groups=min(16, channels), num_channels=channels)
    if kind == "instancenorm":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.Identity()


def _conv_unit(cin: int, cout: int, norm: str, kernel: int = 3, stride: int = 1,
               transpose: bool = False) -> list[nn.Module]:
    conv_cls = nn.ConvTranspose3d if transpose else nn.Conv3d
    padding = 0 if kernel == stride else kernel // 2
    return [conv_cls(cin, cout, kernel, stride=stride, padding=padding),
            _norm(norm, cout), nn.ReLU(inplace=True)]


class ConvStage(nn.Sequential):
    """``n_convs`` 3x3x3 conv-norm-ReLU units at one resolution."""

    def __init__(self, n_convs: int, cin: int, cout: int, norm: str):
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += _conv_unit(cin if i == 0 else cout, cout, norm)
        super().__init__(*layers)


class VNet(nn.Module):
    """Encoder with 1-2-3-3-3 conv stages, decoder with 3-3-2-1, additive skip connections."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, n_filters: int = 16,
                 normalization: str = "batchnorm", dropout: float = 0.5):
        super().__init__()
        if normalization not in NORMS:
            raise ValueError(f"normalization must be one of {NORMS}, got {normalization!r}")
        f, nm = n_filters, normalization
        self.enc = nn.ModuleList([ConvStage(1, in_channels, f, nm), ConvStage(2, 2 * f, 2 * f, nm),
                                  ConvStage(3, 4 * f, 4 * f, nm), ConvStage(3, 8 * f, 8 * f, nm),
                                  ConvStage(3, 16 * f, 16 * f, nm)])
        self.down = nn.ModuleList([nn.Sequential(*_conv_unit(c, 2 * c, nm, kernel=2, stride=2))
                                   for c in (f, 2 * f, 4 * f, 8 * f)])
        self.up = nn.ModuleList([nn.Sequential(*_conv_unit(2 * c, c, nm, kernel=2, stride=2,
                                                           transpose=True))
                                 for c in (8 * f, 4 * f, 2 * f, f)])
        self.dec = nn.ModuleList([ConvStage(3, 8 * f, 8 * f, nm), ConvStage(3, 4 * f, 4 * f, nm),
                                  ConvStage(2, 2 * f, 2 * f, nm), ConvStage(1, f, f, nm)])
        self.dropout = nn.Dropout3d(p=dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv3d(f, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.enc):
            x = stage(x)
            if i < 4:
                skips.append(x)
                x = self.down[i](x)
        x = self.dropout(x)
        for up, stage, skip in zip(self.up, self.dec, reversed(skips)):
            x = stage(up(x) + skip)
        return self.head(self.dropout(x))


def network_config(name: str = "vnet", in_channels: int = 1, num_classes: int = 2,
                   n_filters: int = 16, normalization: str = "batchnorm",
                   dropout: float = 0.5) -> dict[str, Any]:
    """The dict stored in checkpoints under ``config['network']``."""
    return dict(name=name, in_channels=in_channels, num_classes=num_classes,
                n_filters=n_filters, normalization=normalization, dropout=dropout)


def build_network(cfg: dict[str, Any]) -> nn.Module:
    """Build a network from :func:`network_config`'s dict."""
    cfg = dict(cfg)
    name = cfg.pop("name", "vnet")
    if name != "vnet":
        raise ValueError(f"unknown network '{name}' (available: vnet)")
    return VNet(**cfg)
