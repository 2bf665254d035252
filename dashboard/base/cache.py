"""The on-disk result cache: work that depends only on (checkpoint content, split, parameters)
is computed once and kept under the user cache folder, for every later session, server and
command line.

    cached_arrays("predictions", {"model": ..., "split": ...}, compute) -> {"name": array}

An entry is named by the SHA-256 of its kind and key parts (canonical JSON), so changing any
part misses. Key parts are content, not places: a checkpoint by `checkpoint_digest` (SHA-256 of
its weights file, plus the architecture and arguments it is built with), a model that comes from
no file by `state_digest` (its tensors), a split by `split_identity` (dataset, split, classes,
normalization, image shape and `split_digest`, a SHA-256 of its pixels and labels).

Storage: `<cache>/derived/results/<kind>/<key>.safetensors`, the arrays as safetensors (numpy)
with the metadata beside them in the file's header (format, kind, the key parts themselves, a
CRC-32 of every array, and a small JSON part for the caller). Written to a temporary file in
the same folder and renamed over the entry (`os.replace`): a reader sees a whole entry or none,
and two processes writing the same entry both write whole files, the last rename winning. A
writer killed halfway leaves only a `.tmp-` file, removed by a later eviction once it is an
hour old. Reading checks the header and every CRC: an entry that is truncated, damaged or not
what its name says is deleted and computed again, never trusted and never a crash.

The folder is kept under a size cap ($CNN_LENS_CACHE_MAX_MB, default 2 GB) by deleting the
least recently used entries after each write; a read refreshes an entry's modification time,
which is its recency. Results also stay in memory (up to `MEMORY_MAX_BYTES`, least recently used
first out) so a page rerun reads no file; arrays handed out are read-only, since they are shared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dashboard.base import paths

log = logging.getLogger(__name__)

FORMAT = "cnn-lens-result/1"  # bump when an entry's layout changes: old entries then miss
MAX_MB_ENV = "CNN_LENS_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
MEMORY_MAX_BYTES = 256 * 2**20
STALE_TEMP_S = 3600.0  # a temporary file this old belongs to a writer that died
ENTRY_SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
_KIND = re.compile(r"[a-z][a-z0-9-]{0,39}")
_CHUNK = 1 << 20


class Entry(NamedTuple):
    """A cached result: named arrays plus a small JSON-able metadata dict."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


# --------------------------------------------------------------------------- where, how big


def results_dir() -> Path:
    return paths.cache_dir() / "results"


def max_bytes() -> int:
    """The folder's size cap: $CNN_LENS_CACHE_MAX_MB megabytes, else DEFAULT_MAX_MB."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_MAX_MB
    except ValueError:
        log.warning("%s=%r is not a number of megabytes; using %d", MAX_MB_ENV, raw, DEFAULT_MAX_MB)
        megabytes = DEFAULT_MAX_MB
    return max(0, int(megabytes * 2**20))


# --------------------------------------------------------------------------- keys


def _canonical(value: Any) -> Any:
    """Key parts as plain JSON values; anything else is a programming error, not a key."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise TypeError(f"a cache key part cannot be a {type(value).__name__}: {value!r:.80}")


def _key_text(key_parts: Mapping[str, Any]) -> str:
    return json.dumps(
        _canonical(key_parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def entry_key(kind: str, key_parts: Mapping[str, Any]) -> str:
    """The hex SHA-256 naming the entry of `kind` for these key parts."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"cache kind {kind!r}: lower-case letters, digits and '-'")
    text = f"{FORMAT}\n{kind}\n{_key_text(key_parts)}"
    return hashlib.sha256(text.encode()).hexdigest()


def entry_path(kind: str, key_parts: Mapping[str, Any]) -> Path:
    return results_dir() / kind / f"{entry_key(kind, key_parts)}{ENTRY_SUFFIX}"


# --------------------------------------------------------------------------- digests


_file_digests: dict[tuple[str, int, int, int], str] = {}
_file_lock = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime, inode): a file is hashed
    again only when it changed."""
    real = os.path.realpath(path)
    before = os.stat(real)
    memo = (real, before.st_size, before.st_mtime_ns, before.st_ino)
    with _file_lock:
        if memo in _file_digests:
            return _file_digests[memo]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    after = os.stat(real)
    found = digest.hexdigest()
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
        with _file_lock:  # a file written while it was read is hashed again next time
            _file_digests[memo] = found
    return found


def checkpoint_digest(
    weights: str | os.PathLike[str], architecture: str, model_args: Mapping[str, Any]
) -> str:
    """A checkpoint's identity: its weights file's content and what they are loaded into (the
    same .pt read as two architectures is two models)."""
    parts = {"weights": file_digest(weights), "architecture": architecture, "args": model_args}
    text = _key_text(parts)
    return hashlib.sha256(text.encode()).hexdigest()


_state_digests: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def state_digest(model: Any) -> str:
    """A model that comes from no file (a zoo model, weights trained in this session): SHA-256
    of its structure (`repr`, which names every layer and its options) and every tensor of its
    state dict. Remembered per model object until a tensor changes in place (an optimizer
    step bumps the tensors' version counters)."""
    import torch  # a model is given: torch is loaded already

    state = model.state_dict()
    versions = tuple((t._version, t.data_ptr()) for t in state.values())
    memo = _state_digests.get(model)
    if memo is not None and memo[0] == versions:
        return memo[1]
    digest = hashlib.sha256(f"{type(model).__qualname__}\n{model!r}".encode())
    for name, tensor in state.items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"\n{name}:{flat.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    found = digest.hexdigest()
    _state_digests[model] = (versions, found)
    return found


_SPLIT_MEMO = "_lens_content_digest"  # set on the Split object: computed once per split


def split_digest(split: Any) -> str:
    """SHA-256 of a split's pixels (as stored, and the size they are read at) and labels,
    remembered on the Split object (splits are shared read-only; a subset is a new object)."""
    memo = vars(split).get(_SPLIT_MEMO)
    if memo is not None:
        return memo
    images = split.images
    stored = getattr(images, "stored", images)  # data.ResizedImages keeps the stored pixels
    digest = hashlib.sha256()
    for tensor in (stored, split.labels):
        array = np.ascontiguousarray(tensor.cpu().numpy())
        digest.update(f"{array.dtype}:{array.shape}\n".encode())
        digest.update(array.data if array.size else b"")
    digest.update(f"read at {tuple(images.shape)}".encode())
    found = digest.hexdigest()
    setattr(split, _SPLIT_MEMO, found)
    return found


def split_identity(split: Any) -> dict[str, Any]:
    """What a result computed on a split depends on: the pixels and labels, their size, the
    class names and the normalization the model's input is made with."""
    info = split.info
    return {
        "dataset": info.name,
        "split": split.split,
        "shape": list(split.images.shape),
        "classes": list(info.classes),
        "mean": list(info.mean),
        "std": list(info.std),
        "digest": split_digest(split),
    }


# --------------------------------------------------------------------------- reading, writing


class _DamagedEntryError(Exception):
    """An entry that cannot be trusted: deleted and computed again."""


def _checksums(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {name: zlib.crc32(a.data if a.size else b"") for name, a in arrays.items()}


def _read(path: Path, kind: str, key_text: str) -> Entry | None:
    """The entry at `path`, None if absent; a damaged entry is deleted and reads as absent."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            if (header.get("format"), header.get("kind"), header.get("key")) != (
                FORMAT,
                kind,
                key_text,
            ):
                raise _DamagedEntryError("header does not match")
            arrays = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        if _checksums(arrays) != json.loads(header["crc32"]):
            raise _DamagedEntryError("checksum")
        meta = json.loads(header["meta"])
    except FileNotFoundError:
        return None
    except Exception as err:  # truncated, garbled, another format: never trusted, never fatal
        log.warning("cache entry %s is damaged (%s); computing it again", path.name, err)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):  # recency for eviction (a read-only folder: no recency)
        os.utime(path)
    return Entry(arrays, meta)


def _write(path: Path, kind: str, key_text: str, entry: Entry, cap: int) -> None:
    """Atomically (temporary file + os.replace); a full or read-only disk only logs."""
    from safetensors.numpy import save

    header = {
        "format": FORMAT,
        "kind": kind,
        "key": key_text,
        "crc32": json.dumps(_checksums(entry.arrays)),
        "meta": json.dumps(entry.meta),
    }
    blob = save(dict(entry.arrays), metadata=header)
    if len(blob) > cap:
        return  # bigger than the whole cache: kept in memory only
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())  # the rename never publishes a file the disk does not hold
        os.replace(temp, path)
        temp = None
    except OSError as err:
        log.warning("could not write cache entry %s: %s", path, err)
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    evict(cap)


def evict(cap: int | None = None) -> None:
    """Delete least recently used entries until the folder holds at most `cap` bytes (default
    `max_bytes()`), and temporary files of writers that died."""
    cap = max_bytes() if cap is None else cap
    root = results_dir()
    entries: list[tuple[int, str, int]] = []
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for kind_dir in os.scandir(root):
            if not kind_dir.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError), os.scandir(kind_dir.path) as files:
                for f in files:
                    with contextlib.suppress(FileNotFoundError):
                        stat = f.stat(follow_symlinks=False)
                        if f.name.startswith(TEMP_PREFIX):
                            if now - stat.st_mtime > STALE_TEMP_S:
                                os.unlink(f.path)
                        elif f.name.endswith(ENTRY_SUFFIX):
                            entries.append((stat.st_mtime_ns, f.path, stat.st_size))
    total = sum(size for _, _, size in entries)
    for _, path, size in sorted(entries):
        if total <= cap:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        total -= size


# --------------------------------------------------------------------------- memory


class _Memory:
    """The entries this process used last, up to a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def size(entry: Entry) -> int:
        return sum(a.nbytes for a in entry.arrays.values())

    def get(self, key: str) -> Entry | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: Entry) -> None:
        with self.lock:
            self.entries[key] = entry
            self.entries.move_to_end(key)
            total = sum(self.size(e) for e in self.entries.values())
            while total > self.budget and len(self.entries) > 1:
                _, dropped = self.entries.popitem(last=False)
                total -= self.size(dropped)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_memory = _Memory(MEMORY_MAX_BYTES)
_computing: dict[str, threading.Lock] = {}
_computing_guard = threading.Lock()


def clear_memory() -> None:
    """Forget the in-memory entries (the disk keeps them): what a restarted process sees."""
    _memory.clear()


def _frozen(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays, contiguous and read-only: one copy is shared by every caller."""
    out = {}
    for name, array in arrays.items():
        a = np.ascontiguousarray(array)
        a.setflags(write=False)
        out[str(name)] = a
    return out


# --------------------------------------------------------------------------- the API


def cached(
    kind: str,
    key_parts: Mapping[str, Any],
    compute: Callable[[], Entry],
    *,
    persist: bool = True,
) -> Entry:
    """The entry of `kind` for `key_parts`: from memory, else from disk, else `compute()`d
    and stored (on disk too when `persist`). One thread computes a key at a time; the others
    wait for its result. `key_parts` must hold everything the result depends on."""
    key = entry_key(kind, key_parts)
    found = _memory.get(key)
    if found is not None:
        if persist:
            with contextlib.suppress(OSError):
                os.utime(results_dir() / kind / f"{key}{ENTRY_SUFFIX}")
        return found
    with _computing_guard:
        lock = _computing.setdefault(key, threading.Lock())
    try:
        with lock:
            found = _memory.get(key) or _load_or_compute(kind, key, key_parts, compute, persist)
            _memory.put(key, found)
            return found
    finally:
        with _computing_guard:
            _computing.pop(key, None)


def _load_or_compute(
    kind: str, key: str, key_parts: Mapping[str, Any], compute: Callable[[], Entry], persist: bool
) -> Entry:
    key_text = _key_text(key_parts)
    path = results_dir() / kind / f"{key}{ENTRY_SUFFIX}"
    found = _read(path, kind, key_text) if persist else None
    if found is not None:
        return Entry(_frozen(found.arrays), found.meta)
    computed = compute()
    # The JSON round trip makes a fresh result look exactly like one read back.
    fresh = Entry(_frozen(computed.arrays), json.loads(json.dumps(computed.meta)))
    if persist:
        _write(path, kind, key_text, fresh, max_bytes())
    return fresh


def cached_arrays(
    kind: str,
    key_parts: Mapping[str, Any],
    compute: Callable[[], Mapping[str, np.ndarray]],
    *,
    persist: bool = True,
) -> dict[str, np.ndarray]:
    """`cached` for results that are arrays only."""
    return cached(kind, key_parts, lambda: Entry(dict(compute()), {}), persist=persist).arrays


def is_stored(kind: str, key_parts: Mapping[str, Any]) -> bool:
    """True when the entry is in memory or on disk (it may still prove damaged when read)."""
    return (
        _memory.get(entry_key(kind, key_parts)) is not None or entry_path(kind, key_parts).is_file()
    )
