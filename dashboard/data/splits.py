"""A dataset in memory: what it is (DatasetInfo), its images and labels (Split), images resized
only when read (ResizedImages), and picking some of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from dashboard.data.pixels import (
    _resize_batch,
    _resize_one,
    _to_channels,
)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, without loading it."""

    name: str  # registry name as given, e.g. "mnist", "folder:/abs/path"
    title: str  # "MNIST", "Fashion-MNIST", "CIFAR-10", ...
    classes: tuple[str, ...]
    channels: int  # 1 or 3
    size: int  # side length of the images the model sees
    mean: tuple[float, ...]  # per channel, on the 0..1 scale, computed on the train split
    std: tuple[float, ...]
    augment: bool  # random crop + horizontal flip make sense (CIFAR, not digits)
    description: str  # one line: what it is, where it comes from, how to download
    folder: str = ""  # files: folder under the data root (registry) or absolute path (folders)
    native_size: int = 0  # side length as stored; images are resized when `size` differs

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


class ResizedImages:
    """(N, C, size, size) uint8 images kept at the size they are stored in and resized when
    read: CIFAR-10's test split for a 224-px model is 31 MB instead of 1.5 GB.

    Indexing gives pixels like the resized tensor would (an int: one (C, size, size) image; a
    slice or an index tensor: a (B, C, size, size) batch; then any further indices), resized
    per read with the same antialiased bilinear filter, so each image is exactly what resizing
    the whole split up front gave. `select` picks images without resizing them."""

    def __init__(self, stored: torch.Tensor, size: int) -> None:
        self.stored = stored  # (N, C, H, W) uint8 as stored
        self.size = size

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.stored.shape[:2], self.size, self.size))

    @property
    def dtype(self) -> torch.dtype:
        return self.stored.dtype

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def ndim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        """Bytes held: the stored images only."""
        return self.stored.nbytes

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return int(self.stored.shape[0])

    def __repr__(self) -> str:
        return f"ResizedImages({tuple(self.stored.shape)} stored → {tuple(self.shape)})"

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, tuple):  # images first, then channels and pixels of the resized ones
            picked = self[key[0]]
            rest = key[1:]
            return picked[rest] if picked.ndim == 3 else picked[(slice(None), *rest)]
        picked = self.stored[key]
        if picked.ndim == 3:  # one image
            return _resize_batch(picked[None], self.size)[0]
        return _resize_batch(picked, self.size)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            raise ValueError("ResizedImages selects along the image dimension (0) only")
        return _resize_batch(self.stored.index_select(0, index), self.size)

    def select(self, key: Any) -> ResizedImages:
        """The images at `key` (a slice or an index tensor), still resized only when read."""
        return ResizedImages(self.stored[key], self.size)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> ResizedImages:
        """The stored images on `device`: batches are then resized there."""
        return ResizedImages(self.stored.to(device, non_blocking=non_blocking), self.size)


@dataclass
class Split:
    """One split of a dataset, decoded into memory."""

    info: DatasetInfo
    split: str  # "train" | "test"
    # (N, C, H, W) uint8 at info.size: a contiguous tensor, or ResizedImages when the stored
    # images are another size (a 224-px model on CIFAR): read them by indexing either way.
    images: torch.Tensor | ResizedImages
    labels: torch.Tensor  # (N,) int64
    source: str  # which files were used, as a sentence a user can check
    is_sample: bool  # True when the bundled sample stands in for the full set
    skipped: int = 0  # unreadable files skipped (folders)
    notes: tuple[str, ...] = ()  # warnings about the files (folders): empty classes, links, …

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _pick(images: torch.Tensor | ResizedImages, key: Any) -> torch.Tensor | ResizedImages:
    """Some of the images, still resized only when read."""
    return images.select(key) if isinstance(images, ResizedImages) else images[key]


def subset(split: Split, indices: torch.Tensor) -> Split:
    """The images at `indices`, in that order (a gather of the stored images: resized images
    stay resized per batch)."""
    return dataclasses.replace(
        split, images=_pick(split.images, indices), labels=split.labels[indices]
    )


def take_first(split: Split, limit: int | None) -> Split:
    """The first `limit` images of a split (file order, so a slice is reproducible)."""
    if limit is None or limit >= len(split):
        return split
    return dataclasses.replace(
        split,
        images=_pick(split.images, slice(0, limit)),
        labels=split.labels[:limit],
        source=f"{split.source}, first {limit:,} used",
    )


def _count(n: int, split: str) -> str:
    return f"{n:,} {split} images"


def preprocess_pil(image: PIL.Image.Image, info: DatasetInfo) -> torch.Tensor:
    """One user image → uint8 (C, H, W) the way folder images are prepared: upright by EXIF,
    RGB (alpha dropped), squashed to info.size × info.size with antialiasing, then info.channels
    (luma by PIL's formula for 1 channel)."""
    rgb = np.asarray(PIL.ImageOps.exif_transpose(image).convert("RGB"))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # (3, H, W)
    x = _resize_one(x, info.size)
    return _to_channels(x[None], info.channels)[0].contiguous()
