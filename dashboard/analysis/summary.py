"""The shape-flow table as text, JSON and rows: the display side of `probe.shape_flow`.

Numbers are computed in `probe`; this module only chooses what to show and how (torchinfo's split
between statistics and formatting). The command line, the pages and the HTML report all use it.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dashboard import models
from dashboard.analysis import probe
from dashboard.base.errors import LensError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".json")


def shape_text(shape: tuple[int, ...] | None) -> str:
    """(64, 27, 27) → '64×27×27'."""
    return "—" if shape is None else "×".join(str(d) for d in shape)


def count_text(n: int) -> str:
    """467200 → '467,200'; counts of a million and more in short form: '1.81 G', '133.0 M'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:,.2f} G"
    if n >= 1_000_000:
        return f"{n / 1e6:,.1f} M"
    return f"{n:,}"


def pair_text(pair: tuple[int, int] | None) -> str:
    """(5, 5) → '5', (3, 1) → '3×1'; None → ''."""
    if pair is None:
        return ""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def receptive_text(record: probe.LayerRecord) -> str:
    """'14×14', or 'whole input' once spatial structure is gone (after flatten / global pooling)."""
    if record.receptive_field is None:
        return "whole input"
    side = record.receptive_field
    return f"{side}×{side}"


def architecture_facts(model: nn.Module) -> dict[str, Any]:
    """print(model), its number of leaf layers, the leaves by kind (most first), and its
    parameters, all and trainable."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return {
        "text": str(model),
        "layers": len(leaves),
        "kinds": Counter(type(m).__name__ for m in leaves).most_common(),
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def model_for(
    target: str, *, model_name: str | None = None
) -> tuple[nn.Module, tuple[int, int, int], str]:
    """A registry name or checkpoint file → (model, its input shape, a title for the table).

    For a checkpoint only its card (or `model_name` for a bare state dict) is read: shapes do
    not depend on the weights, so `summary` works without loading them. A card that is invalid
    cannot say the shapes: then safetensors weights (never a pickle) are read for them.
    """
    path = Path(target)
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists():
        from dashboard.models import checkpoints

        if not path.exists() and not path.with_suffix(".json").exists():
            raise LensError(f"no such checkpoint file: {target}")
        try:
            card = checkpoints.read_card(path)
        except LensError:
            if model_name is None:
                raise
            return model_for(model_name)[0], models.model_info(model_name).input_shape, path.name
        if card.problem:
            if card.path is None or card.path.suffix != checkpoints.WEIGHTS_SUFFIX:
                raise LensError(card.problem)
            loaded = checkpoints.load_checkpoint(card.path, architecture=model_name)
            title = f"{loaded.card.name} ({loaded.card.architecture}, shapes from the weights)"
            return loaded.model, loaded.card.input_shape, title  # type: ignore[return-value]
        model = _shapes_only(lambda: checkpoints.build_for_card(card))
        return model, checkpoints.card_input_shape(card), f"{card.name} ({card.architecture})"
    info = models.model_info(target)
    return _shapes_only(lambda: models.build_model(target)), info.input_shape, target


def _shapes_only(build: Callable[[], nn.Module]) -> nn.Module:
    """A model built for its shapes and counts only: on meta tensors (no weights allocated, so
    `summary tv:vit_h_14` takes no 2.5 GB) where its builder allows; builders that compute with
    tensors (torchvision's RegNets) build on the CPU."""
    try:
        with torch.device("meta"):
            return build()
    except NotImplementedError:
        return build()


def flow_for(
    target: str,
    *,
    input_shape: tuple[int, int, int] | None = None,
    model_name: str | None = None,
) -> tuple[probe.ShapeFlow, str]:
    """Shape flow of a name or checkpoint at its own input shape or the one asked for."""
    model, default_shape, title = model_for(target, model_name=model_name)
    return probe.shape_flow(model, input_shape or default_shape), title


def flow_rows(flow: probe.ShapeFlow, *, leaves_only: bool = False) -> list[dict[str, Any]]:
    """One plain dict per record, in execution order: the table the page and CSV export show."""
    rows = []
    for record in flow.records:
        if leaves_only and not record.is_leaf:
            continue
        rows.append(
            {
                "name": record.name,
                "type": record.type,
                "depth": record.depth,
                "is_leaf": record.is_leaf,
                "input_shape": list(record.input_shape),
                "output_shape": list(record.output_shape),
                "kernel": list(record.kernel) if record.kernel else None,
                "stride": list(record.stride) if record.stride else None,
                "padding": list(record.padding) if record.padding else None,
                "dilation": list(record.dilation) if record.dilation else None,
                "parameters": record.params_total,
                "trainable_parameters": record.params_trainable,
                "mult_adds": record.mult_adds,
                "receptive_field": record.receptive_field,
                "effective_stride": record.effective_stride,
                "formula": record.formula,
                "flag": record.flag,
            }
        )
    return rows


def flow_to_json(flow: probe.ShapeFlow, title: str) -> dict[str, Any]:
    """The `summary --json` object: per-layer records, totals, and what broke (if anything)."""
    broken = None
    if flow.broken is not None:
        broken = {
            "layer": flow.broken.layer,
            "type": flow.broken.type,
            "reason": flow.broken.reason,
        }
    return {
        "model": title,
        "input_shape": list(flow.input_shape),
        "output_shape": list(flow.output_shape) if flow.output_shape else None,
        "layers": flow_rows(flow, leaves_only=True),
        "totals": {
            "parameters": flow.params_total,
            "trainable_parameters": flow.params_trainable,
            "mult_adds": flow.mult_adds,
        },
        "broken": broken,
    }


def display_rows(flow: probe.ShapeFlow, *, leaves_only: bool = True) -> list[dict[str, Any]]:
    """Rows as a reader sees them: shapes as 'C×H×W', K/S/P in one column, counts as ints."""
    return [_display_row(r) for r in flow.records if r.is_leaf or not leaves_only]


def _display_row(record: probe.LayerRecord) -> dict[str, Any]:
    ksp = ""
    if record.kernel is not None:
        ksp = "/".join(pair_text(p) for p in (record.kernel, record.stride, record.padding))
    return {
        "Layer": record.name,
        "Type": record.type,
        "Input": shape_text(record.input_shape),
        "Output": shape_text(record.output_shape),
        "K/S/P": ksp,
        "Params": record.params_total,
        "Mult-adds": record.mult_adds,
        "RF": receptive_text(record),
        "Formula": record.formula,
        "Flag": record.flag,
    }


def flow_to_text(flow: probe.ShapeFlow, title: str) -> str:
    """An aligned table with totals, like torchinfo's, plus the formula column."""
    rows = display_rows(flow)
    columns = ["Layer", "Type", "Input", "Output", "K/S/P", "Params", "Mult-adds", "RF"]
    numeric = {"Params", "Mult-adds"}
    cells = [columns] + [
        [f"{row[c]:,}" if c in numeric else str(row[c]) for c in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    formulas = ["Formula"] + [
        row["Formula"] + (f"  ! {row['Flag']}" if row["Flag"] else "") for row in rows
    ]
    out = [f"{title} — input {shape_text(flow.input_shape)}"]
    for line, formula in zip(cells, formulas, strict=True):
        padded = [
            cell.rjust(widths[i]) if columns[i] in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(padded) + "  " + formula)
    rule = "─" * min(120, max(len(line) for line in out))
    out.insert(2, rule)
    out.append(rule)
    out.append(f"Total parameters:     {flow.params_total:,}")
    out.append(f"Trainable parameters: {flow.params_trainable:,}")
    out.append(f"Multiply-adds:        {flow.mult_adds:,} per image")
    if flow.output_shape is not None:
        out.append(f"Output:               {shape_text(flow.output_shape)}")
    if flow.broken is not None:
        where = f" at {flow.broken.layer} ({flow.broken.type})" if flow.broken.layer else ""
        out.append(f"BREAKS{where}: {flow.broken.reason}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Grouping: containers folded into one row, and the blocks the flow diagram draws

BROKEN_OUTPUT = "✗ breaks here"
_WEIGHTED = ("Conv", "Linear")  # leaves the diagram keeps even when the shape does not change


def max_depth(flow: probe.ShapeFlow) -> int:
    """Nesting depth of the deepest record: 0 when every layer is a top-level module."""
    return max((r.depth for r in flow.records), default=0)


def container_names(flow: probe.ShapeFlow) -> list[str]:
    """Containers that ran (Sequential, BasicBlock, …), once each, in execution order."""
    return list(dict.fromkeys(r.name for r in flow.records if not r.is_leaf))


def _ancestors(name: str) -> list[str]:
    """'layer3.0.conv1' → ['layer3', 'layer3.0']."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def visible_records(
    flow: probe.ShapeFlow, *, depth: int | None = None, folded: Collection[str] = ()
) -> list[probe.LayerRecord]:
    """The records that get a row once containers are folded, in execution order.

    A container at `depth` or deeper, or named in `folded`, is folded: it stands for everything
    inside it (its record already carries the subtree's parameters and multiply-adds). Open
    containers get no row of their own, as in `display_rows`; depth None folds by name only, so
    with nothing folded the records are exactly the leaves.
    """
    hidden: set[str] = set()
    shown = []
    for record in flow.records:
        if any(a in hidden for a in _ancestors(record.name)):
            continue
        if record.is_leaf:
            shown.append(record)
        elif record.name in folded or (depth is not None and record.depth >= depth):
            hidden.add(record.name)
            shown.append(record)
    return shown


def is_shortcut_projection(record: probe.LayerRecord) -> bool:
    """A 1×1 conv with stride > 1: ResNet's projection shortcut, which halves the map by
    reading every other pixel on purpose (the 3×3 conv beside it reads them all). Its flag is
    a note on a standard design, not a warning."""
    stride = record.stride or (1, 1)
    return record.type == "Conv2d" and record.kernel == (1, 1) and max(stride) > 1


def collapsed_rows(
    flow: probe.ShapeFlow, *, depth: int | None = None, folded: Collection[str] = ()
) -> list[dict[str, Any]]:
    """`display_rows` with containers folded (see `visible_records`).

    A folded row reads "BasicBlock (7 layers)" and lists the flags raised inside it, so a
    division that is not exact stays visible when its block is folded.
    """
    rows = []
    for record in visible_records(flow, depth=depth, folded=folded):
        row = _display_row(record)
        if not record.is_leaf:
            prefix = record.name + "."
            inner = [r for r in flow.records if r.is_leaf and r.name.startswith(prefix)]
            row["Type"] = f"{record.type} ({len(inner)} layer{'s' if len(inner) != 1 else ''})"
            row["Flag"] = "; ".join(
                f"{r.name.removeprefix(prefix)}: {r.flag}" for r in inner if r.flag
            )
        rows.append(row)
    return rows


def break_row(flow: probe.ShapeFlow, model: nn.Module | None = None) -> dict[str, Any] | None:
    """The table row of the layer the input cannot pass (None when it passes).

    The broken call never finished, so only its name, type and reason are known; `model` adds
    the layer's own parameter count.
    """
    if flow.broken is None:
        return None
    params = 0
    if model is not None and flow.broken.layer:
        module = dict(model.named_modules()).get(flow.broken.layer)
        params = sum(p.numel() for p in module.parameters()) if module is not None else 0
    return {
        "Layer": flow.broken.layer or "(whole model)",
        "Type": flow.broken.type,
        "Input": "—",
        "Output": BROKEN_OUTPUT,
        "K/S/P": "",
        "Params": params,
        "Mult-adds": 0,
        "RF": "",
        "Formula": "",
        "Flag": f"breaks: {flow.broken.reason}",
    }


@dataclass(frozen=True)
class DiagramPlan:
    """What the flow diagram draws: (name, output shape) blocks, and at which nesting depth."""

    layers: list[tuple[str, tuple[int, ...]]]
    depth: int  # containers at this depth or deeper are drawn as one block
    deepest: bool  # True when nothing was folded to fit (every shape-changing leaf is drawn)


def diagram_layers(
    flow: probe.ShapeFlow,
    *,
    max_blocks: int = 24,
    depth: int | None = None,
    folded: Collection[str] = (),
) -> DiagramPlan:
    """The input and each visible block that changes the shape or holds conv/linear weights.

    Tries the deepest nesting level first (or `depth` when given) and folds one level more until
    at most `max_blocks` blocks remain: a ResNet-18 is drawn as its stem and eight BasicBlocks,
    a VGG as its convs and pools. Same-shape steps (ReLU, BatchNorm, dropout) are left out and
    outputs that are neither maps (C, H, W) nor vectors (F,) cannot be drawn.
    """
    top = max_depth(flow) if depth is None else min(depth, max_depth(flow))
    folded = {*folded, *_branching(flow)}
    layers: list[tuple[str, tuple[int, ...]]] = []
    for cut in range(top, -1, -1):
        layers = [("input", tuple(flow.input_shape))]
        for record in visible_records(flow, depth=cut, folded=folded):
            shape = tuple(record.output_shape)
            if len(shape) not in (1, 3) or min(shape) < 1:
                continue
            weighted = record.is_leaf and record.type.startswith(_WEIGHTED)
            if not record.is_leaf or weighted or shape != layers[-1][1]:
                layers.append((record.name, shape))
        if len(layers) <= max_blocks:
            return DiagramPlan(layers, cut, cut == max_depth(flow))
    return DiagramPlan(layers, 0, max_depth(flow) == 0)


def _branching(flow: probe.ShapeFlow) -> list[str]:
    """Containers of every type where some container has side branches (a residual block with a
    downsample: its children's shapes do not chain), which a left-to-right diagram cannot draw
    inside, so they are drawn whole."""
    containers = [r for r in flow.records if not r.is_leaf]
    types = set()
    for c in containers:
        children = [
            r for r in flow.records if r.depth == c.depth + 1 and r.name.startswith(c.name + ".")
        ]
        if any(a.output_shape != b.input_shape for a, b in itertools.pairwise(children)):
            types.add(c.type)
    return [c.name for c in containers if c.type in types]


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """Table rows as CSV text (header from the first row's keys), for a download button."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
