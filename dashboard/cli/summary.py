"""`python -m dashboard summary`: per-layer shapes, parameters, multiply-adds and receptive
fields."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dashboard.cli.common import (
    EXIT_BAD_INPUT,
    parse_input_shape,
    print_json,
)


def _summary(args: argparse.Namespace) -> int:
    from dashboard.analysis import summary

    flow, title = summary.flow_for(args.target, input_shape=args.input_shape, model_name=args.model)
    broken = flow.broken
    if args.json:
        print_json(summary.flow_to_json(flow, title))
    else:
        sys.stdout.write(summary.flow_to_text(flow, title) + "\n")
    if broken is not None:
        where = f"{broken.layer} breaks: " if broken.layer else ""
        print(f"summary: {where}{broken.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def add_parser(subparsers: Any) -> None:
    """The `summary` command and its arguments."""
    summary = subparsers.add_parser(
        "summary", help="per-layer shapes, parameters, multiply-adds and receptive fields"
    )
    summary.add_argument(
        "target", help="a model name (e.g. lenet5, tv:resnet18) or a checkpoint file"
    )
    summary.add_argument(
        "--input-shape",
        type=parse_input_shape,
        default=None,
        help="C,H,W (default: the model's own)",
    )
    summary.add_argument("--model", default=None, help="architecture of a bare state dict")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(run=_summary)
