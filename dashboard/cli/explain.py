"""`python -m dashboard explain`: an attribution map of one image (Captum), as JSON and a PNG."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from dashboard.base.errors import LensError
from dashboard.cli import common
from dashboard.cli.common import (
    add_data_arguments,
    checkpoint_split,
    positive_int,
    print_json,
)


def _finite(value: float | None) -> float | None:
    """A number for strict JSON: NaN and infinities become null."""
    return value if value is None or math.isfinite(value) else None


def _explain(args: argparse.Namespace) -> int:
    from dashboard import data, training
    from dashboard.analysis import attribution
    from dashboard.figures import attribution as attribution_figures

    if args.out:
        attribution_figures.check_png_path(Path(args.out))
    loaded, split = checkpoint_split(args)
    if not 0 <= args.image < len(split):
        raise LensError(
            f"image {args.image} does not exist: the {args.split} split has {len(split):,}"
        )
    device = training.resolve_device(args.device)
    model = loaded.model.to(device)
    pixels = split.images[args.image]  # (C, H, W) uint8
    x = data.normalize(pixels[None], split.info.mean, split.info.std).to(device)
    settings = attribution.Settings(baseline=args.baseline, steps=args.steps, layer=args.layer)
    print(
        f"explaining {args.split} image {args.image} of {split.info.title} with "
        f"{attribution.TITLES[args.method]}",
        file=sys.stderr,
        flush=True,
    )
    result = attribution.explain(
        model, x, split.info, args.method, target=args.target, settings=settings
    )
    if args.out:
        default = "absolute" if result.method in attribution.BY_MAGNITUDE else "signed"
        signed = (args.display or default) == "signed"
        picture = attribution_figures.overlay_picture(
            pixels.numpy(), result.signed if signed else result.absolute, signed=signed
        )
        attribution_figures.save_png(picture, Path(args.out))
        print(f"wrote {args.out}", file=sys.stderr)
    is_ig = result.method == "integrated-gradients"
    payload = {
        "image": args.image,
        "target": result.target,
        "method": result.method,
        "shape": list(result.values.shape),
        "attribution_sum": _finite(result.attribution_sum),
        "logit": _finite(result.logit) if is_ig else None,
        "baseline_logit": _finite(result.baseline_logit) if is_ig else None,
        "convergence_delta": _finite(result.convergence_delta) if is_ig else None,
    }
    if args.json:
        print_json(payload)
    else:
        classes = split.info.classes
        name = classes[result.target] if result.target < len(classes) else result.target
        lines = [
            f"{result.title} of class {name} (index {result.target}) for {args.split} image "
            f"{args.image}: sum {result.attribution_sum:.6g}, logit {result.logit:.6g}, "
            f"probability {result.probability:.2%}"
        ]
        if is_ig:
            lines.append(
                f"baseline ({settings.baseline}) logit {result.baseline_logit:.6g}, "
                f"convergence delta {result.convergence_delta:.3g}"
            )
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def add_parser(subparsers: Any) -> None:
    """The `explain` command and its arguments."""
    from dashboard.analysis.attribution import BASELINES, METHODS

    explain = common.checkpoint_command(
        subparsers, "explain", "an attribution map of one test image (Captum), as JSON and a PNG"
    )
    explain.add_argument("--image", type=int, required=True, help="index of the image in the split")
    explain.add_argument("--split", choices=("test", "train"), default="test")
    explain.add_argument("--method", choices=METHODS, required=True)
    explain.add_argument(
        "--target", type=int, default=None, help="class index to explain (default: predicted)"
    )
    explain.add_argument(
        "--baseline",
        choices=BASELINES,
        default="black",
        help="Integrated Gradients and Occlusion: what an absent pixel is (default: black)",
    )
    explain.add_argument(
        "--steps", type=positive_int, default=50, help="Integrated Gradients' path steps"
    )
    explain.add_argument(
        "--layer", default=None, help="Grad-CAM layer (default: the last conv block's output)"
    )
    explain.add_argument(
        "--display",
        choices=("signed", "absolute"),
        default=None,
        help="the PNG's map (default: absolute for gradients, signed for contributions)",
    )
    explain.add_argument("--out", default=None, help="write the overlay to this PNG file")
    common.add_model_arguments(explain, split=False)
    explain.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps")
    explain.add_argument("--json", action="store_true", help="print the JSON record")
    add_data_arguments(explain)
    explain.set_defaults(run=_explain, limit=None)
