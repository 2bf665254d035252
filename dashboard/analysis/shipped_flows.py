"""The shipped checkpoints' shape-flow tables, read without importing torch.

The home page shows the selected model's layer table. Working it out needs the model, so torch
(seconds to import on a cold start); for the checkpoints in `trained/` it is known in advance.
`trained/flows/shape-flows.json` holds, for each of them in the sidebar's order, its model key,
the SHA-256 of its card, its sidebar label and its table (totals and the rows of
`summary.display_rows`), traced from the real model by `python tools/shape_flows.py`. A stored
table is used only while the card is byte for byte the one it was traced from; the tests trace
every shipped checkpoint again and compare, and check the shapes and parameter counts against a
plain forward pass.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboard.base import paths

INDEX = paths.TRAINED_DIR / "flows" / "shape-flows.json"
FORMAT = "cnn-lens-shape-flows/1"


@dataclass(frozen=True)
class FlowTable:
    """What the home page shows of a model's shape flow."""

    label: str  # the model as the sidebar names it
    input: str  # "1×28×28"
    output: str
    params: int
    mult_adds: int  # per image
    rows: list[dict[str, Any]]  # summary.display_rows
    broken: str  # "" or "LAYER breaks: REASON"


def card_digest(model_key: str) -> str | None:
    card = paths.REPO_ROOT / Path(model_key.removeprefix("ckpt:")).with_suffix(".json")
    try:
        return hashlib.sha256(card.read_bytes()).hexdigest()
    except OSError:
        return None


@functools.cache
def _index(mtime_ns: int) -> dict[str, Any]:
    return json.loads(INDEX.read_text(encoding="utf-8"))


def _entries() -> list[dict[str, Any]]:
    try:
        index = _index(INDEX.stat().st_mtime_ns)
    except (OSError, ValueError):
        return []
    return index.get("checkpoints", []) if index.get("format") == FORMAT else []


def default_key() -> str | None:
    """The sidebar's first choice (the first shipped checkpoint), when the index knows it."""
    entries = _entries()
    return entries[0]["model_key"] if entries else None


def key_for(name: str) -> str | None:
    """A link's `?model=` value (a shipped checkpoint's name, or its key) → its model key."""
    for entry in _entries():
        if name in (entry["model_key"], entry["name"]):
            return entry["model_key"]
    return None


def stored_table(model_key: str) -> FlowTable | None:
    """The stored table of a shipped checkpoint whose card is unchanged, else None."""
    for entry in _entries():
        if entry["model_key"] == model_key:
            if entry["card_sha256"] != card_digest(model_key):
                return None  # the card changed since it was traced: trace it again
            try:
                return FlowTable(**entry["table"])
            except TypeError:  # a table of another layout: traced instead
                return None
    return None


# --------------------------------------------------------------------------- tracing (torch)


def traced_table(flow: Any, label: str) -> FlowTable:
    """The table of a probe.ShapeFlow (imports torch, through summary)."""
    from dashboard.analysis import summary

    broken = f"{flow.broken.layer} breaks: {flow.broken.reason}" if flow.broken else ""
    return FlowTable(
        label=label,
        input=summary.shape_text(flow.input_shape),
        output=summary.shape_text(flow.output_shape),
        params=flow.params_total,
        mult_adds=flow.mult_adds,
        rows=summary.display_rows(flow),
        broken=broken,
    )
