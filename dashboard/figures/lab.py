"""The Convolution lab's numbers made ready to show, without Streamlit: styled grids (pandas
Stylers a page hands to `st.table` / `st.dataframe`), tables, the sentences and formulas written
with the numbers, and the figures.

The last step of the lab's data flow: `lab_inputs` (typed numbers → arrays) → `lab` (the
arithmetic) → here. A `Panel` is one titled grid; the page lays panels out in columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from pandas.io.formats.style import Styler
from torch import nn

from dashboard import figures
from dashboard.analysis import filters, lab, probe
from dashboard.analysis.lab import fmt

# Cell styles of the grids.
WINDOW = "background-color: #fcd34d; font-weight: 700"  # cells the kernel reads
SKIPPED = "background-color: #fef3c7"  # inside the window's span, skipped by dilation
PADDING = "color: #9ca3af; background-color: #f3f4f6"  # padding
CURRENT = "background-color: #93c5fd; font-weight: 700"  # the output cell being computed
WINNER = "background-color: #f87171; color: white; font-weight: 700"  # the max-pool winner

MAX_LISTED_FILTERS = 16  # learned filters whose numbers are listed

WORKED_CAPTION = (
    "Yellow: the cells the kernel reads (pale: inside its span but skipped by dilation); "
    "grey: zero padding; blue: the output being computed. Row and column labels are "
    "padded coordinates."
)
POOL_CAPTION = (
    "Yellow: the window; red: the maximum it keeps (the first one in reading order on "
    "a tie, as PyTorch); blue: the output being computed; grey: padding."
)
CLASSIC_INTRO = (
    "**Prewitt and Sobel** kernels slid over the gray image (0–1, zero padding 1, so "
    "each map has the image's size); the magnitude is √(x² + y²) of the horizontal and "
    "vertical responses."
)
POOL_KINDS = {"max": "max", "avg": "average"}  # radio option → label
IM2COL_SOURCES = {
    "worked": "the Worked-convolution input and kernel",
    "channels": "the Channels input and kernels",
}
CONV_SIZE = "**Output size** ⌊(n + 2·p − d·(k − 1) − 1) / s⌋ + 1, with your numbers:"
POOL_SIZE = "**Output size** ⌊(n + 2·p − k) / s⌋ + 1, with your numbers:"


# ---------------------------------------------------------------------------------------------
# Grids


def cell_text(value: Any) -> str:
    """A grid cell: four significant digits and a plain minus, so a copied table pastes back."""
    return fmt(value, 4).replace(lab.MINUS, "-")


def blank_styles(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, "", dtype=object)


def marked(shape: tuple[int, ...], y: int, x: int, css: str = CURRENT) -> np.ndarray:
    """Styles with one cell, (y, x), marked: the output being computed."""
    styles = blank_styles(shape)
    styles[y, x] = css
    return styles


def window_styles(
    shape: tuple[int, int],
    rows: Sequence[int],
    cols: Sequence[int],
    pad: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """Padding grey, the window's span pale, the cells it reads strong."""
    css = blank_styles(shape)
    for r in range(shape[0]):
        for c in range(shape[1]):
            if not (pad[0] <= r < pad[0] + size[0] and pad[1] <= c < pad[1] + size[1]):
                css[r, c] = PADDING
    css[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = SKIPPED
    css[np.ix_(rows, cols)] = WINDOW
    return css


def grid(
    values: Any,
    styles: np.ndarray | None = None,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
) -> Styler:
    """A matrix as a styled table: numbers a reader can copy, cells coloured by `styles`."""
    a = np.asarray(values)
    frame = pd.DataFrame(
        a,
        index=[str(r) for r in (rows if rows is not None else range(a.shape[0]))],
        columns=[str(c) for c in (cols if cols is not None else range(a.shape[1]))],
    )
    css = blank_styles(a.shape) if styles is None else styles
    return frame.style.apply(
        lambda d: pd.DataFrame(css, index=d.index, columns=d.columns), axis=None
    ).format(cell_text)


@dataclass(frozen=True)
class Panel:
    """One grid with the markdown title above it ("" for none)."""

    title: str
    grid: Styler


def position_label(index: int, width: int) -> str:
    """Output position `index` (reading order) of a map `width` wide, as "(row, column)"."""
    return f"({index // width}, {index % width})"


def channel_name(index: int, channels: int) -> str:
    return "RGB"[index] if channels == 3 else str(index)


def _labels(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(count)]


# ---------------------------------------------------------------------------------------------
# Worked convolution


def worked_description(worked: lab.WorkedConv) -> str:
    h, w = worked.input.shape
    kh, kw = worked.kernel.shape
    return (
        f"A **{h}×{w}** input, a **{kh}×{kw}** kernel, padding {worked.padding[0]}, "
        f"stride {worked.stride[0]}, dilation {worked.dilation[0]}"
        + (f", bias {fmt(worked.bias)}" if worked.bias else "")
        + ". Cross-correlation, as PyTorch's `Conv2d` computes it: the kernel is laid on "
        "the input as written, **not flipped**."
    )


def worked_panels(worked: lab.WorkedConv, step: lab.Step) -> tuple[Panel, Panel, Panel]:
    """The padded input with the step's window, the kernel, the output with its cell."""
    padded, output = worked.padded.shape, worked.output.shape
    css = window_styles(padded, step.rows, step.cols, worked.padding, worked.input.shape)
    name = "Padded input" if any(worked.padding) else "Input"
    return (
        Panel(f"**{name}** {padded[0]}×{padded[1]}", grid(worked.padded, css)),
        Panel("**Kernel**", grid(worked.kernel)),
        Panel(
            f"**Output** {output[0]}×{output[1]}",
            grid(worked.output, marked(output, step.y, step.x)),
        ),
    )


def step_description(worked: lab.WorkedConv, step: lab.Step) -> str:
    return (
        f"**Output ({step.y}, {step.x})** — the window starts at padded row {step.top}, column "
        f"{step.left} (= {step.y}·{worked.stride[0]}, {step.x}·{worked.stride[1]}); "
        "each input value times the kernel weight on top of it"
        + (", plus the bias" if worked.bias else "")
        + ":"
    )


# ---------------------------------------------------------------------------------------------
# Channels, 1×1 convolution, the bottleneck


def channels_description(kernels: np.ndarray) -> str:
    c_out, c_in, kh, kw = kernels.shape
    return (
        f"**{c_in} input channels × {c_out} kernels of {c_in}×{kh}×{kw}.** Each output channel "
        "slides its own kernel over *every* input channel — kernel slice c on input channel c "
        "— and adds the partial results, then its bias. Weights: C_out·C_in·k·k = "
        f"{c_out}·{c_in}·{kh * kw} = {kernels.size}, plus {c_out} biases."
    )


def channel_panels(conv: lab.MultiChannelConv, out: int, y: int, x: int) -> list[Panel]:
    """Each input channel's partial result for output channel `out`, then their sum + bias."""
    css = marked(conv.partials.shape[2:], y, x)
    panels = [
        Panel(f"**Channel {c} ∗ kernel {out}[{c}]**", grid(conv.partials[out, c], css))
        for c in range(conv.partials.shape[1])
    ]
    summed = grid(conv.output[out], marked(conv.output.shape[1:], y, x))
    return [*panels, Panel(f"**Sum + bias = output {out}**", summed)]


def pointwise_description(mixing: lab.PointwiseMixing) -> str:
    return (
        "A 1×1 kernel sees one pixel: across its channels. Every output pixel is the weight "
        "matrix times the input's channel vector at that pixel — **out = W · v** — so a 1×1 "
        f"conv changes the number of channels ({len(mixing.pixel)} → {len(mixing.mixed)}) "
        "without looking at neighbours."
    )


def pointwise_panels(mixing: lab.PointwiseMixing) -> tuple[Panel, Panel, Panel]:
    """v (the input's channel vector at the pixel), W, and W · v."""
    inputs, outputs = _labels("c", len(mixing.pixel)), _labels("out ", len(mixing.mixed))
    return (
        Panel(
            f"**v** = input at ({mixing.y}, {mixing.x})",
            grid(mixing.pixel[:, None], rows=inputs, cols=["v"]),
        ),
        Panel("**W**", grid(mixing.weights, rows=outputs, cols=inputs)),
        Panel("**W · v**", grid(mixing.mixed[:, None], rows=outputs, cols=["out"])),
    )


def bottleneck_frame(b: lab.Bottleneck) -> pd.DataFrame:
    """One row per conv of both designs, each count written as its formula."""
    size = f"{b.plain[0].height}×{b.plain[0].width}"
    return pd.DataFrame(
        [
            {
                "Design": design,
                "Layer": cost.label,
                "Weights = C_in·C_out·k²": cost.weight_formula,
                "With biases": cost.bias_formula,
                f"Multiply-adds at {size}": cost.mult_add_formula,
            }
            for design, costs in (("one 3×3 conv", b.plain), ("bottleneck", b.bottleneck))
            for cost in costs
        ]
    )


def bottleneck_summary(b: lab.Bottleneck) -> str:
    return "\n".join(
        [
            f"one 3×3 conv:  {b.total_formula('plain')} weights",
            f"bottleneck:    {b.total_formula('bottleneck')} weights",
            f"with biases:   {b.total_formula('plain', 'with biases')} vs "
            f"{b.total_formula('bottleneck', 'with biases')}",
            f"multiply-adds: {b.total_formula('plain', 'mult_adds')} vs "
            f"{b.total_formula('bottleneck', 'mult_adds')}",
            f"the bottleneck needs {b.ratio():.2f}× fewer weights "
            f"({b.total('plain'):,} / {b.total('bottleneck'):,})",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Pooling


def _pool_name(kind: str) -> str:
    return "Max" if kind == "max" else "Average"


def pool_description(worked: lab.WorkedPool) -> str:
    """The pooling's settings and what its padding counts as."""
    if worked.kind == "max":
        edge = "Padding counts as −∞: it never wins."
    elif worked.count_include_pad:
        edge = "Padding counts as 0, and in the divisor (k·k)."
    else:
        edge = "Padding counts as 0; the divisor counts only real cells."
    return (
        f"**{_pool_name(worked.kind)} pooling**, {worked.window[0]}×{worked.window[0]} window, "
        f"stride {worked.stride[0]}, padding {worked.padding[0]}: each channel on its own, no "
        f"weights. {edge}"
    )


def pool_styles(worked: lab.WorkedPool, step: lab.PoolStep) -> np.ndarray:
    """The padded input's styles: padding, the step's window, and the max pool's winner."""
    css = window_styles(
        worked.padded.shape, step.rows, step.cols, worked.padding, worked.input.shape
    )
    if step.chosen is not None:
        css[step.chosen] = WINNER
    return css


def pool_panels(pools: Mapping[str, lab.WorkedPool], kind: str, step: lab.PoolStep) -> list[Panel]:
    """The (padded) input with the step's window and winner, then both poolings' outputs with
    the step's cell marked in the one shown."""
    worked = pools[kind]
    title = "**Input**" + (" (padded)" if any(worked.padding) else "")
    panels = [Panel(title, grid(worked.padded, pool_styles(worked, step)))]
    for k in ("max", "avg"):
        shape = pools[k].output.shape
        styles = marked(shape, step.y, step.x) if k == kind else blank_styles(shape)
        panels.append(Panel(f"**{_pool_name(k)} pooling**", grid(pools[k].output, styles)))
    return panels


# ---------------------------------------------------------------------------------------------
# im2col


def im2col_description(unrolled: lab.Im2Col, kernels: np.ndarray) -> str:
    c_out, c_in, kh, kw = kernels.shape
    rows = unrolled.columns.shape[0]
    out_h, out_w = unrolled.output.shape[1:]
    length = out_h * out_w
    return (
        f"**im2col** copies every window the kernel visits into one column: {c_in}·{kh}·{kw} = "
        f"**{rows} rows** (channel, kernel row, kernel column) × "
        f"{out_h}·{out_w} = **{length} columns** (output positions). The kernels, flattened "
        f"the same way, are the rows of a {c_out}×{rows} matrix. One "
        f"matrix product gives all {c_out}×{length} outputs; a reshape puts them back as "
        f"{c_out}×{out_h}×{out_w} maps."
    )


@dataclass(frozen=True)
class Im2ColPanels:
    columns: Panel  # the unrolled input, the position's column marked
    kernel_matrix: Panel
    product: Panel  # kernel matrix @ columns + bias, the position's column marked
    reshaped: str  # "**Reshaped** to C_out×H_out×W_out"
    maps: list[Panel]  # the product reshaped to C_out maps, untitled
    column_sum: str  # "Column (y, x) times kernel 0's row …:"
    column_text: str  # that dot product, written out


def im2col_panels(unrolled: lab.Im2Col, y: int, x: int) -> Im2ColPanels:
    c_out, length = unrolled.product.shape
    out_h, out_w = unrolled.output.shape[1:]
    column = y * out_w + x
    rows, positions = list(unrolled.row_labels), list(unrolled.column_labels)
    inputs = blank_styles(unrolled.columns.shape)
    inputs[:, column] = WINDOW
    products = blank_styles(unrolled.product.shape)
    products[:, column] = CURRENT
    bias = unrolled.bias[0].item()
    return Im2ColPanels(
        columns=Panel(
            f"**Unrolled input** ({len(rows)}×{length})",
            grid(unrolled.columns, inputs, rows=rows, cols=positions),
        ),
        kernel_matrix=Panel(
            f"**Kernel matrix** ({c_out}×{len(rows)})",
            grid(unrolled.kernel_matrix, rows=_labels("kernel ", c_out), cols=rows),
        ),
        product=Panel(
            f"**Product + bias** ({c_out}×{length})",
            grid(unrolled.product, products, rows=_labels("out ", c_out), cols=positions),
        ),
        reshaped=f"**Reshaped** to {c_out}×{out_h}×{out_w}",
        maps=[Panel("", grid(m, marked((out_h, out_w), y, x))) for m in unrolled.output],
        column_sum=f"Column ({y}, {x}) times kernel 0's row"
        + (" plus its bias" if bias else "")
        + ":",
        column_text=lab.multiply_add(unrolled.column(y, x), unrolled.kernel_matrix[0], bias),
    )


def conv2d_agreement(output: np.ndarray, reference: np.ndarray) -> tuple[bool, str]:
    """(equal, what to say) of the im2col output against `F.conv2d` on the same numbers."""
    difference = float(np.abs(output - reference).max())
    if difference < 1e-9:
        return True, (
            f"Equal to PyTorch's `F.conv2d` on the same numbers ✓ (largest difference "
            f"{difference:g})"
        )
    return False, f"differs from F.conv2d by up to {difference:g}"


# ---------------------------------------------------------------------------------------------
# Any neuron


def layer_option(key: str, record: probe.LayerRecord) -> str:
    return f"{key} · {record.type} · " + "×".join(map(str, record.output_shape))


def receptive_caption(box: tuple[int, int, int, int]) -> str:
    top, left, bottom, right = box
    return (
        f"input rows {top}–{bottom}, columns {left}–{right} "
        f"({bottom - top + 1}×{right - left + 1} pixels)"
    )


def neuron_heading(a: lab.NeuronArithmetic, first: bool) -> str:
    """Which neuron, and what its input is (`first`: the layer reads the image itself)."""
    where = "the normalized image" if first else "what the layers before it computed"
    position = (
        f"channel {a.channel} at ({a.y}, {a.x})" if a.kind != "linear" else f"unit {a.channel}"
    )
    return (
        f"**{a.layer}** ({a.type}), {position}. Its input is {where}, captured by a hook: "
        f"{'×'.join(map(str, a.input_shape))}."
    )


def neuron_numbers(a: lab.NeuronArithmetic) -> str:
    verdict = "✓" if a.matches() else "✗"
    return (
        f"computed by hand    {a.computed:.8g}\n"
        f"model's activation  {a.model_value:.8g}\n"
        f"|difference|        {a.difference:.2g}   {verdict}"
    )


def neuron_verdict(a: lab.NeuronArithmetic) -> str:
    if a.matches():
        return (
            f"= model's activation ✓ — the sum by hand, {fmt(a.computed, 8)}, is the "
            f"value the model computed, {fmt(a.model_value, 8)}."
        )
    return (
        f"≠ model's activation: {fmt(a.computed, 8)} by hand, {fmt(a.model_value, 8)} in the model"
    )


def neuron_styles(a: lab.NeuronArithmetic, shape: tuple[int, int]) -> np.ndarray:
    """Grey where the window hangs over the edge of the layer's input."""
    css = blank_styles(shape)
    css[a.padding.reshape(-1, *shape)[0]] = PADDING
    return css


def conv_neuron_panels(a: lab.NeuronArithmetic, shown: int) -> tuple[Panel, Panel, Panel]:
    """Input channel `shown`'s window, the filter's slice for it, and their products."""
    i = a.input_channels.index(shown)
    css = neuron_styles(a, a.window.shape[1:])
    rows, cols = [str(r) for r in a.rows], [str(c) for c in a.cols]
    return (
        Panel(
            f"**Input window**, channel {shown} (rows, columns of the layer's input)",
            grid(a.window[i], css, rows, cols),
        ),
        Panel(f"**Weights** of filter {a.channel}, slice {i}", grid(a.weights[i])),
        Panel("**Products** input · weight", grid(a.products[i], css, rows, cols)),
    )


def conv_neuron_sums(a: lab.NeuronArithmetic, shown: int) -> list[tuple[str, str]]:
    """(title, sum) pairs: channel `shown`'s products summed, then the channels' sums plus the
    bias."""
    i = a.input_channels.index(shown)
    count = len(a.input_channels)
    partial = a.products.reshape(count, -1).sum(axis=1)
    total = (
        f"The sums of all {count} input channels, then the bias"
        if count > 1
        else "Its sum, then the bias"
    )
    return [
        (
            f"Channel {shown}: the products, summed",
            lab.multiply_add(a.window[i], a.weights[i], digits=4),
        ),
        (total, lab.written_sum(partial, a.bias, digits=4)),
    ]


def conv_products_frame(a: lab.NeuronArithmetic) -> pd.DataFrame:
    """Every product of a conv neuron, with the input channel, row and column it reads."""
    c, r, col = np.indices(a.window.shape).reshape(3, -1)
    return pd.DataFrame(
        {
            "input channel": np.asarray(a.input_channels)[c],
            "row": np.asarray(a.rows)[r],
            "column": np.asarray(a.cols)[col],
            "input": a.window.ravel(),
            "weight": a.weights.ravel(),
            "product": a.products.ravel(),
        }
    )


def linear_description(a: lab.NeuronArithmetic) -> str:
    return (
        f"A fully connected unit: the dot product of all **{a.window.size:,}** inputs with its "
        "weight row, plus the bias. Largest contributions first:"
    )


def linear_products_frame(a: lab.NeuronArithmetic) -> pd.DataFrame:
    """The unit's inputs, weights and products, largest |product| first."""
    order = np.argsort(-np.abs(a.products))
    return pd.DataFrame(
        {
            "input feature": order,
            "input": a.window[order],
            "weight": a.weights[order],
            "product": a.products[order],
        }
    )


def linear_text(a: lab.NeuronArithmetic) -> str:
    first = lab.multiply_add(a.window[:4], a.weights[:4], digits=4)
    return f"{a.sum_text}\n(the first terms: {first} …)"


def pool_neuron_panel(a: lab.NeuronArithmetic) -> Panel:
    css = neuron_styles(a, a.window.shape)
    if a.chosen is not None:
        css[a.chosen] = WINNER
    rows, cols = [str(r) for r in a.rows], [str(c) for c in a.cols]
    return Panel(f"**Window** of input channel {a.channel}", grid(a.window, css, rows, cols))


def pool_neuron_text(a: lab.NeuronArithmetic) -> tuple[str, str]:
    """(what passes on, the rule with the window's numbers)."""
    shown = [fmt(v, 4) for v in a.window.ravel().tolist()]
    if a.kind == "max pool":
        rule, what = f"max({', '.join(shown)})", "largest value (red) passes on"
    else:
        rule, what = f"({' + '.join(shown)}) / {a.count}", "mean passes on"
    return (
        f"Pooling has no weights: the window's {what}.",
        f"{rule} = {fmt(a.computed, 6)}",
    )


# ---------------------------------------------------------------------------------------------
# Classic kernels and the model's first layer


def kernel_panels(kernels: Mapping[str, np.ndarray]) -> list[Panel]:
    return [Panel(f"**{name}**", grid(kernel)) for name, kernel in kernels.items()]


def classic_kernel_panels() -> list[Panel]:
    """The Prewitt and Sobel kernels' numbers, as whole numbers."""
    kernels = filters.classic_kernels()
    return kernel_panels({name: k.astype(np.int64) for name, k in kernels.items()})


def learned_kernel_panels(weights: np.ndarray) -> tuple[str, list[Panel]]:
    """(title, panels) of the first MAX_LISTED_FILTERS learned filters' numbers; filters of
    several input channels are shown as their mean over the channels."""
    shown = min(len(weights), MAX_LISTED_FILTERS)
    averaged = weights.shape[1] > 1
    title = f"The learned filters' numbers ({'first ' if shown < len(weights) else ''}{shown})"
    title += ", mean over the input channels" if averaged else ""
    kernels = weights[:shown].mean(axis=1)
    return title, kernel_panels({f"filter {k}": kernel for k, kernel in enumerate(kernels)})


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W) or (H, W, 3) for figures."""
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def image(pixels: np.ndarray, title: str) -> go.Figure:
    return figures.image_figure(display_pixels(pixels), title=title)


def boxed_image(
    pixels: np.ndarray, box: tuple[int, int, int, int], title: str, caption: str = ""
) -> go.Figure:
    """The (C, H, W) image with an orange frame around `box` (top, left, bottom, right)."""
    return figures.boxed_image(display_pixels(pixels), box, title=title, caption=caption)


def classic_figure(gray: np.ndarray) -> go.Figure:
    """The classic kernels' responses to the gray (H, W) image, with the magnitudes."""
    responses = lab.classic_responses(gray, filters.classic_kernels())
    return figures.labelled_grid(
        np.stack(list(responses.values())),
        list(responses),
        title="Classic edge detectors on this image",
        subtitle="each map on its own scale, red > 0 > blue",
        max_side=620,
    )


def matches_frame(weights: np.ndarray) -> pd.DataFrame:
    """Each learned filter's closest classic kernel and its cosine."""
    matches = filters.classic_matches(weights)
    return pd.DataFrame(
        {
            "filter": [m.filter for m in matches],
            "most like": [m.kernel for m in matches],
            "cosine": [round(m.cosine, 3) for m in matches],
        }
    )


def learned_figures(
    model: nn.Module, x: torch.Tensor
) -> tuple[go.Figure, go.Figure, pd.DataFrame, np.ndarray]:
    """(the first layer's filters, their responses to the image, closest classic kernels, the
    filters' weights (C_out, C_in, kh, kw))."""
    learned = lab.first_layer_responses(model, x)
    title = f"{learned.name} filters"
    count, channels, kh, kw = learned.weights.shape
    if channels == 1:  # drawn like the classic kernels
        weights = figures.labelled_grid(
            learned.weights[:, 0],
            [f"filter {k}" for k in range(count)],
            scale="shared",
            title=title,
            subtitle=f"{count} filters of {kh}×{kw} · one scale · red > 0 > blue",
            value_name="weight",
            max_side=420,
        )
    elif channels == 3:
        weights = figures.rgb_filters(learned.weights, title=title, max_side=420)
    else:
        weights = figures.filter_grid(learned.weights, title=title, max_side=420)
    responses = figures.labelled_grid(
        learned.responses,
        [f"filter {k}" for k in range(len(learned.responses))],
        title=f"Their responses ({learned.name} output)",
        subtitle="bias included · each map on its own scale",
        max_side=560,
    )
    return weights, responses, matches_frame(learned.weights), learned.weights
