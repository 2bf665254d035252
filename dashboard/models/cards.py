"""A checkpoint's card (NAME.json): what the checkpoint is, read leniently (a bad card becomes a
stand-in that names its problem), and the listing of a folder's checkpoints by their cards."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from dashboard import __version__
from dashboard.base.errors import CheckpointError
from dashboard.base.paths import TRAINED_DIR
from dashboard.models import card_schema

log = logging.getLogger("dashboard.models.checkpoints")  # the name it has always logged as


FORMAT = "cnn-lens/1"
MAX_CARD_BYTES = card_schema.MAX_CARD_BYTES
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
TORCH_SUFFIXES = (".pt", ".pth")
# The registry's datasets, easiest first; list_checkpoints shows them in this order.
DATASET_ORDER = ("mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")


@dataclass
class Card:
    """What a checkpoint is: everything but the weights, as stored in NAME.json."""

    name: str
    architecture: str  # a models.py registry name
    # build_model keyword arguments: in_channels, num_classes, input_size, options (a dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) the model was trained on
    dataset: str = ""
    dataset_source: str = ""  # which copy and split, in words
    classes: list[str] = field(default_factory=list)
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]}
    training: dict[str, Any] = field(default_factory=dict)  # optimizer, lr, epochs, seed, ...
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    metrics: dict[str, Any] = field(default_factory=dict)  # final test_accuracy, test_loss, ...
    command: str = ""  # the command line that made it
    created: str = ""  # ISO 8601 with time zone
    versions: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    # Training dynamics in a few numbers per epoch (dynamics.DynamicsLog.card_record); {} none.
    dynamics: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept
    # Where the weights are (set by read_card / list_checkpoints / load_checkpoint); not stored.
    path: Path | None = field(default=None, compare=False)
    # Why the card on disk could not be used ("" when it could): this card then stands in for
    # it, holding only its name and the architecture it names. Not stored.
    problem: str = field(default="", compare=False)

    @property
    def test_accuracy(self) -> float | None:
        value = self.metrics.get("test_accuracy")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def num_classes(self) -> int | None:
        value = self.model_args.get("num_classes")
        if _is_int(value):
            return value
        return len(self.classes) or None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format}
        for f in fields(self):
            if f.name in ("format", "extra", "path", "problem"):
                continue
            value = getattr(self, f.name)
            if f.name == "dynamics" and not value:
                continue  # a card without training dynamics has no key for them
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return _finite(out)

    def to_json(self) -> str:
        """Standard JSON: a NaN or infinite number (a loss that diverged) is written as null."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "card") -> Card:
        """Check every key against the schema (card_schema) and fill defaults; anything that is
        not a valid CNN Lens card → CheckpointError naming the first key that breaks it."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{source} is not a CNN Lens card (a JSON object was expected)")
        fmt = data.get("format")
        if fmt != FORMAT:
            found = f"format {card_schema._shown(fmt)}" if fmt is not None else "no 'format' key"
            raise CheckpointError(f"{source} is not a CNN Lens card ({found}, expected {FORMAT!r})")
        values = card_schema.check_card(data, source)
        for required in ("name", "architecture"):
            if not values.get(required):
                raise CheckpointError(f"{source} has no {required!r}; it cannot be loaded")
        known = {f.name for f in fields(cls)} - {"extra", "path", "problem"}
        values["extra"] = {k: v for k, v in data.items() if k not in known}
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, *, source: str = "card") -> Card:
        return cls.from_dict(card_schema.parse(text, source), source=source)

    @classmethod
    def stand_in(cls, weights: Path, problem: str, architecture: str = "") -> Card:
        """The card of weights whose own card is invalid: their file name, the architecture the
        card names (if it names one) and the reason; shapes come from the weights on loading."""
        return cls(name=weights.stem, architecture=architecture, path=weights, problem=problem)


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float inside it replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def current_versions() -> dict[str, str]:
    """Library versions recorded in a card."""
    versions = {"cnn_lens": __version__, "torch": torch.__version__}
    for package in ("torchvision", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def _weights_path(path: str | os.PathLike[str]) -> Path:
    """NAME, NAME.safetensors, NAME.json, X.pt, X.pth or any existing file → the weights file."""
    p = Path(path)
    if p.suffix == CARD_SUFFIX:
        return p.with_suffix(WEIGHTS_SUFFIX)
    if p.suffix in (WEIGHTS_SUFFIX, *TORCH_SUFFIXES) or p.is_file():
        return p
    # names may hold dots ("lenet5-v1.2"), so add the suffix rather than replace one
    return p.with_name(p.name + WEIGHTS_SUFFIX)


def _card_path(weights: Path) -> Path:
    if weights.suffix in (WEIGHTS_SUFFIX, *TORCH_SUFFIXES):
        return weights.with_suffix(CARD_SUFFIX)
    return weights.with_name(weights.name + CARD_SUFFIX)


def _size_text(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024**2:
        return f"{size / 1024:.1f} kB"
    if size < 1024**3:
        return f"{size / 1024**2:,.1f} MB"
    return f"{size / 1024**3:,.1f} GB"


def _check_file(path: Path, limit: int, what: str = "checkpoint") -> int:
    """Refuse missing, folder, empty and oversized files before reading them; → size."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a {what} file")
    if not path.is_file():
        raise CheckpointError(f"no {what} file at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes); it is not a {what}")
    if size > limit:
        raise CheckpointError(
            f"{path.name} is {_size_text(size)}, over the {_size_text(limit)} limit for a {what}; "
            "it was not read"
        )
    return size


def read_card(path: str | os.PathLike[str], *, strict: bool = False) -> Card:
    """The card beside a checkpoint; `path` may be NAME, NAME.safetensors or NAME.json.

    A card that is too large, nested too deeply, not JSON or against the schema does not stop
    its weights from being used: unless `strict`, a stand-in card comes back (`Card.stand_in`)
    with `.problem` saying in one line what is wrong and only the architecture the card names.
    A missing card or checkpoint is always a CheckpointError.
    """
    weights = _weights_path(path)
    card_path = _card_path(weights)
    if not card_path.exists() and not weights.exists():
        raise CheckpointError(f"no checkpoint at {weights}")
    if not card_path.exists():
        raise CheckpointError(f"no card {card_path.name} beside {weights.name}")
    text, data = "", None
    try:
        _check_file(card_path, MAX_CARD_BYTES, "card")
        try:
            text = card_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{card_path.name} is not a text file, so not a card") from err
        except OSError as err:
            raise CheckpointError(f"cannot read {card_path}: {err.strerror or err}") from err
        data = card_schema.parse(text, card_path.name)
        card = Card.from_dict(data, source=card_path.name)
    except CheckpointError as err:
        if strict:
            raise
        return Card.stand_in(weights, str(err), card_schema.architecture_in(data, text))
    card.path = weights
    return card


def _listing_order(card: Card) -> tuple[int, str, float, str]:
    rank = (
        DATASET_ORDER.index(card.dataset) if card.dataset in DATASET_ORDER else len(DATASET_ORDER)
    )
    accuracy = card.test_accuracy
    return (rank, card.dataset, -accuracy if accuracy is not None else 1.0, card.name)


def list_checkpoints(folder: Path = TRAINED_DIR) -> list[Card]:
    """Cards (with `.path` set to their weights) in `folder`, by dataset (MNIST first), then best
    accuracy first. An invalid card is listed as its stand-in (`.problem` says why), so its
    weights stay usable; cards without weights are skipped with a warning."""
    cards = []
    if not folder.is_dir():
        return cards
    for card_path in sorted(folder.glob(f"*{CARD_SUFFIX}")):
        if card_path.name.startswith("."):
            continue
        try:
            card = read_card(card_path)
        except CheckpointError as err:
            log.warning("skipping %s: %s", card_path, err)
            continue
        if card.path is None or not card.path.is_file():
            log.warning("skipping %s: its weights %s are missing", card_path, card_path.stem)
            continue
        if card.problem:
            log.warning("%s is invalid: %s", card_path, card.problem)
        cards.append(card)
    return sorted(cards, key=_listing_order)
