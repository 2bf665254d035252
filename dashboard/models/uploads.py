"""A user's checkpoint file: stored by content hash, loaded without unpickling, given a card.

The bytes a browser sends are written to `cache_dir()/uploads/<sha256 prefix>/<safe name>` (the
file name is cleaned and validated, never used as a path), read with
`checkpoints.load_checkpoint` (safetensors, or `torch.load(weights_only=True)` for `.pt`/`.pth`:
a pickle that would run code is refused), and saved beside it as a CNN Lens checkpoint with a
card naming the architecture the user gave, so every page loads it by its key like any other.

A refused upload is deleted at once (a malicious pickle does not wait on the server's disk), and
what is kept is bounded: beyond MAX_KEPT_UPLOADS uploads or MAX_KEPT_BYTES, the least recently
stored ones are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from dashboard.base import files, paths
from dashboard.base.errors import CheckpointError, LensError
from dashboard.models import checkpoints

SUFFIXES = (".safetensors", ".pt", ".pth")
HASH_CHARS = 16  # of the SHA-256: the folder name that keeps different files apart
MAX_STEM = 80
MAX_KEPT_UPLOADS = 32  # uploads kept on disk (one folder each, with what was made from it)
MAX_KEPT_BYTES = 4 * 1024**3


class Registered(NamedTuple):
    path: Path  # the CNN Lens checkpoint (weights; the card is beside it)
    card: checkpoints.Card
    mismatch: checkpoints.MismatchReport | None  # what was left random when loaded partially


def uploads_dir() -> Path:
    return paths.cache_dir() / "uploads"


def safe_stem(filename: str) -> str:
    """The file name a browser sent, reduced to a plain checkpoint name (no folders, no dots in
    front, letters, digits, '.', '-' and '_' only)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base
    for suffix in SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-_")[:MAX_STEM].rstrip(".")
    base, dot, rest = stem.partition(".")
    if base.lower() in checkpoints.WINDOWS_RESERVED:  # CON.pt is a fine name on this server
        stem = f"{base}_{dot}{rest}"
    return stem or "upload"


def store_upload(data: bytes, filename: str, folder: Path | None = None) -> Path:
    """Write an uploaded file under `folder/<sha256 prefix>/`; → its path (reused if present)."""
    suffix = next((s for s in SUFFIXES if filename.lower().endswith(s)), None)
    if suffix is None:
        raise CheckpointError(
            f"{safe_stem(filename)}: upload a state dict saved as .safetensors, .pt or .pth"
        )
    if not data:
        raise CheckpointError(f"{safe_stem(filename)}{suffix} is empty")
    if len(data) > checkpoints.MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{safe_stem(filename)}{suffix} is {len(data) / 2**20:,.1f} MB; the limit is "
            f"{checkpoints.MAX_CHECKPOINT_BYTES / 2**20:,.0f} MB"
        )
    digest = hashlib.sha256(data).hexdigest()[:HASH_CHARS]
    root = uploads_dir() if folder is None else folder
    where = root / digest
    target = checkpoints.validate_name(safe_stem(filename), where).with_suffix(suffix)
    if target.is_file() and target.stat().st_size == len(data):
        os.utime(where)  # used again: the last to be removed
        return target
    try:
        files.write_atomically(target, data)
    except OSError as err:
        raise CheckpointError(f"could not store {target.name}: {err.strerror or err}") from None
    prune(root, keep=where)
    return target


def discard(raw: Path) -> None:
    """Delete a refused upload; its folder goes too unless a checkpoint made from the same bytes
    (registered earlier as another architecture) is still in it."""
    raw.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        raw.parent.rmdir()  # only when empty


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def prune(root: Path, *, keep: Path | None = None) -> list[Path]:
    """Remove the least recently stored upload folders under `root` until at most
    MAX_KEPT_UPLOADS remain holding at most MAX_KEPT_BYTES (`keep`, the one just stored, is
    never removed); → the folders removed."""
    if not root.is_dir():
        return []
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.is_symlink()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,  # newest first: these are kept
    )
    kept = total = 0
    removed = []
    for folder in folders:
        size = _folder_bytes(folder)
        if folder == keep or (kept < MAX_KEPT_UPLOADS and total + size <= MAX_KEPT_BYTES):
            kept += 1
            total += size
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _load(
    raw: Path, architecture: str, options: Mapping[str, Any], strict: bool
) -> checkpoints.LoadedCheckpoint:
    """Infer what the file shows (channels, classes, input side, options that add weights),
    then apply the options the user named (those that add no weights, such as the activation,
    cannot be read from a file)."""
    loaded = checkpoints.load_checkpoint(raw, architecture=architecture, strict=strict)
    inferred = dict(loaded.card.model_args.get("options") or {})
    if all(inferred.get(k) == v for k, v in options.items()):
        return loaded
    args = {**loaded.card.model_args, "options": {**inferred, **options}}
    return checkpoints.load_checkpoint(
        raw, architecture=architecture, model_args=args, strict=strict
    )


def register_upload(
    raw: Path,
    architecture: str,
    options: Mapping[str, Any] | None = None,
    *,
    strict: bool = True,
    original_name: str = "",
) -> Registered:
    """Load a stored upload as `architecture` and save it as a checkpoint with a card beside
    the upload. A file that does not fit raises checkpoints.MismatchError (with `.report`);
    `strict=False` loads the tensors that fit and keeps the report."""
    options = dict(options or {})
    try:
        loaded = _load(raw, architecture, options, strict)
    except LensError:
        discard(raw)  # refused: nothing of it stays on the server (the user may send it again)
        raise
    args = loaded.card.model_args
    tag = hashlib.sha256(json.dumps([architecture, args], sort_keys=True).encode()).hexdigest()
    out = raw.parent / f"{raw.stem}-{tag[:8]}{checkpoints.WEIGHTS_SUFFIX}"
    shown = original_name or raw.name
    notes = f"uploaded as {shown}; architecture {architecture} named by the user"
    if loaded.mismatch is not None:
        notes += f"; loaded partially, the rest is random: {loaded.mismatch.summary()}"
    card = replace(loaded.card, name=f"{raw.stem} ({architecture}, uploaded)", notes=notes)
    if not (out.is_file() and out.with_suffix(checkpoints.CARD_SUFFIX).is_file()):
        out = checkpoints.save_checkpoint(
            loaded.model, card, out, overwrite=True, filter_history=loaded.filter_history
        )
    return Registered(out, checkpoints.read_card(out), loaded.mismatch)


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape) or "scalar"


def mismatch_lines(report: checkpoints.MismatchReport, limit: int = 12) -> list[str]:
    """The whole report, one line per kind of difference (long lists cut at `limit`)."""

    def listed(keys: list[str]) -> str:
        more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    lines = []
    if report.missing:
        lines.append(f"missing from the file ({len(report.missing)}): {listed(report.missing)}")
    if report.unexpected:
        lines.append(
            f"unexpected in the file ({len(report.unexpected)}): {listed(report.unexpected)}"
        )
    for key, file_shape, model_shape in report.shape_mismatches[:limit]:
        lines.append(f"shape of {key}: file {_shape(file_shape)}, model {_shape(model_shape)}")
    if len(report.shape_mismatches) > limit:
        lines.append(f"… {len(report.shape_mismatches) - limit} more shape mismatches")
    if report.class_counts is not None:
        file_classes, model_classes = report.class_counts
        lines.append(f"the file has {file_classes} classes, the model {model_classes}")
    return lines


# --------------------------------------------------------------------------- links and datasets

LINK_PREFIX = "upload:"  # links name an upload by content, never by its place on the server
_LINK = re.compile(rf"{LINK_PREFIX}([0-9a-f]{{{HASH_CHARS}}})-([0-9a-f]{{8}})")


def link_name(path: Path) -> str | None:
    """`upload:<content hash>-<reading>` for a registered upload (the reading tells apart the
    architectures one file was loaded as); None for any other file."""
    path = Path(path).resolve()
    digest, _, tag = path.stem.rpartition("-")
    if path.parent.parent != uploads_dir().resolve() or not digest:
        return None
    name = f"{LINK_PREFIX}{path.parent.name}-{tag}"
    return name if _LINK.fullmatch(name) else None


def find_link(name: str) -> Path | None:
    """The registered upload a link names, while the server keeps it (None otherwise)."""
    match = _LINK.fullmatch(name)
    if match is None:
        return None
    digest, tag = match.groups()
    folder = uploads_dir() / digest
    found = sorted(folder.glob(f"*-{tag}{checkpoints.WEIGHTS_SUFFIX}")) if folder.is_dir() else []
    found = [p for p in found if p.with_suffix(checkpoints.CARD_SUFFIX).is_file()]
    return found[0] if found else None


class DatasetGuess(NamedTuple):
    dataset: str  # a registry name or folder:PATH; "" when neither card nor shape says
    note: str  # how it was chosen when the card does not name it ("" when it does)


# (channels, side, outputs) → the datasets of that shape, the first one chosen
SHAPE_DATASETS = {
    (1, 28, 10): ("mnist", "fashion-mnist"),
    (3, 32, 10): ("cifar10",),
    (3, 32, 100): ("cifar100",),
    (3, 32, 20): ("cifar100-coarse",),
}
TITLES = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "cifar100-coarse": "CIFAR-100 (20 superclasses)",
}


def dataset_of(card: checkpoints.Card) -> DatasetGuess:
    """The dataset a checkpoint belongs to: its card's, else the one its input shape and
    output count say (an upload has no card of its own), saying when the shape fits several."""
    if card.dataset:
        return DatasetGuess(card.dataset, "")
    outputs = card.num_classes or len(card.classes)
    shape = tuple(card.input_shape or ())
    if len(shape) != 3 or shape[1] != shape[2] or not outputs:
        return DatasetGuess("", "")
    fits = SHAPE_DATASETS.get((shape[0], shape[1], outputs), ())
    if not fits:
        return DatasetGuess("", "")
    seen = f"{_shape(shape)} images in, {outputs} classes out"
    if len(fits) == 1:
        return DatasetGuess(
            fits[0], f"Dataset {TITLES[fits[0]]}: the model's shape says so ({seen})."
        )
    others = " or ".join(TITLES[name] for name in fits[1:])
    return DatasetGuess(
        fits[0],
        f"Dataset {TITLES[fits[0]]}, guessed from the model's shape ({seen}), which fits "
        f"{others} as well: pick that in the sidebar if the model was trained on it.",
    )
