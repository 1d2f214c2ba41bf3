"""CIFAR-style ResNet (He et al. 2016) with one activation module per call site.

CIFAR variant: 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep resolution into stage 1;
stage widths double from `width`, stages 2.. downsample by 2. `resnet18()` is the classic
CIFAR ResNet-18 (11,173,962 parameters for 10 classes); `resnet_small()` (3 stages of one
block, widths 16-64, as conf/model/resnet_small.yaml) is a small CNN for quick CPU runs.

    model = resnet18(num_classes=10, in_channels=3, image_size=32, act=nn.GELU)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

ActFactory = Callable[[], nn.Module]


class BasicBlock(nn.Module):
    """conv-BN-act-conv-BN + shortcut, then act. `act1` and `act2` are separate modules so
    per-layer hooks (dead-neuron rates, margin callbacks) see two distinct sites."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: ActFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = act()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        # Projection shortcut (1x1 conv + BN, "option B") only where the shape changes.
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: stem, `len(blocks)` stages of BasicBlocks (widths width*2**i), global
    average pool, linear head. Activation sites: 1 (stem) + 2 per block."""

    kind = "image"  # the data it fits (run.build checks it against the data module's model_kind)

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        act: ActFactory = nn.ReLU,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
    ):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)  # Hydra hands over a ListConfig
        check_positive(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"model.blocks must be a non-empty list of positive ints, got {list(blocks)}")
        if width < 1:
            raise ValueError(f"model.width must be >= 1, got {width}")

        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_channels, width, 3, 1, 1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(width))
        self.stem.add_module("act", act())

        in_ch = width
        for i, n in enumerate(blocks):
            out_ch = width * 2**i
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(
                *(
                    BasicBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1, act)
                    for j in range(n)
                )
            )
            self.add_module(f"layer{i + 1}", stage)  # torchvision-style names: layer1.0.act1
            in_ch = out_ch
        self.num_stages = len(blocks)
        # Adaptive pool: any image_size works (32 for CIFAR, 64 for downsized Imagenette).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(
    num_classes: int, in_channels: int, image_size: int, act: ActFactory = nn.ReLU, width: int = 64
) -> ResNet:
    """CIFAR ResNet-18: blocks (2,2,2,2), widths 64-512; 17 activation sites."""
    return ResNet(num_classes, in_channels, image_size, act, blocks=(2, 2, 2, 2), width=width)


def resnet_small(
    num_classes: int, in_channels: int, image_size: int, act: ActFactory = nn.ReLU, width: int = 16
) -> ResNet:
    """blocks (1,1,1), widths 16-64: 78,042 params, 7 activation sites; minutes per epoch on CPU."""
    return ResNet(num_classes, in_channels, image_size, act, blocks=(1, 1, 1), width=width)


def check_positive(**knobs) -> None:
    """One-line ValueError naming the first `model.<knob>` that is below 1 (all models share this)."""
    for key, value in knobs.items():
        if int(value) < 1:
            raise ValueError(f"model.{key} must be >= 1, got {value}")


def init_weights(model: nn.Module) -> None:
    """He (Kaiming) normal init for convs, as in He et al. 2015 and torchvision: fan_out mode
    with the ReLU gain (HeLU's forward is ReLU; for other activations it is the usual default).
    BN starts as identity. The head keeps PyTorch's default: no rectifier follows it."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
