"""Activations: what every layer of the selected model makes of one image — its feature maps
before and after the activation function, which channels never fire, the prediction, and
where the model looked (Grad-CAM).

Other pages open an image here by setting `st.session_state[inputs.IMAGE_INDEX_KEY]` (and
`inputs.SOURCE_KEY` to `inputs.SOURCE_TEST`) before switching to this page, or by a link with
`?image=INDEX`. The chosen layer and neuron are kept under `inputs.LAYER_KEY` and
`inputs.NEURON_KEY` for the convolution lab.
"""

from functools import partial

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Activations")
selection = ui.sidebar()

# Imported once the page shows: the first import of PyTorch takes seconds.
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dashboard import data, figures  # noqa: E402
from dashboard.analysis import gradcam, inputs, probe  # noqa: E402
from dashboard.base import images  # noqa: E402

MODE_KEY, COMPARE_KEY = "lens_image_mode", "lens_compare_index"
BY_INDEX, BY_CLASS, MISTAKES = "by index", "by class", "misclassified"
AFTER_KEY, SCALE_KEY, SORT_KEY = "act_after", "act_scale", "act_sort"
ALL_KEY, TWO_KEY, CAM_LAYER_KEY, CAM_CLASS_KEY = "act_all", "act_two", "act_cam_layer", "act_cam"
BATCH_IMAGES = 256  # dead channels are judged over this many test images …
BATCH_MULT_ADDS = 4e10  # … or fewer, so big models spend at most a few seconds on it
MAX_LISTED = 2000  # misclassified images listed at once (an untrained model gets ~9,000)
ALL_PIXELS = 400_000  # shared by every layer of "show all layers": one light chart
ALL_SIDE = 300  # pixels: each layer's block, two a row
SHOWN_IN_ALL = ("Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")
UPLOADER_KEY, UPLOAD_KEY, RESTORED_KEY = "_act_upload", "act_upload", "act_upload_restored"
# A canvas starts empty on every visit: its strokes are kept and drawn again on the next one.
CANVAS_KEY, DRAWING_KEY, DRAWN_BEFORE_KEY = "act_canvas", "act_drawing", "act_drawn_before"
DRAWN_PIXELS_KEY = "act_drawn_pixels"
UPLOAD_TYPES = [ext.removeprefix(".") for ext in images.IMAGE_EXTENSIONS]  # folders' list too


# --------------------------------------------------------------------------- cached work
# Keyed by strings (model key, modification time, a hash of the input's pixels); the model,
# the input tensor and the split ride along unhashed.


@st.cache_data(max_entries=32, show_spinner="Running the image through the model…")
def forward(model_key: str, mtime: float, input_key: str, _model, _x: torch.Tensor) -> dict:
    """One forward pass: logits, softmax, every leaf layer's maps, and their global range."""
    logits, acts = probe.forward_with_activations(_model, _x)
    maps = {key: tensor[0].float().numpy() for key, tensor in acts.items()}
    spatial = [m for m in maps.values() if m.ndim == 3] or list(maps.values())
    low = min(float(m.min()) for m in spatial)
    high = max(float(m.max()) for m in spatial)
    return {
        "logits": logits[0].float().numpy(),
        "probabilities": torch.softmax(logits[0].float(), dim=0).numpy(),
        "maps": maps,
        "range": (low, high),
    }


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
    return gradcam.grad_cam(_model, _x, layer, target)


@st.cache_data(max_entries=16, show_spinner="Reading the image…")
def uploaded(file_id: str, info_key: tuple, digits: bool, _raw: bytes, _info, name: str):
    return inputs.prepare_upload(_raw, _info, digits=digits, name=name)


# --------------------------------------------------------------------------- small helpers


def drawn_pixels(canvas) -> np.ndarray | None:
    """The canvas's pixels. Strokes drawn again from an earlier visit send none until touched:
    their pixels from that visit stand in while they are unchanged."""
    start, now = st.session_state.get(DRAWN_BEFORE_KEY), canvas.json_data
    unchanged = bool(start) and bool(now) and now.get("objects") == start.get("objects")
    if unchanged and inputs.canvas_digit(canvas.image_data) is None:
        return st.session_state.get(DRAWN_PIXELS_KEY)
    if canvas.image_data is not None:
        st.session_state[DRAWN_PIXELS_KEY] = canvas.image_data
    return canvas.image_data


def kept_upload() -> tuple[str, str, bytes] | None:
    """The uploaded image as (file id, name, bytes). Streamlit empties a file uploader when its
    page is left: the last upload is kept and shown again on return, until another replaces
    it or the user removes it from the uploader."""
    returning = UPLOADER_KEY not in st.session_state  # the uploader is new on this visit
    file = st.file_uploader(
        f"An image file ({images.FORMAT_NAMES}; up to "
        f"{images.MAX_IMAGE_BYTES // 2**20} MB and {images.MAX_PIXELS // 10**6} megapixels)",
        type=UPLOAD_TYPES,
        key=UPLOADER_KEY,
    )
    if file is not None:
        st.session_state[UPLOAD_KEY] = (file.file_id, file.name, file.getvalue())
        st.session_state[RESTORED_KEY] = False
    elif returning and UPLOAD_KEY in st.session_state:
        st.session_state[RESTORED_KEY] = True
    elif not st.session_state.get(RESTORED_KEY):  # removed from the uploader by the user
        st.session_state.pop(UPLOAD_KEY, None)
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is not None and file is None:
        st.caption(f"Showing {upload[1]}, uploaded before: upload another file to replace it.")
    return upload


def set_index(index: int) -> None:
    st.session_state[inputs.IMAGE_INDEX_KEY] = int(index)


def pixels_for_display(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W) or (H, W, 3) for figures."""
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def layer_label(record: probe.LayerRecord) -> str:
    return f"{inputs.layer_key(record)} · {record.type} · {'×'.join(map(str, record.output_shape))}"


def verdict(probabilities: np.ndarray, label: int | None) -> str:
    best = int(np.argmax(probabilities))
    text = f"predicted **{ui.plain(classes[best])}** ({probabilities[best]:.1%})"
    if label is not None:
        text += f" · true **{ui.plain(classes[label])}** " + ("✓" if best == label else "✗")
    return text


def bars(probabilities: np.ndarray, label: int | None, title: str):
    return figures.probability_bars(
        probabilities, classes, true_class=label, top=10, title=title or "Prediction"
    )


# --------------------------------------------------------------------------- model and data

try:
    model, view = ui.load_model(selection)
    mtime = ui.mtime_of(selection.model_key)
    flow = ui.shape_flow(selection.model_key, view.input_shape, mtime)
except LensError as err:
    st.title("Activations")
    ui.show_error(err)
    st.stop()

# The selected dataset's test images when they fit the model (channels and classes); any
# model also takes an uploaded or drawn image, resized to its own input.
outputs = flow.output_shape[-1] if flow.output_shape else len(view.classes)
split, unfit, like, unread = None, "", None, None
try:
    like = data.dataset_info(selection.dataset, data_root=ui.data_root())
    channels = view.input_shape[0]
    if like.channels != channels:
        unfit = f"{view.label} takes {channels}-channel images, {like.title} has {like.channels}"
    elif outputs != like.num_classes:
        unfit = f"{view.label} has {outputs:,} outputs, {like.title} {like.num_classes} classes"
    else:
        split = ui.load_data(selection, view)
except LensError as err:  # the data cannot be read: said below; uploads and drawings work
    unread = err
split_id = ui.data_id(split) if split is not None else ""
if split is not None:
    info = split.info
    classes = view.classes if len(view.classes) == info.num_classes else info.classes
else:
    zoo = selection.model_key.startswith(ui.ZOO_PREFIX)  # ImageNet weights: ImageNet's names
    classes = inputs.class_names(outputs, view.classes, imagenet=zoo)
    info = inputs.own_input(view.input_shape, classes, imagenet=zoo, like=like)
digits = info.name == "mnist"
st.title("Activations")
st.caption(
    f"**{ui.plain(view.label)}** on {ui.plain(info.title)} — what each layer makes of one "
    "image: its feature maps, the channels that never fire, the prediction and where the "
    "model looked."
)
if unread is not None:
    ui.show_error(unread)
if view.untrained:
    st.warning(
        "**Untrained — random weights.** These maps come from a model that has learned "
        "nothing yet: the patterns are the random filters' responses, and the prediction is "
        "a guess. Train the model or pick a checkpoint to see learned features.",
        icon=":material/casino:",
    )
if flow.broken is not None:
    st.error(
        f"{view.label} cannot take its own input: {flow.broken.reason}", icon=":material/warning:"
    )
    st.stop()
if unfit:
    st.info(
        f"The {selection.dataset} test images do not fit this model ({ui.plain(unfit)}). Upload "
        f"or draw an image: it is resized to the model's {info.title.removeprefix('its own ')}"
        f" and read with the model's own {len(classes):,} classes"
        + (" (ImageNet's)." if classes[0] != "class 0" and outputs == 1000 else "."),
        icon=":material/info:",
    )

# An image opened by a link (?image=123) on first arrival, or by another page's session state.
count = len(split) if split is not None else 0
if inputs.IMAGE_INDEX_KEY not in st.session_state:
    linked = inputs.parse_index(st.query_params.get(inputs.IMAGE_QUERY), count)
    st.session_state[inputs.IMAGE_INDEX_KEY] = linked if linked is not None else 0
    if linked is not None:
        st.session_state[inputs.SOURCE_KEY] = inputs.SOURCE_TEST
        st.session_state[MODE_KEY] = BY_INDEX
index = inputs.parse_index(st.session_state[inputs.IMAGE_INDEX_KEY], count) or 0
if split is not None:
    set_index(index)
    st.query_params[inputs.IMAGE_QUERY] = str(index)  # the link reopens this image

# --------------------------------------------------------------------------- the input

sources = (inputs.SOURCE_TEST,) if split is not None else ()
sources += (inputs.SOURCE_UPLOAD, inputs.SOURCE_DRAW)
if st.session_state.get(inputs.SOURCE_KEY) not in sources:
    st.session_state[inputs.SOURCE_KEY] = sources[0]
top = st.columns([1.05, 1, 1.25], gap="medium")
with top[0]:
    st.subheader("Input")
    source = st.radio(
        "Where the image comes from",
        sources,
        key=ui.keep(inputs.SOURCE_KEY, sources[0]),
        on_change=ui.store,
        args=(inputs.SOURCE_KEY,),
        horizontal=True,
        format_func=lambda s: {"draw": "draw a digit" if info.channels == 1 else "draw"}.get(s, s),
    )
    prepared: inputs.Prepared | None = None
    if source == inputs.SOURCE_TEST:
        mode = st.radio(
            "Pick a test image",
            (BY_INDEX, BY_CLASS, MISTAKES),
            key=ui.keep(MODE_KEY, BY_INDEX),
            on_change=ui.store,
            args=(MODE_KEY,),
            horizontal=True,
        )
        labels = split.labels.numpy()
        if mode == BY_INDEX:
            st.number_input(
                f"Test image (0 – {len(split) - 1:,})",
                0,
                len(split) - 1,
                key=ui.keep(inputs.IMAGE_INDEX_KEY, index),
                on_change=ui.store,
                args=(inputs.IMAGE_INDEX_KEY,),
                step=1,
            )
        elif mode == BY_CLASS:
            current = int(labels[index])
            members = inputs.class_indices(labels, current)
            st.session_state["_act_class"] = current
            st.selectbox(
                "Class",
                range(len(classes)),
                key="_act_class",
                format_func=lambda k: f"{k}: {classes[k]}" if classes[k] != str(k) else str(k),
                on_change=lambda: set_index(
                    inputs.class_indices(labels, st.session_state["_act_class"])[0]
                ),
            )
            st.session_state["_act_which"] = int(np.searchsorted(members, index))
            st.number_input(
                f"Which one of the {len(members):,} {ui.plain(repr(classes[current]))} images",
                0,
                len(members) - 1,
                key="_act_which",
                on_change=lambda: set_index(members[st.session_state["_act_which"]]),
                step=1,
            )
            st.caption(f"test image {index}")
        else:
            try:
                predictions = ui.predictions(selection)
            except LensError as err:
                ui.show_error(err)
                st.stop()
            wrong = inputs.mistakes(predictions)
            true_classes = [None, *range(len(classes))]
            only = st.selectbox(
                "True class",
                true_classes,
                format_func=lambda k: "any" if k is None else classes[k],
                **ui.kept("act_mistake_class", true_classes, None),
            )
            listed = wrong if only is None else [m for m in wrong if m.true == only]
            if not listed:
                st.info("The model gets every one of these right.")
            else:
                by_index = {m.index: m for m in listed[:MAX_LISTED]}
                if index not in by_index:
                    index = next(iter(by_index))
                    set_index(index)
                st.session_state["_act_mistake"] = index
                st.selectbox(
                    "Misclassified image (true → predicted, confidence)",
                    list(by_index),
                    key="_act_mistake",
                    format_func=lambda i: by_index[i].label(classes),
                    on_change=lambda: set_index(st.session_state["_act_mistake"]),
                )
                shown = f", first {MAX_LISTED:,} listed" if len(listed) > MAX_LISTED else ""
                st.caption(
                    f"{len(wrong):,} of {len(predictions.labels):,} test images misclassified "
                    f"(accuracy {predictions.accuracy:.2%}){shown}"
                )
        prepared = inputs.test_image(split, index)
    elif source == inputs.SOURCE_UPLOAD:
        upload = kept_upload()
        if upload is None:
            st.info("Upload an image to see what the model makes of it.")
            st.stop()
        file_id, name, raw = upload
        try:
            prepared = uploaded(file_id, ui.info_key(info), digits, raw, info, name)
        except LensError as err:
            ui.show_error(err)
            st.stop()
    else:
        from streamlit_drawable_canvas import st_canvas

        st.caption(
            "Draw one digit, white on black:" if info.channels == 1 else "Draw, white on black:"
        )
        st.write("")  # room for the canvas's toolbar, which floats above it
        if CANVAS_KEY not in st.session_state:  # a new visit: the strokes drawn last time
            st.session_state[DRAWN_BEFORE_KEY] = st.session_state.get(DRAWING_KEY)
        canvas = st_canvas(
            initial_drawing=st.session_state[DRAWN_BEFORE_KEY],
            fill_color="#000000",
            stroke_width=18,
            stroke_color="#FFFFFF",
            background_color="#000000",
            height=280,
            width=280,
            drawing_mode="freedraw",
            return_image_data=True,
            key=CANVAS_KEY,
        )
        if canvas.json_data is not None:
            st.session_state[DRAWING_KEY] = canvas.json_data
        pixels = drawn_pixels(canvas)
        st.caption("Large and in the middle works best; the bin icon clears the box.")
        try:
            prepared = inputs.prepare_drawing(pixels, info)
        except LensError as err:
            ui.show_error(err)
            st.stop()
        if prepared is None:
            st.info("The canvas is empty: draw a digit (white on black) to classify it.")
            st.stop()
    if prepared.notes:  # one sentence per step the image went through
        st.caption(
            "  \n".join(ui.plain(note[0].upper() + note[1:]) + "." for note in prepared.notes)
        )

x = inputs.model_input(prepared.pixels, info)
try:
    result = forward(selection.model_key, mtime, inputs.input_key(x.numpy()), model, x)
except LensError as err:
    ui.show_error(err)
    st.stop()
probabilities = result["probabilities"]
predicted = int(np.argmax(probabilities))

# Figures of one input depend on the model, the input's pixels (item.key), the class names and
# the normalization the model's input was made with: all in their keys.
model_id = (selection.model_key, mtime, ui.info_key(info), tuple(classes))
shown_image = pixels_for_display(prepared.pixels)
comparing = split is not None and bool(st.session_state.get(TWO_KEY, False))


def input_images(item: inputs.Prepared, how: str) -> None:
    """An input as the model sees it (and an upload's original beside it)."""
    seen = pixels_for_display(item.pixels)
    if how == inputs.SOURCE_TEST:
        title, subtitle = item.name[0].upper() + item.name[1:], ""
    else:
        title, subtitle = "What the model sees", "×".join(map(str, x.shape[1:]))
    pictures = [(title, subtitle, seen, ("seen", item.key, title, subtitle))]
    if how == inputs.SOURCE_UPLOAD:  # a drawing's original is the canvas beside it
        height, width = item.original.shape[:2]
        key = ("original", inputs.input_key(item.original), item.name)
        pictures.insert(0, ("Original", f"{item.name} · {width}×{height}", item.original, key))
    for title, subtitle, image, key in pictures:
        build = partial(figures.image_figure, image, title=title, subtitle=subtitle)
        name = f"image-{key[0]}-{item.name}"
        ui.figure(ui.cached_figure(("image", key), build), name, width="content")


def prediction(item: inputs.Prepared, probabilities: np.ndarray, title: str = "") -> None:
    """An input's probability bars and verdict line."""
    build = partial(bars, probabilities, item.label, title)
    key = ("bars", (*model_id, item.key, item.label, title or "Prediction"))
    ui.figure(ui.cached_figure(key, build), f"prediction-{item.name}", width="content")
    st.markdown(verdict(probabilities, item.label))


if comparing:  # both inputs side by side below the layer controls; here, the second's pick
    if inputs.parse_index(st.session_state.get(COMPARE_KEY), len(split)) is None:
        st.session_state[COMPARE_KEY] = (index + 1) % len(split)
    with top[1]:
        st.subheader("Second input")
        second_at = st.number_input(
            f"Test image (0 – {len(split) - 1})",
            0,
            len(split) - 1,
            key=ui.keep(COMPARE_KEY, (index + 1) % len(split)),
            on_change=ui.store,
            args=(COMPARE_KEY,),
            step=1,
        )
        st.caption("Both images, predictions and maps are set side by side below.")
else:
    with top[1]:
        input_images(prepared, source)
    with top[2]:
        prediction(prepared, probabilities)

# --------------------------------------------------------------------------- layer controls

st.divider()
layers = inputs.viewable_layers(flow)
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
    format_func=lambda k: layer_label(records[k]),
    help="Every layer of the forward pass, in order; the first conv layer is the default.",
)
record = records[layer]
partner = inputs.activation_partner(flow, layer)
with controls[1]:
    if partner is not None:
        after = (
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
    else:
        after = False
        why = (
            "already an activation's output"
            if inputs.is_activation(record)
            else "no activation follows before the next conv/linear layer"
        )
        st.caption(f"Maps: {why}")
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
    if split is not None
    else "Needs test images that fit the model",
    disabled=split is None,
)
compare = comparing  # read before the top row was drawn: the same value


dead_from = inputs.dead_layer(flow, layer) if split is not None else None
dead_count = 0
dead = None
if dead_from is not None:  # every layer's answer at once: a layer change then costs nothing
    dead_count = int(
        min(BATCH_IMAGES, len(split), max(8, BATCH_MULT_ADDS // max(flow.mult_adds, 1)))
    )
    judged = tuple(dict.fromkeys(d for k in keys if (d := inputs.dead_layer(flow, k))))
    batch = dead_stats(selection.model_key, mtime, split_id, judged, dead_count, model, split)[
        dead_from
    ]
    dead = np.array([s.dead for s in batch])
what = f"{layer} after {partner.type}" if after else layer


def maps_of(result: dict) -> np.ndarray:
    """This input's maps of the chosen layer, before or after its activation."""
    own = result["maps"][layer]
    if not after or partner is None:
        return own
    if partner.direct:
        return result["maps"][partner.key]
    return inputs.after_activation(model, partner, torch.from_numpy(own)[None])[0].numpy()


def order_of(maps: np.ndarray) -> np.ndarray | None:
    """Channels by decreasing mean activation when sorting, else None (their own order)."""
    if not sort:
        return None
    return np.argsort(-maps.reshape(len(maps), -1).mean(axis=1), kind="stable")


def compared_range(results: list[dict]) -> tuple[float, float] | None:
    """One colour range for several inputs' maps (None when each map has its own): the
    layer's range over all of them for "per layer", all their maps' for "global"."""
    if scale == "per map":
        return None
    if scale == "global":
        ranges = [res["range"] for res in results]
    else:
        ranges = [(float(m.min()), float(m.max())) for m in map(maps_of, results)]
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def maps_figure(result: dict, item: inputs.Prepared, shared: tuple[float, float] | None = None):
    """This input's maps of the chosen layer; `shared` puts them on a range common to two
    inputs."""
    maps = maps_of(result)
    dead_source = (split_id, dead_from, dead_count)
    key = (*model_id, item.key, layer, after, scale, sort, dead_source, item.name, shared)
    build = partial(
        figures.activation_grid,
        maps,
        scale="global" if shared is not None else scale,
        order=order_of(maps),
        dead=dead,
        title=f"{what} — {item.name}",
        global_range=shared or result["range"],
    )
    return maps, ui.cached_figure(("maps", key), build)


# --------------------------------------------------------------------------- the maps

maps, maps_chart = maps_figure(result, prepared)
order = order_of(maps)
if compare:  # both inputs: images and predictions side by side, then each one's maps in full
    second = inputs.test_image(split, int(second_at))
    second_x = inputs.model_input(second.pixels, info)
    second_result = forward(selection.model_key, mtime, second.key, model, second_x)
    pair = ((prepared, result, source), (second, second_result, inputs.SOURCE_TEST))
    shared = compared_range([res for _, res, _ in pair])
    sides = st.columns(2, gap="medium")
    for column, (item, res, how) in zip(sides, pair, strict=True):
        with column:
            input_images(item, how)
            prediction(item, res["probabilities"], f"Prediction — {item.name}")
    for item, res, _ in pair:  # full width: the same size as a single input's maps
        ui.figure(maps_figure(res, item, shared)[1], f"maps-{item.name}", width="content")
    st.caption(
        f"Both inputs' maps on one colour scale ({shared[0]:.3g} … {shared[1]:.3g})."
        if shared is not None
        else "Each channel scaled to its own range, in both inputs."
    )
else:
    ui.figure(maps_chart, "maps", width="content")
if dead is not None:
    st.caption(
        f"Dead = never above zero after the activation ({dead_from}) on any of the first "
        f"{dead_count:,} test images: {int(dead.sum())} of {len(dead)} channels."
    )

# --------------------------------------------------------------------------- statistics

stats = probe.channel_stats(torch.from_numpy(maps)[None])
rows = order if order is not None else range(len(stats))
unit = "Channel" if maps.ndim == 3 else "Unit"
table = pd.DataFrame(
    {
        unit: [stats[c].channel for c in rows],
        "Mean": [stats[c].mean for c in rows],
        "Max": [stats[c].max for c in rows],
        "Zero or below (%)": [100 * stats[c].zero_fraction for c in rows],
        f"Dead over {dead_count} test images": [bool(dead[c]) for c in rows]
        if dead is not None
        else ["—"] * len(stats),
    }
)
with st.expander(f"Per-channel statistics of {what} for this input", expanded=False):
    ui.table(
        table,
        column_config={
            "Mean": st.column_config.NumberColumn(format="%.4g"),
            "Max": st.column_config.NumberColumn(format="%.4g"),
            "Zero or below (%)": st.column_config.NumberColumn(format="%.1f"),
        },
    )

with st.expander("One neuron: its value and the input pixels it sees", expanded=False):
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
    if maps.ndim == 3 and len(flow.input_shape) == 3:
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
            ui.cached_figure(("window", (prepared.key, box)), build),
            "receptive-window",
            width="content",
        )
    else:
        st.markdown(f"{text} = `{value:.6g}`")

# --------------------------------------------------------------------------- Grad-CAM

cam_layers = gradcam.spatial_layers(flow)
cam_default = gradcam.default_layer(flow)
if cam_layers and cam_default is not None:
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
        if st.session_state.get("_act_cam_for") != prepared.key:
            st.session_state["_act_cam_for"] = prepared.key  # a new input: explain its answer
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
    else:
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
            key = (*model_id, prepared.key, cam_layer, int(target))
            ui.figure(ui.cached_figure(("cam", key), build), "gradcam", width="content")

# --------------------------------------------------------------------------- every layer

if show_all:
    st.divider()
    st.subheader("Every layer")
    st.caption(
        "Each conv, pooling and activation layer's own output for this input, in forward order "
        f"(two a row) and channel order, each beside its own colour bar ({scale} scale); hover "
        "for the values."
    )
    stacked = [
        (inputs.layer_key(r), result["maps"][inputs.layer_key(r)])
        for r in layers
        if len(r.output_shape) == 3 and (r.type.startswith(SHOWN_IN_ALL) or inputs.is_activation(r))
    ]
    if not stacked:
        st.info("This model has no layer with spatial maps to show.")
    else:
        build = partial(
            figures.activation_stack,
            stacked,
            scale=scale,
            global_range=result["range"],
            max_pixels=ALL_PIXELS,
            width=ALL_SIDE,
            columns=2,
            title=f"Every layer — {prepared.name}",
        )
        ui.figure(
            ui.cached_figure(("all", (*model_id, prepared.key, scale, prepared.name)), build),
            "every-layer",
            width="content",
        )
