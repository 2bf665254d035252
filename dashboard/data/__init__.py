"""Datasets as uint8 tensors in memory: registry, download, bundled sample, image folders.

Every dataset arrives as one `(N, C, H, W)` uint8 tensor plus `(N,)` int64 labels, so training
and evaluation index whole batches at once instead of decoding one PIL image per sample.
Normalization and augmentation then run on batches, on any device.

Registry names: `mnist`, `fashion-mnist`, `cifar10`, `cifar100`, `cifar100-coarse`, and
`folder:PATH` for an ImageFolder of the user's own images (`PATH/<class>/*.jpg`, or
`PATH/{train,test}/<class>/*.jpg`). Files use torchvision's layouts under the data root
(`dashboard.base.paths.data_root`); missing files are downloaded through torchvision's own dataset
classes (mirrors, md5 checks, progress bar). CIFAR's pickled batches are read with a restricted
unpickler that can only rebuild numpy arrays, so a planted file cannot run code.

The package, one module per step: `registry` (the datasets known by name), `files` (IDX and
CIFAR formats), `download` (a registry dataset's files, downloaded or the bundled sample),
`folders` (a user's image folder), `splits` (a dataset in memory), `pixels` (resizing,
channels), `batches` (normalized batches for a model). Here: the two ways in, `dataset_info`
and `load_split`, and the names callers use as `data.X`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from dashboard.base import paths
from dashboard.data.batches import augment_batch as augment_batch
from dashboard.data.batches import iterate_batches as iterate_batches
from dashboard.data.batches import normalize as normalize
from dashboard.data.download import _load_registered
from dashboard.data.files import find_idx as find_idx
from dashboard.data.files import read_idx as read_idx
from dashboard.data.files import safe_unpickle as safe_unpickle
from dashboard.data.files import write_idx as write_idx
from dashboard.data.folders import DEFAULT_FOLDER_SIZE as DEFAULT_FOLDER_SIZE
from dashboard.data.folders import FOLDER_PREFIX as FOLDER_PREFIX
from dashboard.data.folders import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from dashboard.data.folders import (
    _folder_info,
    _folder_path,
    _folder_stats,
    _load_folder,
    _scan_folder,
)
from dashboard.data.pixels import _to_channels
from dashboard.data.pixels import channel_stats as channel_stats
from dashboard.data.registry import _check_size, _check_split, _lookup
from dashboard.data.registry import cifar100_fine_to_coarse as cifar100_fine_to_coarse
from dashboard.data.registry import dataset_names as dataset_names
from dashboard.data.splits import DatasetInfo as DatasetInfo
from dashboard.data.splits import ResizedImages as ResizedImages
from dashboard.data.splits import Split as Split
from dashboard.data.splits import preprocess_pil as preprocess_pil
from dashboard.data.splits import subset as subset
from dashboard.data.splits import take_first as take_first


def dataset_info(
    name: str, *, data_root: str | os.PathLike[str] | None = None, input_size: int | None = None
) -> DatasetInfo:
    """Describe a dataset. Cheap for registry names; a folder's train split is decoded once
    (then cached) because its classes, channels and normalization come from its files."""
    _check_size(input_size)
    folder = _folder_path(name)
    if folder is not None:
        layout = _scan_folder(folder)
        size = input_size or DEFAULT_FOLDER_SIZE
        return _folder_info(layout, size, _folder_stats(layout, "train", size))
    info = _lookup(name).info
    return info if input_size is None else replace(info, size=input_size)


def load_split(
    name: str,
    split: str = "test",
    *,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = True,
    input_size: int | None = None,
) -> Split:
    """Load one split into memory, downloading it first when it is missing and `download`."""
    _check_split(split)
    _check_size(input_size)
    folder = _folder_path(name)
    if folder is not None:
        return _load_folder(folder, split, input_size or DEFAULT_FOLDER_SIZE)
    reg = _lookup(name)
    info = reg.info if input_size is None else replace(reg.info, size=input_size)
    loaded = _load_registered(
        reg, split, Path(os.path.abspath(paths.data_root(data_root))), download
    )
    images: torch.Tensor | ResizedImages = _to_channels(loaded.images, info.channels)
    source = loaded.source
    if images.shape[-1] != info.size:  # resized per batch when read: memory stays as stored
        images = ResizedImages(images, info.size)
        source += f", resized to {info.size}×{info.size}"
    return Split(info, split, images, loaded.labels, source, loaded.is_sample, loaded.skipped)
