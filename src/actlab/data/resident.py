"""Tensor-resident batches: a whole split as one uint8 tensor on the training device, cut by index.

    batches = TensorBatches(images, labels, batch_size=128, mean=..., std=..., shuffle=True, seed=0, augment=True)
    for x, y in batches: ...          # x float32 (B, C, H, W), normalised; y int64; both on images.device

Per-sample PIL transforms and worker processes cost more than a small model's step (Fashion-MNIST
trained ~15x slower than a bare loop); a split of Fashion-MNIST or CIFAR is 60-180 MB as uint8, so
it lives on the device and each batch is a gather, an optional pad-crop + flip, and a normalise.
Order and augmentation come from a generator seeded by (seed, epoch), drawn on the CPU: the same
numbers on every device, and a run resumed at epoch k sees what an uninterrupted one saw. The order
is the torchvision loader's (EpochShuffle: randperm(n) of seed + epoch), so unaugmented data gives
the two loaders the same batches; the normalisation is torchvision's ops in torchvision's order, so
evaluation pixels are bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

PAD = 4  # the HeLU paper's CIFAR recipe: random crop of the 4-pixel zero-padded image + horizontal flip


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 as torchvision's ToDtype(scale=True) + Normalize, op for op (same bits)."""
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def pad_crop_flip(images: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Each image's crop at offset shifts[i] = (top, left) in [0, 2 pad] of its zero-padded copy, mirrored
    where flips[i]: torchvision's RandomCrop(padding=pad) + RandomHorizontalFlip, for a batch at once."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    rows = shifts[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = shifts[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # mirroring = reading the columns backwards
    out = padded[torch.arange(b, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def read_split(dataset, geometry=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (N, C, H, W) images, int64 labels) of a torchvision in-memory dataset (`.data`: (N, H, W)
    as Fashion-MNIST's tensor, (N, H, W, C) as CIFAR's array; `.targets`), through `geometry` (a
    transform on uint8 image batches, e.g. Fashion-MNIST's Pad(2)): the pixels its __getitem__ gives."""
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if data is None or targets is None:
        raise ValueError(f"{type(dataset).__name__} keeps no in-memory .data/.targets; use dataset.loader=torchvision")
    images = torch.as_tensor(data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    images = images.contiguous()
    if geometry is not None:
        images = geometry(images)
    return images, torch.as_tensor(targets, dtype=torch.long)


class TensorBatches:
    """An epoch's batches of (images, labels) held on one device; Lightning calls `sampler.set_epoch`.

    shuffle: a new order each epoch (training); else the split in order (evaluation). augment: pad-crop
    + flip per batch. rank/world: this DDP rank's shard of every epoch's order (equal sizes, the
    remainder dropped, as DistributedSampler(drop_last=True)); evaluation shards rank::world.
    A final training batch of exactly one example is dropped (BatchNorm cannot train on it).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], shuffle: bool = False, seed: int = 0, augment: bool = False,
                 rank: int = 0, world: int = 1):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"TensorBatches needs uint8 (N, C, H, W) images and N labels, got "
                             f"{tuple(images.shape)} {images.dtype} and {len(labels)} labels")
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.shuffle, self.augment = int(batch_size), bool(shuffle), bool(augment)
        self.seed, self.epoch, self.rank, self.world = int(seed) % 2**63, 0, int(rank), int(world)
        shape = (1, -1, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(shape)
        # Where Lightning looks for set_epoch (lightning.fabric _set_sampler_epoch) and for shuffling.
        self.sampler, self.batch_sampler = self, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _count(self) -> int:
        """Examples this rank sees per epoch."""
        n = len(self.images)
        if self.world == 1:
            return n
        return n // self.world if self.shuffle else len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        n, b = self._count(), self.batch_size
        if self.shuffle and n > 1 and n % b == 1:
            n -= 1
        return -(-n // b)

    def epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(indices in visiting order, crop offsets, flips) of this epoch and rank, drawn on the CPU."""
        n = len(self.images)
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world), None, None
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g)  # first draw: EpochShuffle's order
        shifts = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g) if self.augment else None
        flips = torch.rand(n, generator=g) < 0.5 if self.augment else None
        if self.world > 1:
            take = slice(self.rank, self.world * self._count(), self.world)
            order = order[take]
            shifts, flips = (None if t is None else t[take] for t in (shifts, flips))
        return order, shifts, flips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, shifts, flips = self.epoch_plan()
        device = self.images.device
        order = order.to(device)
        if shifts is not None:
            shifts, flips = shifts.to(device), flips.to(device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images.index_select(0, idx)
            if shifts is not None:
                x = pad_crop_flip(x, shifts[start:start + self.batch_size], flips[start:start + self.batch_size])
            yield normalise(x, self.mean, self.std), self.labels.index_select(0, idx)
