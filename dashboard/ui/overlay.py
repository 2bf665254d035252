"""Training curves of runs overlaid (this session's and the saved checkpoints') beside the
hyper-parameters that set them apart; shared by the Train and Compare pages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from dashboard.ui.present import controls
from dashboard.ui.show import cached_figure, figure, plain, table
from dashboard.ui.state import kept

if TYPE_CHECKING:  # torch-heavy modules load on first use: the home page paints before them
    import pandas as pd


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
