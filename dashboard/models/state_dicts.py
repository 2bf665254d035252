"""A weights file read into a state dict without unpickling code (safetensors, or a torch file
that `weights_only` can load), and a state dict compared with a model's, in words."""

from __future__ import annotations

import pickle
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from dashboard.base.errors import CheckpointError

HISTORY_PREFIX = "lens_history/"
# Training dynamics (dynamics.DynamicsLog.to_tensors) under the history prefix, so a reader that
# knows only the filter snapshots skips them like any other unknown history key.
DYNAMICS_PREFIX = HISTORY_PREFIX + "dynamics/"
FilterHistory = dict[int, dict[str, torch.Tensor]]


# Wrappers added by nn.DataParallel / DistributedDataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Layouts of training scripts that save more than the weights, most specific first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


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
