"""The command line that reproduces a training run, and the file-name form of a name: shared by
`python -m dashboard train` and the runs started from the Train page."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path


def slug(text: str) -> str:
    """A model or dataset name as part of a file name: 'tv:resnet18' → 'tv-resnet18',
    'folder:/home/me/pets' → 'folder-pets'."""
    if text.startswith("folder:"):
        text = "folder-" + Path(text.removeprefix("folder:").rstrip("/\\")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def train_command(args: argparse.Namespace, out: Path, processes: int) -> str:
    """The command line that reproduces the run, every hyper-parameter spelled out (defaults may
    change between versions); the data root is left out because it depends on the machine."""
    launcher = ["python", "-m", "dashboard", "train"]
    if processes > 1:
        launcher = ["torchrun", f"--nproc_per_node={processes}", "-m", "dashboard", "train"]
    words = [
        *launcher,
        "--model", args.model,
        "--dataset", args.dataset,
        "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size),
        "--lr", repr(args.lr),
        "--optimizer", args.optimizer,
        "--schedule", args.schedule,
        "--weight-decay", repr(args.weight_decay),
        "--seed", str(args.seed),
        "--device", args.device,
    ]  # fmt: skip
    if args.augment is not None:
        words.append("--augment" if args.augment else "--no-augment")
    if args.label_smoothing:
        words += ["--label-smoothing", repr(args.label_smoothing)]
    for flag, value in (
        ("--threads", args.threads),
        ("--input-size", args.input_size),
        ("--limit-train", args.limit_train),
        ("--limit-test", args.limit_test),
        ("--name", args.name),
    ):
        if value is not None:
            words += [flag, str(value)]
    for key, value in args.option:
        words += ["--option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    words += ["--out", str(out)]
    return shlex.join(words)
