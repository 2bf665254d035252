"""Max and average pooling worked out position by position, with the windows, the counts an
average divides by, and the output sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dashboard.analysis.lab.conv import (
    AxisSize,
    Pair,
    _check_position,
    _empty_message,
    _exact,
    _formula_text,
    _matrix,
    _pad,
    _pair,
    _problems,
    _sizes,
    _window_indices,
    fmt,
    term,
)
from dashboard.base.errors import LensError


@dataclass(frozen=True)
class WorkedPool:
    """Max or average pooling of (H, W), every window kept.

    Max pooling pads with −∞ (a padded cell never wins), average pooling with zeros that count in
    the divisor (`count_include_pad=True`, PyTorch's default) unless told otherwise.
    """

    input: np.ndarray  # (H, W)
    kind: str  # "max" | "avg"
    window: Pair
    stride: Pair
    padding: Pair
    count_include_pad: bool
    padded: np.ndarray  # float64 with −∞ (max) or 0 (avg) around; the input dtype if unpadded
    sizes: tuple[AxisSize, AxisSize]
    output: np.ndarray  # (H_out, W_out)
    message: str

    @property
    def formula(self) -> str:
        return _formula_text(self.sizes)

    @property
    def problems(self) -> list[str]:
        return _problems(self.sizes)


@dataclass(frozen=True)
class PoolStep:
    y: int
    x: int
    top: int  # padded coordinates of the window's first cell
    left: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    window: np.ndarray  # (kh, kw) values (−∞ / 0 in the padding)
    chosen: tuple[int, int] | None  # max: padded (row, col) of the winner (first in row order)
    total: int | float  # avg: the sum
    count: int  # avg: the divisor
    value: int | float
    text: str  # "max(3, 4, 2, 4) = 4" | "(3 + 4 + 2 + 4) / 4 = 13 / 4 = 3.25"


def pool_worked(
    x: Any,
    kind: str = "max",
    window: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    *,
    count_include_pad: bool = True,
) -> WorkedPool:
    """Pool like `F.max_pool2d` / `F.avg_pool2d` (floor mode); stride defaults to the window."""
    if kind not in ("max", "avg"):
        raise LensError(f'pooling is "max" or "avg", got {kind!r}')
    a = _matrix(x, "the input", 2, _exact(x))
    k = _pair(window, "window", 1)
    s = k if stride is None else _pair(stride, "stride", 1)
    p = _pair(padding, "padding", 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise LensError(
            f"padding {p[0]}, {p[1]} is more than half the {k[0]}×{k[1]} window: a window could "
            "then hold nothing but padding (PyTorch refuses it too)"
        )
    sizes = _sizes(a.shape, k, p, s, (1, 1), conv=False)
    message = _empty_message(sizes, "window")
    fill = -math.inf if kind == "max" else 0
    padded = _pad(a.astype(np.float64), p, fill) if any(p) else a
    if message:
        output = np.zeros((0, 0), dtype=a.dtype if kind == "max" else np.float64)
    else:
        out = (sizes[0].out, sizes[1].out)
        views = [
            padded[i : i + (out[0] - 1) * s[0] + 1 : s[0], j : j + (out[1] - 1) * s[1] + 1 : s[1]]
            for i in range(k[0])
            for j in range(k[1])
        ]
        stack = np.stack(views)  # (kh·kw, H_out, W_out)
        if kind == "max":
            output = stack.max(axis=0).astype(a.dtype)
        else:
            output = stack.sum(axis=0) / _avg_counts(a.shape, k, s, p, out, count_include_pad)
    return WorkedPool(a, kind, k, s, p, count_include_pad, padded, sizes, output, message)


def _avg_counts(hw: Pair, k: Pair, s: Pair, p: Pair, out: Pair, include_pad: bool) -> np.ndarray:
    """The divisor of every average window: k·k, or only the real (unpadded) cells."""
    if include_pad:
        return np.full(out, k[0] * k[1], dtype=np.float64)
    counts = []
    for axis in (0, 1):
        starts = np.arange(out[axis]) * s[axis] - p[axis]
        ends = np.minimum(starts + k[axis], hw[axis])
        counts.append(ends - np.maximum(starts, 0))
    return np.outer(counts[0], counts[1]).astype(np.float64)


def pool_step_at(worked: WorkedPool, y: int, x: int) -> PoolStep:
    """Output position (y, x) of a pooling: its window and how the value is chosen."""
    _check_position(worked.output, y, x)
    (kh, kw), (ph, pw) = worked.window, worked.padding
    top, left = y * worked.stride[0], x * worked.stride[1]
    rows, cols = _window_indices(top, kh, 1), _window_indices(left, kw, 1)
    window = worked.padded[np.ix_(rows, cols)]
    value = worked.output[y, x].item()
    if worked.kind == "max":
        flat = int(np.argmax(window))  # the first maximum in row order, as PyTorch picks it
        listed = ", ".join(fmt(v) for v in window.ravel().tolist())
        chosen = (rows[flat // kw], cols[flat % kw])
        text = f"max({listed}) = {fmt(value)}"
        return PoolStep(y, x, top, left, rows, cols, window, chosen, value, 1, value, text)
    height, width = worked.input.shape
    real_rows = sum(ph <= r < ph + height for r in rows)
    real_cols = sum(pw <= c < pw + width for c in cols)
    count = kh * kw if worked.count_include_pad else real_rows * real_cols
    total = window.sum().item()
    summed = " + ".join(term(v) for v in window.ravel().tolist())
    text = f"({summed}) / {count} = {fmt(total)} / {count} = {fmt(value)}"
    return PoolStep(y, x, top, left, rows, cols, window, None, total, count, value, text)


def pool_steps(worked: WorkedPool) -> list[PoolStep]:
    out_h, out_w = worked.output.shape
    return [pool_step_at(worked, y, x) for y in range(out_h) for x in range(out_w)]
