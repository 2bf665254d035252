"""`python -m dashboard probes`: how separable the classes are at each layer (linear probe, k-NN,
silhouette)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dashboard.cli import common
from dashboard.cli.common import (
    add_data_arguments,
    load_checkpoint,
    model_split,
    percent,
    positive_int,
    print_json,
    progress_bar,
)

PROBE_IMAGES = 10_000  # default training and test images of `probes` (a seeded sample of each)


def _probes(args: argparse.Namespace) -> int:
    from dashboard.analysis import representations
    from dashboard.base import cache

    loaded = load_checkpoint(args)
    model, card = loaded.model, loaded.card
    model_id = cache.checkpoint_digest(loaded.path, card.architecture, card.model_args)
    splits = {name: model_split(args, loaded, name) for name in ("train", "test")}
    blocks = representations.model_blocks(model, splits["test"].info.input_shape)
    features = {}
    for (name, split), count in zip(
        splits.items(), (args.train_images, args.test_images), strict=True
    ):
        chosen = representations.sample_indices(len(split), count)
        with progress_bar("%", f"{name} features") as advance:
            features[name] = representations.cached_features(
                model, model_id, split, blocks, indices=chosen, on_progress=percent(advance)
            )
        print(f"{name}: {len(chosen):,} images of {split.source}", file=sys.stderr)
    with progress_bar("%", "probes") as advance:
        report = representations.probe_layers(
            features["train"], features["test"], on_progress=percent(advance)
        )
    if args.json:
        print_json(report.to_json())
        return 0
    width = max(len(p.layer) for p in report.layers)
    lines = [f"{'layer':<{width}}  features  probe %   k-NN %  silhouette"]
    for p in report.layers:
        sil = "—" if p.silhouette is None else f"{p.silhouette:+.3f}"
        lines.append(
            f"{p.layer:<{width}}  {p.features:8,d}  {100 * p.probe_accuracy:7.2f}  "
            f"{100 * p.knn_accuracy:7.2f}  {sil:>10}"
        )
    lines.append(
        f"the model itself: {100 * report.model_accuracy:.2f} % on the same "
        f"{report.test_images:,} test images (probes trained on {report.train_images:,})"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def add_parser(subparsers: Any) -> None:
    """The `probes` command and its arguments."""
    probes = common.checkpoint_command(
        subparsers,
        "probes",
        "how separable the classes are at each layer: linear probe, k-NN, silhouette",
    )
    common.add_model_arguments(probes, split=False)
    probes.add_argument(
        "--train-images",
        type=positive_int,
        default=PROBE_IMAGES,
        help=f"training images the probes learn from (default {PROBE_IMAGES:,}, a seeded sample)",
    )
    probes.add_argument(
        "--test-images",
        type=positive_int,
        default=PROBE_IMAGES,
        help=f"test images they are scored on (default {PROBE_IMAGES:,}, a seeded sample)",
    )
    probes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_data_arguments(probes)
    probes.set_defaults(run=_probes)
