"""What a checkpoint card may hold: the schema every card is checked against when it is read.

A card is a JSON file anyone can write or edit, and every page lists every card it finds, so a
card is untrusted input: its size and nesting depth are bounded before `json` parses it (the
parser recurses, and a few hundred thousand nested brackets would exhaust Python's stack), and
each key's type and range are checked before anything formats or builds from it (a string where
an accuracy belongs, a history record that is a list, fifty million classes). A card that fails
is reported in one line naming the key, and nothing of it is used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from dashboard.base.errors import CheckpointError

# A card is a few kB; a 10,000-epoch history is about 2 MB of JSON.
MAX_CARD_BYTES = 4 * 1024**2
# The deepest part of a card is a history record or a model option (3 levels); keys this
# version does not know may nest deeper, but not without bound.
MAX_DEPTH = 16
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
MAX_CHANNELS = 1024
MAX_SIDE = 4096  # pixels per side of a model's input (ImageNet models take 224 to 518)
MAX_EPOCHS = 100_000
MAX_TEXT = 10_000  # characters of a free-text field (notes, command, dataset source)
MAX_LABEL = 500  # characters of a name, a class name or an option value
MAX_TENSORS = 10_000  # parameter tensors of a model (torchvision's largest have ~500)

Check = Callable[[Any, str], Any]  # (value, where) → the value to keep, or raise _SchemaError


class _SchemaError(Exception):
    """A value that breaks the schema; `from_dict` adds the card's name in front."""


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _fail(where: str, expected: str, value: Any) -> _SchemaError:
    return _SchemaError(f"{where!r} should be {expected}, got {_shown(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text(limit: int = MAX_LABEL) -> Check:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise _fail(where, f"text of at most {limit:,} characters", value)
        return value

    return check


def whole(low: int, high: int) -> Check:
    def check(value: Any, where: str) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise _fail(where, f"a whole number from {low:,} to {high:,}", value)
        return value

    return check


def number(low: float, high: float = math.inf) -> Check:
    expected = f"a number from {low:g} to {high:g}" if high < math.inf else f"a number ≥ {low:g}"

    def check(value: Any, where: str) -> float:
        if not (_is_number(value) and math.isfinite(value) and low <= value <= high):
            raise _fail(where, expected, value)
        return value

    return check


def flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "true or false", value)
    return value


def optional(check: Check) -> Check:
    return lambda value, where: None if value is None else check(value, where)


def scalar(value: Any, where: str) -> Any:
    """Any single JSON value: text, a finite number, true/false or null."""
    if value is None or isinstance(value, bool):
        return value
    if _is_number(value) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        return value
    raise _fail(where, "a single value (text, a number, true/false or null)", value)


def list_of(item: Check, limit: int) -> Check:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list) or len(value) > limit:
            raise _fail(where, f"a list of at most {limit:,} items", value)
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


def record(known: Mapping[str, Check], other: Check | None = scalar, limit: int = 256) -> Check:
    """An object whose `known` keys are checked by their own rule and any other key by `other`
    (None: no other key is allowed)."""

    def check(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or len(value) > limit:
            raise _fail(where, f"an object of at most {limit} keys", value)
        out = {}
        for key, item in value.items():
            rule = known.get(key, other)
            if rule is None:
                raise _SchemaError(f"{where!r} has an unexpected key {_shown(key)}")
            out[key] = rule(item, f"{where}.{key}")
        return out

    return check


def _whole_check(value: Any, where: str, top: int) -> bool:
    try:
        whole(1, top)(value, where)
    except _SchemaError:
        return False
    return True


def _shape(value: Any, where: str) -> tuple[int, int, int]:
    """[C, H, W]: 1 to 1,024 channels, sides of 1 to 16,384 pixels."""
    tops = (MAX_CHANNELS, MAX_SIDE, MAX_SIDE)
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(_whole_check(v, where, top) for v, top in zip(value, tops, strict=True))
    ):
        raise _fail(
            where,
            f"three positive integers [C, H, W] (C ≤ {MAX_CHANNELS:,}, H and W ≤ {MAX_SIDE:,})",
            value,
        )
    return tuple(value)  # type: ignore[return-value]


_ACCURACY = optional(number(0, 1))
_LOSS = optional(number(0))
_COUNT = optional(whole(0, 10**12))

MODEL_ARGS = record(
    {
        "in_channels": optional(whole(1, MAX_CHANNELS)),
        "num_classes": optional(whole(1, MAX_CLASSES)),
        "input_size": optional(whole(1, MAX_SIDE)),
        "options": optional(record({}, scalar, limit=64)),
        "pretrained": optional(flag),
    },
    scalar,
    limit=64,
)
TRAINING = record(
    {
        "optimizer": optional(text()),
        "lr": optional(number(0)),
        "schedule": optional(text()),
        "weight_decay": optional(number(0)),
        "batch_size": optional(whole(1, 10**9)),
        "epochs": optional(whole(0, MAX_EPOCHS)),
        "seed": optional(whole(-(2**63), 2**64 - 1)),
        "device": optional(text()),
        "augment": optional(flag),
        "label_smoothing": optional(number(0, 1)),
        "processes": optional(whole(1, 100_000)),
        "train_images": _COUNT,
        "test_images": _COUNT,
        "images_per_second": optional(number(0)),
        "seconds": optional(number(0)),
        "initial_weights": optional(text(MAX_TEXT)),
    }
)
EPOCH = record(
    {
        "epoch": whole(1, MAX_EPOCHS),
        "train_loss": _LOSS,
        "train_accuracy": _ACCURACY,
        "test_loss": _LOSS,
        "test_accuracy": _ACCURACY,
        "lr": optional(number(0)),
        "seconds": optional(number(0)),
        "steps": _COUNT,
        "steps_per_epoch": _COUNT,
    }
)
_STATISTICS = list_of(number(-1e6, 1e6), MAX_CHANNELS)
NORMALIZATION = record(
    {"mean": _STATISTICS, "std": list_of(number(1e-12, 1e6), MAX_CHANNELS)}, other=None
)
METRICS = record({"test_accuracy": _ACCURACY, "test_loss": _LOSS})
_NAMES = list_of(text(), MAX_TENSORS)
_VALUES = list_of(optional(number(0)), MAX_TENSORS)  # null: not measured (or not finite)
DYNAMICS_EPOCH = record(
    {
        "epoch": whole(1, MAX_EPOCHS),
        "samples": whole(0, 10**9),
        "weight_norm": _VALUES,
        "grad_norm": _VALUES,
        "update_ratio": _VALUES,
        "dead_share": list_of(optional(number(0, 1)), MAX_TENSORS),
    },
    other=None,
)
DYNAMICS = record(
    {
        "every": whole(0, 10**9),
        "window": whole(0, 10**9),
        "bins": whole(0, 100_000),
        "tensors": _NAMES,
        "activations": _NAMES,
        "units": list_of(whole(0, 10**9), MAX_TENSORS),
        "epochs": list_of(DYNAMICS_EPOCH, MAX_EPOCHS),
    },
    other=None,
)

# Every key a card may hold, with its rule; keys not listed are kept (a later version's) but
# never read.
CARD: dict[str, Check] = {
    "format": text(100),
    "name": text(200),
    "architecture": text(100),
    "model_args": MODEL_ARGS,
    "input_shape": _shape,
    "dataset": text(MAX_TEXT),
    "dataset_source": text(MAX_TEXT),
    "classes": list_of(text(), MAX_CLASSES),
    "normalization": NORMALIZATION,
    "training": TRAINING,
    "history": list_of(EPOCH, MAX_EPOCHS),
    "metrics": METRICS,
    "command": text(MAX_TEXT),
    "created": text(100),
    "versions": record({}, text(), limit=64),
    "notes": text(MAX_TEXT),
    "dynamics": DYNAMICS,
}


def check_card(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The card's known keys, checked (input_shape as a tuple); CheckpointError naming the
    first key that breaks the schema. Null values count as absent."""
    values = {}
    try:
        for key, rule in CARD.items():
            if data.get(key) is not None:
                values[key] = rule(data[key], key)
        _check_agreement(values)
    except _SchemaError as err:
        raise CheckpointError(f"{source}: {err}") from None
    return values


def _check_agreement(values: Mapping[str, Any]) -> None:
    """Keys that describe the input must agree: its channels, and the normalization's. (A class
    count that differs from the weights' is reported on loading, naming both counts.)"""
    args = values.get("model_args", {})
    shape = values.get("input_shape")
    channels = args.get("in_channels")
    if shape and channels is not None and shape[0] != channels:
        raise _SchemaError(f"'input_shape' has {shape[0]} channels but 'model_args' has {channels}")
    _check_dynamics(values.get("dynamics"))
    normalization = values.get("normalization")
    if normalization is not None:
        mean, std = normalization.get("mean"), normalization.get("std")
        if mean is None or std is None or len(mean) != len(std) or not mean:
            raise _SchemaError("'normalization' should hold 'mean' and 'std' lists of equal length")
        if shape and len(mean) not in (1, shape[0]):
            raise _SchemaError(f"'normalization' has {len(mean)} channels but the input {shape[0]}")


def _check_dynamics(dynamics: Mapping[str, Any] | None) -> None:
    """Each epoch's lists hold one number per tensor (or activation) the record names."""
    if not dynamics:
        return
    tensors, activations = dynamics.get("tensors", []), dynamics.get("activations", [])
    if len(dynamics.get("units", activations)) != len(activations):
        raise _SchemaError("'dynamics.units' should hold one count per activation")
    for i, epoch in enumerate(dynamics.get("epochs", [])):
        for key, names in (
            ("weight_norm", tensors),
            ("grad_norm", tensors),
            ("update_ratio", tensors),
            ("dead_share", activations),
        ):
            if key in epoch and len(epoch[key]) != len(names):
                raise _SchemaError(
                    f"'dynamics.epochs[{i}].{key}' has {len(epoch[key])} values for "
                    f"{len(names)} {'activations' if key == 'dead_share' else 'tensors'}"
                )


# --- parsing with a bounded depth -----------------------------------------------------------------

# A JSON string (escapes included), unrolled so that a long one is matched without backtracking.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deeply `text`'s arrays and objects nest (brackets inside strings do not count),
    counting no further than `limit` + 1: a linear scan, no recursion."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> None:
    """NaN and Infinity are not standard JSON; an old writer's NaN meant "no number"."""
    return None


def parse(text: str, source: str) -> Any:
    """JSON text → Python values, refusing text nested deeper than MAX_DEPTH before `json`
    (which recurses) sees it; NaN and Infinity become null."""
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise CheckpointError(
            f"{source} nests more than {MAX_DEPTH} levels deep; a card holds at most "
            f"{MAX_DEPTH}, so it was not parsed"
        )
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{source} is not valid JSON ({err.msg} at line {err.lineno})"
        ) from None
    except ValueError as err:  # e.g. an integer of more than 4,300 digits
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{source} is not valid JSON ({first[:100]})") from None


_ARCHITECTURE = re.compile(r'"architecture"\s*:\s*"([A-Za-z0-9:_.\-]{1,100})"')


def architecture_in(data: Any, text: str) -> str:
    """The architecture a card names even when the rest of it is invalid ("" if none): the
    parsed value when there is one, else the first `"architecture": "NAME"` in the text."""
    if isinstance(data, dict):
        value = data.get("architecture")
        if isinstance(value, str) and _ARCHITECTURE.fullmatch(f'"architecture":"{value}"'):
            return value
        return ""
    found = _ARCHITECTURE.search(text)
    return found[1] if found else ""
