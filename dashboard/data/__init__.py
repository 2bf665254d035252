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
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import pickle
import socket
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from dashboard.base import images, paths
from dashboard.base.errors import DatasetUnavailableError, ShapeError, UnknownNameError

try:  # numpy >= 2 moved the array reconstructor; CIFAR's files name the old module
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

FOLDER_PREFIX = "folder:"
DEFAULT_FOLDER_SIZE = 32
# Image files in a class folder (the formats every image may have); other files are ignored.
IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS
# Listing a folder stops past this many entries or seconds: `folder:/usr` is not a dataset.
MAX_SCAN_ENTRIES = 2_000_000
MAX_SCAN_SECONDS = 60.0
# Pseudo file systems of the kernel: never listed (endless, or files that block on reading).
_SYSTEM_FOLDERS = ("/proc", "/sys", "/dev", "/run")
# A download that stalls (firewalled, not refused) fails after this many seconds of silence.
DOWNLOAD_TIMEOUT_S = 60.0
_CACHE_FORMAT = "2"  # bump when the cached tensors' meaning changes


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


@dataclass(frozen=True)
class _Registered:
    info: DatasetInfo
    loader: str  # "idx" (MNIST family) | "cifar" (python pickled batches)
    torchvision_class: str  # attribute of torchvision.datasets that downloads the files
    label_key: str = ""  # CIFAR batches: "labels" | "fine_labels" | "coarse_labels"
    names_key: str = ""  # CIFAR meta: "label_names" | "fine_label_names" | "coarse_label_names"


def _words(text: str) -> tuple[str, ...]:
    """Long class lists read better as text than as one quoted name per line."""
    return tuple(text.split())


# Published class orders (torchvision's; CIFAR's own meta files list the same).
_CIFAR10_CLASSES = _words("airplane automobile bird cat deer dog frog horse ship truck")
_CIFAR100_FINE = _words(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"""
)
_CIFAR100_COARSE = _words(
    """aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores
    large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
    medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
    vehicles_2"""
)
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_CIFAR100_DESC = (
    "60,000 32×32 colour images of 100 classes in 20 superclasses (A. Krizhevsky, 2009); "
    "torchvision downloads cifar-100-python.tar.gz from www.cs.toronto.edu/~kriz into "
    "<data root>/cifar-100-python"
)


def _cifar100(
    name: str, title: str, classes: tuple[str, ...], level: str, what: str
) -> _Registered:
    """CIFAR-100 read at one of its two label levels: the same files, another label column."""
    return _Registered(
        DatasetInfo(
            name=name,
            title=title,
            classes=classes,
            channels=3,
            size=32,
            mean=_CIFAR100_MEAN,
            std=_CIFAR100_STD,
            augment=True,
            description=f"{_CIFAR100_DESC}; labelled with the {what}",
            folder="cifar-100-python",
            native_size=32,
        ),
        loader="cifar",
        torchvision_class="CIFAR100",
        label_key=f"{level}_labels",
        names_key=f"{level}_label_names",
    )


_REGISTRY: dict[str, _Registered] = {
    "mnist": _Registered(
        DatasetInfo(
            name="mnist",
            title="MNIST",
            classes=tuple(str(d) for d in range(10)),
            channels=1,
            size=28,
            mean=(0.1307,),
            std=(0.3081,),
            augment=False,
            description=(
                "70,000 28×28 grayscale handwritten digits (Y. LeCun, C. Cortes, C. Burges); "
                "torchvision downloads them into <data root>/MNIST/raw, and a real 10,000-image "
                "sample ships in trained/data/mnist-sample for offline use"
            ),
            folder="MNIST/raw",
            native_size=28,
        ),
        loader="idx",
        torchvision_class="MNIST",
    ),
    "fashion-mnist": _Registered(
        DatasetInfo(
            name="fashion-mnist",
            title="Fashion-MNIST",
            classes=_FASHION_CLASSES,
            channels=1,
            size=28,
            mean=(0.2860,),
            std=(0.3530,),
            augment=False,
            description=(
                "70,000 28×28 grayscale Zalando product photos in 10 classes (Xiao et al., "
                "2017); torchvision downloads them into <data root>/FashionMNIST/raw"
            ),
            folder="FashionMNIST/raw",
            native_size=28,
        ),
        loader="idx",
        torchvision_class="FashionMNIST",
    ),
    "cifar10": _Registered(
        DatasetInfo(
            name="cifar10",
            title="CIFAR-10",
            classes=_CIFAR10_CLASSES,
            channels=3,
            size=32,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            augment=True,
            description=(
                "60,000 32×32 colour images in 10 classes (A. Krizhevsky, 2009); torchvision "
                "downloads cifar-10-python.tar.gz from www.cs.toronto.edu/~kriz into "
                "<data root>/cifar-10-batches-py (a JPEG copy in <data root>/cifar10-jpg "
                "also works), and a real 3,000-image sample ships in "
                "trained/data/cifar10-sample for offline use"
            ),
            folder="cifar-10-batches-py",
            native_size=32,
        ),
        loader="cifar",
        torchvision_class="CIFAR10",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": _cifar100("cifar100", "CIFAR-100", _CIFAR100_FINE, "fine", "100 fine classes"),
    "cifar100-coarse": _cifar100(
        "cifar100-coarse",
        "CIFAR-100 (20 superclasses)",
        _CIFAR100_COARSE,
        "coarse",
        "20 coarse superclasses",
    ),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FILES = {
    "cifar-10-batches-py": {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "meta": "batches.meta",
    },
    "cifar-100-python": {"train": ("train",), "test": ("test",), "meta": "meta"},
}
_CIFAR10_JPEG_FOLDER = "cifar10-jpg"
_SPLITS = ("train", "test")


# --------------------------------------------------------------------------- names


def dataset_names() -> list[str]:
    """Registry names. A user's own images are named `folder:PATH` (see module docstring)."""
    return list(_REGISTRY)


# CIFAR-100's published grouping: each superclass (coarse label) holds five fine classes. The
# files carry both labels per image; this table lets fine predictions be read as superclasses.
_CIFAR100_GROUPS = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def cifar100_fine_to_coarse() -> tuple[int, ...]:
    """For each of CIFAR-100's 100 fine labels (`cifar100`), its superclass label
    (`cifar100-coarse`), both in the published class orders."""
    coarse_of = {
        fine: _CIFAR100_COARSE.index(coarse)
        for coarse, members in _CIFAR100_GROUPS.items()
        for fine in members.split()
    }
    return tuple(coarse_of[fine] for fine in _CIFAR100_FINE)


def _unknown(name: str) -> UnknownNameError:
    valid = ", ".join(_REGISTRY)
    return UnknownNameError(f"unknown dataset {name!r}: choose one of {valid}, or folder:PATH")


def _lookup(name: str) -> _Registered:
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[key]


def _folder_path(name: str) -> Path | None:
    if not name.startswith(FOLDER_PREFIX):
        return None
    raw = name[len(FOLDER_PREFIX) :].strip()
    if not raw:
        raise UnknownNameError("folder: needs a path, e.g. folder:/home/me/pictures")
    try:
        return Path(raw).expanduser().resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a loop of symbolic links
        raise DatasetUnavailableError(f"image folder {raw} cannot be opened ({err})") from err


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise UnknownNameError(f"unknown split {split!r}: choose train or test")


def _check_size(input_size: int | None) -> None:
    if input_size is not None and not 4 <= input_size <= 1024:
        raise ShapeError(f"input size {input_size} is out of range: use 4 to 1024")


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


# --------------------------------------------------------------------------- tensors


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


def preprocess_pil(image: PIL.Image.Image, info: DatasetInfo) -> torch.Tensor:
    """One user image → uint8 (C, H, W) the way folder images are prepared: upright by EXIF,
    RGB (alpha dropped), squashed to info.size × info.size with antialiasing, then info.channels
    (luma by PIL's formula for 1 channel)."""
    rgb = np.asarray(PIL.ImageOps.exif_transpose(image).convert("RGB"))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # (3, H, W)
    x = _resize_one(x, info.size)
    return _to_channels(x[None], info.channels)[0].contiguous()


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


# --------------------------------------------------------------------------- IDX (MNIST family)


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """An IDX file (optionally .gz) as a uint8 tensor shaped by its header: one buffer viewed
    through numpy.frombuffer, no per-image work (60,000 MNIST digits in ~50 ms)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        raw = bytearray(gzip.decompress(raw) if path.suffix == ".gz" else raw)  # writable
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetUnavailableError(f"cannot read {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetUnavailableError(f"{path} is not an unsigned-byte IDX file (bad magic)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) != header + int(np.prod(dims)):
        raise DatasetUnavailableError(f"{path} is truncated or corrupt: size does not match header")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(data)


def write_idx(path: str | os.PathLike[str], array: np.ndarray | torch.Tensor) -> None:
    """Write a uint8 array as IDX; `.gz` paths get a reproducible gzip (no name, mtime 0)."""
    arr = np.ascontiguousarray(np.asarray(array, dtype=np.uint8))
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    payload = header + arr.tobytes()
    path = Path(path)
    with open(path, "wb") as f:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
                gz.write(payload)
        else:
            f.write(payload)


def find_idx(folder: Path, stem: str) -> Path | None:
    """`folder/stem`, else `folder/stem.gz`, else None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_pair(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_stem, label_stem = _IDX_FILES[split]
    image_path, label_path = find_idx(folder, image_stem), find_idx(folder, label_stem)
    if image_path is None or label_path is None:
        raise DatasetUnavailableError(f"{folder} lacks the IDX files for the {split} split")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetUnavailableError(
            f"{image_path.name} and {label_path.name} in {folder} do not match: "
            f"{tuple(images.shape)} images, {tuple(labels.shape)} labels"
        )
    return images[:, None], labels.to(torch.int64)  # (N, 1, H, W)


# --------------------------------------------------------------------------- CIFAR pickles


class _CifarUnpickler(pickle.Unpickler):
    """Rebuilds only what CIFAR's python batches contain: dicts, lists, strings, numbers and
    numpy arrays. Any other global (os.system, builtins.eval, …) is refused before it runs."""

    _ALLOWED: dict[tuple[str, str], Any] = {  # noqa: RUF012 - a constant lookup table
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles (protocol < 3) spell bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR batch holds only numpy arrays "
                "and lists, so this file may try to run code"
            ) from None


def safe_unpickle(path: str | os.PathLike[str]) -> Any:
    """Load a CIFAR python batch/meta file without allowing it to run code."""
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except (
        OSError,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
    ) as err:
        raise DatasetUnavailableError(f"cannot read {path}: {err}") from err


def _as_str_keys(entry: Any, path: Path) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise DatasetUnavailableError(f"{path} is not a CIFAR python file (no dict inside)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in entry.items()}


def _read_cifar(folder: Path, split: str, reg: _Registered) -> tuple[torch.Tensor, torch.Tensor]:
    files = _CIFAR_FILES[reg.info.folder]
    meta_path = folder / files["meta"]
    meta = _as_str_keys(safe_unpickle(meta_path), meta_path)
    names = tuple(
        n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta.get(reg.names_key, ())
    )
    if names != reg.info.classes:
        raise DatasetUnavailableError(
            f"{meta_path}: {reg.names_key} does not list {reg.info.title}'s classes in their "
            "published order; re-download the archive"
        )
    chunks, labels = [], []
    for filename in files[split]:
        path = folder / filename
        entry = _as_str_keys(safe_unpickle(path), path)
        data, batch_labels = entry.get("data"), entry.get(reg.label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or batch_labels is None
            or len(batch_labels) != data.shape[0]
        ):
            raise DatasetUnavailableError(f"{path} does not hold CIFAR images and {reg.label_key}")
        chunks.append(data)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    images = torch.from_numpy(np.concatenate(chunks).reshape(-1, 3, 32, 32))  # rows are R, G, B
    label_tensor = torch.from_numpy(np.concatenate(labels))
    if ((label_tensor < 0) | (label_tensor >= len(names))).any():
        raise DatasetUnavailableError(f"{folder}: labels out of range for {len(names)} classes")
    return images, label_tensor


# --------------------------------------------------------------------------- registry loading


class _Loaded(NamedTuple):
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    is_sample: bool = False
    skipped: int = 0


def _missing_files(reg: _Registered, root: Path, split: str) -> list[str]:
    folder = root / reg.info.folder
    if reg.loader == "idx":
        return [stem for stem in _IDX_FILES[split] if find_idx(folder, stem) is None]
    files = _CIFAR_FILES[reg.info.folder]
    wanted = [*files[split], files["meta"]]
    return [f for f in wanted if not (folder / f).is_file()]


def _count(n: int, split: str) -> str:
    return f"{n:,} {split} images"


def _load_registered(reg: _Registered, split: str, root: Path, download: bool) -> _Loaded:
    info = reg.info
    downloaded = ""
    missing = _missing_files(reg, root, split)
    if missing and reg.info.name == "cifar10" and (root / _CIFAR10_JPEG_FOLDER / split).is_dir():
        return _load_cifar10_jpeg(root / _CIFAR10_JPEG_FOLDER, split)
    failure = "download not attempted"
    if missing and download:
        failure = _download(reg, root)
        missing = _missing_files(reg, root, split)
        downloaded = "downloaded now to " if not missing else ""
    if missing:
        if info.name == "mnist":
            return _load_mnist_sample(split, root / info.folder, failure)
        if info.name == "cifar10" and paths.CIFAR10_SAMPLE_DIR.is_dir():
            where = f"{root / info.folder} or {root / _CIFAR10_JPEG_FOLDER}"
            return _load_cifar10_sample(split, where, failure)
        raise DatasetUnavailableError(_unavailable_message(reg, root, missing, failure))
    folder = root / info.folder
    if reg.loader == "idx":
        images, labels = _read_idx_pair(folder, split)
    else:
        images, labels = _read_cifar(folder, split, reg)
    full = " full set" if info.name == "mnist" else ""
    source = f"{info.title}{full}, {_count(len(labels), split)} ({downloaded}{folder})"
    return _Loaded(images, labels, source)


def _load_mnist_sample(split: str, full_folder: Path, why: str) -> _Loaded:
    sample = paths.SAMPLE_DIR
    if find_idx(sample, _IDX_FILES[split][0]) is None:
        raise DatasetUnavailableError(
            f"MNIST not found under {full_folder} ({why}) and the bundled sample is missing "
            f"from {sample}; run tools/make_mnist_sample.py, or {paths.DATA_ROOT_HINT}"
        )
    images, labels = _read_idx_pair(sample, split)
    which = (
        f"first {len(labels):,} train images" if split == "train" else _count(len(labels), split)
    )
    source = (
        f"bundled MNIST sample: {which} (full set not found under {full_folder}; {why}; "
        f"{paths.SHORT_DATA_ROOT_HINT})"
    )
    return _Loaded(images, labels, source, is_sample=True)


def _load_cifar10_sample(split: str, full_folders: str, why: str) -> _Loaded:
    """The bundled CIFAR-10 sample (200 train / 100 test JPEGs a class), read like the JPEG
    copy of the full set."""
    loaded = _load_cifar10_jpeg(paths.CIFAR10_SAMPLE_DIR, split)
    source = (
        f"bundled CIFAR-10 sample (JPEG copy): {_count(len(loaded.labels), split)} "
        f"(full set not found under {full_folders}; {why})"
    )
    return loaded._replace(source=source, is_sample=True)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's urlopen has no timeout; a silently dropped connection would hang forever."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)


def _download(reg: _Registered, root: Path) -> str:
    """Download through torchvision; return why it failed, or "" when it worked.

    The dataset object is made without its __init__ so torchvision never unpickles the CIFAR
    files itself: `download()` only fetches, checks md5s and extracts."""
    import torchvision.datasets  # only to download: importing torchvision takes seconds

    cls = getattr(torchvision.datasets, reg.torchvision_class)
    dataset = cls.__new__(cls)
    torchvision.datasets.VisionDataset.__init__(dataset, str(root))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            dataset.download()
    except (OSError, RuntimeError, ValueError, EOFError, tarfile.TarError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(err).__name__
        return f"download failed: {reason}"[:300]
    return ""


def _unavailable_message(reg: _Registered, root: Path, missing: list[str], why: str) -> str:
    import torchvision.datasets

    info = reg.info
    cls = getattr(torchvision.datasets, reg.torchvision_class)
    if reg.loader == "idx":  # read at call time: tests point the class at a local server
        names = ", ".join(filename for filename, _ in cls.resources)
        how = f"download {names} from {cls.mirrors[0]} into {root / info.folder}"
    else:
        how = f"download {cls.url} and extract it in {root}"
    return (
        f"{info.title} not found: missing {', '.join(missing)} in {root / info.folder} ({why}); "
        f"{how}, or {paths.DATA_ROOT_HINT}"
    )


# --------------------------------------------------------------------------- image folders


class _FolderLayout(NamedTuple):
    root: Path
    classes: tuple[str, ...]
    split_dirs: bool  # True: root/train and root/test; False: every 5th file of a class is test
    links_out: int = 0  # what listing the class folders left out (see _Walk)
    unreadable: int = 0

    def split_root(self, split: str) -> Path:
        """The folder holding the split's class folders."""
        return self.root / split if self.split_dirs else self.root


class _ImageFile(NamedTuple):
    label: int
    path: str
    size: int  # bytes; with mtime_ns, what the cache key watches
    mtime_ns: int


class _Listing(NamedTuple):
    files: list[_ImageFile]
    notes: tuple[str, ...]  # warnings for the user: empty classes, links not followed, …


class _Walk:
    """One listing's limits (entries, seconds) and what it left out."""

    def __init__(self, root: Path, links_out: int = 0, unreadable: int = 0) -> None:
        self.root = root
        self.entries = 0
        self.started = time.monotonic()
        self.links_out = links_out  # symbolic links leading out of their folder, or into a loop
        self.unreadable = unreadable  # folders that could not be listed
        self.special = 0  # image names on pipes, devices or sockets: never opened

    def scandir(self, folder: str) -> list[os.DirEntry[str]]:
        """The folder's entries, or none (counted) when it cannot be read."""
        try:
            with os.scandir(folder) as entries:
                found = list(entries)
        except OSError:  # permission denied, vanished, not a folder
            self.unreadable += 1
            return []
        self.entries += len(found)
        elapsed = time.monotonic() - self.started
        if self.entries > MAX_SCAN_ENTRIES or elapsed > MAX_SCAN_SECONDS:
            raise DatasetUnavailableError(
                f"image folder {self.root}: listing stopped after {self.entries:,} entries "
                f"in {elapsed:.0f} s; give the folder that holds one subfolder per class"
            )
        return found

    def follows(self, path: str, is_link: bool, within: str) -> bool:
        """Whether to follow `path`: not a symbolic link, or one leading inside `within` (a
        real path) — never out of its folder, up to a folder above, or to `within` itself
        (a loop)."""
        if not is_link or os.path.realpath(path).startswith(within + os.sep):
            return True
        self.links_out += 1
        return False

    def folder(self, path: Path, within: str) -> bool:
        """Whether `path` is a folder to list: a real one, or a link followed (see follows)."""
        return path.is_dir() and self.follows(str(path), path.is_symlink(), within)

    def notes(self) -> tuple[str, ...]:
        notes = []
        if self.links_out:
            notes.append(
                f"{_plural(self.links_out, 'symbolic link')} not followed (they lead out of "
                "their folder or into a loop)"
            )
        if self.unreadable:
            notes.append(f"{_plural(self.unreadable, 'folder')} could not be read")
        if self.special:
            notes.append(
                f"{_plural(self.special, 'image name')} on a pipe, device or socket not read"
            )
        return tuple(notes)


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _class_dirs(folder: Path, walk: _Walk) -> list[str]:
    within = os.path.realpath(folder)
    return sorted(
        e.name
        for e in walk.scandir(str(folder))
        if not e.name.startswith(".")
        and _is_dir(e)
        and walk.follows(e.path, e.is_symlink(), within)
    )


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_files(folder: Path, label: int, walk: _Walk) -> list[_ImageFile]:
    """Image files under a class folder (recursively), in sorted order. Symbolic links are
    followed only inside the class folder, each folder once. os.scandir and plain strings:
    pathlib costs seconds on 50,000 files."""
    found: list[_ImageFile] = []
    within = os.path.realpath(folder)
    stack = [str(folder)]
    seen = {within}
    while stack:
        for e in walk.scandir(stack.pop()):
            if e.name.startswith(".") or not walk.follows(e.path, e.is_symlink(), within):
                continue
            if _is_dir(e):
                real = os.path.realpath(e.path)
                if real in seen:  # a second link to a folder already listed
                    walk.links_out += 1
                else:
                    seen.add(real)
                    stack.append(e.path)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                try:
                    st = e.stat()
                except OSError:  # a dangling link: kept, so decoding counts it as skipped
                    found.append(_ImageFile(label, e.path, -1, -1))
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append(_ImageFile(label, e.path, st.st_size, st.st_mtime_ns))
                else:  # opening a pipe would wait for a writer forever
                    walk.special += 1
    found.sort()
    return found


def _refuse_system_folder(root: Path) -> None:
    if root == Path(root.anchor):
        raise DatasetUnavailableError(
            f"image folder {root} is the root of the file system: give the folder that holds "
            "one subfolder per class"
        )
    if os.name == "posix":
        for system in map(Path, _SYSTEM_FOLDERS):
            if root == system or system in root.parents:
                raise DatasetUnavailableError(
                    f"image folder {root} is in {system}, a system folder, not a folder of images"
                )


def _scan_folder(root: Path) -> _FolderLayout:
    _refuse_system_folder(root)
    try:
        kind = root.stat().st_mode
    except FileNotFoundError:
        raise DatasetUnavailableError(f"image folder {root} does not exist") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise DatasetUnavailableError(f"image folder {root} cannot be read ({reason})") from err
    if not stat.S_ISDIR(kind):
        what = "a file" if stat.S_ISREG(kind) else "not a folder"
        raise DatasetUnavailableError(
            f"image folder {root} is {what}: give the folder that holds one subfolder per class"
        )
    if not os.access(root, os.R_OK | os.X_OK):
        raise DatasetUnavailableError(f"image folder {root} cannot be read (permission denied)")
    walk = _Walk(root)
    real_root = os.path.realpath(root)
    split_dirs = walk.folder(root / "train", real_root) and walk.folder(root / "test", real_root)
    class_root = root / "train" if split_dirs else root
    classes = tuple(_class_dirs(class_root, walk))
    if len(classes) < 2:
        left_out = "".join(f"; {note}" for note in walk.notes())
        raise DatasetUnavailableError(
            f"image folder {class_root} needs at least two class subfolders "
            f"(found {len(classes)}): put each class's images in its own folder{left_out}"
        )
    if split_dirs:
        # test/'s own links are counted when the test split is listed
        extra = sorted(set(_class_dirs(root / "test", _Walk(root))) - set(classes))
        if extra:
            raise DatasetUnavailableError(
                f"{root / 'test'} has class folders missing from train/: {', '.join(extra)}"
            )
    return _FolderLayout(root, classes, split_dirs, walk.links_out, walk.unreadable)


def _split_files(layout: _FolderLayout, split: str) -> _Listing:
    walk = _Walk(layout.root, layout.links_out, layout.unreadable)
    files: list[_ImageFile] = []
    empty: list[str] = []
    within = os.path.realpath(layout.split_root(split))
    for label, name in enumerate(layout.classes):
        folder = layout.split_root(split) / name
        in_class = _image_files(folder, label, walk) if walk.folder(folder, within) else []
        if not layout.split_dirs:
            in_class = [f for i, f in enumerate(in_class) if (i % 5 == 4) == (split == "test")]
        if not in_class:
            empty.append(name)
        files.extend(in_class)
    notes = list(walk.notes())
    if empty:
        which = "class folder " if len(empty) == 1 else "class folders "
        verb = "has" if len(empty) == 1 else "have"
        notes.append(
            f"{which}{', '.join(empty)} {verb} no {split} images but still "
            f"{'counts as a class' if len(empty) == 1 else 'count as classes'}"
        )
    return _Listing(files, tuple(notes))


def _cache_path(layout: _FolderLayout, split: str, size: int, files: list[_ImageFile]) -> Path:
    """Cache file named by folder, split and size, plus a hash of every file's name, size
    and modification time, so any change to the folder makes a new key."""
    digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, split, size, layout.classes]).encode())
    digest.update("\n".join(f"{f.label}\0{f.path}\0{f.size}\0{f.mtime_ns}" for f in files).encode())
    folder_id = hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]
    name = f"{folder_id}-{split}-{size}-{digest.hexdigest()[:24]}.safetensors"
    return paths.cache_dir() / "folders" / name


class _PartStats(NamedTuple):
    channels: int  # 1 when every image of the split is grayscale (R = G = B everywhere)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int
    skipped: int
    refused: tuple[str, ...] = ()  # why the first skipped files were skipped, one line each


class _FolderPart(NamedTuple):
    stats: _PartStats
    images: torch.Tensor  # (N, stats.channels, size, size) uint8
    labels: torch.Tensor  # (N,) int64


_REASONS_KEPT = 3  # skipped files named in the split's source


def _decode_folder_part(
    layout: _FolderLayout, split: str, size: int, files: list[_ImageFile]
) -> _FolderPart:
    """Every file through the image gate, decoded in worker processes (images.decode_files),
    resized here to size × size."""
    decoded = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    slots = decoded.numpy()  # the same memory: numpy's copy costs less per image than torch's

    def keep(index: int, rgb: np.ndarray) -> None:  # (H, W, 3)
        if rgb.shape[:2] == (size, size):
            slots[index] = rgb.transpose(2, 0, 1)
        else:
            decoded[index] = _resize_one(torch.from_numpy(rgb).permute(2, 0, 1), size)

    where = layout.split_root(split)
    inside = f"{where}{os.sep}"  # every listed path starts so (os.path.relpath is slow)
    names = [f.path.removeprefix(inside) for f in files]
    refused = images.decode_files([f.path for f in files], names, size, keep)
    kept = [i for i in range(len(files)) if i not in refused]
    n, skipped = len(kept), len(refused)
    reasons = tuple(refused[i] for i in sorted(refused)[:_REASONS_KEPT])
    if n == 0:
        detail = f" ({_plural(skipped, 'unreadable file')}: {reasons[0]})" if skipped else ""
        raise DatasetUnavailableError(f"no readable {split} images in {where}{detail}")
    if skipped:
        decoded = decoded.index_select(0, torch.tensor(kept, dtype=torch.int64))
    labels = torch.tensor([files[i].label for i in kept], dtype=torch.int64)
    gray = bool((decoded[:, 0] == decoded[:, 1]).all() and (decoded[:, 1] == decoded[:, 2]).all())
    decoded = (decoded[:, :1] if gray else decoded).contiguous()
    mean, std = channel_stats(decoded)
    stats = _PartStats(1 if gray else 3, mean, std, n, skipped, reasons)
    return _FolderPart(stats, decoded, labels)


def _listed(layout: _FolderLayout, split: str, size: int) -> tuple[_Listing, Path]:
    listing = _split_files(layout, split)
    if not listing.files:
        hint = "" if layout.split_dirs else " (every 5th file of a class is test: add images)"
        raise DatasetUnavailableError(f"no {split} images in {layout.root}{hint}")
    return listing, _cache_path(layout, split, size, listing.files)


def _folder_part(
    layout: _FolderLayout, split: str, size: int, listed: tuple[_Listing, Path] | None = None
) -> tuple[_FolderPart, tuple[str, ...]]:
    """Decode one split of a folder, or read it back from the cache; and the listing's notes.
    `listed`: the split's listing and cache path when the caller has them already."""
    listing, path = listed or _listed(layout, split, size)
    with contextlib.suppress(FileNotFoundError, _StaleCacheError):
        stats = _read_cached_stats(path)
        with safe_open(str(path), framework="pt") as f:
            part = _FolderPart(stats, f.get_tensor("images"), f.get_tensor("labels"))
            return part, listing.notes
    part = _decode_folder_part(layout, split, size, listing.files)
    _write_cached_part(path, part)
    return part, listing.notes


def _folder_stats(layout: _FolderLayout, split: str, size: int) -> _PartStats:
    """A split's channels and normalization: the cache file's header when it exists."""
    listed = _listed(layout, split, size)
    with contextlib.suppress(FileNotFoundError, _StaleCacheError):
        return _read_cached_stats(listed[1])
    return _folder_part(layout, split, size, listed)[0].stats


class _StaleCacheError(Exception):
    """A cache file from an older format or damaged: rebuilt, never trusted."""


def _read_cached_stats(path: Path) -> _PartStats:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _CACHE_FORMAT:
            raise _StaleCacheError(path)
        return _PartStats(
            int(meta["channels"]),
            tuple(json.loads(meta["mean"])),
            tuple(json.loads(meta["std"])),
            int(meta["count"]),
            int(meta["skipped"]),
            tuple(json.loads(meta["refused"])),
        )
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:  # damaged file
        raise _StaleCacheError(path) from err


def _write_cached_part(path: Path, part: _FolderPart) -> None:
    """Atomic write (temp file + os.replace); older caches of the same folder/split/size go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = part.stats
    meta = {
        "format": _CACHE_FORMAT,
        "channels": str(stats.channels),
        "mean": json.dumps(stats.mean),
        "std": json.dumps(stats.std),
        "count": str(stats.count),
        "skipped": str(stats.skipped),
        "refused": json.dumps(stats.refused),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({"images": part.images, "labels": part.labels}, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(f"{prefix}*.safetensors"):
        if old != path:
            old.unlink(missing_ok=True)


def _folder_info(layout: _FolderLayout, size: int, train: _PartStats) -> DatasetInfo:
    root = layout.root
    how = "train/ and test/ folders" if layout.split_dirs else "every 5th image per class as test"
    return DatasetInfo(
        name=f"{FOLDER_PREFIX}{root}",
        title=f"Image folder {root.name}",
        classes=layout.classes,
        channels=train.channels,
        size=size,
        mean=train.mean,
        std=train.std,
        augment=train.channels == 3,  # flips and shifts suit photos, not digits or letters
        description=(
            f"your images in {root}: {len(layout.classes)} classes (subfolder names), "
            f"{how}, resized to {size}×{size}"
        ),
        folder=str(root),
        native_size=size,
    )


def _part_source(
    prefix: str, where: Path, split: str, stats: _PartStats, notes: tuple[str, ...]
) -> str:
    text = f"{prefix}, {_count(stats.count, split)} ({where})"
    if stats.skipped:
        more = ", …" if stats.skipped > len(stats.refused) else ""
        text += f", {stats.skipped} unreadable files skipped ({'; '.join(stats.refused)}{more})"
    return "".join([text, *(f", {note}" for note in notes)])


def _load_folder(root: Path, split: str, size: int) -> Split:
    layout = _scan_folder(root)
    part, notes = _folder_part(layout, split, size)
    train = part.stats if split == "train" else _folder_stats(layout, "train", size)
    info = _folder_info(layout, size, train)
    prefix = f"image folder {root.name}"
    if not layout.split_dirs:
        prefix += " (every 5th image of each class held out as test)"
    source = _part_source(prefix, layout.split_root(split), split, part.stats, notes)
    pixels = _to_channels(part.images, info.channels)
    return Split(info, split, pixels, part.labels, source, False, part.stats.skipped, notes)


def _load_cifar10_jpeg(folder: Path, split: str) -> _Loaded:
    """The JPEG ImageFolder copy of CIFAR-10, decoded (and cached) like a user's folder."""
    layout = _scan_folder(folder)
    if layout.classes != _CIFAR10_CLASSES or not layout.split_dirs:
        raise DatasetUnavailableError(
            f"{folder} should hold train/ and test/ with the CIFAR-10 class folders "
            f"({' '.join(_CIFAR10_CLASSES)})"
        )
    part, notes = _folder_part(layout, split, 32)
    source = _part_source("CIFAR-10 (JPEG copy)", folder / split, split, part.stats, notes)
    return _Loaded(_to_channels(part.images, 3), part.labels, source, skipped=part.stats.skipped)


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
