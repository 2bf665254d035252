"""Streamlit glue: the shared sidebar, session-state keys and cached loaders.

The only module that imports Streamlit. Pages call `sidebar()` first; it draws the model and
dataset choices and keeps them in session state so they hold across pages (the "dummy key"
pattern from Streamlit's multipage docs: a widget's own key is dropped when its page is left, so
the value lives under a permanent key and is copied into the widget key before each draw).
Loaders are cached by strings (path + modification time), never by objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import models, paths, probe
from dashboard.errors import LensError

MODEL_KEY = "lens_model"  # permanent session-state keys
DATASET_KEY = "lens_dataset"
FOLDER_KEY = "lens_folder"
ARCH_PREFIX = "arch:"
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
        return self.model_key.removeprefix(ARCH_PREFIX)


def setup_page(title: str, icon: str = "🔎") -> None:
    """The first Streamlit call of every page."""
    st.set_page_config(page_title=f"{title} · CNN Lens", page_icon=icon, layout="wide")


def _checkpoint_keys() -> list[str]:
    """Shipped checkpoints, best first within each dataset, MNIST first."""
    from dashboard import checkpoints

    cards = checkpoints.list_checkpoints(paths.TRAINED_DIR)
    return [CKPT_PREFIX + str(c.path.relative_to(paths.REPO_ROOT)) for c in cards]


def _card_for(model_key: str):  # -> checkpoints.Card (imported lazily: keeps start-up fast)
    from dashboard import checkpoints

    return checkpoints.read_card(paths.REPO_ROOT / model_key.removeprefix(CKPT_PREFIX))


def model_label(model_key: str) -> str:
    """How a choice reads in the sidebar: shipped checkpoints with accuracy, untrained marked."""
    if model_key.startswith(ARCH_PREFIX):
        return f"{model_key.removeprefix(ARCH_PREFIX)} (untrained)"
    try:
        card = _card_for(model_key)
    except LensError:
        return model_key.removeprefix(CKPT_PREFIX)
    accuracy = card.metrics.get("test_accuracy")
    shown = f" — {accuracy:.2%} on {card.dataset}" if accuracy is not None else ""
    return f"{card.name}{shown}"


def model_choices() -> list[str]:
    try:
        shipped = _checkpoint_keys()
    except (ImportError, LensError):
        shipped = []
    return shipped + [ARCH_PREFIX + name for name in models.model_names()]


def _persist(permanent: str, widget: str) -> None:
    st.session_state[permanent] = st.session_state[widget]


def _persistent_selectbox(label: str, options: list[str], permanent: str, **kwargs) -> str:
    """A selectbox whose value survives page switches (see the module docstring)."""
    widget = "_" + permanent
    if st.session_state.get(permanent) not in options:
        st.session_state[permanent] = options[0]
    st.session_state[widget] = st.session_state[permanent]
    st.selectbox(label, options, key=widget, on_change=_persist, args=(permanent, widget), **kwargs)
    return st.session_state[permanent]


def sidebar() -> Selection:
    """Draw the shared sidebar (model, dataset) and return the current selection."""
    with st.sidebar:
        st.markdown("### CNN Lens")
        model_key = _persistent_selectbox(
            "Model",
            model_choices(),
            MODEL_KEY,
            format_func=model_label,
            help="A shipped checkpoint from trained/, or an architecture with random weights.",
        )
        datasets = [*REGISTRY_DATASETS, FOLDER_CHOICE]
        dataset = _persistent_selectbox("Dataset", datasets, DATASET_KEY)
        if dataset == FOLDER_CHOICE:
            widget = "_" + FOLDER_KEY
            st.session_state[widget] = st.session_state.get(FOLDER_KEY, "")
            st.text_input(
                "Image folder",
                key=widget,
                on_change=_persist,
                args=(FOLDER_KEY, widget),
                placeholder="/path/to/images (one subfolder per class)",
            )
            dataset = "folder:" + st.session_state.get(FOLDER_KEY, "")
    return Selection(model_key=model_key, dataset=dataset)


@st.cache_resource(max_entries=8, show_spinner="Building the model…")
def _architecture(name: str) -> object:
    model = models.build_model(name)
    model.eval()
    return model


def input_shape_for(selection: Selection) -> tuple[int, int, int]:
    if selection.is_checkpoint:
        return tuple(_card_for(selection.model_key).input_shape)  # type: ignore[return-value]
    return models.model_info(selection.architecture).input_shape


@st.cache_data(max_entries=32, show_spinner="Tracing shapes…")
def shape_flow(model_key: str, input_shape: tuple[int, int, int], _mtime: float) -> probe.ShapeFlow:
    """Shape flow for a sidebar choice; `_mtime` invalidates it when a checkpoint changes."""
    from dashboard import summary

    if model_key.startswith(CKPT_PREFIX):
        model, _, _ = summary.model_for(str(paths.REPO_ROOT / model_key.removeprefix(CKPT_PREFIX)))
    else:
        model = _architecture(model_key.removeprefix(ARCH_PREFIX))
    return probe.shape_flow(model, input_shape)


def mtime_of(model_key: str) -> float:
    if not model_key.startswith(CKPT_PREFIX):
        return 0.0
    path = Path(paths.REPO_ROOT / model_key.removeprefix(CKPT_PREFIX))
    return path.stat().st_mtime if path.exists() else 0.0


def layer_table(rows: list[dict]) -> None:
    """The shape-flow table with counts shown with thousands separators (still sortable)."""
    counts = st.column_config.NumberColumn(format="localized")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={"Params": counts, "Mult-adds": counts},
    )


def show_error(err: Exception) -> None:
    """A user-facing failure, in one line, where the content would have been."""
    st.error(str(err), icon="⚠️")
