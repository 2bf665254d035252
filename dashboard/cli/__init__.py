"""The command line: `python -m dashboard {train,evaluate,summary,atlas,probes,explain,export}`.

One module per command (its arguments and what it runs), `common` for what they share. The
commands import torch and the layers below only when they run, so `--help` and a bad argument
stay quick.

Contract (DESIGN.md): progress on stderr, one JSON object last on stdout, and for bad input a
non-zero exit with a one-line reason on stderr — never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dashboard.base.errors import LensError
from dashboard.cli import atlas, evaluate, explain, export, probes, summary, train
from dashboard.cli.common import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from dashboard.cli.common import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from dashboard.cli.common import parse_input_shape as parse_input_shape
from dashboard.cli.common import print_json as print_json
from dashboard.cli.common import standard_json as standard_json
from dashboard.cli.train import MAX_SEED as MAX_SEED
from dashboard.cli.train import max_threads as max_threads


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line, like every other failure here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dashboard", description="CNN Lens command line")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (summary, train, evaluate, atlas, probes, explain, export):  # --help order
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # `python -m dashboard` quits at once on a Ctrl-C while it imports; from here on a
        # Ctrl-C is Python's KeyboardInterrupt again (train saves its partial run on it).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.run(args))
    except LensError as err:
        print(f"{parser.prog} {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as err:
        print(
            f"{parser.prog} {args.command}: file not found: {Path(err.filename or '')}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
