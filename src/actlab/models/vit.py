"""CIFAR-sized Vision Transformer (Dosovitskiy et al. 2021) with one activation per MLP block.

Patch embedding is a conv with kernel = stride = `patch` (4 on 32x32 gives 64 tokens); learned
position embeddings; pre-norm blocks. Classification reads the mean of the final patch tokens by
default (`pool="mean"`, as in Beyer et al. 2022's plain-ViT baselines; with plain SGD it also
trained faster than a cls token in our tiny checks) or a cls token (`pool="cls"`, original ViT).
The blocks are written here rather than taken from nn.TransformerEncoderLayer, whose activation
is a hidden functional call that neither hooks nor `activations.swap()` can reach.

    model = ViT(num_classes=10, in_channels=3, image_size=32, act=nn.GELU)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from actlab.models.resnet import check_positive

ActFactory = Callable[[], nn.Module]


class MLPBlock(nn.Module):
    """fc1-act-dropout-fc2-dropout; `act` is this block's own activation site."""

    def __init__(self, dim: int, hidden: int, dropout: float, act: ActFactory):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, act: ActFactory):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, hidden, dropout, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT classifier. Activation sites: one per block (`blocks.<i>.mlp.act`), `depth` in all."""

    kind = "image"  # the data it fits (run.build checks it against the data module's model_kind)

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        act: ActFactory = nn.ReLU,
        patch: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        pool: str = "mean",
    ):
        super().__init__()
        check_positive(
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, patch=patch, dim=dim, depth=depth, heads=heads
        )
        if image_size % patch:
            raise ValueError(f"model.image_size ({image_size}) must be divisible by model.patch ({patch})")
        if dim % heads:
            raise ValueError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"model.mlp_ratio must give an MLP width >= 1, got {mlp_ratio} * {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"model.pool must be one of cls|mean, got {pool!r}")

        self.pool = pool
        num_tokens = (image_size // patch) ** 2 + (pool == "cls")
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, dropout, act) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """ViT-paper init (truncated normal, std 0.02) for embeddings and linears, not He init:
        with LayerNorm before every block the rectifier gain buys nothing, and this is the init
        the published ViT results (and their GELU baselines) were obtained with."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))
