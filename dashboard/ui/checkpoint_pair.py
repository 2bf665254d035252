"""Two checkpoints of one architecture side by side (the Compare page): which saved checkpoints
can stand beside a model, how far apart each layer's weights are, and one image through each.
Cached by model keys and modification times; models, tensors and builders ride unhashed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from dashboard.base.errors import LensError
from dashboard.ui.choices import (
    CKPT_PREFIX,
    Selection,
    checkpoint_key,
    checkpoint_path,
    model_label,
)
from dashboard.ui.loaders import ModelView, mtime_of
from dashboard.ui.overlay import saved_checkpoints
from dashboard.ui.show import plain, table
from dashboard.ui.state import EXTRA_MODELS_KEY

if TYPE_CHECKING:
    from dashboard.training import compare


def partner_candidates(key_a: str) -> list[str]:
    """Every checkpoint that might stand beside model A: the saved ones and this session's
    uploads, A itself left out."""
    keys = [checkpoint_key(card.path) for card in saved_checkpoints()[0]]
    keys += [k for k in st.session_state.get(EXTRA_MODELS_KEY, []) if k not in keys]
    return [k for k in keys if k.startswith(CKPT_PREFIX) and k != key_a]


@st.cache_data(max_entries=16, show_spinner="Finding checkpoints of the same architecture…")
def pairing(
    key_a: str, mtime_a: float, architecture: str, candidates: tuple, _model_a
) -> tuple[compare.Partners, dict[str, str], dict[str, str]]:
    """Which `candidates` ((key, mtime), …) can stand beside model A, with each candidate's
    architecture and its label in the sidebar. Only same-architecture files are loaded."""
    from dashboard.models import checkpoints
    from dashboard.training import compare

    architectures = {}
    for key, _ in candidates:
        try:
            architectures[key] = Selection(key, "").architecture  # from the card
        except LensError:
            architectures[key] = ""

    def shapes_of(key: str):
        return compare.state_shapes(checkpoints.load_checkpoint(checkpoint_path(key)).model)

    found = compare.partners(architecture, compare.state_shapes(_model_a), architectures, shapes_of)
    return found, architectures, {key: model_label(key) for key in found.comparable}


def partners_of(key_a: str, architecture: str, model_a, keys: list[str]):
    """`pairing` of model A with the checkpoints `keys`, at their files' current versions."""
    candidates = tuple((k, mtime_of(k)) for k in keys)
    return pairing(key_a, mtime_of(key_a), architecture, candidates, model_a)


@st.cache_data(max_entries=16, show_spinner="Measuring how far apart the weights are…")
def distances(key_a: str, mtime_a: float, key_b: str, mtime_b: float, _a, _b) -> list:
    from dashboard.training import compare

    return compare.layer_distances(_a, _b)


@st.cache_resource(max_entries=32, show_spinner="Running the image through the model…")
def passed(model_key: str, mtime: float, input_key: str, _model, _x) -> compare.Forward:
    """One image through one model; shared read-only (no copy of the maps on every rerun)."""
    from dashboard.training import compare

    return compare.forward(_model, _x)


def short_name(view: ModelView) -> str:
    """A model's name for titles: the checkpoint's name, else the sidebar's label."""
    card = view.card
    return getattr(card, "name", "") or view.label


def classes_for(view: ModelView, outputs: int, info) -> tuple[str, ...]:
    """The model's own class names when they fit its outputs, else the dataset's."""
    return view.classes if len(view.classes) == outputs else tuple(info.classes)


def weights_table(rows: list[compare.LayerDistance], note: str) -> None:
    """How far apart A's and B's weights are, one row per layer."""
    st.subheader("Weights, layer by layer")
    table(
        [
            {
                "Layer": r.layer,
                "Kind": r.kind,
                "Shape": "×".join(map(str, r.shape)),
                "‖A‖": r.norm_a,
                "‖B‖": r.norm_b,
                "‖B − A‖": r.distance,
                "Change": 100 * r.relative,
                "Cosine": r.cosine,
            }
            for r in rows
        ],
        column_config={
            "‖A‖": st.column_config.NumberColumn(format="%.3f"),
            "‖B‖": st.column_config.NumberColumn(format="%.3f"),
            "‖B − A‖": st.column_config.NumberColumn(format="%.3f"),
            "Change": st.column_config.NumberColumn(
                "‖B − A‖ / ‖A‖", format="%.1f %%", help="How much of A's weights B changes"
            ),
            "Cosine": st.column_config.ProgressColumn(
                "cos(A, B)",
                min_value=-1.0,
                max_value=1.0,
                format="%.3f",
                help="⟨A, B⟩ / (‖A‖ ‖B‖): 1 = the same direction, 0 = unrelated",
            ),
        },
    )
    st.caption(f"Each layer's weight tensor (bias left out) as one long vector. {plain(note)}")
