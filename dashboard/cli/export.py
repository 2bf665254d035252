"""`python -m dashboard export`: a checkpoint as an ONNX file, for Netron and onnxruntime."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dashboard.cli import common


def _export(args: argparse.Namespace) -> int:
    from dashboard.models import checkpoints, export

    loaded = common.load_checkpoint(args)
    card = loaded.card
    norm = card.normalization or {}
    shape = checkpoints.card_input_shape(card)
    done = export.export_onnx(
        loaded.model,
        shape,
        args.onnx,
        mean=norm.get("mean", ()),
        std=norm.get("std", ()),
        classes=card.classes,
    )
    print(f"wrote {done.path} ({done.size:,} bytes, opset {done.opset})", file=sys.stderr)
    common.print_json(
        {
            "onnx": str(done.path),
            "input_shape": list(done.input_shape),
            "opset": done.opset,
            "exporter": done.exporter,
            "bytes": done.size,
        }
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """The `export` command and its arguments."""
    export = common.checkpoint_command(
        subparsers, "export", "a checkpoint as an ONNX file (opens in Netron, runs in onnxruntime)"
    )
    export.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    export.add_argument("--model", default=None, help="architecture of a bare state dict")
    export.set_defaults(run=_export)
