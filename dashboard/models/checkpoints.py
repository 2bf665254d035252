"""Checkpoints: safetensors weights plus a JSON card, and safe loading of users' files.

A checkpoint is two files side by side: `NAME.safetensors` (the model's state dict, and
optionally per-epoch snapshots of the first conv filters under the `lens_history/` key prefix)
and `NAME.json`, the card: architecture and its arguments, dataset, classes, normalization,
training hyper-parameters, per-epoch history, final metrics and library versions. The card is
enough to rebuild the model (nanoGPT's habit: a checkpoint rebuilds itself from the arguments
stored with it).

Loading never unpickles code. Safetensors files are read with `safetensors.torch.load_file`;
`.pt`/`.pth` state dicts with `torch.load(weights_only=True)`, and a file that needs more than
that (a whole pickled model, a pickle that would call functions) is refused, never retried
unsafely. Every bad file becomes a one-line `CheckpointError`.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import pickle
import platform
import re
import secrets
import shutil
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from dashboard import __version__
from dashboard.base import files
from dashboard.base.errors import CheckpointError, LensError
from dashboard.base.paths import REPO_ROOT, TRAINED_DIR
from dashboard.models import card_schema
from dashboard.models.dynamics import DynamicsLog

__all__ = [
    "FORMAT",
    "MAX_CARD_BYTES",
    "MAX_CHECKPOINT_BYTES",
    "Card",
    "LoadedCheckpoint",
    "MismatchError",
    "MismatchReport",
    "build_for_card",
    "card_input_shape",
    "compare_state_dicts",
    "current_versions",
    "ensure_free_space",
    "ensure_writable",
    "inside_shipped",
    "list_checkpoints",
    "load_checkpoint",
    "read_card",
    "save_checkpoint",
    "state_bytes",
    "validate_name",
]

log = logging.getLogger(__name__)

FORMAT = "cnn-lens/1"
MAX_CHECKPOINT_BYTES = 600 * 1024**2  # bigger files are refused before a byte is read
MAX_CARD_BYTES = card_schema.MAX_CARD_BYTES
MAX_NAME_LENGTH = 100
HISTORY_PREFIX = "lens_history/"
# Training dynamics (dynamics.DynamicsLog.to_tensors) under the history prefix, so a reader that
# knows only the filter snapshots skips them like any other unknown history key.
DYNAMICS_PREFIX = HISTORY_PREFIX + "dynamics/"
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
TORCH_SUFFIXES = (".pt", ".pth")
# Wrappers added by nn.DataParallel / DistributedDataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Layouts of training scripts that save more than the weights, most specific first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
# The registry's datasets, easiest first; list_checkpoints shows them in this order.
DATASET_ORDER = ("mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")
# Input sides tried when a bare state dict's layer sizes show it was trained on other images.
CANDIDATE_INPUT_SIZES = (28, 32, 64, 96, 128, 224)
MAX_SEARCH_PARAMETERS = 20_000_000
BUILD_ARGS = ("in_channels", "num_classes", "input_size")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# A full disk or an exhausted quota: the user can act on it (free space, then save again).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)
}

FilterHistory = dict[int, dict[str, torch.Tensor]]


# --- the card ----------------------------------------------------------------------------------


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


# --- mismatch reports --------------------------------------------------------------------------


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape) if shape else "scalar"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _some(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (", …" if len(items) > limit else "")


@dataclass(frozen=True)
class MismatchReport:
    """How a state dict differs from the model it should fill."""

    missing: list[str]  # in the model, not in the file
    unexpected: list[str]  # in the file, not in the model
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, file, model
    # (file, model) class counts when the classifier's output size is what differs
    class_counts: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{_plural(len(self.missing), 'missing key')} ({_some(self.missing)})")
        if self.unexpected:
            parts.append(
                f"{_plural(len(self.unexpected), 'unexpected key')} ({_some(self.unexpected)})"
            )
        if self.shape_mismatches:
            shown = [
                f"{key}: file {_shape_text(file)}, model {_shape_text(model)}"
                for key, file, model in self.shape_mismatches
            ]
            count = _plural(len(shown), "shape mismatch", "shape mismatches")
            parts.append(f"{count} ({'; '.join(shown[:3])}{'; …' if len(shown) > 3 else ''})")
        text = ", ".join(parts) if parts else "the file fits the model"
        if self.class_counts is not None:
            file, model = self.class_counts
            text += f" — the file has {file} classes, the model {model}"
        return text


class MismatchError(CheckpointError):
    """A state dict that does not fit the architecture; `.report` says how."""

    def __init__(self, message: str, report: MismatchReport) -> None:
        super().__init__(message)
        self.report = report


def _classifier_key(model_state: Mapping[str, torch.Tensor]) -> str | None:
    """The last layer's weight: its first dimension is the number of classes."""
    keys = [k for k, v in model_state.items() if k.endswith("weight") and v.ndim >= 2]
    return keys[-1] if keys else None


def _first_conv_key(model_state: Mapping[str, torch.Tensor]) -> str | None:
    """The first conv's weight: its second dimension is the number of input channels."""
    return next((k for k, v in model_state.items() if k.endswith("weight") and v.ndim == 4), None)


def _is_buffer_key(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def compare_state_dicts(
    file_state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> MismatchReport:
    """Keys and shapes of a file's state dict against a model's."""
    # BatchNorm fills in a missing num_batches_tracked itself (files from older PyTorch lack it).
    missing = [
        k for k in model_state if k not in file_state and not k.endswith("num_batches_tracked")
    ]
    # weights first: they name the layers, while buffers repeat them
    unexpected = sorted((k for k in file_state if k not in model_state), key=_is_buffer_key)
    shapes = [
        (key, tuple(file_state[key].shape), tuple(tensor.shape))
        for key, tensor in model_state.items()
        if key in file_state and file_state[key].shape != tensor.shape
    ]
    class_counts = None
    last = _classifier_key(model_state)
    if last is not None and any(key == last for key, _, _ in shapes):
        file_shape, model_shape = file_state[last].shape, model_state[last].shape
        if file_state[last].ndim >= 1 and file_shape[0] != model_shape[0]:
            class_counts = (int(file_shape[0]), int(model_shape[0]))
    return MismatchReport(missing, unexpected, shapes, class_counts)


# --- locating and reading files ----------------------------------------------------------------


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


def _sniff(path: Path, size: int) -> str:
    """'safetensors', 'torch' (zip or pickle) or 'unknown', from the first bytes."""
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch"
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except Exception as err:  # a damaged untrusted file can fail in many ways; all mean "bad file"
        detail = str(err).removeprefix("Error while deserializing header: ")
        raise CheckpointError(
            f"{path.name} is not a valid safetensors file ({detail}); "
            "it may be truncated or damaged"
        ) from err


def _pickled_object_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path.name} holds a pickled Python object, not a state dict; it was not loaded "
        f"(that could run code). Save a state dict instead: "
        f"torch.save(model.state_dict(), '{path.name}')"
    )


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        # A file object, not the path: torch.load picks a reader by the name's suffix, and the
        # first bytes have already said this is a pickle or a zip.
        with path.open("rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol chatter from the safe unpickler
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any class or function outside plain tensors and containers.
        # Never retried with weights_only=False: that would run whatever the pickle names.
        raise _pickled_object_error(path) from err
    except Exception as err:  # truncated zip, broken pickle stream, ...: all mean "bad file"
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"{path.name} is not a readable PyTorch file ({detail[:120]}); it may be truncated "
            "or damaged"
        ) from err
    return _state_dict_from(obj, path)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _state_dict_from(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state dict itself, or one wrapped under a training script's usual keys."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = _some([str(k) for k in obj], 5)
        raise CheckpointError(
            f"{path.name} holds a dict without a state dict in it (keys: {keys}); expected "
            f"tensors by parameter name, or such a dict under 'state_dict' or 'model'"
        )
    raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state dict")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    size = _check_file(path, MAX_CHECKPOINT_BYTES)
    kind = _sniff(path, size)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "torch":
        return _read_torch(path)
    if path.suffix == WEIGHTS_SUFFIX:
        return _read_safetensors(path)  # it states its own reason
    raise CheckpointError(
        f"{path.name} is not a checkpoint: neither a safetensors file nor a PyTorch state dict"
    )


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's `module.` and torch.compile's `_orig_mod.` (in any nesting)."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _split_history(
    tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], FilterHistory, dict[str, torch.Tensor]]:
    """Weights for load_state_dict, the `lens_history/epochN/LAYER` snapshots, and the training
    dynamics' tensors (their prefix removed), apart."""
    state: dict[str, torch.Tensor] = {}
    history: FilterHistory = {}
    dynamics: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not key.startswith(HISTORY_PREFIX):
            state[key] = tensor
            continue
        if key.startswith(DYNAMICS_PREFIX):
            dynamics[key.removeprefix(DYNAMICS_PREFIX)] = tensor
            continue
        match = re.fullmatch(r"epoch(\d+)/(.+)", key.removeprefix(HISTORY_PREFIX))
        if match:  # a malformed snapshot key is dropped: it is never a weight either
            history.setdefault(int(match[1]), {})[match[2]] = tensor
    return state, {epoch: history[epoch] for epoch in sorted(history)}, dynamics


# --- rebuilding the model ----------------------------------------------------------------------


def _build(
    architecture: str, model_args: Mapping[str, Any], *, check_size: bool = False
) -> nn.Module:
    """build_model from card-style arguments; never downloads (the weights come from the file).
    `check_size` first counts the weights the arguments describe (arguments not taken from a
    file's tensors may describe any size)."""
    from dashboard import models

    kwargs = {k: model_args[k] for k in BUILD_ARGS if model_args.get(k) is not None}
    options = dict(model_args.get("options") or {})
    options.update(
        (k, v) for k, v in model_args.items() if k not in (*BUILD_ARGS, "options", "pretrained")
    )
    try:
        if check_size:
            _check_model_size(architecture, kwargs, options)
        return models.build_model(architecture, **kwargs, **options, pretrained=False)
    except LensError:
        raise
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"cannot build {architecture} with {dict(model_args)}: {err}"
        ) from err


def _check_model_size(architecture: str, kwargs: Mapping[str, Any], options: Mapping) -> None:
    """Refuse arguments that describe a model larger than any checkpoint this app reads (a card
    claiming fifty million classes), counted on meta tensors before a byte is allocated."""
    from dashboard import models

    try:
        with torch.device("meta"):
            model = models.build_model(architecture, **kwargs, **options, pretrained=False)
    except NotImplementedError:  # a builder that computes with tensors: counted when built
        return
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if size > MAX_CHECKPOINT_BYTES:
        shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise CheckpointError(
            f"{architecture} with {shown} would hold {_size_text(size)} of weights, more than "
            f"the {_size_text(MAX_CHECKPOINT_BYTES)} a checkpoint may hold; it was not built"
        )


def _infer_and_build(
    architecture: str, state: Mapping[str, torch.Tensor]
) -> tuple[nn.Module, dict[str, Any]]:
    """Build `architecture` to fit a bare state dict: input channels from the first conv, classes
    from the last layer; if it still does not fit, try each option value and input side in turn.
    Options that add no weights (an activation, the pooling kind) cannot be told from a file."""
    from dashboard import models

    info = models.model_info(architecture)
    args: dict[str, Any] = {
        "in_channels": info.input_shape[0],
        "num_classes": info.num_classes,
        "input_size": info.input_shape[-1],
        "options": {},
    }
    reference = _build(architecture, args).state_dict()
    first, last = _first_conv_key(reference), _classifier_key(reference)
    if first in state and state[first].ndim == 4:
        args["in_channels"] = int(state[first].shape[1])
    if last in state and state[last].ndim == reference[last].ndim:
        args["num_classes"] = int(state[last].shape[0])
    model = _build(architecture, args)
    if compare_state_dicts(state, model.state_dict()).ok:
        return model, args
    if sum(t.numel() for t in reference.values()) > MAX_SEARCH_PARAMETERS:
        return model, args  # the big models pool globally; rebuilding them again and again is slow
    variants: list[dict[str, Any]] = [{}]
    variants += [{k: v} for k, allowed in info.options.items() for v in allowed[1:]]
    for options in variants:
        for side in dict.fromkeys((args["input_size"], *CANDIDATE_INPUT_SIZES)):
            candidate_args = {**args, "input_size": side, "options": options}
            try:
                candidate = _build(architecture, candidate_args)
            except LensError:  # e.g. an input side too small for the layers
                continue
            report = compare_state_dicts(state, candidate.state_dict())
            if report.ok:
                return candidate, candidate_args
            if report.missing or report.unexpected:
                break  # the input side changes shapes, never names: try the next option
    return model, args


def build_for_card(card: Card) -> nn.Module:
    """The card's architecture with its arguments and fresh weights (for shapes: a card is
    enough), refused in one line when the arguments describe more weights than a checkpoint may
    hold."""
    return _build(card.architecture, card.model_args, check_size=True)


def card_input_shape(card: Card) -> tuple[int, int, int]:
    """The (C, H, W) the card's model takes: its own record, else what its arguments say."""
    return card.input_shape or _input_shape(card.architecture, card.model_args)


def _input_shape(architecture: str, args: Mapping[str, Any]) -> tuple[int, int, int]:
    from dashboard import models

    channels, height, width = models.model_info(architecture).input_shape
    side = args.get("input_size")
    return (
        int(args.get("in_channels") or channels),
        int(side or height),
        int(side or width),
    )


# --- loading -----------------------------------------------------------------------------------


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # rebuilt, weights loaded, eval mode, requires_grad untouched
    card: Card  # for a bare user file: a minimal card (architecture, name, model_args, shape)
    path: Path  # the weights file
    filter_history: FilterHistory  # epoch → layer → conv weights ({} if none saved)
    mismatch: MismatchReport | None = None  # what strict=False skipped; None when all fit
    # One line each, for the user: weights that hold NaN or infinite values, an invalid card.
    warnings: list[str] = field(default_factory=list)
    # Every layer's statistics over the run and its weights' histograms (None if none saved).
    dynamics: DynamicsLog | None = None


def nonfinite_warning(name: str, state: Mapping[str, torch.Tensor]) -> str:
    """'' when every floating-point tensor is finite, else one line naming those that are not
    (with their NaN and infinite counts): such weights load, but make NaN outputs."""
    found = []
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        nans = int(torch.isnan(tensor).sum())
        infinite = tensor.numel() - int(finite.sum()) - nans
        counts = [f"{n:,} {w}" for n, w in ((nans, "NaN"), (infinite, "infinite")) if n]
        found.append(f"{key} ({', '.join(counts)})")
    if not found:
        return ""
    return (
        f"{name} holds non-finite weights in {_plural(len(found), 'tensor')}: {_some(found, 4)}; "
        "its outputs will be NaN, and figures leave those values blank"
    )


def _refuse_bool_weights(
    name: str, state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> None:
    """True/false tensors where the model has numbers are not weights (copying would turn them
    into 0.0 and 1.0 silently)."""
    numeric = {k for k, v in model_state.items() if v.is_floating_point()}
    found = [k for k, v in state.items() if v.dtype == torch.bool and k in numeric]
    if found:
        raise CheckpointError(
            f"{name} holds true/false values where weights belong ({_some(found)}); "
            "weights are numbers, so it was not loaded"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    architecture: str | None = None,
    model_args: dict[str, Any] | None = None,
    strict: bool = True,
) -> LoadedCheckpoint:
    """Rebuild a model from a checkpoint (ours with its card, or a user's bare state dict).

    `architecture` and `model_args` override the card; without a card `architecture` is needed,
    and missing `model_args` are inferred from the tensors. `strict=False` loads what fits and
    reports the rest in `.mismatch`; a file of which nothing fits is always an error.
    """
    weights = _weights_path(path)
    state, history, dynamics_tensors = _split_history(_strip_wrappers(_read_tensors(weights)))
    card_path = _card_path(weights)
    card: Card | None = None
    invalid: Card | None = None
    if weights.suffix == WEIGHTS_SUFFIX and card_path.exists():
        card = read_card(weights)
    if card is not None and card.problem:
        architecture = architecture or card.architecture
        if not architecture:
            raise CheckpointError(
                f"{card.problem}; it names no architecture, so say which one {weights.name} "
                "holds (--model NAME, or upload it on the Model page)"
            )
        invalid = card
        card = None  # read the weights as a bare state dict of that architecture
    if card is not None and architecture in (None, card.architecture):
        architecture = card.architecture
        args = {**card.model_args, **(model_args or {})}
        model = _build(architecture, args, check_size=True)
    elif architecture is not None:
        if model_args is None:
            model, args = _infer_and_build(architecture, state)
        else:
            args = dict(model_args)
            model = _build(architecture, args, check_size=True)
        card = Card(
            name=weights.stem,
            architecture=architecture,
            model_args=args,
            input_shape=_input_shape(architecture, args),
            notes=f"a state dict loaded from {weights.name}, with no card",
        )
        if invalid is not None:
            card.notes = (
                f"its card is invalid ({invalid.problem}); the weights are read as "
                f"{architecture}, with the shapes they show"
            )
            card.problem = invalid.problem
    else:
        raise CheckpointError(
            f"no card beside {weights.name}: say which architecture it is (--model NAME)"
        )
    card.path = weights

    model_state = model.state_dict()
    _refuse_bool_weights(weights.name, state, model_state)
    report = compare_state_dicts(state, model_state)
    if not report.ok:
        fitting = {
            k: v for k, v in state.items() if k in model_state and v.shape == model_state[k].shape
        }
        if strict or not fitting:
            raise MismatchError(
                f"{weights.name} does not fit {architecture}: {report.summary()}", report
            )
        state = fitting
    model.load_state_dict(state, strict=False)
    model.eval()
    warnings = [card.notes] if card.problem else []
    nonfinite = nonfinite_warning(weights.name, state)
    if nonfinite:
        warnings.append(nonfinite)
    mismatch = None if report.ok else report
    try:
        dynamics = DynamicsLog.from_stored(dynamics_tensors, card.dynamics)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError):
        dynamics = None  # an untrusted file's history is only a view: skip it, keep the weights
        warnings.append(f"{weights.name}: its training dynamics are damaged and were skipped")
    return LoadedCheckpoint(model, card, weights, history, mismatch, warnings, dynamics)


# --- saving ------------------------------------------------------------------------------------


def _save_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix in TORCH_SUFFIXES:
        raise CheckpointError(
            f"{p.name}: checkpoints are saved as NAME.safetensors (give NAME or NAME.safetensors)"
        )
    return p if p.suffix == WEIGHTS_SUFFIX else p.with_name(p.name + WEIGHTS_SUFFIX)


def _tensors_to_save(
    model: nn.Module, filter_history: FilterHistory | None, dynamics: DynamicsLog | None = None
) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, no two sharing memory (safetensors refuses tied storage)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is not a tensor; it cannot be saved")
        if key.startswith(HISTORY_PREFIX):
            raise CheckpointError(f"parameter name {key!r} collides with the filter history")
        tensors[key] = value
    for epoch, layers in (filter_history or {}).items():
        if not _is_int(epoch) or epoch < 0:
            raise CheckpointError(f"filter history epochs must be integers ≥ 0, got {epoch!r}")
        for layer, weight in layers.items():
            tensors[f"{HISTORY_PREFIX}epoch{epoch}/{layer}"] = weight
    if dynamics is not None:
        for key, value in dynamics.to_tensors().items():
            tensors[DYNAMICS_PREFIX + key] = value
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()  # storages already written
    for key, value in tensors.items():
        value = value.detach().to("cpu").contiguous()
        if value.numel():
            if value.untyped_storage().data_ptr() in seen:
                value = value.clone()
            seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out


def save_checkpoint(
    model: nn.Module,
    card: Card,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    filter_history: FilterHistory | None = None,
    dynamics: DynamicsLog | None = None,
) -> Path:
    """Write NAME.safetensors and NAME.json; → the weights path. `filter_history` and
    `dynamics` go into the weights file under `lens_history/` (the card's own `dynamics` record
    is the caller's: `runs.result_card` writes it).

    Both files are written to temporary files and fsynced first. Then the old card goes, the
    weights are renamed into place, and the new card last: at every instant a card on disk
    describes complete weights beside it (a crash in between leaves bare weights, never a card
    pointing at missing, partial or other weights). On any error the temporary files are
    removed and, if it failed while writing them, the old checkpoint is untouched.
    """
    weights = _save_path(path)
    card_path = _card_path(weights)
    folder = weights.parent
    if not overwrite and (weights.exists() or card_path.exists()):
        raise CheckpointError(f"{weights} exists; pass overwrite to replace it")
    stamped = replace(
        card,
        name=card.name or weights.stem,
        input_shape=card.input_shape or _input_shape(card.architecture, card.model_args),
        created=card.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=card.versions or current_versions(),
    )
    card_bytes = stamped.to_json().encode("utf-8")
    weights_bytes = safetensors.torch.save(
        _tensors_to_save(model, filter_history, dynamics), metadata={"format": "pt"}
    )
    temps: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temps.append(files.write_temp(folder, weights.name, weights_bytes))
        temps.append(files.write_temp(folder, card_path.name, card_bytes))
        card_path.unlink(missing_ok=True)
        os.replace(temps[0], weights)
        os.replace(temps[1], card_path)
        files.fsync_folder(folder)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise CheckpointError(
                f"disk full while saving {_shown(weights)} ({err.strerror}): "
                "free some space and save again"
            ) from err
        raise CheckpointError(f"could not save {weights}: {err.strerror or err}") from err
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return weights


def _shown(path: Path) -> str:
    """A path as a user reads it: relative to the repository when inside it (runs/x)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def state_bytes(model: nn.Module) -> int:
    """The size of a model's tensors: a lower bound for its checkpoint file."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def ensure_free_space(folder: Path, needed: int) -> None:
    """Refuse before a long run when `folder`'s disk cannot hold `needed` bytes (the nearest
    existing ancestor is measured: the folder itself may not exist yet)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:  # cannot tell: the save itself will say if it does not fit
        return
    if free < needed:
        raise CheckpointError(
            f"disk full: the checkpoint needs at least {_size_text(needed)} in {_shown(folder)} "
            f"but {_size_text(free)} is free; free some space first"
        )


def ensure_writable(folder: Path) -> None:
    """Refuse before a long run when files cannot be created in `folder` (a read-only file
    system, no permission): a file is created there and removed again."""
    probe = folder / f".write-check-{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"cannot write in {_shown(folder)} ({err.strerror or err}): choose another --out"
        ) from None


def inside_shipped(path: Path) -> bool:
    """Whether `path` (after `..` and symbolic links) lies in trained/, the shipped folder."""
    shipped = TRAINED_DIR.resolve()
    resolved = path.resolve()
    return resolved == shipped or resolved.is_relative_to(shipped)


# --- shipped checkpoints and user-typed names --------------------------------------------------


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


def validate_name(name: str, folder: Path) -> Path:
    """A user-typed checkpoint name → `folder/NAME.safetensors`, or LensError saying why not."""
    name = name.strip().removesuffix(WEIGHTS_SUFFIX)
    if not name:
        raise LensError("give the checkpoint a name")
    if "\x00" in name or "/" in name or "\\" in name or os.sep in name:
        raise LensError(f"{name!r}: a checkpoint name cannot hold a path; give a plain name")
    if name.startswith("."):
        raise LensError(f"{name!r}: a checkpoint name cannot start with a dot")
    if len(name) > MAX_NAME_LENGTH:
        raise LensError(f"checkpoint name is {len(name)} characters; keep it to {MAX_NAME_LENGTH}")
    if not NAME_PATTERN.fullmatch(name) or name.endswith("."):
        raise LensError(
            f"{name!r}: use letters, digits, '-', '_' and '.' only (not ending with '.')"
        )
    if name.split(".")[0].lower() in WINDOWS_RESERVED:
        raise LensError(f"{name!r} is a reserved file name on Windows; choose another")
    target = folder / f"{name}{WEIGHTS_SUFFIX}"
    if target.resolve().parent != folder.resolve():
        raise LensError(f"{name!r} would be saved outside {folder}")
    return target
