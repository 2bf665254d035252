"""uint8 pixels: resizing as torchvision does, changing the channel count, per-channel
statistics, and preparing one user image like the folder images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std on the 0..1 scale of uint8 (N, C, H, W),
    from a 256-bin histogram per channel, so no float copy of the data is made."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean) / 255)
        stds.append(float(var.sqrt()) / 255)
    return tuple(means), tuple(stds)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W) to size × size: torchvision's resize."""
    if images.device.type == "cpu":
        # The very kernel torchvision's resize runs on the CPU (same pixels), without importing
        # torchvision: 2 s of the app's start-up.
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    import torchvision.transforms.v2.functional as TF  # uint8 on other devices goes via float

    return TF.resize(images, [size, size], antialias=True)


def _resize_one(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-2:] == (size, size):
        return image
    return _resize(image[None], size)[0]


def _resize_batch(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 batch, in chunks to bound the temporaries."""
    out = torch.empty(
        (images.shape[0], images.shape[1], size, size), dtype=torch.uint8, device=images.device
    )
    for i in range(0, images.shape[0], chunk):
        out[i : i + chunk] = _resize(images[i : i + chunk], size)
    return out


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8 → `channels` channels: RGB→L with PIL's integer luma, L→RGB copies."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        r, g, b = images.to(torch.int32).unbind(1)
        luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16  # PIL's convert("L")
        return luma.to(torch.uint8)[:, None].contiguous()
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot turn {have}-channel images into {channels} channels")
