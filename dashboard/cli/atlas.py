"""`python -m dashboard atlas`: what every channel of a layer responds to, as a PNG sheet
and JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.base import work
from dashboard.cli import common

if TYPE_CHECKING:  # the command line imports torch only for the command that runs
    from dashboard.data import Split


def _atlas(args: argparse.Namespace) -> int:
    from dashboard import training

    loaded, split = common.checkpoint_split(args)
    device = training.resolve_device(args.device)
    model = loaded.model.to(device)
    with work.cpu_threads(args.threads):
        return _atlas_run(args, loaded, split, model, device)


def _atlas_run(args: argparse.Namespace, loaded: Any, split: Split, model: Any, device: Any) -> int:
    from dashboard.analysis import atlas, feature_vis
    from dashboard.report import atlas_sheet
    from dashboard.training import commands

    with common.progress_bar("img", f"atlas of {args.layer}") as advance:
        result = atlas.compute_atlas(
            model, split, args.layer, top=args.top, negatives=False, device=device, progress=advance
        )
    visuals = None
    if args.visualize:
        settings = feature_vis.VisSettings(steps=args.steps, seed=args.seed)
        with common.progress_bar("step", "feature visualization") as advance:
            vis = feature_vis.visualize_channels(
                model,
                args.layer,
                split.info.input_shape,
                split.info.mean,
                split.info.std,
                settings=settings,
                device=device,
                progress=advance,
            )
        visuals = vis.rgb()
    title = f"{loaded.path.stem} · {args.layer} · {split.source}"
    image = atlas_sheet.sheet(
        result, split.images, title=title, visualizations=visuals, classes=split.info.classes
    )
    out = (
        Path(args.out) / f"{commands.slug(loaded.path.stem)}-{commands.slug(args.layer)}-atlas.png"
    )
    print(f"wrote {atlas_sheet.save_png(image, out)}", file=sys.stderr)
    record = atlas.to_json(result)
    if args.json:
        common.print_json(record)
    else:
        sys.stdout.write(_atlas_table(result, split.info.classes) + "\n")
    return 0


def _atlas_table(result: Any, classes: tuple[str, ...]) -> str:
    """One line per channel: its best image and activation, selectivity, dead share."""
    favourite = result.preferred_class
    lines = [f"{'channel':>7}  {'top image':>9}  {'max':>9}  {'selectivity':>11}  "
             f"{'class':<12}  {'dead':>6}"]  # fmt: skip
    for c in range(result.channels):
        best = result.top(c)[0]
        lines.append(
            f"{c:>7}  {best.index:>9}  {best.activation:>9.4g}  {result.selectivity[c]:>11.3f}  "
            f"{classes[favourite[c]][:12]:<12}  {result.dead_share[c]:>6.1%}"
        )
    lines.append(f"{result.layer}: {result.values_of}; {result.images:,} {result.split} images")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> None:
    """The `atlas` command and its arguments."""
    from dashboard.analysis.atlas import DEFAULT_TOP
    from dashboard.analysis.feature_vis import VisSettings

    atlas = common.checkpoint_command(
        subparsers,
        "atlas",
        "what every channel of a layer responds to over a split: a PNG sheet and JSON",
    )
    atlas.add_argument("--layer", required=True, help="a conv, activation or pooling layer")
    atlas.add_argument(
        "--top",
        type=common.positive_int,
        default=DEFAULT_TOP,
        help="images per channel (default 9)",
    )
    common.add_model_arguments(atlas)
    atlas.add_argument(
        "--limit",
        type=common.positive_int,
        default=None,
        help="the first N images of the split only",
    )
    atlas.add_argument(
        "--visualize", action="store_true", help="add each channel's feature visualization"
    )
    atlas.add_argument(
        "--steps",
        type=common.positive_int,
        default=VisSettings.steps,
        help="feature visualization steps",
    )
    atlas.add_argument(
        "--seed", type=int, default=VisSettings.seed, help="feature visualization seed"
    )
    atlas.add_argument("--out", default=".", help="folder for the PNG sheet (default: here)")
    atlas.add_argument("--json", action="store_true", help="print JSON instead of a table")
    atlas.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    atlas.add_argument(
        "--threads", type=common.positive_int, default=None, help="CPU threads (default: torch's)"
    )
    common.add_data_arguments(atlas)
    atlas.set_defaults(run=_atlas)
