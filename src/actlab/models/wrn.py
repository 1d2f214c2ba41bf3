"""Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation blocks, one activation per call site.

WRN-d-k: a 3x3 stem to 16 channels, three groups of n = (d-4)/6 blocks with widths 16k, 32k,
64k (groups 2 and 3 downsample by 2), then BN-act, global average pool, linear head.
WRN-40-4 is the HeLU paper's vision model (8,949,210 parameters for 10 classes).

    model = wrn40_4(num_classes=10, in_channels=3, image_size=32, act=nn.ELU)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from actlab.models.resnet import check_positive, init_weights

ActFactory = Callable[[], nn.Module]


class WideBlock(nn.Module):
    """Pre-activation block: BN-act-conv(stride)-BN-act-dropout-conv, plus shortcut.

    As in the authors' code, when the shape changes the 1x1 projection shortcut reads the
    pre-activated input (bn1 -> act1), so act1 is still called exactly once per forward."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float, act: ActFactory):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = act()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = act()
        self.dropout = nn.Dropout(dropout)  # between the convs, where the paper puts it
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.act1(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.dropout(self.act2(self.bn2(o))))
        return o + skip


class WideResNet(nn.Module):
    """WRN-depth-widen. Activation sites: 2 per block + 1 final = depth - 3 (37 for WRN-40-4)."""

    kind = "image"  # the data it fits (run.build checks it against the data module's model_kind)

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        act: ActFactory = nn.ReLU,
        depth: int = 40,
        widen: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_positive(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"model.depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen < 1:
            raise ValueError(f"model.widen must be >= 1, got {widen}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")

        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        in_ch = 16
        for g, out_ch in enumerate(widths):
            stride = 1 if g == 0 else 2
            group = nn.Sequential(
                *(
                    WideBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1, dropout, act)
                    for j in range(n)
                )
            )
            self.add_module(f"block{g + 1}", group)  # names follow the authors' code: block2.3.act1
            in_ch = out_ch
        self.bn = nn.BatchNorm2d(in_ch)
        self.act = act()
        self.pool = nn.AdaptiveAvgPool2d(1)  # = the paper's 8x8 average pool at 32x32, any size here
        self.fc = nn.Linear(in_ch, num_classes)

        # He normal (fan_out, ReLU gain) for convs as in the authors' code; BN as identity.
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = self.act(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def wrn40_4(
    num_classes: int, in_channels: int, image_size: int, act: ActFactory = nn.ReLU, dropout: float = 0.0
) -> WideResNet:
    """WRN-40-4, the HeLU paper's model (Kimhi et al. 2024, Table 1)."""
    return WideResNet(num_classes, in_channels, image_size, act, depth=40, widen=4, dropout=dropout)


def wrn16_2(
    num_classes: int, in_channels: int, image_size: int, act: ActFactory = nn.ReLU, dropout: float = 0.0
) -> WideResNet:
    """WRN-16-2 (~0.69M params, 13 activation sites): same design, fast enough for CPU runs."""
    return WideResNet(num_classes, in_channels, image_size, act, depth=16, widen=2, dropout=dropout)
