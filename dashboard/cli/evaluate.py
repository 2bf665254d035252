"""`python -m dashboard evaluate`: accuracy, confusion matrix, per-class report and calibration of
a checkpoint."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from dashboard.base.errors import LensError
from dashboard.cli import common
from dashboard.cli.common import (
    add_data_arguments,
    checkpoint_split,
    model_split,
    positive_int,
    print_json,
)

if TYPE_CHECKING:  # the command line imports torch only for the command that runs
    from dashboard.data import Split


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from dashboard import training
    from dashboard.analysis import metrics
    from dashboard.base import cache

    start = time.perf_counter()
    loaded, split = checkpoint_split(args)
    card = loaded.card
    dataset = split.info.name
    device = training.resolve_device(args.device)
    model = loaded.model.to(device)
    if not len(split):
        raise LensError(f"{dataset} has no {args.split} images")
    outputs = _output_count(model, split, device)  # before classifying thousands of images
    if outputs != len(split.info.classes):
        raise LensError(
            f"{loaded.path.name} has {outputs} outputs but {dataset} has "
            f"{len(split.info.classes)} classes"
        )
    model_id = cache.checkpoint_digest(loaded.path, card.architecture, card.model_args)
    with _PredictProgress() as progress:
        pred = metrics.cached_predict(
            model, split, model_id, batch_size=args.batch_size, device=device, progress=progress
        )
    if not progress.ran:
        print(f"evaluate: predictions read from the cache ({cache.results_dir()})", file=sys.stderr)
    classes = list(pred.classes)
    cm = metrics.confusion(pred)
    rep = metrics.report(pred)
    per_class = {
        name: {
            "precision": rep[name]["precision"],
            "recall": rep[name]["recall"],
            "f1": rep[name]["f1-score"],
            "support": int(rep[name]["support"]),
        }
        for name in classes
    }
    calibration_extras = _calibration_summary(args, loaded, model, model_id, device, pred)
    for name, scores in calibration_extras.pop("per_class").items():
        per_class[name].update(scores)
    picked = pred.probabilities[np.arange(len(pred.labels)), pred.labels]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(picked) else None
    top = metrics.top_confusions(cm, classes, k=5)
    _print_report_table(per_class, pred.accuracy, split, top)
    if calibration_extras["temperature"] is not None:
        print(
            f"calibration: ECE {calibration_extras['ece']:.2%}; temperature "
            f"{calibration_extras['temperature']:.3f} (fitted on "
            f"{calibration_extras['temperature_fitted_on']}) takes it from "
            f"{calibration_extras['ece_before_temperature']:.2%} to "
            f"{calibration_extras['ece_after_temperature']:.2%} on "
            f"{calibration_extras['calibration_measured_on']}",
            file=sys.stderr,
        )
    print_json(
        {
            "checkpoint": str(loaded.path),
            "dataset": split.info.name,
            "dataset_source": split.source,
            "split": args.split,
            "images": len(pred.labels),
            "accuracy": pred.accuracy,
            "loss": loss,
            "confusion_matrix": cm.tolist(),
            "per_class": per_class,
            "classes": classes,
            "top_confusions": [list(t) for t in top],
            **calibration_extras,
            "seconds": round(time.perf_counter() - start, 3),
            "warnings": loaded.warnings,
        }
    )
    return 0


def _output_count(model: Any, split: Split, device: Any) -> int:
    """How many scores the model gives for one image of the split (its first)."""
    import torch

    from dashboard import data
    from dashboard.analysis import metrics

    x, _ = next(data.iterate_batches(data.take_first(split, 1), 1, shuffle=False, device=device))
    with metrics.evaluating(model):
        return int(torch.as_tensor(model(x)).shape[-1])


class _PredictProgress:
    """A tqdm bar of images classified, on stderr, drawn only when predictions really run (a
    cached answer draws nothing); `ran` says whether they did."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.ran = False

    def __enter__(self) -> _PredictProgress:
        return self

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        self.ran = True
        if self.bar is None:
            self.bar = tqdm(
                total=total, desc="classifying", unit="img", file=sys.stderr, leave=False
            )
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_report_table(
    per_class: dict[str, dict[str, float]],
    accuracy: float,
    split: Split,
    top: list[tuple[str, str, int]],
) -> None:
    width = max(8, *(len(name) for name in per_class))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    lines += [
        f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  "
        f"{row['support']:7,d}"
        for name, row in per_class.items()
    ]
    lines.append(f"accuracy {accuracy:.2%} on {split.source}")
    if top:
        lines.append(
            "most confused (true → predicted): " + ", ".join(f"{t} → {p} ({n})" for t, p, n in top)
        )
    print("\n".join(lines), file=sys.stderr)


def _calibration_summary(
    args: argparse.Namespace, loaded: Any, model: Any, model_id: str, device: Any, pred: Any
) -> dict[str, Any]:
    """evaluate's calibration, per-class curve scores and top losses. The temperature is fitted
    on training images the model never saw (after the card's first `train_images`), else on
    half of the evaluated predictions (evaluation.calibrate says which)."""
    import numpy as np
    import torch

    from dashboard import data
    from dashboard.analysis import evaluation, metrics

    if not np.isfinite(pred.probabilities).all():  # non-finite weights: no curve, no calibration
        print("note: calibration and curves left out: the outputs are not finite", file=sys.stderr)
        keys = ("ece", "temperature", "ece_before_temperature", "ece_after_temperature")
        return {**dict.fromkeys(keys), "top_losses": [], "per_class": {}}
    card = loaded.card
    dataset = args.dataset or card.dataset
    # Another dataset than the card's: none of its training images was seen. Without a card
    # naming its dataset (a bare state dict) nobody knows which were.
    trained_on = card.training.get("train_images") if dataset == card.dataset else 0
    held_out = None
    if isinstance(trained_on, int) and card.dataset and args.split == "test":
        try:
            train = model_split(args, loaded, "train")
        except LensError as err:  # no training split here: half of the test split serves
            print(f"note: temperature not fitted on training images ({err})", file=sys.stderr)
            train = None
        # A bundled sample's images are not the first ones of the split the model saw.
        usable = 0 if train is None or train.is_sample else len(train)
        unseen = evaluation.held_out_range(usable, trained_on)
        if train is not None and len(unseen):
            print(f"temperature: {len(unseen):,} unseen training images", file=sys.stderr)
            chosen = data.subset(train, torch.arange(unseen.start, unseen.stop))
            held_out = metrics.cached_predict(
                model, chosen, model_id, batch_size=args.batch_size, device=device
            )
    enough = held_out is not None or len(pred.labels) >= 2  # else no temperature to fit
    calibration = evaluation.calibrate(pred, held_out) if enough else None
    return {
        **evaluation.summary(pred, calibration),
        "per_class": evaluation.per_class_scores(pred),
    }


def add_parser(subparsers: Any) -> None:
    """The `evaluate` command and its arguments."""
    evaluate = common.checkpoint_command(
        subparsers, "evaluate", "accuracy, confusion matrix and per-class report of a checkpoint"
    )
    common.add_model_arguments(evaluate)
    evaluate.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="images per forward pass (default: 256, fewer for big images)",
    )
    evaluate.add_argument(
        "--limit", type=positive_int, default=None, help="the first N images of the split only"
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    add_data_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)
