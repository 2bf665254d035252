"""Print trained/README.md: one row per shipped card (run after tools/train_shipped.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard.base import paths
from dashboard.models import checkpoints

HEADER = """# Shipped checkpoints

Each `NAME.safetensors` (weights, per-epoch snapshots of the first conv layers' filters, and
the training dynamics: every layer's weight and gradient norms, update ratios and dead units
over the steps, every parameter's histogram per epoch) has a `NAME.json` card with the
architecture, dataset, hyper-parameters, per-epoch history, final metrics and the exact command
that reproduces it (`tools/train_shipped.sh` runs them all).
Trained on this project's 2-core CPU machine, on the real MNIST (60,000 train / 10,000 test)
and on CIFAR-10 (JPEG copy, 50,000 / 10,000): accuracies on CIFAR are on that JPEG copy.
Training times were measured while other work shared the machine, so they are upper bounds.
`flows/shape-flows.json` holds each checkpoint's shape-flow table, which the home page shows
before PyTorch has loaded; `tools/shape_flows.py` writes it (run it after adding or retraining
a checkpoint: a test fails while it is out of date).

| checkpoint | architecture | options | optimizer | epochs | test accuracy | seconds |
| --- | --- | --- | --- | --- | --- | --- |
"""


def main() -> None:
    rows = []
    for card in checkpoints.list_checkpoints(paths.TRAINED_DIR):
        options = card.model_args.get("options") or {}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "—"
        training = card.training
        rows.append(
            f"| `{card.name}` | {card.architecture} | {shown} | {training.get('optimizer')} "
            f"lr {training.get('lr')}, batch {training.get('batch_size')} "
            f"| {training.get('epochs')} | {card.test_accuracy:.2%} "
            f"| {training.get('seconds', 0):.0f} |"
        )
    sys.stdout.write(HEADER + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
