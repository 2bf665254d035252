"""The Convolution lab's ground floor: numbers written as the lab shows them, output sizes per
axis with the formula and its numbers, and a worked 2-D convolution of one channel, position
by position ("3·1 + 4·2 + … = 87")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dashboard.base.errors import LensError, ShapeError

Pair = tuple[int, int]
MINUS = "−"


def fmt(value: Any, digits: int = 6) -> str:
    """A number as a reader writes it: integers whole, floats to `digits` significant digits,
    a typographic minus, and ±∞ for the padding of max pooling."""
    v = value.item() if isinstance(value, np.generic) else value
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else f"{MINUS}∞"
        if v.is_integer() and abs(v) < 1e15:
            v = int(v)
    text = str(v) if isinstance(v, int) else f"{v:.{digits}g}"
    return text.replace("-", MINUS)


def term(value: Any, digits: int = 6) -> str:
    """A factor inside a product: negative numbers in parentheses."""
    text = fmt(value, digits)
    return f"({text})" if text.startswith(MINUS) else text


def _thousands(n: int) -> str:
    return f"{n:,}"


def _pair(value: int | Sequence[int], name: str, minimum: int) -> Pair:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2:
        raise LensError(f"{name} needs one number or two (rows, columns), got {value!r}")
    pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise LensError(f"{name} must be at least {minimum}, got {pair[0]}, {pair[1]}")
    return pair


@dataclass(frozen=True)
class AxisSize:
    """The output size along one axis, its formula with the numbers, and what it leaves out."""

    axis: str  # "rows" | "columns"
    size: int  # input length along the axis (before padding)
    kernel: int
    padding: int
    stride: int
    dilation: int
    out: int
    formula: str  # "⌊(5 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 5"
    exact: bool  # the division by the stride leaves no remainder
    remainder: int
    uncovered: tuple[int, ...]  # padded indices that no window reads

    @property
    def padded(self) -> int:
        return self.size + 2 * self.padding

    @property
    def lost(self) -> tuple[int, ...]:
        """Input indices (not padding) that never reach the output."""
        return tuple(
            i - self.padding for i in self.uncovered if self.padding <= i < self.padding + self.size
        )

    @property
    def note(self) -> str:
        """What goes wrong along this axis, or "" when every input pixel is read."""
        if self.out <= 0:
            return ""
        unit = self.axis[:-1]
        parts = []
        if not self.exact:
            span = self.padded - self.dilation * (self.kernel - 1) - 1
            parts.append(
                f"{self.axis}: {span} / {self.stride} = {span // self.stride} remainder "
                f"{self.remainder} is not whole, so the size is rounded down and the last "
                f"window stops {_count(self.remainder, unit)} short of the padded edge"
            )
        elif self.uncovered:
            span = self.dilation * (self.kernel - 1) + 1
            parts.append(
                f"{self.axis}: stride {self.stride} jumps over {unit}s the "
                f"{span}-{unit} window never reaches"
            )
        if not self.uncovered:
            return "; ".join(parts)
        many = len(self.uncovered) > 1
        skipped = f"padded {_listing(unit, self.uncovered)} {'are' if many else 'is'} never covered"
        if self.lost:
            reach = "never reach" if len(self.lost) > 1 else "never reaches"
            parts.append(f"{skipped}: input {_listing(unit, self.lost)} {reach} the output")
        else:
            padding = "they are padding" if many else "it is padding"
            parts.append(f"{skipped}, but {padding}: no input value is lost")
        return "; ".join(parts)


def _listing(unit: str, items: Sequence[int]) -> str:
    """Units and indices: "row 5", or "rows 3, 4"."""
    return f"{unit}{'s' if len(items) > 1 else ''} {', '.join(map(str, items))}"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def axis_size(
    axis: str, size: int, kernel: int, padding: int, stride: int, dilation: int = 1, *, conv: bool
) -> AxisSize:
    """Output length ⌊(n + 2p − d·(k − 1) − 1) / s⌋ + 1 with the numbers written in; pooling
    (`conv` False, no dilation) writes it as ⌊(n + 2p − k) / s⌋ + 1."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = span // stride + 1
    if conv:
        inner = f"{size} + 2·{padding} − {dilation}·({kernel} − 1) − 1"
    else:
        inner = f"{size} + 2·{padding} − {kernel}"
    formula = f"⌊({inner}) / {stride}⌋ + 1 = {fmt(out)}"
    covered = {i * stride + j * dilation for i in range(max(out, 0)) for j in range(kernel)}
    uncovered = tuple(i for i in range(size + 2 * padding) if i not in covered)
    remainder = span % stride if span >= 0 else 0
    exact = remainder == 0
    return AxisSize(
        axis, size, kernel, padding, stride, dilation, out, formula, exact, remainder, uncovered
    )


def _sizes(
    hw: Pair, kernel: Pair, padding: Pair, stride: Pair, dilation: Pair, *, conv: bool
) -> tuple[AxisSize, AxisSize]:
    return (
        axis_size("rows", hw[0], kernel[0], padding[0], stride[0], dilation[0], conv=conv),
        axis_size("columns", hw[1], kernel[1], padding[1], stride[1], dilation[1], conv=conv),
    )


def _formula_text(sizes: tuple[AxisSize, AxisSize]) -> str:
    h, w = sizes
    if h.formula == w.formula:
        return f"H_out = W_out = {h.formula}"
    return f"H_out = {h.formula}; W_out = {w.formula}"


def _empty_message(sizes: tuple[AxisSize, AxisSize], what: str) -> str:
    """Why there is no output, or "" when there is one."""
    for s in sizes:
        if s.out <= 0:
            span = s.dilation * (s.kernel - 1) + 1
            return (
                f"no output: the padded input has {s.padded} {s.axis} but the {what} spans "
                f"{span}, so the size formula gives {fmt(s.out)}; add padding or use a "
                f"smaller {what}"
            )
    return ""


def _problems(sizes: tuple[AxisSize, AxisSize]) -> list[str]:
    """One note per axis that loses something; one for both when the axes are alike."""
    h, w = sizes
    if h.note and replace(h, axis="columns") == w:
        return [h.note.replace("rows:", "rows (and columns alike):", 1)]
    return [s.note for s in sizes if s.note]


def _exact(*arrays: Any) -> np.dtype:
    """int64 when every input is whole-numbered by type, else float64."""
    whole = all(np.asarray(a).dtype.kind in "iub" for a in arrays)
    return np.dtype(np.int64) if whole else np.dtype(np.float64)


def _matrix(value: Any, name: str, ndim: int, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != ndim or 0 in a.shape:
        raise ShapeError(f"{name} must have {ndim} non-empty axes, got shape {a.shape}")
    return a.astype(dtype)


def _correlate(padded: np.ndarray, kernel: np.ndarray, stride: Pair, dilation: Pair, out: Pair):
    """Σ_ij kernel[i, j] · padded[i·d + y·s, j·d + x·s] for every output (y, x), one kernel
    offset at a time: exact in int64."""
    total = np.zeros((*padded.shape[:-2], *out), dtype=np.result_type(padded, kernel))
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            top, left = i * dilation[0], j * dilation[1]
            rows = slice(top, top + (out[0] - 1) * stride[0] + 1, stride[0])
            cols = slice(left, left + (out[1] - 1) * stride[1] + 1, stride[1])
            total = total + kernel[i, j] * padded[..., rows, cols]
    return total


def _pad(x: np.ndarray, padding: Pair, value: float = 0) -> np.ndarray:
    width = [(0, 0)] * (x.ndim - 2) + [(padding[0],) * 2, (padding[1],) * 2]
    return np.pad(x, width, constant_values=value)


@dataclass(frozen=True)
class WorkedConv:
    """One input channel cross-correlated with one kernel, every number kept."""

    input: np.ndarray  # (H, W)
    kernel: np.ndarray  # (kh, kw)
    padded: np.ndarray  # (H + 2·ph, W + 2·pw), zeros around
    padding: Pair
    stride: Pair
    dilation: Pair
    bias: int | float
    sizes: tuple[AxisSize, AxisSize]
    output: np.ndarray  # (H_out, W_out); (0, 0) when a size is ≤ 0
    message: str  # why there is no output, else ""

    @property
    def formula(self) -> str:
        return _formula_text(self.sizes)

    @property
    def problems(self) -> list[str]:
        """What goes wrong when the division by the stride is not exact (one line per axis)."""
        return _problems(self.sizes)


def conv2d_worked(
    x: Any,
    kernel: Any,
    *,
    padding: int | Sequence[int] = 0,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    bias: int | float = 0,
) -> WorkedConv:
    """Cross-correlate (H, W) with (kh, kw) like `F.conv2d`, zero padding, keeping the work."""
    dtype = _exact(x, kernel, bias)
    a = _matrix(x, "the input", 2, dtype)
    k = _matrix(kernel, "the kernel", 2, dtype)
    p, s = _pair(padding, "padding", 0), _pair(stride, "stride", 1)
    d = _pair(dilation, "dilation", 1)
    sizes = _sizes(a.shape, k.shape, p, s, d, conv=True)
    padded = _pad(a, p)
    message = _empty_message(sizes, "kernel")
    out = (sizes[0].out, sizes[1].out)
    b = dtype.type(bias)
    output = (
        np.zeros((0, 0), dtype=dtype) if message else _correlate(padded, k, s, d, out) + b
    )  # (H_out, W_out)
    return WorkedConv(a, k, padded, p, s, d, b.item(), sizes, output, message)


@dataclass(frozen=True)
class Step:
    """One output position of a worked convolution: its window and its multiply-add."""

    y: int  # output row and column
    x: int
    top: int  # padded coordinates of the window's first cell
    left: int
    rows: tuple[int, ...]  # padded rows and columns the kernel reads (dilation leaves gaps)
    cols: tuple[int, ...]
    window: np.ndarray  # (kh, kw) values under the kernel
    products: np.ndarray  # window · kernel, elementwise
    bias: int | float
    value: int | float
    text: str  # "0·1 + 0·2 + … + 4·9 = 91"


def _written(terms: list[str], total: Any, bias: Any, digits: int) -> str:
    if bias:
        terms = [*terms, term(bias, digits)]
        total += bias
    return " + ".join(terms) + f" = {fmt(total, digits)}"


def multiply_add(values: Any, weights: Any, bias: Any = 0, digits: int = 6) -> str:
    """The written dot product "a·w + a·w + … [+ bias] = total", input first, row-major."""
    pairs = list(zip(np.ravel(values).tolist(), np.ravel(weights).tolist(), strict=True))
    terms = [f"{term(v, digits)}·{term(k, digits)}" for v, k in pairs]
    return _written(terms, sum(v * k for v, k in pairs), bias, digits)


def written_sum(values: Any, bias: Any = 0, digits: int = 6) -> str:
    """The written sum "v₀ + v₁ + … [+ bias] = total" (the bias last, when nonzero)."""
    parts = np.ravel(values).tolist()
    return _written([term(v, digits) for v in parts], sum(parts), bias, digits)


def _window_indices(start: int, kernel: int, dilation: int) -> tuple[int, ...]:
    return tuple(start + i * dilation for i in range(kernel))


def _check_position(output: np.ndarray, y: int, x: int) -> None:
    if not (0 <= y < output.shape[0] and 0 <= x < output.shape[1]):
        raise LensError(f"({y}, {x}) is outside the {output.shape[0]}×{output.shape[1]} output")


def step_at(worked: WorkedConv, y: int, x: int) -> Step:
    """Output position (y, x): its window in the padded input and its multiply-add."""
    _check_position(worked.output, y, x)
    top, left = y * worked.stride[0], x * worked.stride[1]
    rows = _window_indices(top, worked.kernel.shape[0], worked.dilation[0])
    cols = _window_indices(left, worked.kernel.shape[1], worked.dilation[1])
    window = worked.padded[np.ix_(rows, cols)]
    products = window * worked.kernel
    text = multiply_add(window, worked.kernel, worked.bias)
    value = worked.output[y, x].item()
    return Step(y, x, top, left, rows, cols, window, products, worked.bias, value, text)


def steps(worked: WorkedConv) -> list[Step]:
    """Every output position in row-major order, with the numbers that make it."""
    out_h, out_w = worked.output.shape
    return [step_at(worked, y, x) for y in range(out_h) for x in range(out_w)]
