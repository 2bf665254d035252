"""Choosing the image a model looks at: a test image by index, by class or among the model's
mistakes, an uploaded file or a drawing — each kept across page visits and links.

The test image's index lives under `inputs.IMAGE_INDEX_KEY` (shared with other pages and the
`?image=` link), the source under `inputs.SOURCE_KEY`. Streamlit empties a file uploader and
a canvas when their page is left: the last upload and the strokes drawn are kept here and
shown again on return."""

import numpy as np
import streamlit as st

from dashboard import data, ui
from dashboard.analysis import inputs
from dashboard.base import images
from dashboard.base.errors import LensError

MODE_KEY = "lens_image_mode"
BY_INDEX, BY_CLASS, MISTAKES = "by index", "by class", "misclassified"
MAX_LISTED = 2000  # misclassified images listed at once (an untrained model gets ~9,000)
UPLOADER_KEY, UPLOAD_KEY, RESTORED_KEY = "_act_upload", "act_upload", "act_upload_restored"
# A canvas starts empty on every visit: its strokes are kept and drawn again on the next one.
CANVAS_KEY, DRAWING_KEY, DRAWN_BEFORE_KEY = "act_canvas", "act_drawing", "act_drawn_before"
DRAWN_PIXELS_KEY = "act_drawn_pixels"
UPLOAD_TYPES = [ext.removeprefix(".") for ext in images.IMAGE_EXTENSIONS]  # folders' list too


@st.cache_data(max_entries=16, show_spinner="Reading the image…")
def uploaded(file_id: str, info_key: tuple, digits: bool, _raw: bytes, _info, name: str):
    return inputs.prepare_upload(_raw, _info, digits=digits, name=name)


def set_index(index: int) -> None:
    st.session_state[inputs.IMAGE_INDEX_KEY] = int(index)


def opened_index(split: data.Split | None) -> int:
    """The test image to show: one opened by a link (?image=123) on first arrival, or by
    another page's session state; the link then follows the choice."""
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
    return index


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


def pick_input(
    split: data.Split | None,
    info: data.DatasetInfo,
    classes: list[str],
    selection: ui.Selection,
    index: int,
) -> tuple[str, inputs.Prepared, int]:
    """The input's source radio and its picker: (source, the prepared input, the test image's
    index, which the misclassified list may have moved). Stops the page while there is none."""
    sources = (inputs.SOURCE_TEST,) if split is not None else ()
    sources += (inputs.SOURCE_UPLOAD, inputs.SOURCE_DRAW)
    if st.session_state.get(inputs.SOURCE_KEY) not in sources:
        st.session_state[inputs.SOURCE_KEY] = sources[0]
    source = st.radio(
        "Where the image comes from",
        sources,
        key=ui.keep(inputs.SOURCE_KEY, sources[0]),
        on_change=ui.store,
        args=(inputs.SOURCE_KEY,),
        horizontal=True,
        format_func=lambda s: {"draw": "draw a digit" if info.channels == 1 else "draw"}.get(s, s),
    )
    if source == inputs.SOURCE_TEST:
        index = test_image_picker(split, classes, selection, index)
        prepared = inputs.test_image(split, index)
    elif source == inputs.SOURCE_UPLOAD:
        prepared = uploaded_input(info)
    else:
        prepared = drawn_input(info)
    if prepared.notes:  # one sentence per step the image went through
        st.caption(
            "  \n".join(ui.plain(note[0].upper() + note[1:]) + "." for note in prepared.notes)
        )
    return source, prepared, index


def test_image_picker(
    split: data.Split, classes: list[str], selection: ui.Selection, index: int
) -> int:
    """A test image by index, by class, or among the model's mistakes; → its index."""
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
        index = mistake_picker(classes, selection, index)
    return index


def mistake_picker(classes: list[str], selection: ui.Selection, index: int) -> int:
    """The misclassified test images, optionally of one true class; → the chosen index."""
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
        return index
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
    return index


def uploaded_input(info: data.DatasetInfo) -> inputs.Prepared:
    """An uploaded image, prepared for the model; stops the page while there is none."""
    upload = kept_upload()
    if upload is None:
        st.info("Upload an image to see what the model makes of it.")
        st.stop()
    file_id, name, raw = upload
    try:
        return uploaded(file_id, ui.info_key(info), info.name == "mnist", raw, info, name)
    except LensError as err:
        ui.show_error(err)
        st.stop()


def drawn_input(info: data.DatasetInfo) -> inputs.Prepared:
    """A drawing, prepared for the model; stops the page while the canvas is empty."""
    from streamlit_drawable_canvas import st_canvas

    st.caption("Draw one digit, white on black:" if info.channels == 1 else "Draw, white on black:")
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
    return prepared
