"""A user's folder of images as a dataset (`folder:PATH`): listed with limits, decoded once and
cached, split into train and test."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dashboard.base import images, paths
from dashboard.base.errors import DatasetUnavailableError, UnknownNameError
from dashboard.data.pixels import (
    _resize_one,
    _to_channels,
    channel_stats,
)
from dashboard.data.splits import DatasetInfo, Split, _count

FOLDER_PREFIX = "folder:"
DEFAULT_FOLDER_SIZE = 32
# Image files in a class folder (the formats every image may have); other files are ignored.
IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS
# Listing a folder stops past this many entries or seconds: `folder:/usr` is not a dataset.
MAX_SCAN_ENTRIES = 2_000_000
MAX_SCAN_SECONDS = 60.0
# Pseudo file systems of the kernel: never listed (endless, or files that block on reading).
_SYSTEM_FOLDERS = ("/proc", "/sys", "/dev", "/run")
_CACHE_FORMAT = "2"  # bump when the cached tensors' meaning changes


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
