"""Batches for a model: normalized floats on any device, with the CIFAR augmentation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from dashboard.data.splits import Split


def normalize(images: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """uint8 (…, C, H, W) → float32 `(x / 255 - mean) / std`, on the images' device."""
    return _normalize(images, *_channel_constants(mean, std, images.device))


def _channel_constants(
    mean: Any, std: Any, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(-1, 1, 1)
    return m, s


def _normalize(
    images: torch.Tensor,
    m: torch.Tensor,
    s: torch.Tensor,
    memory_format: torch.memory_format = torch.preserve_format,
) -> torch.Tensor:
    # The float copy is made in the layout the model wants, so no second copy is needed.
    x = images.to(torch.float32, memory_format=memory_format)
    return x.div_(255).sub_(m).div_(s)  # in place on the fresh copy


def augment_batch(
    images: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4
) -> torch.Tensor:
    """Random crop from a zero-padded copy plus a random horizontal flip, per image, in one
    gather over the whole batch (the CIFAR recipe). uint8 in, uint8 out, same shape."""
    N, C, H, W = images.shape
    device = images.device
    rand_device = generator.device if generator is not None else device
    dy = torch.randint(0, 2 * padding + 1, (N,), generator=generator, device=rand_device)
    dx = torch.randint(0, 2 * padding + 1, (N,), generator=generator, device=rand_device)
    flip = torch.rand(N, generator=generator, device=rand_device) < 0.5
    dy, dx, flip = dy.to(device), dx.to(device), flip.to(device)
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(H, device=device)  # (N, H)
    cols = dx[:, None] + torch.arange(W, device=device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    # One flat pixel index per output pixel, shared by the channels: a single gather.
    index = rows[:, :, None] * (W + 2 * padding) + cols[:, None, :]  # (N, H, W)
    index = index.view(N, 1, H * W).expand(N, C, H * W)
    return padded.view(N, C, -1).gather(2, index).view(N, C, H, W)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: bool = False,
    device: str | torch.device = "cpu",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalized float batches `(B, C, H, W)` and labels `(B,)` on `device`; every index once
    per pass, the last batch possibly smaller. `memory_format=torch.channels_last` lays the
    batches out channels-last, for a model converted to it."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else None
    m, s = _channel_constants(split.info.mean, split.info.std, device)
    for start in range(0, n, batch_size):
        if order is None:
            x = split.images[start : start + batch_size]
            y = split.labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            x, y = split.images.index_select(0, idx), split.labels.index_select(0, idx)
        x = x.to(device, non_blocking=True)
        if augment:
            x = augment_batch(x, generator)
        yield _normalize(x, m, s, memory_format), y.to(device, non_blocking=True)
