"""The Activations page's cached work and its pieces: the forward pass of one input, which
channels never fire over the test images, Grad-CAM; an input's images and prediction, the
layer controls, a layer's maps as a figure, the per-channel table, one neuron's receptive
window, Grad-CAM's section and every layer's maps.

Caches are keyed by strings (model key, modification time, a hash of the input's pixels); the
model, the input tensor and the split ride along unhashed. Figures of one input are keyed by
`model_id`: the model, its modification time, the normalization the model's input was made
with and the class names."""

from dataclasses import dataclass
from functools import partial

import numpy as np
import streamlit as st
import torch

from dashboard import data, figures, ui
from dashboard.analysis import activation_maps, attribution, gradcam, inputs, probe
from dashboard.base.errors import LensError

AFTER_KEY, SCALE_KEY, SORT_KEY = "act_after", "act_scale", "act_sort"
ALL_KEY, TWO_KEY, CAM_LAYER_KEY, CAM_CLASS_KEY = "act_all", "act_two", "act_cam_layer", "act_cam"
ALL_PIXELS = 400_000  # shared by every layer of "show all layers": one light chart
ALL_SIDE = 300  # pixels: each layer's block, two a row


# --------------------------------------------------------------------------- cached work


@st.cache_data(max_entries=32, show_spinner="Running the image through the model…")
def forward(model_key: str, mtime: float, input_key: str, _model, _x: torch.Tensor) -> dict:
    """One forward pass: logits, softmax, every leaf layer's maps, and their global range."""
    return activation_maps.forward_summary(_model, _x)


@st.cache_data(max_entries=16, show_spinner="Measuring which channels fire over test images…")
def dead_stats(
    model_key: str, mtime: float, split_id: str, layers: tuple[str, ...], count: int, _model, _split
) -> dict[str, list[probe.ChannelStats]]:
    """Every activation layer's channel statistics over the first test images, in one pass."""
    return inputs.batch_channel_stats(_model, _split, layers, count)


@st.cache_data(max_entries=64, show_spinner="Computing Grad-CAM…")
def grad_cam(
    model_key: str, mtime: float, input_key: str, layer: str, target: int, _model, _x
) -> gradcam.GradCam:
    return attribution.grad_cam(_model, _x, layer, target)


# --------------------------------------------------------------------------- an input


def input_images(item: inputs.Prepared, how: str, seen_shape: tuple[int, ...]) -> None:
    """An input as the model sees it (and an upload's original beside it)."""
    seen = activation_maps.display_pixels(item.pixels)
    if how == inputs.SOURCE_TEST:
        title, subtitle = item.name[0].upper() + item.name[1:], ""
    else:
        title, subtitle = "What the model sees", "×".join(map(str, seen_shape))
    pictures = [(title, subtitle, seen, ("seen", item.key, title, subtitle))]
    if how == inputs.SOURCE_UPLOAD:  # a drawing's original is the canvas beside it
        height, width = item.original.shape[:2]
        key = ("original", inputs.input_key(item.original), item.name)
        pictures.insert(0, ("Original", f"{item.name} · {width}×{height}", item.original, key))
    for title, subtitle, image, key in pictures:
        build = partial(figures.image_figure, image, title=title, subtitle=subtitle)
        name = f"image-{key[0]}-{item.name}"
        ui.figure(ui.cached_figure(("image", key), build), name, width="content")


def verdict(probabilities: np.ndarray, label: int | None, classes: list[str]) -> str:
    best = int(np.argmax(probabilities))
    text = f"predicted **{ui.plain(classes[best])}** ({probabilities[best]:.1%})"
    if label is not None:
        text += f" · true **{ui.plain(classes[label])}** " + ("✓" if best == label else "✗")
    return text


def prediction(
    item: inputs.Prepared,
    probabilities: np.ndarray,
    classes: list[str],
    model_id: tuple,
    title: str = "",
) -> None:
    """An input's probability bars and verdict line."""
    build = partial(
        figures.probability_bars,
        probabilities,
        classes,
        true_class=item.label,
        top=10,
        title=title or "Prediction",
    )
    key = ("bars", (*model_id, item.key, item.label, title or "Prediction"))
    ui.figure(ui.cached_figure(key, build), f"prediction-{item.name}", width="content")
    st.markdown(verdict(probabilities, item.label, classes))


# --------------------------------------------------------------------------- the layer's maps


@dataclass(frozen=True)
class MapsChoice:
    """Which maps of which layer are shown, and how."""

    layer: str
    record: probe.LayerRecord
    partner: inputs.Partner | None  # the activation that follows the layer, if any
    after: bool  # the maps after that activation
    scale: str  # one of figures.SCALE_MODES
    sort: bool  # channels by decreasing mean
    show_all: bool  # every layer's maps below

    @property
    def what(self) -> str:
        return f"{self.layer} after {self.partner.type}" if self.after else self.layer


def layer_controls(flow: probe.ShapeFlow, layers: list, has_test_images: bool) -> MapsChoice:
    """The layer, before/after, colour scale and the toggles, kept across pages and links."""
    keys = [inputs.layer_key(r) for r in layers]
    records = dict(zip(keys, layers, strict=True))
    if st.session_state.get(inputs.LAYER_KEY) not in records:
        st.session_state[inputs.LAYER_KEY] = inputs.default_layer(flow)
    ui.url_bound("layer", inputs.LAYER_KEY, ui.one_of(keys))
    ui.url_bound("maps", AFTER_KEY, ui.one_of(("before", "after")))
    ui.url_bound("scale", SCALE_KEY, ui.one_of(figures.SCALE_MODES))
    panel = ui.controls()  # folded away when presenting
    controls = panel.columns([2.4, 1.5, 2.1], gap="medium", vertical_alignment="top")
    layer = controls[0].selectbox(
        "Layer",
        keys,
        key=ui.keep(inputs.LAYER_KEY, keys[0]),
        on_change=ui.store,
        args=(inputs.LAYER_KEY,),
        format_func=lambda k: activation_maps.layer_label(records[k]),
        help="Every layer of the forward pass, in order; the first conv layer is the default.",
    )
    record = records[layer]
    partner = inputs.activation_partner(flow, layer)
    with controls[1]:
        after = before_or_after(record, partner)
    scale = controls[2].radio(
        "Colour scale",
        figures.SCALE_MODES,
        key=ui.keep(SCALE_KEY, "per layer"),
        on_change=ui.store,
        args=(SCALE_KEY,),
        horizontal=True,
        help="per map: each channel its own range · per layer: one range for the layer · "
        "global: one range for every feature map of this input",
    )
    # Toggles side by side, each as wide as its label: a row that does not fit wraps.
    options = panel.container(horizontal=True, gap="large")

    def option(label: str, permanent: str, explained: str, **kwargs) -> bool:
        return options.toggle(
            label,
            key=ui.keep(permanent, False),
            on_change=ui.store,
            args=(permanent,),
            help=explained,
            width="content",
            **kwargs,
        )

    sort = option("Sort channels by mean", SORT_KEY, "Highest mean activation first")
    show_all = option(
        "Show all layers",
        ALL_KEY,
        "Every conv, pooling and activation layer's maps for this input, one block each",
    )
    option(
        "Compare with a second input",
        TWO_KEY,
        "A second test image beside this input: both images, predictions and maps"
        if has_test_images
        else "Needs test images that fit the model",
        disabled=not has_test_images,
    )
    return MapsChoice(layer, record, partner, after, scale, sort, show_all)


def before_or_after(record: probe.LayerRecord, partner: inputs.Partner | None) -> bool:
    """The maps before or after the activation that follows the layer; False when none does."""
    if partner is None:
        why = (
            "already an activation's output"
            if inputs.is_activation(record)
            else "no activation follows before the next conv/linear layer"
        )
        st.caption(f"Maps: {why}")
        return False
    return (
        st.radio(
            "Maps",
            ("before", "after"),
            key=ui.keep(AFTER_KEY, "before"),
            on_change=ui.store,
            args=(AFTER_KEY,),
            horizontal=True,
            format_func=lambda v: f"{v} {partner.type}",
            help=(
                f"After = the output of {partner.key}"
                + (f" (past {', '.join(partner.between)})" if partner.between else "")
                if partner.direct
                else f"After = {partner.type} applied to this layer's output (in the "
                f"model {partner.key} comes after {', '.join(partner.between)})"
            ),
        )
        == "after"
    )


@dataclass(frozen=True)
class DeadChannels:
    """The channels of the chosen layer that never fire over the first test images."""

    layer: str | None  # the activation layer judged (None: no test images or no activation)
    count: int  # test images judged over
    dead: np.ndarray | None  # one bool per channel
    split_id: str = ""

    @property
    def source(self) -> tuple:
        return (self.split_id, self.layer, self.count)


def dead_channels(
    selection: ui.Selection,
    mtime: float,
    flow: probe.ShapeFlow,
    layer: str,
    layers: list,
    split: data.Split | None,
    split_id: str,
    model,
) -> DeadChannels:
    """Every layer's answer is measured at once: a layer change then costs nothing."""
    dead_from = inputs.dead_layer(flow, layer) if split is not None else None
    if dead_from is None:
        return DeadChannels(None, 0, None, split_id)
    count = activation_maps.dead_image_count(len(split), flow.mult_adds)
    keys = [inputs.layer_key(r) for r in layers]
    judged = tuple(dict.fromkeys(d for k in keys if (d := inputs.dead_layer(flow, k))))
    stats = dead_stats(selection.model_key, mtime, split_id, judged, count, model, split)
    return DeadChannels(dead_from, count, np.array([s.dead for s in stats[dead_from]]), split_id)


@dataclass(frozen=True)
class MapsView:
    """Everything a layer's maps figure depends on beside the input."""

    choice: MapsChoice
    dead: DeadChannels
    model: object
    model_id: tuple

    def maps_of(self, result: dict) -> np.ndarray:
        """This input's maps of the chosen layer, before or after its activation."""
        c = self.choice
        return activation_maps.layer_maps(result, c.layer, c.partner, c.after, self.model)

    def order_of(self, maps: np.ndarray) -> np.ndarray | None:
        """Channels by decreasing mean activation when sorting, else None (their own order)."""
        return activation_maps.channel_order(maps) if self.choice.sort else None

    def compared_range(self, results: list[dict]) -> tuple[float, float] | None:
        """One colour range for several inputs' maps (None when each map has its own)."""
        scale = self.choice.scale
        layer_maps = [self.maps_of(res) for res in results] if scale == "per layer" else []
        return activation_maps.shared_range(layer_maps, [r["range"] for r in results], scale)

    def figure(
        self, result: dict, item: inputs.Prepared, shared: tuple[float, float] | None = None
    ):
        """(maps, figure) of this input's maps of the chosen layer; `shared` puts them on a
        range common to two inputs."""
        c = self.choice
        maps = self.maps_of(result)
        key = (*self.model_id, item.key, c.layer, c.after, c.scale, c.sort, self.dead.source)
        build = partial(
            figures.activation_grid,
            maps,
            scale="global" if shared is not None else c.scale,
            order=self.order_of(maps),
            dead=self.dead.dead,
            title=f"{c.what} — {item.name}",
            global_range=shared or result["range"],
        )
        return maps, ui.cached_figure(("maps", (*key, item.name, shared)), build)


# --------------------------------------------------------------------------- below the maps


def channel_statistics(maps: np.ndarray, order: np.ndarray | None, dead: DeadChannels, what: str):
    """This input's per-channel statistics of the shown maps, folded away."""
    table = activation_maps.stats_table(maps, order, dead.dead, dead.count)
    with st.expander(f"Per-channel statistics of {what} for this input", expanded=False):
        ui.table(
            table,
            column_config={
                "Mean": st.column_config.NumberColumn(format="%.4g"),
                "Max": st.column_config.NumberColumn(format="%.4g"),
                "Zero or below (%)": st.column_config.NumberColumn(format="%.1f"),
            },
        )


def one_neuron(
    maps: np.ndarray,
    choice: MapsChoice,
    flow: probe.ShapeFlow,
    shown_image: np.ndarray,
    input_key: str,
) -> None:
    """One neuron's value and the input pixels it sees; the neuron is kept under
    `inputs.NEURON_KEY` for the convolution lab."""
    layer, what = choice.layer, choice.what
    unit = "Channel" if maps.ndim == 3 else "Unit"
    cells = st.columns(3)
    for key, size in zip(
        ("act_neuron_c", "act_neuron_y", "act_neuron_x"), maps.shape, strict=False
    ):
        st.session_state[key] = min(int(st.session_state.get(key, 0)), size - 1)  # a new layer
    channel = cells[0].number_input(
        f"{unit}", 0, len(maps) - 1, step=1, **ui.held("act_neuron_c", 0)
    )
    y = x_pos = 0
    if maps.ndim == 3:
        y = cells[1].number_input(
            "Row y", 0, maps.shape[1] - 1, step=1, **ui.held("act_neuron_y", 0)
        )
        x_pos = cells[2].number_input(
            "Column x", 0, maps.shape[2] - 1, **ui.held("act_neuron_x", 0)
        )
    st.session_state[inputs.NEURON_KEY] = {
        "layer": layer,
        "channel": int(channel),
        "y": int(y),
        "x": int(x_pos),
    }
    value = float(maps[channel, y, x_pos]) if maps.ndim == 3 else float(maps[channel])
    text = f"**{what}**, {unit.lower()} {channel}" + (
        f" at (y {y}, x {x_pos})" if maps.ndim == 3 else ""
    )
    if not (maps.ndim == 3 and len(flow.input_shape) == 3):
        st.markdown(f"{text} = `{value:.6g}`")
        return
    name, _, call = layer.partition("#")
    top_, left, bottom, right = probe.receptive_window(
        flow, name, int(y), int(x_pos), call_index=int(call or 0)
    )
    st.markdown(
        f"{text} = `{value:.6g}` · it sees input rows {top_}–{bottom}, "
        f"columns {left}–{right} ({bottom - top_ + 1}×{right - left + 1} pixels)"
    )
    box = (top_, left, bottom, right)
    build = partial(
        figures.boxed_image,
        shown_image,
        box,
        title="Receptive window on the input",
        color=figures.WRONG,
    )
    ui.figure(
        ui.cached_figure(("window", (input_key, box)), build),
        "receptive-window",
        width="content",
    )


def grad_cam_section(
    selection: ui.Selection,
    mtime: float,
    flow: probe.ShapeFlow,
    model,
    x: torch.Tensor,
    item: inputs.Prepared,
    probabilities: np.ndarray,
    classes: list[str],
    model_id: tuple,
    shown_image: np.ndarray,
) -> None:
    """Where the model looked: Grad-CAM of a chosen layer and class over the input."""
    cam_layers = gradcam.spatial_layers(flow)
    cam_default = gradcam.default_layer(flow)
    if not cam_layers or cam_default is None:
        return
    predicted = int(np.argmax(probabilities))
    st.divider()
    st.subheader("Where the model looked (Grad-CAM)")
    cam_columns = st.columns([1, 1.6], gap="medium")
    with cam_columns[0]:
        if st.session_state.get(CAM_LAYER_KEY) not in cam_layers:
            st.session_state[CAM_LAYER_KEY] = cam_default
        cam_layer = st.selectbox(
            "Layer",
            cam_layers,
            key=ui.keep(CAM_LAYER_KEY, cam_default),
            on_change=ui.store,
            args=(CAM_LAYER_KEY,),
            format_func=lambda name: (
                name + (" (block output)" if gradcam.is_block(flow, name) else "")
            ),
            help="The default, the last conv block's output after its activation, balances "
            "detail and meaning. Before an activation (conv, batch norm) negative values count "
            "against the class, and the map is often empty.",
        )
        if st.session_state.get("_act_cam_for") != item.key:
            st.session_state["_act_cam_for"] = item.key  # a new input: explain its answer
            st.session_state[CAM_CLASS_KEY] = predicted
        target = st.selectbox(
            "Class to explain",
            range(len(classes)),
            key=ui.keep(CAM_CLASS_KEY, predicted),
            on_change=ui.store,
            args=(CAM_CLASS_KEY,),
            format_func=lambda k: (
                f"{classes[k]} ({probabilities[k]:.1%})"
                + (" — predicted" if k == predicted else "")
            ),
        )
        st.caption(
            "Grad-CAM: the layer's maps weighted by how much the class score grows with each "
            "map on average, summed, negative parts cut."
        )
    try:
        x_key = inputs.input_key(x.numpy())
        cam = grad_cam(selection.model_key, mtime, x_key, cam_layer, int(target), model, x)
    except LensError as err:
        cam_columns[1].error(str(err), icon=":material/warning:")
        return
    with cam_columns[1]:
        if cam.empty:
            st.info(
                f"Nothing in this image speaks for {ui.plain(classes[target])} at {cam_layer}: "
                "the weighted maps sum to zero or less everywhere. "
                + (
                    f"The default layer, {cam_default}, reads the maps after their activation."
                    if cam_layer != cam_default
                    else "Try an earlier layer."
                )
            )
        title = f"Grad-CAM for {classes[target]!r} at {cam_layer}"
        build = partial(figures.gradcam_overlay, shown_image, cam.heatmap, title=title)
        key = (*model_id, item.key, cam_layer, int(target))
        ui.figure(ui.cached_figure(("cam", key), build), "gradcam", width="content")


def every_layer(layers: list, result: dict, scale: str, item: inputs.Prepared, model_id: tuple):
    """Each conv, pooling and activation layer's maps for this input, one block each."""
    st.divider()
    st.subheader("Every layer")
    st.caption(
        "Each conv, pooling and activation layer's own output for this input, in forward order "
        f"(two a row) and channel order, each beside its own colour bar ({scale} scale); hover "
        "for the values."
    )
    stacked = activation_maps.every_layer_maps(layers, result)
    if not stacked:
        st.info("This model has no layer with spatial maps to show.")
        return
    build = partial(
        figures.activation_stack,
        stacked,
        scale=scale,
        global_range=result["range"],
        max_pixels=ALL_PIXELS,
        width=ALL_SIDE,
        columns=2,
        title=f"Every layer — {item.name}",
    )
    ui.figure(
        ui.cached_figure(("all", (*model_id, item.key, scale, item.name)), build),
        "every-layer",
        width="content",
    )
