"""The command line: `python -m dashboard {train,evaluate,summary}`.

Contract (DESIGN.md): progress on stderr, one JSON object last on stdout, and for bad input a
non-zero exit with a one-line reason on stderr — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dashboard.errors import LensError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line, like every other failure here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'3,32,32' (or 3x32x32) → (3, 32, 32)."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be C,H,W integers, got {text!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"input shape must be three positive integers C,H,W, got {text!r}")
    return shape  # type: ignore[return-value]


def print_json(payload: dict[str, Any]) -> None:
    """The one JSON object a command prints last on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


def _summary(args: argparse.Namespace) -> int:
    from dashboard import summary

    flow, title = summary.flow_for(args.target, input_shape=args.input_shape, model_name=args.model)
    if args.json:
        print_json(summary.flow_to_json(flow, title))
    else:
        sys.stdout.write(summary.flow_to_text(flow, title) + "\n")
    if flow.broken is not None:
        print(f"summary: {flow.broken.layer} breaks: {flow.broken.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dashboard", description="CNN Lens command line")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    summary = commands.add_parser(
        "summary", help="per-layer shapes, parameters, multiply-adds and receptive fields"
    )
    summary.add_argument("target", help="a model name (e.g. lenet5, tv:resnet18) or a checkpoint file")
    summary.add_argument(
        "--input-shape", type=parse_input_shape, default=None, help="C,H,W (default: the model's own)"
    )
    summary.add_argument("--model", default=None, help="architecture of a bare state dict")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(run=_summary)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except LensError as err:
        print(f"{parser.prog} {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as err:
        print(f"{parser.prog} {args.command}: file not found: {Path(err.filename or '')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
