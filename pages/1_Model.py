"""Model: choose what every page looks at — a shipped checkpoint, one of your runs, an uploaded
state dict, torchvision's zoo or an untrained architecture — and the dataset; see the model's
card, layers, accuracy and classes."""

from pathlib import Path

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Model", icon=":material/deployed_code:")
selection = ui.sidebar()

from dashboard import data, models  # noqa: E402
from dashboard.base import paths  # noqa: E402
from dashboard.models import checkpoints, uploads  # noqa: E402

SOURCES = (
    "Shipped checkpoint",
    "Your saved runs",
    "Upload a state dict",
    "torchvision zoo",
    "Untrained architecture",
)
FLASH_KEY = "model_flash"  # a message that must survive the rerun after a new selection
SOURCE_KEY, SOURCE_FOR_KEY = "model_source", "model_source_for"  # the chooser, and for which model
INFER = "infer from the file"
UPLOAD_MB = checkpoints.MAX_CHECKPOINT_BYTES // 2**20


def _inside(key: str, folder: Path) -> bool:
    if not key.startswith(ui.CKPT_PREFIX):
        return False
    path = paths.REPO_ROOT / key.removeprefix(ui.CKPT_PREFIX)  # an absolute path stays itself
    return path.resolve().is_relative_to(folder.resolve())


def source_of(key: str) -> int:
    """Which chooser the current selection came from, so the page opens on it."""
    if _inside(key, paths.TRAINED_DIR):
        return 0
    if _inside(key, paths.RUNS_DIR):
        return 1
    if key.startswith(ui.CKPT_PREFIX):
        return 2
    if key.startswith(ui.ZOO_PREFIX) or key.startswith(ui.ARCH_PREFIX + models.TV_PREFIX):
        return 3
    return 4


def choose_now(keys: list[str], label: str, widget: str, **kwargs) -> None:
    """A selectbox that makes its choice the selection on every page as soon as it changes."""
    st.session_state[widget] = selection.model_key if selection.model_key in keys else None

    def picked() -> None:
        if st.session_state[widget] is not None:
            ui.select_model(st.session_state[widget])

    st.selectbox(
        label,
        keys,
        key=widget,
        on_change=picked,
        format_func=ui.model_label,
        placeholder="choose one…",
        **kwargs,
    )


def select_and_rerun(key: str, message: str, kind: str = "success") -> None:
    ui.add_model_choice(key)
    note = ui.select_model(key)
    st.session_state[FLASH_KEY] = (kind, f"{message}. {note}" if note else message)
    st.rerun()


def checkpoint_chooser(folder, label: str, empty: str) -> None:
    cards = checkpoints.list_checkpoints(folder)
    if not cards:
        st.info(empty)
        return
    choose_now([ui.checkpoint_key(card.path) for card in cards], label, f"model_pick_{label}")


def upload_chooser() -> None:
    st.caption(
        "A state dict (`torch.save(model.state_dict(), …)` or safetensors) is read without "
        "running any code in it; say which architecture it belongs to."
    )
    uploaded = st.file_uploader(
        "State dict file",
        type=["safetensors", "pt", "pth"],
        key="model_upload",
        max_upload_size=UPLOAD_MB,
    )
    names = models.model_names() + [models.TV_PREFIX + n for n in models.torchvision_names()]
    left, right = st.columns([2, 3])
    architecture = left.selectbox(
        "Its architecture", names, **ui.kept("model_upload_arch", names, names[0])
    )
    options = {}
    info = models.model_info(architecture)
    with right:
        if info.options:
            columns = st.columns(len(info.options))
            for column, (option, allowed) in zip(columns, info.options.items(), strict=True):
                value = column.selectbox(
                    option.replace("_", " "),
                    [INFER, *allowed],
                    **ui.kept(f"model_upload_{architecture}_{option}", [INFER, *allowed], INFER),
                    help="Options that add no weights (activation, pooling) cannot be read from "
                    f"a file: the default is {allowed[0]!r}.",
                )
                if value != INFER:
                    options[option] = value
        else:
            st.caption(f"{architecture} has no options of its own.")
    partial = st.checkbox(
        "Load the layers that fit even if others do not (the rest stay random)",
        **ui.held("model_upload_partial", False),
    )
    if not st.button("Load and select", type="primary", disabled=uploaded is None):
        return
    try:
        raw = uploads.store_upload(uploaded.getvalue(), uploaded.name)
        registered = uploads.register_upload(
            raw, architecture, options, strict=not partial, original_name=uploaded.name
        )
    except checkpoints.MismatchError as err:
        st.error(
            f"{ui.plain(uploaded.name)} does not fit {architecture}:", icon=":material/warning:"
        )
        st.markdown("\n".join(f"- {ui.plain(line)}" for line in uploads.mismatch_lines(err.report)))
        return
    except LensError as err:
        ui.show_error(err)
        return
    key = ui.checkpoint_key(registered.path)
    done = f"{uploaded.name} loaded as {architecture}: now selected on every page"
    if registered.mismatch is None:
        select_and_rerun(key, done)
    else:
        lines = "; ".join(uploads.mismatch_lines(registered.mismatch))
        select_and_rerun(key, f"{done}; left random: {lines}", "warning")


def zoo_chooser() -> None:
    names = models.torchvision_names()
    left, right = st.columns([2, 3])
    name = left.selectbox(
        "torchvision model",
        names,
        **ui.kept("model_zoo_name", names, "resnet18" if "resnet18" in names else names[0]),
    )
    info = models.model_info(models.TV_PREFIX + name)
    right.markdown(f"**{info.description}**  \n{info.origin}")
    weights = st.checkbox(
        "with ImageNet weights (downloaded once into the torch hub cache; needs the internet)",
        **ui.held("model_zoo_weights", True),
    )
    if not st.button("Use this model", type="primary", key="model_zoo_use"):
        return
    prefix = ui.ZOO_PREFIX if weights else ui.ARCH_PREFIX
    key = prefix + models.TV_PREFIX + name
    try:  # load (and download) now: a failure stays on this page, the selection unchanged
        with st.spinner(f"Loading {name}…"):
            ui.load_model(ui.Selection(key, selection.dataset))
    except LensError as err:
        ui.show_error(err)
        return
    select_and_rerun(key, f"{ui.model_label(key)}: now selected on every page")


def untrained_chooser() -> None:
    keys = [ui.ARCH_PREFIX + name for name in models.model_names()]
    choose_now(keys, "Architecture with random weights", "model_pick_untrained")
    st.caption("Train it on the Train page; the model's own options (activation, pooling…) too.")


# --- the selected model --------------------------------------------------------------------------


def model_panel() -> None:
    try:
        _, view = ui.load_model(selection)
        facts = ui.architecture_facts(selection.model_key, ui.mtime_of(selection.model_key))
    except LensError as err:
        ui.show_error(err)
        return
    st.subheader(ui.plain(view.label))
    if view.untrained:
        st.warning("untrained — random weights", icon=":material/casino:")
    metrics_slot = st.empty()  # filled last: "Measure test accuracy" below may change it
    kinds = ", ".join(f"{n} {kind}" for kind, n in facts["kinds"])
    trainable = facts["trainable"]
    st.caption(f"{view.architecture}: {kinds}; {trainable:,} trainable parameters")
    if view.card is not None:
        ui.card_panel(view.card)
    elif not view.untrained:
        st.caption(models.model_info(view.architecture).description)
    ui.accuracy_panel(selection, view)
    accuracy, where = ui.accuracy_metric(selection, view)
    with metrics_slot.container():
        ui.metric_row(
            [
                ui.Metric("Accuracy", accuracy, help=where),
                ui.Metric("Parameters", f"{facts['params']:,}"),
                ui.Metric("Layers", str(facts["layers"])),
                ui.Metric("Input", "×".join(str(n) for n in view.input_shape)),
            ]
        )
    ui.report_button(selection)
    ui.onnx_button(selection)
    classes = list(view.classes)
    where = "the checkpoint's"
    if not classes:
        try:
            classes = list(data.dataset_info(selection.dataset, data_root=ui.data_root()).classes)
            where = f"{selection.dataset}'s (the model has none of its own)"
        except LensError:
            classes = []
    if classes:
        named = ui.plain(", ".join(classes[:100]))
        st.markdown(f"**{len(classes)} classes** ({ui.plain(where)}): {named}")
    with st.expander("Architecture — print(model)", expanded=facts["text"].count("\n") < 40):
        st.code(facts["text"], language="text", height=420)


# --- the dataset ---------------------------------------------------------------------------------


# --- the page ------------------------------------------------------------------------------------

st.title("Model")
st.caption(
    "What every page looks at: choose a model and a dataset here or in the sidebar; "
    "the choice holds on every page."
)
flash = st.session_state.pop(FLASH_KEY, None)
if flash is not None:
    kind, text = flash
    (st.warning if kind == "warning" else st.success)(ui.plain(text))

if st.session_state.get(SOURCE_FOR_KEY) != selection.model_key:  # a new model: its chooser
    st.session_state[SOURCE_FOR_KEY] = selection.model_key
    st.session_state[SOURCE_KEY] = SOURCES[source_of(selection.model_key)]
source = st.radio(
    "Choose a model from", SOURCES, horizontal=True, **ui.held(SOURCE_KEY, SOURCES[0])
)
if source == SOURCES[0]:
    checkpoint_chooser(
        paths.TRAINED_DIR,
        "Shipped checkpoint",
        "No shipped checkpoints in trained/ yet: train one on the Train page.",
    )
elif source == SOURCES[1]:
    checkpoint_chooser(
        paths.RUNS_DIR, "Saved run", "No saved runs yet: train and save one on the Train page."
    )
elif source == SOURCES[2]:
    upload_chooser()
elif source == SOURCES[3]:
    zoo_chooser()
else:
    untrained_chooser()

model_tab, data_tab = st.tabs(["The selected model", "The dataset"])
with model_tab:
    model_panel()
with data_tab:
    ui.dataset_panel(selection)
