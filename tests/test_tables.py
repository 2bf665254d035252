"""Column widths from every value as the grid shows it (the grid itself reads the first rows
only): formats applied, headers counted, widths the page set kept."""

from __future__ import annotations

import pandas as pd
import pytest
import streamlit as st

from dashboard.base import tables


def test_a_late_long_number_widens_its_column() -> None:
    """AlexNet's layer table: 37,752,832 parameters in row 18, after short counts."""
    params = [0] * 17 + [37_752_832, 4096]
    frame = pd.DataFrame({"Layer": [f"features.{i}" for i in range(19)], "Params": params})
    counts = st.column_config.NumberColumn(format="localized")
    fitted = tables.fitted_config(frame, {"Params": counts})
    needed = tables.text_width("37,752,832") + 2 * tables.PADDING_PX
    assert fitted["Params"]["width"] >= needed
    assert fitted["Params"]["type_config"]["format"] == "localized"  # the config is kept
    assert fitted["Layer"]["width"] >= tables.text_width("features.18") + 2 * tables.PADDING_PX


def test_formats_headers_named_and_set_widths() -> None:
    frame = pd.DataFrame({"F1": [0.99312, 0.5], "A very long header": [1, 2], "Hidden": [1, 2]})
    config = {
        "F1": st.column_config.NumberColumn(format="%.3f", width="small"),
        "A very long header": st.column_config.Column(width=333),
        "Hidden": None,
    }
    fitted = tables.fitted_config(frame, config)
    assert tables.shown_text(0.99312, "%.3f") == "0.993"
    assert fitted["F1"]["width"] == pytest.approx(
        tables.text_width("0.993") + 2 * tables.PADDING_PX + tables.SLACK_PX, abs=1
    )  # "small" (75 px) replaced by what the values need
    assert fitted["A very long header"]["width"] == 333  # a page's own pixel width stays
    assert fitted["Hidden"] is None  # a hidden column stays hidden


def test_the_index_and_progress_bars_are_counted() -> None:
    frame = pd.DataFrame({"Recall": [0.5, 1.0]}, index=pd.Index(["cat", "a long class name"]))
    bar = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f")
    fitted = tables.fitted_config(frame, {"Recall": bar}, index=True)
    assert fitted["_index"]["width"] >= tables.text_width("a long class name") + 16
    assert fitted["Recall"]["width"] >= tables.text_width("1.000") + tables.PROGRESS_BAR_PX + 16


def test_text_widths_are_never_under_what_chromium_measured() -> None:
    """Source Sans at 14 px, measured with canvas measureText in Chromium: the estimate may be
    a little wide, never narrow."""
    measured = {"37,752,832": 62.64, "AdaptiveAvgPool2d": 114.2, "whole input": 70.0}
    for text, pixels in measured.items():
        assert pixels <= tables.text_width(text) <= pixels * 1.15, text
