"""What the commands share: exit codes, the one JSON object printed last, argument types,
progress bars on stderr, and loading a checkpoint with the split its model takes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dashboard.base.errors import LensError

if TYPE_CHECKING:  # the command line imports torch only for the command that runs
    from dashboard.data import Split


EXIT_BAD_INPUT = 2


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'3,32,32' (or 3x32x32) → (3, 32, 32)."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"input shape must be C,H,W integers, got {text!r}"
        ) from None
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(
            f"input shape must be three positive integers C,H,W, got {text!r}"
        )
    return shape  # type: ignore[return-value]


def standard_json(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every NaN or infinite number replaced by null, each one named in a note
    under "notes" (JSON has no NaN: `json.dumps` would write a token other parsers refuse)."""
    notes: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            notes.append(f"{where} is {value} (not a finite number): written as null")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(payload, "")
    if notes:
        cleaned["notes"] = [*cleaned.get("notes", []), *notes]
    return cleaned


def print_json(payload: dict[str, Any]) -> None:
    """The one JSON object a command prints last on stdout: standard JSON, always."""
    sys.stdout.write(json.dumps(standard_json(payload), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: a stopped run is saved but not finished


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {value}")
    return value


def whole_at_least_0(text: str) -> int:
    value = whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {value}")
    return value


def print_data_notes(*splits: Split) -> None:
    """What loading the data left out or found odd (an image folder's empty classes, links
    not followed), once each, as notes on stderr."""
    for note in dict.fromkeys(note for split in splits for note in split.notes):
        print(f"note: {note}", file=sys.stderr)


def checkpoint_split(args: argparse.Namespace) -> tuple[Any, Split]:
    """(the loaded checkpoint, its dataset's split --split): sized like the model's input,
    limited to --limit images, normalized with the statistics the model was trained with."""
    loaded = load_checkpoint(args)
    return loaded, model_split(args, loaded, args.split, limit=args.limit)


def load_checkpoint(args: argparse.Namespace) -> Any:
    """The checkpoint --model names (its warnings printed on stderr)."""
    from dashboard.models import checkpoints

    loaded = checkpoints.load_checkpoint(args.checkpoint, architecture=args.model)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return loaded


def model_split(
    args: argparse.Namespace, loaded: Any, split_name: str, *, limit: int | None = None
) -> Split:
    """One split of --dataset (default: the card's) as `loaded`'s model takes it: sized like
    its input, its first `limit` images, normalized with the statistics it was trained with."""
    from dashboard import data

    card = loaded.card
    dataset = args.dataset or card.dataset
    if not dataset:
        raise LensError(f"{loaded.path.name} has no card naming its dataset; pass --dataset NAME")
    shape = card.input_shape
    size = shape[1] if shape else None

    def check_channels(channels: int) -> None:
        if shape and channels != shape[0]:
            raise LensError(
                f"{loaded.path.name} takes {shape[0]}-channel images but {dataset} has {channels}"
            )

    if not dataset.startswith(data.FOLDER_PREFIX):  # before any image is read or downloaded
        check_channels(data.dataset_info(dataset, input_size=size).channels)
    split = data.take_first(
        data.load_split(
            dataset, split_name, data_root=args.data_root, download=args.download, input_size=size
        ),
        limit,
    )
    print_data_notes(split)
    check_channels(split.info.channels)  # an image folder's, known once it is read
    saved = card.normalization if split.info.name == card.dataset else None
    if saved:  # the statistics the model was trained with, even if the registry's change later
        info = dataclasses.replace(split.info, mean=tuple(saved["mean"]), std=tuple(saved["std"]))
        split = dataclasses.replace(split, info=info)
    return split


@contextlib.contextmanager
def progress_bar(unit: str, label: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr, fed by a (done, total) callback; drawn from the first call on, so a
    failure before any progress prints its one line alone."""
    from tqdm import tqdm

    bars: list[Any] = []

    def advance(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(desc=label, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
            )
        bars[0].total = total
        bars[0].update(done - bars[0].n)

    try:
        yield advance
    finally:
        for bar in bars:
            bar.close()


def percent(advance: Callable[[int, int], None]) -> Callable[[float, str], None]:
    """A (fraction, text) progress report fed to a (done, total) bar, in per cent."""
    return lambda fraction, _text: advance(round(100 * fraction), 100)


def checkpoint_command(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A command that reads one checkpoint, named first on its line."""
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("checkpoint", help="NAME.safetensors (with its card) or a .pt/.pth")
    return parser


def add_model_arguments(parser: argparse.ArgumentParser, *, split: bool = True) -> None:
    """--model for a bare state dict, --dataset (the card's by default) and --split."""
    parser.add_argument("--model", default=None, help="architecture of a bare state dict")
    parser.add_argument("--dataset", default=None, help="default: the card's dataset")
    if split:
        parser.add_argument("--split", choices=("test", "train"), default="test")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        default=None,
        help="datasets folder (default: $CNN_LENS_DATA, else a user cache)",
    )
    parser.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download a missing dataset (default: yes)",
    )
