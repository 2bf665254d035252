"""The shape-flow table as text, JSON and rows: the display side of `probe.shape_flow`.

Numbers are computed in `probe`; this module only chooses what to show and how (torchinfo's split
between statistics and formatting). The command line, the pages and the HTML report all use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dashboard import models, probe
from dashboard.errors import LensError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".json")


def shape_text(shape: tuple[int, ...] | None) -> str:
    """(64, 27, 27) → '64×27×27'."""
    return "—" if shape is None else "×".join(str(d) for d in shape)


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


def model_for(
    target: str, *, model_name: str | None = None
) -> tuple[nn.Module, tuple[int, int, int], str]:
    """A registry name or checkpoint file → (model, its input shape, a title for the table).

    For a checkpoint only its card (or `model_name` for a bare state dict) is read: shapes do
    not depend on the weights, so `summary` works without loading them.
    """
    path = Path(target)
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists():
        from dashboard import checkpoints

        if not path.exists() and not path.with_suffix(".json").exists():
            raise LensError(f"no such checkpoint file: {target}")
        try:
            card = checkpoints.read_card(path)
        except LensError:
            if model_name is None:
                raise
            return model_for(model_name)[0], models.model_info(model_name).input_shape, path.name
        args = dict(card.model_args)
        options = args.pop("options", {}) or {}
        model = models.build_model(card.architecture, **args, **options)
        return model, tuple(card.input_shape), f"{card.name} ({card.architecture})"  # type: ignore[return-value]
    info = models.model_info(target)
    return models.build_model(target), info.input_shape, target


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
    rows = []
    for record in flow.records:
        if leaves_only and not record.is_leaf:
            continue
        ksp = ""
        if record.kernel is not None:
            ksp = "/".join(pair_text(p) for p in (record.kernel, record.stride, record.padding))
        rows.append(
            {
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
        )
    return rows


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
        out.append(f"BREAKS at {flow.broken.layer} ({flow.broken.type}): {flow.broken.reason}")
    return "\n".join(out)
