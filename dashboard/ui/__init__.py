"""Streamlit glue: the shared sidebar, session-state keys and cached loaders.

The only module that imports Streamlit. Pages call `sidebar()` first; it draws the model and
dataset choices and keeps them in session state so they hold across pages (the "dummy key"
pattern from Streamlit's multipage docs: a widget's own key is dropped when its page is left, so
the value lives under a permanent key and is copied into the widget key before each draw).
Loaders are cached by strings (path + modification time), never by objects; results that
outlive the process (predictions) are kept on disk by content (dashboard.base.cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base import paths, settings
from dashboard.base.errors import LensError

if TYPE_CHECKING:  # torch-heavy modules load on first use: the home page paints before them
    import pandas as pd

    from dashboard import data
    from dashboard.analysis import metrics, probe

MODEL_KEY = "lens_model"  # permanent session-state keys
DATASET_KEY = "lens_dataset"
FOLDER_KEY = "lens_folder"
EXTRA_MODELS_KEY = "lens_extra_models"
LINK_NOTE_KEY = "lens_link_note"  # a link's model that is not on this server: what shows instead
DATASET_NOTE_KEY = "lens_dataset_note"  # (model, dataset, how that dataset was guessed)
ARCH_PREFIX = "arch:"  # an architecture with fresh random weights
ZOO_PREFIX = "zoo:"  # a torchvision model with its ImageNet weights
CKPT_PREFIX = "ckpt:"
FOLDER_CHOICE = "folder (your own images)"
REGISTRY_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: every page reads these and nothing else."""

    model_key: str  # "ckpt:trained/x.safetensors" or "arch:lenet5"
    dataset: str  # registry name or "folder:PATH"

    @property
    def is_checkpoint(self) -> bool:
        return self.model_key.startswith(CKPT_PREFIX)

    @property
    def architecture(self) -> str:
        if self.is_checkpoint:
            return _card_for(self.model_key).architecture
        return self.model_key.removeprefix(ARCH_PREFIX).removeprefix(ZOO_PREFIX)


def setup_page(title: str, icon: str = ":material/center_focus_strong:") -> None:
    """The first Streamlit call of every page; a link with ?present=1 opens in presentation
    mode, with the sidebar folded away."""
    if PRESENT_QUERY in st.query_params and PRESENT_KEY not in st.session_state:
        st.session_state[PRESENT_KEY] = st.query_params[PRESENT_QUERY] == "1"
    st.set_page_config(
        page_title=f"{title} · CNN Lens",
        page_icon=icon,
        layout="wide",
        initial_sidebar_state="collapsed" if presenting() else "auto",
    )
    if presenting():
        st.html(PRESENTATION_CSS)


def checkpoint_key(path: Path) -> str:
    """The choice key of a checkpoint file: relative to the repository when inside it."""
    path = path.resolve()
    try:
        return CKPT_PREFIX + str(path.relative_to(paths.REPO_ROOT))
    except ValueError:
        return CKPT_PREFIX + str(path)


def _checkpoint_keys(folder: Path) -> list[str]:
    """Checkpoints with cards in a folder, best first within each dataset, MNIST first."""
    from dashboard.models import checkpoints

    return [checkpoint_key(card.path) for card in checkpoints.list_checkpoints(folder)]


def add_model_choice(model_key: str) -> None:
    """Offer an extra choice (an uploaded file, a zoo model) in this session's sidebar."""
    extra = st.session_state.setdefault(EXTRA_MODELS_KEY, [])
    if model_key not in extra:
        extra.append(model_key)


def _card_for(model_key: str):  # -> checkpoints.Card (imported lazily: keeps start-up fast)
    from dashboard.models import checkpoints

    return checkpoints.read_card(_resolve(model_key))


def model_label(model_key: str) -> str:
    """How a choice reads in the sidebar: shipped checkpoints with accuracy, untrained marked."""
    if model_key.startswith(ARCH_PREFIX):
        return f"{model_key.removeprefix(ARCH_PREFIX)} (untrained)"
    if model_key.startswith(ZOO_PREFIX):
        return f"{model_key.removeprefix(ZOO_PREFIX)} (ImageNet weights)"
    try:
        card = _card_for(model_key)
    except LensError:
        return model_key.removeprefix(CKPT_PREFIX)
    if card.problem:  # listed all the same (its weights load by the architecture it names);
        return f"{card.name} — invalid card"  # the reason: model_warnings, once selected
    accuracy = card.test_accuracy
    shown = f" — {accuracy:.2%} on {card.dataset}" if accuracy is not None else ""
    return f"{card.name}{shown}"


def model_choices() -> list[str]:
    """Shipped checkpoints (the best MNIST model first: the default), the user's saved runs,
    this session's uploads and zoo picks, then every architecture untrained."""
    from dashboard import models

    saved = _checkpoint_keys(paths.TRAINED_DIR) + _checkpoint_keys(paths.RUNS_DIR)
    extra = [k for k in st.session_state.get(EXTRA_MODELS_KEY, []) if k not in saved]
    return saved + extra + [ARCH_PREFIX + name for name in models.model_names()]


def select_model(model_key: str) -> str:
    """Make `model_key` the selection on every page. A checkpoint brings its dataset along: the
    one its card names, else the one its shape says (an upload); → a note on how that dataset
    was chosen when it is a guess ("" otherwise)."""
    st.session_state[MODEL_KEY] = model_key
    st.session_state.pop(LINK_NOTE_KEY, None)
    st.session_state.pop(DATASET_NOTE_KEY, None)
    if not model_key.startswith(CKPT_PREFIX):
        return ""
    from dashboard.models import uploads

    try:
        dataset, note = uploads.dataset_of(_card_for(model_key))
    except LensError:
        return ""
    if dataset.startswith("folder:"):
        st.session_state[FOLDER_KEY] = dataset.removeprefix("folder:")
        st.session_state[DATASET_KEY] = FOLDER_CHOICE
    elif dataset in REGISTRY_DATASETS:
        st.session_state[DATASET_KEY] = dataset
    if note:
        st.session_state[DATASET_NOTE_KEY] = (model_key, dataset, note)
    return note


def _model_changed() -> None:
    select_model(st.session_state["_" + MODEL_KEY])


def _dataset_note(model_key: str, dataset: str) -> None:
    """Under the sidebar's dataset: how it was chosen from the model's shape, while it holds."""
    noted = st.session_state.get(DATASET_NOTE_KEY)
    if noted is not None and noted[:2] == (model_key, dataset):
        st.caption(noted[2])


def _persistent_selectbox(
    label: str, options: list[str], permanent: str, on_change=None, **kwargs
) -> str:
    """A selectbox whose value survives page switches (see the module docstring)."""
    if st.session_state.get(permanent) not in options:
        st.session_state[permanent] = options[0]
    if on_change is None:
        on_change, kwargs["args"] = store, (permanent,)
    st.selectbox(label, options, key=keep(permanent, options[0]), on_change=on_change, **kwargs)
    return st.session_state[permanent]


# The app's pages in reading order; drawn by `sidebar()` (Streamlit's own list would call the
# home page "app", after its file name).
PAGES = (
    ("app.py", "Home", ":material/home:", "this overview and the selected model's layers"),
    (
        "pages/1_Model.py",
        "Model",
        ":material/deployed_code:",
        "pick a shipped checkpoint, upload yours, or take one from torchvision's zoo",
    ),
    (
        "pages/2_Train.py",
        "Train",
        ":material/model_training:",
        "train with live curves, stop any time, save, compare runs",
    ),
    (
        "pages/3_Shape_flow.py",
        "Shape flow",
        ":material/account_tree:",
        "every layer's shape, parameters, multiply-adds, receptive field and formula",
    ),
    (
        "pages/4_Filters.py",
        "Filters",
        ":material/grid_on:",
        "the learned kernels of every conv layer, across epochs, beside Sobel and Prewitt",
    ),
    (
        "pages/5_Activations.py",
        "Activations",
        ":material/layers:",
        "what each layer sees of an image you pick, upload or draw; Grad-CAM",
    ),
    (
        "pages/6_Confusion_matrix.py",
        "Confusion matrix",
        ":material/grid_view:",
        "where the model gets confused: click a cell to see its images",
    ),
    (
        "pages/7_Compare.py",
        "Compare",
        ":material/compare:",
        "runs' curves overlaid; two checkpoints' weights, filters and activations side by side",
    ),
    (
        "pages/8_Convolution_lab.py",
        "Convolution lab",
        ":material/calculate:",
        "convolution and pooling by hand, then any neuron of the model",
    ),
    (
        "pages/9_Channels.py",
        "Channels",
        ":material/blur_on:",
        "what each channel responds to: its top images, classes, feature visualization",
    ),
    (
        "pages/10_Representations.py",
        "Representations",
        ":material/scatter_plot:",
        "how each layer arranges the test images: projector, linear probes, layer similarity",
    ),
)


def _existing_pages() -> list[tuple[str, str, str, str]]:
    return [page for page in PAGES if (paths.REPO_ROOT / page[0]).exists()]


def _running_as_app() -> bool:
    """True under `streamlit run app.py`; False when one page runs alone (AppTest on a page),
    where links to the other pages cannot resolve."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    main = getattr(ctx, "main_script_path", "") if ctx else ""
    return bool(main) and Path(main).resolve() == (paths.REPO_ROOT / "app.py").resolve()


def navigation() -> None:
    """Links to every page that exists, with readable names."""
    st.markdown("## :material/center_focus_strong: CNN Lens")
    if _running_as_app():
        for script, label, icon, _ in _existing_pages():
            st.page_link(script, label=label, icon=icon)
    st.divider()


def page_overview() -> None:
    """The home page's map of the app: one link and one line per page."""
    columns = st.columns(3)
    for i, (script, label, icon, what) in enumerate(_existing_pages()[1:]):
        with columns[i % 3].container(border=True):
            st.page_link(script, label=f"**{label}**", icon=icon)
            st.caption(what)


def sidebar() -> Selection:
    """Draw the shared sidebar (pages, model, dataset) and return the current selection."""
    with st.sidebar:
        navigation()
        choices = _first_model_choices()
        datasets = [*REGISTRY_DATASETS, FOLDER_CHOICE]
        for key, options in ((MODEL_KEY, choices), (DATASET_KEY, datasets)):
            if st.session_state.get(key) not in options:  # the defaults, even in the first link
                st.session_state[key] = options[0]
        url_bound("model", MODEL_KEY, _model_from_url(choices), model_link, _model_refused)
        url_bound("dataset", DATASET_KEY, one_of(REGISTRY_DATASETS))
        choices = model_choices()  # with the link's upload, when it brought one
        model_key = _persistent_selectbox(
            "Model",
            choices,
            MODEL_KEY,
            on_change=_model_changed,
            format_func=model_label,
            help="A shipped checkpoint from trained/, or an architecture with random weights.",
        )
        model_warnings(model_key)
        dataset = _persistent_selectbox("Dataset", datasets, DATASET_KEY)
        _dataset_note(model_key, dataset)
        refused = ""
        if dataset == FOLDER_CHOICE:
            st.text_input(
                "Image folder",
                key=keep(FOLDER_KEY, ""),
                on_change=store,
                args=(FOLDER_KEY,),
                placeholder="/path/to/images (one subfolder per class)",
                help="A folder with one subfolder of images per class, under the folders this "
                "server lets the app read: " + ", ".join(map(str, allowed_roots())),
            )
            folder = st.session_state.get(FOLDER_KEY, "")
            refused = folder_refusal(folder)
            if refused:
                st.error(refused, icon=":material/folder_off:")
            dataset = "folder:" + folder
        share_controls()
    link_note = st.session_state.get(LINK_NOTE_KEY)
    if link_note:
        st.warning(link_note, icon=":material/link_off:")
    if refused:  # nothing of a folder outside the allowed roots is listed or read
        st.error(refused, icon=":material/folder_off:")
        st.stop()
    return Selection(model_key=model_key, dataset=dataset)


def model_warnings(model_key: str) -> None:
    """Under the model choice: what loading a user's checkpoint found wrong with it (weights
    that are NaN or infinite, an invalid card). Shipped checkpoints are checked by the tests,
    so the home page still paints before torch is imported for them."""
    if not model_key.startswith(CKPT_PREFIX) or model_key.startswith(SHIPPED_PREFIX):
        return
    try:
        view = _load(model_key, mtime_of(model_key))[1]
    except LensError:
        return  # the page says why it cannot be loaded
    for warning in view.warnings:  # names from a file: shown as text, never as markdown
        st.warning(re.sub(r"([\\`*_\[\]!<>#|~$])", r"\\\1", warning), icon=":material/warning:")


def _first_model_choices() -> list[str]:
    """The sidebar's model choices; the first time a session runs, PyTorch is imported to list
    them, which takes seconds on a busy machine: say so."""
    if "torch" in sys.modules:
        return model_choices()
    with st.spinner("Starting: loading PyTorch and the model list…"):
        return model_choices()


# --------------------------------------------------------------------------- models in links

SHIPPED_PREFIX = CKPT_PREFIX + "trained/"  # shipped checkpoints go in links by their bare name
RUN_LINK = "run:"  # a saved run in the runs folder, by its name


def model_link(model_key: object) -> str | None:
    """How a model is named in a link, never by a server path: a shipped checkpoint by its name,
    a saved run as run:NAME, an upload as upload:<content hash>-<reading>, an architecture by
    its key; None for a file that has no such name (the link then leaves the model out)."""
    from dashboard.models import checkpoints, uploads

    key = str(model_key)
    if not key.startswith(CKPT_PREFIX):
        return key
    path = _resolve(key)
    if path.suffix != checkpoints.WEIGHTS_SUFFIX:
        return None
    folder = path.parent.resolve()
    if folder == paths.TRAINED_DIR.resolve():
        return path.stem
    if folder == paths.RUNS_DIR.resolve():
        return RUN_LINK + path.stem
    return uploads.link_name(path)


def _model_from_url(choices: list[str]) -> Callable[[str], str | None]:
    """A link's model: a shipped checkpoint's name, run:NAME, upload:ID, or a key the sidebar
    offers. A link's upload joins this session's choices."""
    from dashboard.models import checkpoints, uploads

    def parse(text: str) -> str | None:
        if text.startswith(uploads.LINK_PREFIX):
            path = uploads.find_link(text)
            found = checkpoint_key(path) if path is not None else None
        elif text.startswith(RUN_LINK):
            name = text.removeprefix(RUN_LINK)  # a plain name: never a path
            path = paths.RUNS_DIR / f"{name}{checkpoints.WEIGHTS_SUFFIX}"
            found = checkpoint_key(path) if re.fullmatch(r"\w[\w.-]*", name, re.ASCII) else None
        else:
            found = next(
                (k for k in (text, f"{SHIPPED_PREFIX}{text}.safetensors") if k in choices), None
            )
        if found is None or (found not in choices and not found.startswith(CKPT_PREFIX)):
            return None
        if found not in choices:
            if not _resolve(found).is_file():
                return None
            add_model_choice(found)
        select_model(found)  # brings the card's dataset, unless the link names one
        return found

    return parse


def _model_refused(text: str) -> None:
    """A link named a model this server does not have: say so, and which model shows instead."""
    shown = re.sub(r"[^A-Za-z0-9:._+-]", "", text)[:80] or "?"  # plain text: no markdown
    instead = st.session_state.get(MODEL_KEY) or model_choices()[0]
    st.session_state[LINK_NOTE_KEY] = (
        f"The link's model {shown} is not on this server (an upload is kept only while its "
        f"file stays in the server's cache): showing {model_label(instead)} instead."
    )


@dataclass(frozen=True)
class ModelView:
    """What pages need to know about the selected model, apart from the module itself."""

    key: str
    label: str
    architecture: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]  # empty when unknown (untrained architecture: the dataset's)
    dataset: str  # the card's dataset ("" when unknown)
    untrained: bool
    card: object | None  # checkpoints.Card for checkpoints
    warnings: tuple[str, ...] = ()  # one line each: non-finite weights, an invalid card


def _resolve(model_key: str) -> Path:
    path = Path(model_key.removeprefix(CKPT_PREFIX))
    return path if path.is_absolute() else paths.REPO_ROOT / path


def mtime_of(model_key: str) -> float:
    """Latest modification time of a checkpoint choice's weights and card, so caches notice
    either file changing (a card renamed or re-described keeps its weights file as it was)."""
    if not model_key.startswith(CKPT_PREFIX):
        return 0.0  # architectures and zoo models are built the same every time (see _load)
    path = _resolve(model_key)
    times = [p.stat().st_mtime for p in (path, path.with_suffix(".json")) if p.exists()]
    return max(times, default=0.0)


UNTRAINED_SEED = 0  # an untrained architecture's random weights: the same in every session


def _untrained(name: str, pretrained: bool):  # -> nn.Module
    """A registry or zoo model. Random weights are drawn from a fixed seed (the global random
    state untouched), so `arch:NAME` is one model: every session, link, cache entry and
    restarted server sees the same weights, and caches keyed by the choice stay true."""
    import torch

    from dashboard import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return models.build_model(name, pretrained=pretrained)


@st.cache_resource(max_entries=6, show_spinner="Loading the model…")
def _load(model_key: str, mtime: float) -> tuple[object, ModelView, dict]:
    """(model in eval mode, its view, its filter history). Shared by every session: read only."""
    from dashboard import models

    if model_key.startswith(CKPT_PREFIX):
        from dashboard.models import checkpoints

        loaded = checkpoints.load_checkpoint(_resolve(model_key))
        card = loaded.card
        view = ModelView(
            key=model_key,
            label=model_label(model_key),
            architecture=card.architecture,
            input_shape=tuple(card.input_shape or models.model_info(card.architecture).input_shape),
            classes=tuple(card.classes),
            dataset=card.dataset,
            untrained=False,
            card=card,
            warnings=tuple(loaded.warnings),
        )
        return loaded.model, view, loaded.filter_history
    pretrained = model_key.startswith(ZOO_PREFIX)
    name = model_key.removeprefix(ZOO_PREFIX if pretrained else ARCH_PREFIX)
    info = models.model_info(name)
    model = _untrained(name, pretrained)
    model.eval()
    view = ModelView(
        model_key, model_label(model_key), name, info.input_shape, (), "", not pretrained, None
    )
    return model, view, {}


def load_model(selection: Selection) -> tuple[object, ModelView]:
    """The selected model (cached, shared: never train or mutate it) and what it is."""
    model, view, _ = _load(selection.model_key, mtime_of(selection.model_key))
    return model, view


def model_id(selection: Selection) -> str:
    """The selected model's content, for caches that outlive the process (dashboard.base.cache): a
    checkpoint's weights file and the architecture it is loaded as; another model's tensors."""
    from dashboard.base import cache

    model, view = load_model(selection)
    if selection.is_checkpoint and view.card is not None:
        card = view.card
        return cache.checkpoint_digest(
            _resolve(selection.model_key), card.architecture, card.model_args
        )
    return cache.state_digest(model)


def filter_history(selection: Selection) -> dict:
    """Per-epoch first-layer filter snapshots saved with the checkpoint ({} if none)."""
    return _load(selection.model_key, mtime_of(selection.model_key))[2]


def input_shape_for(selection: Selection) -> tuple[int, int, int]:
    from dashboard import models

    if selection.is_checkpoint:
        card = _card_for(selection.model_key)
        if card.problem:  # the card cannot say: the weights do
            return load_model(selection)[1].input_shape
        if card.input_shape:
            return tuple(card.input_shape)  # type: ignore[return-value]
    return models.model_info(selection.architecture).input_shape


@st.cache_data(max_entries=32, show_spinner="Tracing shapes…")
def shape_flow(model_key: str, input_shape: tuple[int, int, int], mtime: float) -> probe.ShapeFlow:
    """Shape flow for a sidebar choice; `mtime` invalidates it when a checkpoint changes."""
    from dashboard.analysis import probe

    model, _, _ = _load(model_key, mtime)
    return probe.shape_flow(model, input_shape)


# --------------------------------------------------------------------------- data root and folders

DATA_ROOT_KEY = "lens_data_root"
ROOT_PICK_KEY, ROOT_MESSAGE_KEY = "_lens_data_root", "lens_data_root_message"


def server_options() -> settings.ServerOptions:
    """The server's own options: `streamlit run app.py -- --data-root DIR --allow-root DIR`."""
    return settings.server_options(sys.argv[1:])


def pinned_data_root() -> str:
    """What fixes the data root for this server ("" when the app may choose it): the server's
    --data-root, else $CNN_LENS_DATA."""
    if server_options().data_root:
        return "--data-root"
    return f"${paths.DATA_ROOT_ENV}" if os.environ.get(paths.DATA_ROOT_ENV) else ""


def data_root() -> str:
    """The data root of this session: --data-root, $CNN_LENS_DATA, the one set in the app (the
    settings file), else the per-user default; read when the session starts."""
    if not st.session_state.get(DATA_ROOT_KEY):
        st.session_state[DATA_ROOT_KEY] = str(paths.data_root(server_options().data_root))
    return st.session_state[DATA_ROOT_KEY]


def allowed_roots() -> list[Path]:
    """The folders under which this server lets the app read (see dashboard/settings.py)."""
    server, saved = server_options(), settings.load()
    roots = [server.data_root, os.environ.get(paths.DATA_ROOT_ENV), saved.data_root]
    data_roots = [r for r in roots if r] + [paths.default_data_root()]
    return settings.allowed_roots(data_roots, paths.cache_root(), server, saved)


def folder_refusal(folder: str) -> str:
    """Why the app will not read the image folder `folder` ("" when it may)."""
    if not folder.strip():
        return ""  # the dataset's own message asks for a path
    try:
        path = settings.check_allowed(folder, allowed_roots())
    except LensError as err:
        return str(err)
    return settings.readable_folder(path)


def _root_chosen() -> None:
    """The Model page's data root changed: an allowed folder becomes this session's and every
    later session's (the settings file); anything else is refused with the reason."""
    chosen = str(st.session_state.get(ROOT_PICK_KEY) or "").strip()
    if chosen == data_root():
        return
    try:
        if not chosen:  # emptied: forget the choice, back to the default
            settings.save_data_root(None)
            st.session_state[DATA_ROOT_KEY] = str(paths.data_root(server_options().data_root))
            return
        path = settings.check_allowed(chosen, allowed_roots())
        problem = settings.readable_folder(path)
        if problem or not path.is_dir():
            raise LensError(problem or f"{chosen} does not exist")
        settings.save_data_root(path)
    except LensError as err:
        st.session_state[ROOT_MESSAGE_KEY] = str(err)
        return
    st.session_state[DATA_ROOT_KEY] = str(path)


def data_root_field() -> None:
    """The Model page's Data root: one of the folders this server allows, remembered for every
    later session; fixed (and said so) when the server's owner set it."""
    current = data_root()
    layouts = f"Datasets are read there as {paths.DATA_LAYOUTS}."
    pinned = pinned_data_root()
    if pinned:
        st.text_input("Data root", value=current, disabled=True, key="_lens_data_root_fixed")
        st.caption(f"Set for this server by {pinned} (the person running it). {layouts}")
        return
    roots = ", ".join(str(root) for root in allowed_roots())
    st.session_state[ROOT_PICK_KEY] = current
    st.text_input(
        "Data root",
        key=ROOT_PICK_KEY,
        on_change=_root_chosen,
        help="Where datasets live: a folder inside those this server lets the app read "
        f"({roots}). Remembered for every later session.",
    )
    message = st.session_state.pop(ROOT_MESSAGE_KEY, None)
    if message:
        st.error(message, icon=":material/folder_off:")
    st.caption(
        f"{layouts} The app may use a folder inside {roots}; the person running the server "
        f"allows more with `--allow-root DIR`. Remembered in {settings.settings_path()}."
    )


@st.cache_resource(max_entries=8, show_spinner="Loading the dataset…")
def _split(
    dataset: str, split: str, input_size: int | None, root: str, folder_signature: tuple
) -> data.Split:
    """A split as uint8 tensors in memory; shared by every session, never modified.
    `folder_signature` is part of the key only (see `_split_of`)."""
    from dashboard import data

    return data.load_split(dataset, split, data_root=root, input_size=input_size)


def _folder_signature(dataset: str) -> tuple:
    """An image folder's class folders and their modification times (`PATH/<class>` and
    `PATH/{train,test}/<class>`): a class added, removed or renamed, or an image added to or
    removed from a class, gives the folder a new cache key. A few stat calls; the images
    themselves are not listed (one rewritten in place under its name is read after a restart)."""
    if not dataset.startswith("folder:"):
        return ()
    root = Path(dataset.removeprefix("folder:"))
    folders = [root]
    for parent in (root, root / "train", root / "test"):
        with contextlib.suppress(OSError), os.scandir(parent) as entries:
            folders += sorted(Path(e.path) for e in entries if e.is_dir())
    signature = []
    for folder in folders:
        try:
            signature.append((str(folder), folder.stat().st_mtime_ns))
        except OSError:  # missing or unreadable: loading says why
            signature.append((str(folder), -1))
    return tuple(signature)


def _split_of(dataset: str, split: str, input_size: int | None, root: str) -> data.Split:
    """The cached split, loaded again when an image folder's classes or files changed."""
    return _split(dataset, split, input_size, root, _folder_signature(dataset))


def _input_size(selection: Selection, view: ModelView) -> int | None:
    """The side the dataset must be resized to for this model (None: as stored)."""
    from dashboard import data

    info = data.dataset_info(selection.dataset, data_root=data_root())
    channels, height, _ = view.input_shape
    if info.channels != channels:
        raise LensError(
            f"{view.label} takes {channels}-channel images but {info.title} has "
            f"{info.channels}: pick a dataset with {channels}-channel images"
        )
    return None if height == info.size else height


def load_data(selection: Selection, view: ModelView, split: str = "test") -> data.Split:
    """The selected dataset's split, sized for the selected model; mismatches are LensErrors."""
    return _split_of(selection.dataset, split, _input_size(selection, view), data_root())


def dataset_split(dataset: str, split: str, input_size: int | None = None) -> data.Split:
    """A dataset's split at its own size (or resized), cached and shared: never modify it."""
    return _split_of(dataset, split, input_size, data_root())


def session_alive_check():  # -> Callable[[], bool] | None
    """A check, safe to call from any thread, that this browser session is still connected
    (its tab open); None when not served by `streamlit run` (e.g. under AppTest)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not Runtime.exists():
        return None
    runtime, session_id = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session_id)


def data_id(split: data.Split) -> str:
    """A split's identity for cache keys: its pixels, labels, size, class names and
    normalization (dashboard.base.cache.split_identity), so two folders, uploads or data roots with
    the same name but other files never share an entry. Computed once per split."""
    from dashboard.base import cache

    return cache.entry_key("split", cache.split_identity(split))


def info_key(info: data.DatasetInfo) -> tuple:
    """What an image prepared for a dataset depends on (its size, channels, class names and
    normalization), for cache keys: a dataset's name alone does not fix them (a folder's
    normalization comes from its images)."""
    return (info.name, info.classes, info.channels, info.size, info.mean, info.std)


@contextlib.contextmanager
def progress_bar(text: str, unit: str = "images") -> Iterator[Callable[[int, int], None]]:
    """`with ui.progress_bar("Classifying") as progress:` → a callback `progress(done, total)`
    that draws a progress bar with counts on its first call (work served from a cache never
    calls it, so shows nothing) and removes the bar at the end of the block."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        fraction = min(1.0, done / total) if total else 1.0
        label = f"{text}: {done:,} of {total:,} {unit}"
        if bar is None:
            bar = st.progress(fraction, text=label)
        else:
            bar.progress(fraction, text=label)

    try:
        yield update
    finally:
        if bar is not None:
            bar.empty()


def predictions(selection: Selection, split: str = "test") -> metrics.Predictions:
    """The selected model's answers on the selected split: computed once per checkpoint content
    and split, ever, and kept on disk (metrics.cached_predict); a bar with counts shows while
    they are first computed."""
    from dashboard.analysis import metrics

    model, view = load_model(selection)
    images = load_data(selection, view, split)
    with progress_bar(f"Classifying the {split} images of {images.info.title}") as progress:
        return metrics.cached_predict(model, images, model_id(selection), progress=progress)


ACTIVATIONS_PAGE = "pages/5_Activations.py"


def open_in_activations(index: int) -> None:
    """Go to the Activations page with test image `index` picked (by index)."""
    from dashboard.analysis import inputs

    st.session_state[inputs.IMAGE_INDEX_KEY] = int(index)
    st.session_state["lens_image_split"] = "test"
    st.session_state[inputs.SOURCE_KEY] = inputs.SOURCE_TEST
    st.session_state["lens_image_mode"] = "by index"  # the Activations page's picker
    st.switch_page(ACTIVATIONS_PAGE, query_params={inputs.IMAGE_QUERY: str(index)})


# --------------------------------------------------------------------------- representations


@st.cache_resource(max_entries=8, show_spinner="Finding the layers…")
def _representation_layers(model_key: str, mtime: float, input_shape: tuple[int, ...]):
    from dashboard.analysis import representations

    model, _, _ = _load(model_key, mtime)
    return representations.projector_layers(model, input_shape)


def representation_layers(selection: Selection):  # -> (list[representations.Block], str)
    """The selected model's blocks in forward order (plus the last linear layer's input) and
    the projector's default layer; traced once per checkpoint and input shape."""
    _, view = load_model(selection)
    key = selection.model_key
    return _representation_layers(key, mtime_of(key), tuple(view.input_shape))


def layer_features(
    selection: Selection, blocks: Sequence, count: int | None, split: str = "test"
):  # -> (representations.Features, features key)
    """The selected model's features at `blocks` for a seeded sample of `count` images of the
    split (all when None), in one forward pass: computed once per model content, split,
    blocks and images, ever (the result cache); a bar with counts shows while they run."""
    from dashboard.analysis import representations

    model, view = load_model(selection)
    images = load_data(selection, view, split)
    chosen = representations.sample_indices(len(images), count)
    key = representations.features_key(model_id(selection), images, blocks, chosen, False)
    n = len(chosen)
    with progress_bar(f"Reading every layer of {n:,} {split} images") as progress:
        found = representations.cached_features(
            model,
            key["model"],
            images,
            blocks,
            indices=chosen,
            on_progress=lambda fraction, _: progress(round(fraction * n), n),
        )
    return found, key


def work_bar(text: str) -> contextlib.AbstractContextManager:
    """A `progress_bar` for work measured in per cent: → a (fraction, what) callback."""

    @contextlib.contextmanager
    def bar() -> Iterator[Callable[[float, str], None]]:
        with progress_bar(text, unit="%") as progress:
            yield lambda fraction, _: progress(round(100 * fraction), 100)

    return bar()


# --------------------------------------------------------------------------- presenting, sharing

PRESENT_KEY, PRESENT_QUERY = "lens_present", "present"
IMAGE_FORMAT_KEY = "lens_image_format"  # what plotly's camera button saves: png or svg
URL_ADOPTED_KEY = "_lens_url_adopted"  # (page, parameter) pairs already read from the URL
PRESENT_SCALE = 1.3  # figures with a fixed size grow by this much when presenting
# Presentation mode: larger type, less chrome, the widgets' labels still readable.
PRESENTATION_CSS = """<style>
html { font-size: 19px; }
.stMainBlockContainer, .block-container { padding-top: 2.2rem; max-width: 100%; }
header[data-testid="stHeader"] { background: transparent; }
h1 { font-size: 2.6rem !important; }
</style>"""


def presenting() -> bool:
    """Presentation mode: controls folded away, larger figures and type."""
    return bool(st.session_state.get(PRESENT_KEY, False))


def controls(label: str = "Controls", icon: str = ":material/tune:"):
    """Where a page puts its controls: folded into an expander when presenting."""
    if presenting():
        return st.expander(label, expanded=False, icon=icon)
    return st.container()


def _page_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return getattr(ctx, "page_script_hash", "") if ctx else ""


def url_bound(
    param: str,
    key: str,
    parse: Callable[[str], object | None] = str,
    show: Callable[[object], str | None] = str,
    refused: Callable[[str], None] | None = None,
) -> None:
    """Keep session-state `key` in the URL as ?param=, so a link reopens the same view.

    Call before the widget that owns `key` is drawn. On this page's first run in a session a
    value in the URL is adopted (when `parse` accepts it: it returns None for anything invalid,
    and `refused` hears of it); after that the current value is written back on every run
    (`show` → None leaves it out of the address)."""
    adopted = st.session_state.setdefault(URL_ADOPTED_KEY, set())
    if (_page_id(), param) not in adopted:
        adopted.add((_page_id(), param))
        raw = st.query_params.get(param)
        value = parse(raw) if raw is not None else None
        if value is not None:
            st.session_state[key] = value
        elif raw is not None:
            del st.query_params[param]  # nonsense in a link: the page's default instead
            if refused is not None:
                refused(raw)
    shown = show(st.session_state[key]) if st.session_state.get(key) is not None else None
    if shown is not None:
        st.query_params[param] = shown
    else:
        st.query_params.pop(param, None)


def one_of(options: Sequence[object]) -> Callable[[str], object | None]:
    """A `url_bound` parser accepting only the given options (matched by their text)."""
    by_text = {str(option): option for option in options}
    return by_text.get


def index_below(count: int) -> Callable[[str], int | None]:
    """A `url_bound` parser accepting a whole number in [0, count)."""

    def parse(text: str) -> int | None:
        return int(text) if text.isdigit() and int(text) < count else None

    return parse


def _present_figure(fig) -> dict:
    """A presentation-sized copy of a figure (cached figures are shared: never modified)."""
    spec = fig.to_dict()
    layout = spec.setdefault("layout", {})
    for side in ("width", "height"):
        if layout.get(side):
            layout[side] = round(layout[side] * PRESENT_SCALE)
    font = layout.setdefault("font", {})
    font["size"] = round(font.get("size", 12) * 1.25)
    return spec


def figure(fig, name: str, *, key: str | None = None, width: str = "stretch", **kwargs):
    """Draw a plotly figure with the downloads every figure offers: PNG or SVG from plotly's
    camera button (the sidebar picks which) and a self-contained HTML file. → the chart's
    selection event when `on_select` is given."""
    name = re.sub(r"[^\w.-]+", "-", name).strip("-") or "figure"  # a safe file name
    image_format = st.session_state.get(IMAGE_FORMAT_KEY, "png")
    config = {
        "displaylogo": False,
        "toImageButtonOptions": {"format": image_format, "filename": name, "scale": 2},
    }
    shown = _present_figure(fig) if presenting() and "on_select" not in kwargs else fig
    event = st.plotly_chart(shown, theme=None, width=width, key=key, config=config, **kwargs)
    if presenting():  # a clean screen; the camera button still saves PNG/SVG
        return event
    st.download_button(
        "HTML",
        # Built only when clicked: plotly.js is inlined, so the file opens offline.
        data=lambda: fig.to_html(include_plotlyjs=True, full_html=True),
        file_name=f"{name}.html",
        mime="text/html",
        on_click="ignore",
        icon=":material/download:",
        type="tertiary",
        key=f"html_{key or name}",
        help="Download this figure as an interactive HTML file (opens offline)",
    )
    return event


def share_controls() -> None:
    """The sidebar's presenting and sharing switches."""
    with st.expander("Present & share", icon=":material/co_present:"):
        st.toggle(
            "Presentation mode",
            key=keep(PRESENT_KEY, False),
            on_change=_present_changed,
            help="Folds the controls away and enlarges figures and type. Also ?present=1.",
        )
        st.radio(
            "Figure downloads (camera button)",
            ("png", "svg"),
            key=keep(IMAGE_FORMAT_KEY, "png"),
            on_change=store,
            args=(IMAGE_FORMAT_KEY,),
            horizontal=True,
            format_func=str.upper,
        )
        st.caption(
            "The address bar holds this view (page, model, dataset, layer, image, scale): "
            "copy it to reopen exactly this. Tables: the download icon above each table "
            "saves CSV."
        )


def keep(permanent: str, default: object) -> str:
    """→ the key for a widget whose value lives under `permanent` (widget keys vanish when
    their page is left; see the module docstring). Pair it with `on_change=ui.store`."""
    widget = "_" + permanent
    st.session_state[widget] = st.session_state.setdefault(permanent, default)
    return widget


def store(permanent: str) -> None:
    """on_change of a `keep` widget: copy its value to the permanent key."""
    st.session_state[permanent] = st.session_state["_" + permanent]


def _present_changed() -> None:
    store(PRESENT_KEY)
    if st.session_state.get(PRESENT_KEY):
        st.query_params[PRESENT_QUERY] = "1"
    else:
        st.query_params.pop(PRESENT_QUERY, None)


def table(data, column_config: dict | None = None, *, hide_index: bool = True, **kwargs):
    """`st.dataframe` with every column as wide as its header and widest value, so no number
    is ever cut (the grid alone sizes columns from their first rows). `data`: a DataFrame,
    a pandas Styler, or rows."""
    import pandas as pd

    from dashboard.base import tables

    frame = getattr(data, "data", data)  # a Styler holds its frame in .data
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    config = tables.fitted_config(frame, column_config, index=not hide_index)
    kwargs.setdefault("width", "stretch")
    return st.dataframe(data, column_config=config, hide_index=hide_index, **kwargs)


@dataclass(frozen=True)
class Metric:
    """One number of a row of metrics."""

    label: str
    value: str
    help: str | None = None
    delta: str | None = None


def metric_row(metrics: Sequence[Metric], *, border: bool = False) -> None:
    """Metrics side by side, each as wide as its label and value: a row that does not fit
    wraps onto the next line instead of cutting a number."""
    row = st.container(horizontal=True, gap="medium", horizontal_alignment="distribute")
    for metric in metrics:
        row.metric(
            metric.label,
            metric.value,
            metric.delta,
            help=metric.help,
            border=border,
            width="content",
        )


def layer_table(rows: list[dict]) -> None:
    """The home page's layer table: counts with thousands separators (still sortable); the
    formulas and flags are on the Shape flow page (all ten columns would not fit a laptop)."""
    counts = st.column_config.NumberColumn(format="localized")
    table(rows, {"Params": counts, "Mult-adds": counts, "Formula": None, "Flag": None})


# What Markdown and Streamlit's own syntax read in text: these characters always (code, emphasis,
# links and images, HTML and autolinks, strikethrough, $maths$, tables), ":" before a letter or
# "/" (:red[…], :material/…:, URLs), "_" at a word's edge (in snake_case it is literal), and
# headings, quotes, lists and rules at a line's start.
_MARKDOWN_ALWAYS = re.compile(r"([\\`*\[\]<>~$|])")
_MARKDOWN_COLON = re.compile(r":(?=[A-Za-z/])")
_MARKDOWN_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MARKDOWN_LINE_START = re.compile(r"^(\s*)([#+\-=])", re.MULTILINE)
_MARKDOWN_ORDERED = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)


def plain(text: object) -> str:
    """`text` from a file or folder (a card's name, notes, a class folder's name) made safe
    to put inside Markdown: whatever Markdown or Streamlit's own syntax would read (links,
    images, emphasis, :emoji: and :color[…] directives, $maths$) is backslash-escaped, so it
    shows as typed and `![x](http://host/…)` fetches nothing. Line breaks are kept."""
    shown = _MARKDOWN_ALWAYS.sub(r"\\\1", str(text))
    shown = _MARKDOWN_COLON.sub(r"\\:", shown)
    shown = _MARKDOWN_UNDERSCORE.sub(r"\\_", shown)
    shown = _MARKDOWN_LINE_START.sub(r"\1\\\2", shown)
    shown = _MARKDOWN_ORDERED.sub(r"\1\\\2", shown)
    return shown.replace("\n", "  \n")


def show_error(err: Exception) -> None:
    """A user-facing failure, in one line, where the content would have been. The message
    may quote names from files, so it is shown as text, never read as Markdown."""
    st.error(plain(err), icon=":material/warning:")


# --------------------------------------------------------------------------- the HTML report


@st.cache_data(max_entries=4, show_spinner=False)
def _report_html(
    model_key: str, mtime: float, content: str, split_content: str, _images: data.Split
) -> str:
    """The report of a model (choice, files' mtime, weights' content) on a test split (by its
    content: pixels, labels, class names, normalization)."""
    from dashboard import report
    from dashboard.analysis import metrics

    model, view, _ = _load(model_key, mtime)
    pred = metrics.cached_predict(model, _images, content)
    flow = shape_flow(model_key, tuple(_images.images.shape[1:]), mtime)
    facts = report.ModelFacts(view.label, view.architecture, view.untrained, view.card)
    return report.build_report(model, facts, _images, pred, flow=flow)


def report_button(selection: Selection) -> None:
    """'Build HTML report': one click builds the selected model's report (card, shape flow,
    curves, filters, activations, confusion matrix, per-class report) and downloads it."""
    from dashboard import report

    try:  # mismatches show here; the build itself runs on Streamlit's download thread
        _, view = load_model(selection)
        size = _input_size(selection, view)
    except LensError as err:
        show_error(err)
        return
    key, mtime, root = selection.model_key, mtime_of(selection.model_key), data_root()
    facts = report.ModelFacts(view.label, view.architecture, view.untrained, view.card)

    def build() -> str:  # called on click, outside the script run: no session state here
        from dashboard.base import cache

        try:
            split = _split_of(selection.dataset, "test", size, root)
            identity = json.dumps(cache.split_identity(split))
            return _report_html(key, mtime, model_id(selection), identity, split)
        except LensError as err:
            return report.error_page(view.label, str(err))

    left, right = st.columns([1, 3], vertical_alignment="center")
    left.download_button(
        "Build HTML report",
        data=build,
        file_name=report.file_name(facts),
        mime="text/html",
        on_click="ignore",
        icon=":material/description:",
        key="lens_report",
        help="One self-contained file to send or open offline",
    )
    right.caption(
        f"This model on the {plain(selection.dataset)} test split in one HTML file (about 6 MB, "
        "opens offline): card, shape flow, training curves, first-layer filters, activations, "
        "confusion matrix and per-class report. The first build classifies every test image."
    )


# --------------------------------------------------------------------------- runs overlaid


@st.cache_resource(max_entries=128, show_spinner="Drawing…")  # shared by every page and session
def cached_figure(key: tuple, _build: Callable[[], object]):
    """A figure built once per `key` (everything it depends on), shared read-only: plotly
    spends tens of milliseconds building each, which a widget change should not pay again."""
    return _build()


def held(permanent: str, default: object) -> dict:
    """Widget arguments (key, on_change, args) keeping its value under `permanent`, so it is
    the same when the user comes back from another page (see `keep`):
    `st.number_input("Epochs", **ui.held("train_epochs", 5))`."""
    return {"key": keep(permanent, default), "on_change": store, "args": (permanent,)}


def kept(permanent: str, options: Sequence[object], default: object) -> dict:
    """`held`, for a choice among `options`: a stored value no longer among them falls back to
    `default`, and a stored list keeps the items still offered."""
    value = st.session_state.get(permanent, default)
    if isinstance(value, list):
        value = [v for v in value if v in options]
    elif value not in options:
        value = default
    st.session_state[permanent] = value
    return held(permanent, value)


@st.cache_resource(max_entries=4, show_spinner=False)
def _saved_checkpoints(folders: tuple[str, ...], signature: tuple) -> tuple[list, dict]:
    from dashboard.models import checkpoints
    from dashboard.training import compare

    cards = [card for folder in folders for card in checkpoints.list_checkpoints(Path(folder))]
    return cards, compare.entries(cards, [])


def saved_checkpoints():  # -> (list[checkpoints.Card], dict[str, compare.Compared])
    """The saved checkpoints' cards (trained/, then runs/) and their entries for the overlay:
    read again only when a card is added, removed or rewritten; shared read-only."""
    from dashboard.training import compare

    folders = compare.saved_folders()
    return _saved_checkpoints(tuple(map(str, folders)), compare.saved_signature(folders))


def runs_overlay(
    session_runs: Sequence, prefix: str, *, default_keys: Callable[[dict], list] | None = None
) -> None:
    """Training curves of this session's runs and of the saved checkpoints overlaid, beside
    their hyper-parameters, those that differ first. The choices live under `{prefix}_runs`
    and `{prefix}_curve` (each page its own); the first overlay is `default_keys(available)`
    (none), and a run trained since the page was last drawn joins in (`{prefix}_seen`)."""
    from dashboard import figures
    from dashboard.training import compare

    available = {**compare.entries([], session_runs), **saved_checkpoints()[1]}
    if not available:
        st.info("Curves of this session's runs and of saved checkpoints with a history show here.")
        return
    runs_key, curve_key, seen_key = f"{prefix}_runs", f"{prefix}_curve", f"{prefix}_seen"
    default = default_keys(available) if default_keys else []
    stored, seen = st.session_state.get(runs_key), st.session_state.get(seen_key, set())
    chosen, st.session_state[seen_key] = compare.overlay_choice(stored, default, available, seen)
    st.session_state[runs_key] = chosen
    with controls("Runs to compare"):
        # Every run as a pill (click to add or remove): they wrap onto more lines, where a
        # multiselect's chips ran out of its box.
        keys = st.pills(
            "Runs to overlay",
            list(available),
            selection_mode="multi",
            format_func=lambda key: plain(available[key].label),
            help="Saved checkpoints (trained/, runs/) and the runs trained in this session.",
            **kept(runs_key, list(available), chosen),
        )
        choices = list(compare.CURVE_CHOICES)
        curve = st.columns([1, 2])[0].selectbox(
            "Curve", choices, **kept(curve_key, choices, "test accuracy")
        )
    if not keys:
        st.info("Pick one or more runs to overlay their curves.")
        return
    picked = [available[key] for key in keys]
    key = ("curves", curve, tuple((entry.key, entry.version) for entry in picked))
    metric, splits = compare.CURVE_CHOICES[curve]
    fig = cached_figure(
        key,
        lambda: figures.curve_overlay(
            [compare.curve(entry, curve) for entry in picked],
            metric=metric,
            title=curve.capitalize(),
            one_split=len(splits) == 1,
        ),
    )
    figure(fig, f"curves-{curve}", key=f"{prefix}_curves")
    _hyperparameter_table(compare.hyperparameter_table([entry.row for entry in picked]))


SHORT_HEADERS = {"Test acc. (%)": "Test %"}  # narrower headers where the table is narrow


def _hyperparameter_table(found: tuple[pd.DataFrame, list[str]]) -> None:
    """One row per run with the settings that differ between them (marked ≠); the settings
    they share in one line below, so the table fits its width instead of scrolling."""
    import numpy as np
    import pandas as pd

    frame, differing = found
    if not differing:  # one run, or runs set alike: every setting in the table
        table(frame, hide_index=False, height=min(38 + 35 * len(frame), 460))
        st.caption("Pick two or more runs: the settings that differ between them show here.")
        return
    marked = {
        column: st.column_config.Column(
            f"{SHORT_HEADERS.get(column, column)} ≠", help="differs between the chosen runs"
        )
        for column in differing
    }
    table(frame[differing], marked, hide_index=False, height=min(38 + 35 * len(frame), 460))
    same = frame.drop(columns=differing).iloc[0]
    counted = (int, np.integer)
    shown = {
        name: "—"
        if pd.isna(value)
        else f"{value:,}"
        if isinstance(value, counted) and not isinstance(value, bool)
        else plain(value)
        for name, value in same.items()
    }
    shared = " · ".join(f"{name} **{value}**" for name, value in shown.items())
    st.caption(f"What differs between these runs, marked ≠. The same for all: {shared}.")
