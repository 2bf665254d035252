"""Loading a registry dataset: its files under the data root, downloaded through torchvision when
missing, else the bundled sample, else a message saying how to get it."""

from __future__ import annotations

import contextlib
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from dashboard.base import paths
from dashboard.base.errors import DatasetUnavailableError
from dashboard.data.files import (
    _read_cifar,
    _read_idx_pair,
    find_idx,
)
from dashboard.data.folders import (
    _folder_part,
    _part_source,
    _scan_folder,
)
from dashboard.data.pixels import (
    _to_channels,
)
from dashboard.data.registry import (
    _CIFAR10_CLASSES,
    _CIFAR10_JPEG_FOLDER,
    _CIFAR_FILES,
    _IDX_FILES,
    _Registered,
)
from dashboard.data.splits import _count

# A download that stalls (firewalled, not refused) fails after this many seconds of silence.
DOWNLOAD_TIMEOUT_S = 60.0


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
