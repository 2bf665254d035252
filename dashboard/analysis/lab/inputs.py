"""What the Convolution lab's reader types, pastes or picks, turned into the arrays its
arithmetic (`dashboard.analysis.lab`) takes.

The lab keeps every input in session state under a permanent key (its widgets vanish with a
closed tab); the readers here take that state as a plain mapping, so they run and are tested
without Streamlit. Bad input raises LensError with a one-line reason the page shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dashboard.analysis import filters
from dashboard.analysis.lab import MINUS, fmt
from dashboard.base.errors import LensError

# The example of the seed tutorials: the first thing the lab shows.
PRESET_INPUT = "3 4 6 5 7 / 2 4 6 8 2 / 1 6 7 8 4 / 9 7 4 6 2 / 3 7 5 4 1"
PRESET_KERNEL = "1 2 3 / 4 5 6 / 7 8 9"
PRESET_PADDING = 1
PRESET_POOL = "3 4 6 5 / 2 4 6 8 / 1 6 7 8 / 9 7 4 6"


# ---------------------------------------------------------------------------------------------
# Typed and pasted numbers

_CHANNEL_SPLIT = re.compile(r"\|\s*|\n[ \t]*\n\s*")
_ROW_SPLIT = re.compile(r"[\n/;]")
_VALUE_SPLIT = re.compile(r"[\s,]+")
_SEPARATORS = re.compile(r"[\s,/;]+")
_LARGEST = 10**15  # whole numbers beyond this would overflow int64 once multiplied and summed


def _number(token: str) -> int | float:
    text = token.replace(MINUS, "-")
    try:
        return int(text)
    except ValueError:
        return float(text)  # raises ValueError for "x", and takes "1e3", "-0.5", "inf"


def parse_matrix(text: str) -> np.ndarray:
    """Numbers typed or pasted as rows → (H, W), or (C, H, W) for several channels.

    Rows are separated by new lines, "/" or ";", values by spaces, commas or tabs; channels by
    a blank line or "|". All whole numbers give an int64 array, otherwise float64. Ragged rows,
    something that is not a number, or channels of different sizes raise LensError naming the
    row and column at fault.
    """
    blocks = [b for b in _CHANNEL_SPLIT.split(text.strip()) if _SEPARATORS.sub("", b)]
    if not blocks:
        raise LensError("no numbers: type rows of numbers, e.g. 1 2 3 / 4 5 6")
    channels: list[list[list[int | float]]] = []
    for c, block in enumerate(blocks, start=1):
        where = f"channel {c}, " if len(blocks) > 1 else ""
        rows: list[list[int | float]] = []
        for line in _ROW_SPLIT.split(block):
            tokens = [t for t in _VALUE_SPLIT.split(line.strip()) if t]
            if not tokens:
                continue  # a trailing "/" or an empty line inside a block
            row: list[int | float] = []
            for col, token in enumerate(tokens, start=1):
                try:
                    number = _number(token)
                except ValueError:
                    raise LensError(
                        f"{where}row {len(rows) + 1}, column {col}: {token!r} is not a number"
                    ) from None
                if not math.isfinite(number) or abs(number) >= _LARGEST:
                    raise LensError(
                        f"{where}row {len(rows) + 1}, column {col}: {token!r} is too large"
                    )
                row.append(number)
            if rows and len(row) != len(rows[0]):
                raise LensError(
                    f"{where}row {len(rows) + 1} has {len(row)} values but row 1 has "
                    f"{len(rows[0])}: every row needs the same number of values"
                )
            rows.append(row)
        channels.append(rows)
    first = (len(channels[0]), len(channels[0][0]))
    for c, rows in enumerate(channels[1:], start=2):
        if (len(rows), len(rows[0])) != first:
            raise LensError(
                f"channel {c} is {len(rows)}×{len(rows[0])} but channel 1 is "
                f"{first[0]}×{first[1]}: channels need the same size"
            )
    whole = all(isinstance(v, int) for rows in channels for row in rows for v in row)
    array = np.array(channels, dtype=np.int64 if whole else np.float64)
    return array[0] if len(channels) == 1 else array


def matrix_text(array: np.ndarray) -> str:
    """The inverse of `parse_matrix`: rows on lines, channels separated by a blank line."""
    a = np.asarray(array)
    planes = a[None] if a.ndim == 2 else a
    return "\n\n".join(
        "\n".join(" ".join(fmt(v).replace(MINUS, "-") for v in row) for row in plane)
        for plane in planes
    )


def image_patch(
    images: torch.Tensor, index: int, top: int, left: int, size: int = 8, channel: int = 0
) -> np.ndarray:
    """A size×size patch of raw 0..255 pixels from a uint8 batch (N, C, H, W), as int64."""
    n, c, h, w = images.shape
    if not 0 <= index < n:
        raise LensError(f"image {index} does not exist: the split has {n:,} images")
    if not 0 <= channel < c:
        raise LensError(f"channel {channel} does not exist: the images have {c}")
    size = min(size, h, w)
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise LensError(
            f"a {size}×{size} patch at top {top}, left {left} leaves the {h}×{w} image: "
            f"top and left go from 0 to {h - size} and {w - size}"
        )
    patch = images[index, channel, top : top + size, left : left + size]
    return patch.numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Presets and widget values

SOURCE_EXAMPLE, SOURCE_TYPED, SOURCE_PATCH = (
    "the 5×5 example",
    "typed or pasted",
    "a patch of a test image",
)
SOURCES = (SOURCE_EXAMPLE, SOURCE_TYPED, SOURCE_PATCH)
PATCH = 8  # side of an image patch
EXAMPLE_KERNEL = "1 … 9 (the example)"
KERNEL_FILLS: dict[str, np.ndarray] = {
    EXAMPLE_KERNEL: parse_matrix(PRESET_KERNEL),
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "box blur (all ones)": np.ones((3, 3), dtype=np.int64),
    **{name: k.astype(np.int64) for name, k in filters.edge_kernels().items()},
}
DEFAULT_INPUT_TEXT = matrix_text(parse_matrix(PRESET_INPUT))
DEFAULT_KERNEL_TEXT = matrix_text(KERNEL_FILLS[EXAMPLE_KERNEL])
DEFAULT_POOL_TEXT = matrix_text(parse_matrix(PRESET_POOL))
# Two input channels (the example and an X) and one kernel of two 3×3 blocks per output channel.
CHANNEL_INPUT = (
    PRESET_INPUT.replace(" / ", "\n")
    + "\n\n"
    + "\n".join(["1 0 0 0 1", "0 1 0 1 0", "0 0 1 0 0", "0 1 0 1 0", "1 0 0 0 1"])
)
CHANNEL_KERNELS = (
    "1 2 3\n4 5 6\n7 8 9\n\n1 0 -1\n1 0 -1\n1 0 -1",
    "0 0 0\n0 1 0\n0 0 0\n\n1 1 1\n1 1 1\n1 1 1",
    "1 0 0\n0 1 0\n0 0 1\n\n0 0 0\n0 -1 0\n0 0 0",
    "0 1 0\n1 1 1\n0 1 0\n\n1 0 1\n0 1 0\n1 0 1",
)
MAX_CHANNEL_OUT = len(CHANNEL_KERNELS)


def clamped(
    value: Any,
    default: Any,
    low: Any = None,
    high: Any = None,
    options: Sequence[Any] | None = None,
) -> Any:
    """A kept widget value made valid again: the bounds may have moved since it was stored
    (another model, another image count), and an option may be gone."""
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    if options is not None and value not in options:
        value = default
    return value


def whole(value: float) -> int | float:
    """A typed number as int when it is whole: keeps the arithmetic exact."""
    return int(value) if float(value).is_integer() else float(value)


def patch_box(top: int, left: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the PATCH×PATCH patch, in image pixels."""
    return (top, left, top + PATCH - 1, left + PATCH - 1)


def gray_image(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W) float64 in 0–1: the channels' mean, what edge kernels slide on."""
    return pixels.astype(np.float64).mean(axis=0) / 255.0


# ---------------------------------------------------------------------------------------------
# The tabs' inputs, read from the kept state


def worked_settings(state: Mapping[str, Any]) -> dict[str, int]:
    """Padding, stride and dilation of the worked convolution."""
    return {
        "padding": int(state.get("lab_padding", PRESET_PADDING)),
        "stride": int(state.get("lab_stride", 1)),
        "dilation": int(state.get("lab_dilation", 1)),
    }


def worked_input(state: Mapping[str, Any], images: Callable[[], torch.Tensor]) -> np.ndarray:
    """The worked tab's input matrix: the example, typed numbers, or a patch of raw pixels of
    `images()` (the test split, loaded only when a patch is asked for)."""
    source = state.get("lab_source", SOURCE_EXAMPLE)
    if source == SOURCE_TYPED:
        return parse_matrix(state.get("lab_input", PRESET_INPUT))
    if source == SOURCE_PATCH:
        return image_patch(
            images(),
            int(state.get("lab_patch_index", 0)),
            int(state.get("lab_patch_top", 10)),
            int(state.get("lab_patch_left", 10)),
            PATCH,
            int(state.get("lab_patch_channel", 0)),
        )
    return parse_matrix(PRESET_INPUT)


def worked_kernel(state: Mapping[str, Any]) -> np.ndarray:
    kernel = parse_matrix(state.get("lab_kernel", DEFAULT_KERNEL_TEXT))
    if kernel.ndim != 2:
        raise LensError("the kernel is one matrix: no blank lines or | inside it")
    return kernel


def channel_arrays(state: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input (C_in, H, W), kernels (C_out, C_in, k, k), bias (C_out,)) of the channels tab."""
    x = parse_matrix(state.get("lab_ch_input", CHANNEL_INPUT))
    x = x[None] if x.ndim == 2 else x
    c_out = int(state.get("lab_ch_out", 2))
    kernels: list[np.ndarray] = []
    for o in range(c_out):
        k = parse_matrix(state.get(f"lab_ch_kernel{o}", CHANNEL_KERNELS[o]))
        k = k[None] if k.ndim == 2 else k
        if k.shape[0] != x.shape[0]:
            raise LensError(
                f"kernel {o} has {k.shape[0]} channel blocks but the input has {x.shape[0]} "
                "channels: one k×k block per input channel"
            )
        if kernels and k.shape != kernels[0].shape:
            raise LensError(
                f"kernel {o} is {k.shape[1]}×{k.shape[2]}, kernel 0 is "
                f"{kernels[0].shape[1]}×{kernels[0].shape[2]}"
            )
        kernels.append(k)
    bias = parse_matrix(state.get("lab_ch_bias", " ".join(["0"] * c_out))).reshape(-1)
    if bias.size != c_out:
        raise LensError(f"{bias.size} biases for {c_out} output channels: one number each")
    return x, np.stack(kernels), bias


def channel_settings(state: Mapping[str, Any]) -> dict[str, int]:
    """Padding and stride of the channels tab (no dilation there)."""
    return {
        "padding": int(state.get("lab_ch_padding", 1)),
        "stride": int(state.get("lab_ch_stride", 1)),
        "dilation": 1,
    }


def im2col_arrays(
    state: Mapping[str, Any], source: str, images: Callable[[], torch.Tensor]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(input (C, H, W), kernels (C_out, C, kh, kw), bias, settings) of the tab im2col unrolls:
    `source` "worked" or "channels"."""
    if source == "worked":
        x, kernels = worked_input(state, images)[None], worked_kernel(state)[None, None]
        bias = np.array([whole(state.get("lab_bias", 0))])
        return x, kernels, bias, worked_settings(state)
    return (*channel_arrays(state), channel_settings(state))


def pool_matrix(text: str) -> np.ndarray:
    x = parse_matrix(text)
    if x.ndim != 2:
        raise LensError("pooling here takes one channel: no blank lines or | inside")
    return x


def pointwise_default(channels: int) -> str:
    """A first 1×1 weight matrix for `channels` inputs: the sum, and the first minus the rest."""
    if channels == 1:
        return "1\n2"
    return "\n".join([" ".join(["1"] * channels), " ".join(["1"] + ["-1"] * (channels - 1))])


def pointwise_weights(text: str) -> np.ndarray:
    """Typed 1×1 weights as (C_out, C_in): a single row is one output channel."""
    weights = parse_matrix(text)
    return weights.reshape(1, -1) if weights.ndim == 1 else weights


# ---------------------------------------------------------------------------------------------
# The neuron handed over by the Activations page

NEURON_LAYER, NEURON_CHANNEL = "lens_neuron_layer", "lens_neuron_channel"
NEURON_Y, NEURON_X, NEURON_SEEN = "lens_neuron_y", "lens_neuron_x", "lab_neuron_seen"
_NEURON_FIELDS = (
    (NEURON_LAYER, "layer"),
    (NEURON_CHANNEL, "channel"),
    (NEURON_Y, "y"),
    (NEURON_X, "x"),
)


def adopted_neuron(record: Any, seen: Any) -> dict[str, Any]:
    """The state to set so the lab follows the neuron the Activations page picked last (its
    `inputs.NEURON_KEY` record); nothing when the record is not new."""
    if not isinstance(record, dict) or record == seen:
        return {}
    update: dict[str, Any] = {NEURON_SEEN: dict(record)}
    update.update({key: record[field] for key, field in _NEURON_FIELDS if field in record})
    return update
