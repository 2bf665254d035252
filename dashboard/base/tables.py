"""Column widths that fit every cell of a table as Streamlit draws it.

`st.dataframe` draws with glide-data-grid, which sizes a column from its first few rows only:
a later, longer value is cut at the column's edge with no ellipsis (AlexNet's classifier.1 has
37,752,832 parameters, and the grid read "7,752,832"). So every column gets a width in pixels
measured from all its values as the grid will show them, in its font (Source Sans, 14 px) with
its cell padding. Widths are estimated from per-character advances measured in Chromium,
rounded up, so a column may be a few pixels wider than needed, never narrower.

Pure functions of a DataFrame and its column formats: no Streamlit here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

FONT_PX = 14  # the grid's base and header font size
PADDING_PX = 8  # on each side of a cell's text
SLACK_PX = 2  # rounding, and the grid's one-pixel borders
PROGRESS_BAR_PX = 60  # a progress column's bar beside its number
CHECKBOX_PX = 16
MAX_COLUMN_PX = 640  # a longer text is cut with an ellipsis rather than fill the screen

# Advances in em of Source Sans (Streamlit's font), measured with canvas measureText in
# Chromium and rounded up; characters not listed take the widest lowercase letter's, and
# characters outside Latin (CJK, emoji) a full em.
_ADVANCES = {
    **dict.fromkeys(" ", 0.2),
    **dict.fromkeys("',.:;ijl|·", 0.26),
    **dict.fromkeys("!If", 0.3),
    **dict.fromkeys("()-/[\\]rt{}°", 0.35),
    **dict.fromkeys("⌊⌋", 0.4),
    **dict.fromkeys('"*?sxz', 0.45),
    **dict.fromkeys("0123456789#$+<=>FJLY^_cekvy~×−≠–≤≥", 0.5),
    **dict.fromkeys("AESTVXZ`abdghnopqu✗", 0.56),
    **dict.fromkeys("&BCDGKPR→✓µ", 0.62),
    **dict.fromkeys("HNOQU", 0.67),
    **dict.fromkeys("Mw", 0.73),
    **dict.fromkeys("W—", 0.8),
    **dict.fromkeys("%@m", 0.86),
    **dict.fromkeys("…", 0.95),
}
_LATIN_DEFAULT = 0.67  # the widest of the lowercase letters and digits rounded up
_WIDE_DEFAULT = 1.0


def text_width(text: str, font_px: float = FONT_PX) -> float:
    """Pixels `text` takes in the grid's font (an upper estimate)."""
    em = sum(
        _ADVANCES.get(char, _LATIN_DEFAULT if ord(char) < 0x250 else _WIDE_DEFAULT) for char in text
    )
    return em * font_px


def _printf(value: float, fmt: str) -> str:
    """A printf-style format as Streamlit applies it ("%.3f", "%+.1f", "%.1f %%", "%d")."""
    try:
        return fmt % value
    except (TypeError, ValueError):
        return str(value)


def shown_text(value: Any, fmt: str | None = None) -> str:
    """How the grid shows one value under a NumberColumn/ProgressColumn `format` (None: the
    default, whole numbers plain and fractions with up to four decimals)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if fmt == "localized":
            return f"{value:,}" if float(value).is_integer() else f"{value:,.4f}"
        if fmt:
            return _printf(value, fmt)
        return str(value) if float(value).is_integer() else f"{value:.4f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def column_width(
    header: str, values: Iterable[Any], fmt: str | None = None, *, kind: str = ""
) -> int:
    """Pixels a column needs to show its header and every value whole."""
    if kind == "checkbox":
        widest = CHECKBOX_PX
    else:
        widest = max((text_width(shown_text(v, fmt)) for v in values), default=0.0)
        if kind == "progress":
            widest += PROGRESS_BAR_PX
    needed = max(widest, text_width(header)) + 2 * PADDING_PX + SLACK_PX
    return min(math.ceil(needed), MAX_COLUMN_PX)


def fitted_config(
    frame: pd.DataFrame, column_config: Mapping[str, Any] | None = None, *, index: bool = False
) -> dict[str, Any]:
    """`column_config` with a pixel width for every column (and the index when shown) that
    has no width in pixels: its header and widest value, formatted as that column's config
    says. Named widths ("small", "medium") are replaced: they are guesses that cut numbers."""
    fitted: dict[str, Any] = {}
    for name, config in (column_config or {}).items():
        fitted[str(name)] = {"label": config} if isinstance(config, str) else config
    columns = [(str(c), frame[c]) for c in frame.columns]
    if index:
        columns.insert(0, ("_index", frame.index.to_series()))
    for key, values in columns:
        config = fitted.get(key) or {}
        if (key in fitted and fitted[key] is None) or isinstance(config.get("width"), int):
            continue  # a hidden column, or one sized by its page
        type_config = config.get("type_config") or {}
        kind = type_config.get("type") or ("checkbox" if values.dtype == bool else "")
        header = config.get("label") or ("" if key == "_index" else key)
        width = column_width(header, values, type_config.get("format"), kind=kind)
        fitted[key] = {**config, "width": width}
    return fitted
