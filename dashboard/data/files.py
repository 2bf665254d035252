"""The registry datasets' file formats: IDX (the MNIST family) and CIFAR's pickled batches, read
with a restricted unpickler that can only rebuild numpy arrays."""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dashboard.base.errors import DatasetUnavailableError
from dashboard.data.registry import (
    _CIFAR_FILES,
    _IDX_FILES,
    _Registered,
)

try:  # numpy >= 2 moved the array reconstructor; CIFAR's files name the old module
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


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
