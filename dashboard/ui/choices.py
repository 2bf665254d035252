"""The models the sidebar offers and the one selected: choice keys (ckpt:, arch:, zoo:), their
labels, the checkpoint file behind a key, and selecting a model (which brings its dataset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

import dashboard.ui.state as state
from dashboard.base import paths
from dashboard.base.errors import LensError

# What a choice key starts with
ARCH_PREFIX = "arch:"  # an architecture with fresh random weights
ZOO_PREFIX = "zoo:"  # a torchvision model with its ImageNet weights
CKPT_PREFIX = "ckpt:"


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
            return card_for(self.model_key).architecture
        return self.model_key.removeprefix(ARCH_PREFIX).removeprefix(ZOO_PREFIX)


def checkpoint_key(path: Path) -> str:
    """The choice key of a checkpoint file: relative to the repository when inside it."""
    path = path.resolve()
    try:
        return CKPT_PREFIX + str(path.relative_to(paths.REPO_ROOT))
    except ValueError:
        return CKPT_PREFIX + str(path)


def checkpoint_keys(folder: Path) -> list[str]:
    """Checkpoints with cards in a folder, best first within each dataset, MNIST first."""
    from dashboard.models import checkpoints

    return [checkpoint_key(card.path) for card in checkpoints.list_checkpoints(folder)]


def add_model_choice(model_key: str) -> None:
    """Offer an extra choice (an uploaded file, a zoo model) in this session's sidebar."""
    extra = st.session_state.setdefault(state.EXTRA_MODELS_KEY, [])
    if model_key not in extra:
        extra.append(model_key)


def card_for(model_key: str):  # -> checkpoints.Card (imported lazily: keeps start-up fast)
    from dashboard.models import checkpoints

    return checkpoints.read_card(checkpoint_path(model_key))


def model_label(model_key: str) -> str:
    """How a choice reads in the sidebar: shipped checkpoints with accuracy, untrained marked."""
    if model_key.startswith(ARCH_PREFIX):
        return f"{model_key.removeprefix(ARCH_PREFIX)} (untrained)"
    if model_key.startswith(ZOO_PREFIX):
        return f"{model_key.removeprefix(ZOO_PREFIX)} (ImageNet weights)"
    try:
        card = card_for(model_key)
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

    saved = checkpoint_keys(paths.TRAINED_DIR) + checkpoint_keys(paths.RUNS_DIR)
    extra = [k for k in st.session_state.get(state.EXTRA_MODELS_KEY, []) if k not in saved]
    return saved + extra + [ARCH_PREFIX + name for name in models.model_names()]


def select_model(model_key: str) -> str:
    """Make `model_key` the selection on every page. A checkpoint brings its dataset along: the
    one its card names, else the one its shape says (an upload); → a note on how that dataset
    was chosen when it is a guess ("" otherwise)."""
    st.session_state[state.MODEL_KEY] = model_key
    st.session_state.pop(state.LINK_NOTE_KEY, None)
    st.session_state.pop(state.DATASET_NOTE_KEY, None)
    if not model_key.startswith(CKPT_PREFIX):
        return ""
    from dashboard.models import uploads

    try:
        dataset, note = uploads.dataset_of(card_for(model_key))
    except LensError:
        return ""
    if dataset.startswith("folder:"):
        st.session_state[state.FOLDER_KEY] = dataset.removeprefix("folder:")
        st.session_state[state.DATASET_KEY] = state.FOLDER_CHOICE
    elif dataset in state.REGISTRY_DATASETS:
        st.session_state[state.DATASET_KEY] = dataset
    if note:
        st.session_state[state.DATASET_NOTE_KEY] = (model_key, dataset, note)
    return note


def checkpoint_path(model_key: str) -> Path:
    path = Path(model_key.removeprefix(CKPT_PREFIX))
    return path if path.is_absolute() else paths.REPO_ROOT / path
