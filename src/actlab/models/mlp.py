"""Plain MLP on flattened images: the deep-and-narrow regime where ReLU units die.

Lu et al. 2018 ("Dying ReLU and Initialization") show that as depth grows at fixed small width
a ReLU network is increasingly likely to be born dead (constant output) under symmetric He
init. `depth` hidden layers of `width` units, each Linear -> [norm] -> act, then a linear head;
`norm` ("none" | "batch" | "layer") shows how normalisation changes that picture.

    model = MLP(num_classes=10, in_channels=1, image_size=28, depth=16, width=16)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from actlab.models.resnet import check_positive

ActFactory = Callable[[], nn.Module]
NORMS = ("none", "batch", "layer")


class HiddenLayer(nn.Module):
    """fc -> norm -> act; `act` is this layer's own activation site (`hidden.<i>.act`)."""

    def __init__(self, in_features: int, width: int, norm: str, act: ActFactory):
        super().__init__()
        # BatchNorm subtracts the batch mean, so a bias before it is dead weight.
        self.fc = nn.Linear(in_features, width, bias=norm != "batch")
        if norm == "batch":
            self.norm = nn.BatchNorm1d(width)
        elif norm == "layer":
            self.norm = nn.LayerNorm(width)
        else:
            self.norm = nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.fc(x)))


class MLP(nn.Module):
    """Flatten -> `depth` HiddenLayers -> linear head. Activation sites: `depth`."""

    kind = "image"  # the data it fits (run.build checks it against the data module's model_kind)

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        act: ActFactory = nn.ReLU,
        depth: int = 16,
        width: int = 16,
        norm: str = "none",
    ):
        super().__init__()
        check_positive(
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, depth=depth, width=width
        )
        if norm not in NORMS:
            raise ValueError(f"model.norm must be one of {'|'.join(NORMS)}, got {norm!r}")

        in_features = in_channels * image_size * image_size
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(
            *(HiddenLayer(in_features if i == 0 else width, width, norm, act) for i in range(depth))
        )
        self.head = nn.Linear(width, num_classes)

        # He normal in fan_in mode: keeps the forward second moment constant through rectifier
        # layers, the symmetric init under which Lu et al. analyse dying. Biases start at zero.
        for m in self.hidden.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.flatten(x)))
