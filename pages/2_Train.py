"""Train: every option of fit() and of the model; the run trains in a background thread while a
fragment redraws its progress and live curves; Stop, save under a name, compare runs (the
Compare page's overlay, with this session's new runs joining it)."""

import os

import streamlit as st

from dashboard import ui
from dashboard.base.errors import LensError

ui.setup_page("Train", icon=":material/model_training:")
selection = ui.sidebar()

from dashboard import data, models, training  # noqa: E402
from dashboard.training import live, runs  # noqa: E402

COMPARE_PREFIX = "train_compare"  # the overlay's session-state keys: train_compare_runs, …
FLASH_KEY = "train_flash"
W = ui.TRAIN_SETTING_PREFIX  # every setting's permanent key starts so
REFRESH_S = 0.5  # the live panel redraws this often while a run trains
MAX_INPUT_SIZE = 64  # resizing keeps the whole split in memory: 60,000 × 3 × 64² bytes at most
DEFAULTS = training.TrainConfig()
AUGMENT_CHOICES = ("dataset default", "on", "off")


held = ui.train_setting  # a setting's widget arguments, kept across pages


# --- settings ------------------------------------------------------------------------------------


def selected_view():
    """The sidebar's model and its view, or (None, None) when it cannot load."""
    try:
        return ui.load_model(selection)
    except LensError:
        return None, None


def follow_sidebar(names: list[str], view) -> None:
    """Architecture and options default to the sidebar's model, until the sidebar changes."""
    if st.session_state.get(ui.TRAIN_FOLLOWS_KEY) == selection.model_key:
        return
    st.session_state[ui.TRAIN_FOLLOWS_KEY] = selection.model_key
    architecture = view.architecture if view is not None else "lenet5"
    st.session_state[W + "arch"] = architecture if architecture in names else "lenet5"
    card = getattr(view, "card", None)
    if card is not None and card.architecture in names:
        for option, value in (card.model_args.get("options") or {}).items():
            st.session_state[f"{W}opt_{card.architecture}_{option}"] = value
    st.session_state[W + "from_weights"] = False


def model_settings(view) -> tuple[str, dict, bool]:
    names = models.model_names() + [models.TV_PREFIX + n for n in models.torchvision_names()]
    follow_sidebar(names, view)
    st.subheader("Model")
    left, right = st.columns([1, 2])
    architecture = left.selectbox(
        "Architecture",
        names,
        **ui.kept(W + "arch", names, "lenet5"),
        help="Defaults to the sidebar's model; tv:NAME models are torchvision's.",
    )
    info = models.model_info(architecture)
    right.caption(f"{info.description}  \n{info.origin}")
    options = {}
    if info.options:
        columns = right.columns(len(info.options))
        for column, (option, allowed) in zip(columns, info.options.items(), strict=True):
            kept = ui.kept(f"{W}opt_{architecture}_{option}", allowed, allowed[0])
            label = option.replace("_", " ")
            if isinstance(allowed[0], bool):
                options[option] = column.checkbox(label, **kept)
            else:
                options[option] = column.selectbox(label, allowed, **kept)
    has_weights = view is not None and not view.untrained
    from_weights = st.checkbox(
        f"Start from the weights of {ui.plain(view.label)}"
        if has_weights
        else "Start from the sidebar model's weights (none: it is untrained)",
        **held("from_weights", False),
        disabled=not has_weights,
        help="Fine-tune: every tensor of the sidebar's model whose name and shape fit is copied "
        "into a new model (the shared one is never trained); the rest start random.",
    )
    return architecture, options, bool(from_weights and has_weights)


def config_settings() -> tuple[training.TrainConfig, int | None, int | None, int | None]:
    st.subheader("Training")
    top, middle, bottom = st.columns(4), st.columns(4), st.columns(4)
    epochs = top[0].number_input(
        "Epochs", min_value=1, max_value=500, step=1, **held("epochs", DEFAULTS.epochs)
    )
    batch = top[1].number_input(
        "Batch size", min_value=1, max_value=8192, step=16, **held("batch", DEFAULTS.batch_size)
    )
    lr = top[2].number_input(
        "Learning rate",
        min_value=0.0,
        max_value=10.0,
        step=1e-4,
        format="%.5f",
        **held("lr", DEFAULTS.lr),
        help="Peak learning rate: 1e-3 suits adam; plain sgd wants about 0.05.",
    )
    optimizer = top[3].selectbox(
        "Optimizer",
        training.OPTIMIZERS,
        **held("optimizer", DEFAULTS.optimizer),
        help="momentum and nesterov: SGD with momentum 0.9.",
    )
    schedule = middle[0].selectbox(
        "Schedule",
        training.SCHEDULES,
        **held("schedule", DEFAULTS.schedule),
        help="step: ×0.1 every third of the epochs; cosine and onecycle: over the whole run.",
    )
    wd = middle[1].number_input(
        "Weight decay",
        min_value=0.0,
        max_value=1.0,
        step=1e-4,
        format="%.5f",
        **held("wd", DEFAULTS.weight_decay),
    )
    smoothing = middle[2].number_input(
        "Label smoothing",
        min_value=0.0,
        max_value=0.99,
        step=0.05,
        **held("smoothing", DEFAULTS.label_smoothing),
    )
    augment = middle[3].selectbox(
        "Augmentation",
        AUGMENT_CHOICES,
        **held("augment", AUGMENT_CHOICES[0]),
        help="Random crops and flips; the dataset's default is on for CIFAR, off for digits.",
    )
    limit = bottom[0].number_input(
        "Training images (0 = all)",
        min_value=0,
        step=500,
        **held("limit", 0),
        help="Train on the first N training images only: a quick run.",
    )
    limit_test = bottom[1].number_input(
        "Test images (0 = all)",
        min_value=0,
        step=500,
        **held("limit_test", 0),
        help="Test on the first N test images only: quicker epochs and a quicker Stop.",
    )
    seed = bottom[2].number_input(
        "Seed", min_value=0, max_value=2**31 - 1, step=1, **held("seed", DEFAULTS.seed)
    )
    device = bottom[3].selectbox("Device", training.DEVICES, **held("device", DEFAULTS.device))
    with st.expander("More settings"):
        more = [*st.columns(3), *st.columns(3)]  # two rows: five in one cut their labels
        eval_every = more[0].checkbox(
            "Test after every epoch",
            help="Else once, at the end.",
            **held("eval_every", DEFAULTS.eval_every_epoch),
        )
        snapshots = more[1].number_input(
            "Filter snapshots of the first N conv layers",
            min_value=0,
            max_value=8,
            **held("snapshots", DEFAULTS.snapshot_layers),
        )
        log_every = more[2].number_input(
            "Live update every N steps",
            min_value=1,
            max_value=1000,
            **held("log_every", DEFAULTS.log_every),
        )
        size = more[3].number_input(
            "Resize images to (0 = as stored)",
            min_value=0,
            max_value=MAX_INPUT_SIZE,
            step=4,
            **held("input_size", 0),
            help=f"At most {MAX_INPUT_SIZE}: the resized split is kept in memory.",
        )
        threads = more[4].number_input(
            "CPU threads",
            min_value=1,
            max_value=os.cpu_count() or 1,
            **held("threads", 1),
            help="For this run. One is fastest on a shared server: with more, the run's "
            "threads and the page's fight for the cores (measured 10× slower on 2 busy cores).",
        )
    config = training.TrainConfig(
        epochs=int(epochs),
        batch_size=int(batch),
        lr=float(lr),
        optimizer=optimizer,
        schedule=schedule,
        weight_decay=float(wd),
        seed=int(seed),
        device=device,
        augment=None if augment == AUGMENT_CHOICES[0] else augment == "on",
        label_smoothing=float(smoothing),
        eval_every_epoch=bool(eval_every),
        snapshot_layers=int(snapshots),
        log_every=int(log_every),
        threads=int(threads),
    )
    return config, int(limit) or None, int(limit_test) or None, int(size) or None


# --- the page ------------------------------------------------------------------------------------

st.title("Train")
st.caption(
    "Train a model on the sidebar's dataset in the background: the curves update live, Stop ends "
    "the run within a second, and a saved run becomes the selected model on every page."
)
flash = st.session_state.pop(FLASH_KEY, None)
if flash:
    st.success(flash)

kept = ui.session_runs()
current = kept[-1] if kept else None
active = current is not None and not current.done
# Once this session has a run, its settings fold away: the run's progress, right under the
# Start button, then shows where the user clicked instead of below the screen's edge.
settings = (
    st.expander("Settings: change them, then start another run", icon=":material/tune:")
    if current is not None
    else st.container()
)
with settings:
    _, view = selected_view()
    architecture, options, from_weights = model_settings(view)
    try:
        info = data.dataset_info(selection.dataset, data_root=ui.data_root())
        st.caption(
            f"Dataset (from the sidebar): **{ui.plain(info.title)}** — {ui.plain(info.description)}"
        )
    except LensError as err:
        ui.show_error(err)
    config, limit, limit_test, input_size = config_settings()
if st.button("Start training", type="primary", disabled=active, key="train_start"):
    spec = runs.RunSpec(
        architecture=architecture,
        dataset=selection.dataset,
        config=config,
        options=options,
        limit_train=limit,
        limit_test=limit_test,
        input_size=input_size,
        initial_weights=view.label if from_weights else "",
    )
    initial = ui.load_model(selection)[0] if from_weights else None
    ui.start_training(spec, initial)
st.session_state[ui.TRAIN_DRAWN_ACTIVE_KEY] = active
st.fragment(run_every=REFRESH_S if active else None)(ui.live_panel)()
st.fragment(run_every=live.LIVE_EVERY_S if active else None)(ui.live_views)()
if current is not None and current.done:
    ui.save_panel(current)

st.header("Compare runs")
ui.runs_overlay(ui.session_runs(), COMPARE_PREFIX)
